//! Profile windows: `/debug/pprof/profile`, `/debug/pprof/offcpu`,
//! `/flamegraph.svg` and `/offcpu.svg` answer with the profile of the next N
//! seconds. Stacks are counted in kernel all the time; a window is the
//! difference of two snapshots of the counts map, so windows overlap freely
//! and wait in the main loop without blocking other requests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bpf::stack_maps::StackKey;
use crate::engine::stack::{hostname, shown_value, StackCollector, StackObject};
use crate::host::process_maps::AddressSpaces;
use crate::host::target::Targets;
use crate::model::process::GroupBy;
use crate::model::profile::ProfileKind;
use crate::output::folded::FoldOptions;
use crate::output::{pprof, svg};
use crate::symbolize::debuginfod::Debuginfod;
use crate::symbolize::Symbolizer;
use crate::unwind::UnwindOptions;

/// Longest profile window a request may ask for.
const MAX_WINDOW_SECONDS: u64 = 300;
/// The in-kernel stack maps are emptied when this full, between windows.
const RESET_FILL: f64 = 0.8;
/// The symbolizer starts afresh after this long or this many cached
/// addresses: its caches, above all the debug information blazesym parses
/// lazily as new addresses come up, otherwise keep growing for hours.
const SYMBOLIZER_LIFETIME: Duration = Duration::from_secs(300);
const SYMBOL_CACHE_LIMIT: usize = 50_000;

/// What a window is rendered as.
#[derive(Clone, Copy)]
pub enum WindowFormat {
    Pprof,
    Svg,
}

/// Which stacks a window profiles.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StackKind {
    Cpu,
    OffCpu,
}

/// The profile endpoints: (path, stacks, format, default seconds).
pub const ENDPOINTS: [(&str, StackKind, WindowFormat, u64); 4] = [
    (
        "/debug/pprof/profile",
        StackKind::Cpu,
        WindowFormat::Pprof,
        30,
    ),
    ("/flamegraph.svg", StackKind::Cpu, WindowFormat::Svg, 10),
    (
        "/debug/pprof/offcpu",
        StackKind::OffCpu,
        WindowFormat::Pprof,
        30,
    ),
    ("/offcpu.svg", StackKind::OffCpu, WindowFormat::Svg, 10),
];

/// A request waiting for the end of its window.
pub struct Window {
    pub request: tiny_http::Request,
    kind: StackKind,
    format: WindowFormat,
    started: Instant,
    length: Duration,
    baseline: HashMap<StackKey, u64>,
}

impl Window {
    pub fn ended(&self) -> bool {
        self.started.elapsed() >= self.length
    }
}

/// `seconds=N` from a query string.
pub fn window_seconds(url: &str, default: u64) -> Result<u64, String> {
    let Some(query) = url.split_once('?').map(|(_, q)| q) else {
        return Ok(default);
    };
    match query
        .split('&')
        .find_map(|pair| pair.strip_prefix("seconds="))
    {
        None => Ok(default),
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if (1..=MAX_WINDOW_SECONDS).contains(&seconds) => Ok(seconds),
            _ => Err(format!(
                "bad seconds={text}: give 1 to {MAX_WINDOW_SECONDS}\n"
            )),
        },
    }
}

/// One in-kernel stack count: its object, and the engine's collector around it.
pub struct StackSource<'a> {
    pub object: &'a dyn StackObject,
    pub collector: StackCollector<'a>,
    pub max_stacks: u32,
}

impl<'a> StackSource<'a> {
    /// A source around an attached stack object; sources share `spaces`.
    pub fn new(
        object: &'a dyn StackObject,
        targets: &Targets,
        unwind: UnwindOptions,
        spaces: &Rc<RefCell<AddressSpaces>>,
        max_stacks: u32,
        debuginfod: Option<Arc<Debuginfod>>,
    ) -> Result<Self> {
        Ok(StackSource {
            collector: StackCollector::new(
                object.maps(),
                targets,
                unwind,
                Rc::clone(spaces),
                debuginfod,
            )?,
            object,
            max_stacks,
        })
    }

    fn snapshot(&self) -> Result<HashMap<StackKey, u64>> {
        self.object.flush()?;
        self.collector.snapshot()
    }
}

/// The continuous CPU sampler, the off-CPU tracer where attached, and what
/// symbolizing their stacks needs.
pub struct Profiles<'a> {
    /// Kept across windows for a while: its caches (kernel symbols, ELF
    /// files) are loaded once per lifetime (`SYMBOLIZER_LIFETIME`).
    pub symbolizer: RefCell<(Symbolizer, Instant)>,
    /// Gives renewed symbolizers the same debuginfod client.
    pub debuginfod: Option<Arc<Debuginfod>>,
    /// The process snapshots both sources share.
    pub spaces: Rc<RefCell<AddressSpaces>>,
    pub cpu: StackSource<'a>,
    pub offcpu: Option<StackSource<'a>>,
    pub hz: u64,
}

impl<'a> Profiles<'a> {
    fn source(&self, kind: StackKind) -> Option<&StackSource<'a>> {
        match kind {
            StackKind::Cpu => Some(&self.cpu),
            StackKind::OffCpu => self.offcpu.as_ref(),
        }
    }

    /// Every attached source (the CPU sampler first).
    pub fn sources(&self) -> impl Iterator<Item = &StackSource<'a>> {
        std::iter::once(&self.cpu).chain(self.offcpu.as_ref())
    }

    /// Opens a window for `request`, or says why not (status, message).
    pub fn open(
        &self,
        request: tiny_http::Request,
        url: &str,
        (kind, format, default_seconds): (StackKind, WindowFormat, u64),
    ) -> Result<Result<Window, (tiny_http::Request, u16, String)>> {
        let Some(source) = self.source(kind) else {
            let message =
                "off-CPU profiles need the offcpu source: start serve with --metrics ...,offcpu\n";
            return Ok(Err((request, 404, message.to_string())));
        };
        match window_seconds(url, default_seconds) {
            Ok(seconds) => Ok(Ok(Window {
                request,
                kind,
                format,
                started: Instant::now(),
                length: Duration::from_secs(seconds),
                baseline: source.snapshot()?,
            })),
            Err(message) => Ok(Err((request, 400, message))),
        }
    }

    /// The rendered profile of an ended window: counts now minus counts then.
    pub fn render(&self, window: &Window) -> Result<Vec<u8>> {
        let source = self
            .source(window.kind)
            .expect("windows open only on attached sources");
        let kind = match window.kind {
            StackKind::Cpu => ProfileKind::Cpu { hz: self.hz },
            StackKind::OffCpu => ProfileKind::OffCpu,
        };
        let counted: Vec<(StackKey, u64)> = source
            .snapshot()?
            .into_iter()
            .filter_map(|(key, now)| {
                let then = window.baseline.get(&key).copied().unwrap_or(0);
                let value = shown_value(kind, now.saturating_sub(then));
                (value > 0).then_some((key, value))
            })
            .collect();
        let duration = window.started.elapsed();
        let profile = source.collector.profile(
            &mut self.symbolizer.borrow_mut().0,
            counted,
            kind,
            duration,
        )?;
        Ok(match window.format {
            WindowFormat::Pprof => pprof::render(&profile, GroupBy::Process)?,
            WindowFormat::Svg => {
                let rate = match window.kind {
                    StackKind::Cpu => format!(" at {} Hz", self.hz),
                    StackKind::OffCpu => String::new(),
                };
                let subtitle = format!(
                    "{:.1} s{rate} on {}, from bpfscope serve",
                    duration.as_secs_f64(),
                    hostname()
                );
                svg::render(&profile, FoldOptions::default(), &subtitle)?
            }
        })
    }

    pub fn content_type(window: &Window) -> &'static str {
        match window.format {
            WindowFormat::Pprof => "application/octet-stream",
            WindowFormat::Svg => "image/svg+xml",
        }
    }

    /// Between windows: forgets exited processes, empties nearly full stack
    /// maps, and starts the symbolizer afresh when it is old or its caches
    /// are large, so memory stays bounded.
    pub fn tidy(&self) {
        self.spaces.borrow_mut().forget_exited();
        for source in self.sources() {
            source.collector.forget_exited_tables();
            source
                .collector
                .reset_if_full(source.max_stacks, RESET_FILL);
        }
        let mut symbolizer = self.symbolizer.borrow_mut();
        if symbolizer.1.elapsed() > SYMBOLIZER_LIFETIME
            || symbolizer.0.cached_addresses() > SYMBOL_CACHE_LIMIT
        {
            *symbolizer = (Symbolizer::new(self.debuginfod.clone()), Instant::now());
            drop(symbolizer);
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe { libc::malloc_trim(0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_seconds_are_bounded() {
        assert_eq!(window_seconds("/debug/pprof/profile", 30), Ok(30));
        assert_eq!(window_seconds("/debug/pprof/profile?seconds=2", 30), Ok(2));
        assert_eq!(window_seconds("/flamegraph.svg?x=1&seconds=5", 10), Ok(5));
        assert!(window_seconds("/x?seconds=0", 30).is_err());
        assert!(window_seconds("/x?seconds=999", 30).is_err());
        assert!(window_seconds("/x?seconds=abc", 30).is_err());
    }
}
