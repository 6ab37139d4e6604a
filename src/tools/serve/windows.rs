//! Profile windows: `/debug/pprof/profile`, `/debug/pprof/offcpu`,
//! `/flamegraph.svg` and `/offcpu.svg` answer with the profile of the next N
//! seconds. Stacks are counted in kernel all the time; a CPU window is the
//! sum of the CPU history's slots it covered, an off-CPU window the
//! difference of two snapshots of the counts map, so windows overlap freely
//! and wait in the main loop without blocking other requests. From the CPU
//! history alone, at once: `/flamegraph.svg?diff_base=SECONDS_AGO` (the last
//! window against the one that many seconds earlier) and `/heatmap.html`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::history::{History, HISTORY_SECONDS};
use super::http::Request;
use crate::bpf::stack_maps::StackKey;
use crate::engine::stack::{hostname, shown_value, StackCollector, StackObject};
use crate::host::process_maps::AddressSpaces;
use crate::host::target::Targets;
use crate::model::diff::DiffProfile;
use crate::model::process::GroupBy;
use crate::model::profile::{Profile, ProfileKind};
use crate::output::folded::{self, FoldOptions};
use crate::output::heatmap::{self, ROWS_PER_SECOND};
use crate::output::{diff, pprof, svg};
use crate::symbolize::debuginfod::Debuginfod;
use crate::symbolize::Symbolizer;
use crate::unwind::UnwindOptions;

/// Longest profile window a request may ask for (CPU windows are read
/// from the history).
const MAX_WINDOW_SECONDS: u64 = HISTORY_SECONDS;
/// The in-kernel stack maps are emptied when this full, between windows.
const RESET_FILL: f64 = 0.8;
/// The symbolizer starts afresh after this long or this many cached
/// addresses: its caches, above all the debug information blazesym parses
/// lazily as new addresses come up, otherwise keep growing for hours.
const SYMBOLIZER_LIFETIME: Duration = Duration::from_secs(300);
const SYMBOL_CACHE_LIMIT: usize = 50_000;

/// What a window is rendered as.
#[derive(Clone, Copy, PartialEq, Eq)]
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

/// Requests waiting for the end of one window: requests for the same
/// profile that arrive within `JOIN_WITHIN` of each other share it.
pub struct Window {
    pub requests: Vec<Request>,
    kind: StackKind,
    format: WindowFormat,
    started: Instant,
    length: Duration,
    since: Since,
}

/// Requests for the same kind, format and length this close together share
/// one window, and so one rendering.
const JOIN_WITHIN: Duration = Duration::from_secs(1);

/// Where a window's profile starts.
enum Since {
    /// A CPU window: this slot of the history.
    Slot(u32),
    /// An off-CPU window: the counts then.
    Counts(HashMap<StackKey, u64>),
}

impl Window {
    pub fn ended(&self) -> bool {
        self.started.elapsed() >= self.length
    }

    /// Whether a request for this profile can wait for this window.
    pub fn joins(&self, (kind, format, seconds): (StackKind, WindowFormat, u64)) -> bool {
        self.kind == kind
            && self.format == format
            && self.length == Duration::from_secs(seconds)
            && self.started.elapsed() < JOIN_WITHIN
    }
}

/// `seconds=N` from a query string.
pub fn window_seconds(url: &str, default: u64) -> Result<u64, String> {
    query_seconds(url, "seconds", MAX_WINDOW_SECONDS).map(|seconds| seconds.unwrap_or(default))
}

/// `NAME=N` from a query string, 1 to `max`, if given.
pub fn query_seconds(url: &str, name: &str, max: u64) -> Result<Option<u64>, String> {
    let Some(query) = url.split_once('?').map(|(_, q)| q) else {
        return Ok(None);
    };
    let prefix = format!("{name}=");
    match query
        .split('&')
        .find_map(|pair| pair.strip_prefix(prefix.as_str()))
    {
        None => Ok(None),
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if (1..=max).contains(&seconds) => Ok(Some(seconds)),
            _ => Err(format!("bad {name}={text}: give 1 to {max}\n")),
        },
    }
}

/// Slots per second of history.
const SLOTS: u64 = ROWS_PER_SECOND as u64;

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
        let collector = StackCollector::new(
            object.maps(),
            targets,
            unwind,
            Rc::clone(spaces),
            debuginfod,
        )?;
        object.start()?;
        Ok(StackSource {
            collector,
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
    /// The CPU source's counts, drained about every second.
    pub history: RefCell<History>,
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

    /// Opens a window of `seconds` for the requests that will join it, or
    /// says why not (status, message).
    pub fn open(
        &self,
        (kind, format, seconds): (StackKind, WindowFormat, u64),
    ) -> Result<Result<Window, (u16, String)>> {
        let Some(source) = self.source(kind) else {
            let message =
                "off-CPU profiles need the offcpu source: start serve with --metrics ...,offcpu\n";
            return Ok(Err((404, message.to_string())));
        };
        let since = match kind {
            StackKind::Cpu => {
                self.catch_up()?;
                Since::Slot(self.history.borrow().now_slot())
            }
            StackKind::OffCpu => Since::Counts(source.snapshot()?),
        };
        Ok(Ok(Window {
            requests: Vec::new(),
            kind,
            format,
            started: Instant::now(),
            length: Duration::from_secs(seconds),
            since,
        }))
    }

    /// Drains the CPU counts into the history (about once a second).
    pub fn tick(&self) -> Result<()> {
        self.history.borrow_mut().tick(&self.cpu.collector, false)
    }

    /// Drains the CPU counts into the history now (before reading it).
    fn catch_up(&self) -> Result<()> {
        self.history.borrow_mut().tick(&self.cpu.collector, true)
    }

    /// The CPU profile of history slots first..=last (per slot: `per_slot`),
    /// as the last `catch_up` left the history.
    fn history_profile(&self, first: u32, last: u32, per_slot: bool) -> Result<Profile> {
        let history = self.history.borrow();
        let counted = if per_slot {
            history.slots(first, last)
        } else {
            history.counts(first, last)
        };
        let seconds = f64::from(last.saturating_sub(first) + 1) / SLOTS as f64;
        Ok(self.cpu.collector.profile_from(
            &mut self.symbolizer.borrow_mut().0,
            counted,
            history.stacks(),
            ProfileKind::Cpu { hz: self.hz },
            Duration::from_secs_f64(seconds),
        ))
    }

    /// `/flamegraph.svg?diff_base=SECONDS_AGO[&seconds=N]`: the last N
    /// seconds (default 10) against the N seconds that ended SECONDS_AGO
    /// earlier, as a differential flame graph normalized to equal totals.
    pub fn diff_svg(&self, url: &str) -> Result<Result<Vec<u8>, String>> {
        let (seconds, ago) = match (
            window_seconds(url, 10),
            query_seconds(url, "diff_base", HISTORY_SECONDS),
        ) {
            (Ok(seconds), Ok(Some(ago))) => (seconds, ago),
            (Err(message), _) | (_, Err(message)) => return Ok(Err(message)),
            (_, Ok(None)) => return Ok(Err("diff_base=SECONDS_AGO is missing\n".into())),
        };
        self.catch_up()?;
        let covered = self.history.borrow().covered_seconds();
        if seconds + ago > covered {
            return Ok(Err(format!(
                "diff_base={ago} with seconds={seconds} needs {} s of history; the agent has {covered} s (it keeps {HISTORY_SECONDS})\n",
                seconds + ago
            )));
        }
        let now = self.history.borrow().now_slot();
        let last = now.saturating_sub(1);
        let first = (u64::from(now).saturating_sub(seconds * SLOTS)) as u32;
        let shift = (ago * SLOTS) as u32;
        let after = self.history_profile(first, last, false)?;
        let before = self.history_profile(
            first.saturating_sub(shift),
            last.saturating_sub(shift),
            false,
        )?;
        let options = FoldOptions::default();
        let diff = DiffProfile::new(
            &folded::fold(&before, options),
            &folded::fold(&after, options),
        )
        .normalized();
        let subtitle = format!(
            "the last {seconds} s against the {seconds} s ending {ago} s earlier, at {} Hz on {}, normalized (red: grew, blue: shrank)",
            self.hz,
            hostname()
        );
        Ok(Ok(diff::render_svg(&diff, false, &subtitle)?))
    }

    /// `/heatmap.html[?seconds=N]`: the subsecond heatmap of the last N
    /// seconds of CPU samples (default 300).
    pub fn heatmap_page(&self, url: &str) -> Result<Result<Vec<u8>, String>> {
        let seconds = match query_seconds(url, "seconds", HISTORY_SECONDS) {
            Ok(seconds) => seconds.unwrap_or(300),
            Err(message) => return Ok(Err(message)),
        };
        self.catch_up()?;
        let now = self.history.borrow().now_slot();
        // Columns start on whole seconds of the sampler's clock.
        let first = (u64::from(now).saturating_sub(seconds * SLOTS) / SLOTS * SLOTS) as u32;
        let profile = self.history_profile(first, now, true)?;
        let subtitle = format!(
            "the last {seconds} s at {} Hz on {}, from bpfscope serve",
            self.hz,
            hostname()
        );
        Ok(Ok(heatmap::render(
            &profile,
            FoldOptions::default(),
            "CPU subsecond heatmap",
            &subtitle,
        )?))
    }

    /// The rendered profile of an ended window: the CPU history's slots since
    /// it opened, or the off-CPU counts now minus the counts then.
    pub fn render(&self, window: &Window) -> Result<Vec<u8>> {
        let source = self
            .source(window.kind)
            .expect("windows open only on attached sources");
        let duration = window.started.elapsed();
        // JIT code named from what runtimes appended to their maps until now.
        self.spaces.borrow_mut().read_perf_maps_to_end();
        let profile = match &window.since {
            Since::Slot(first) => {
                self.catch_up()?;
                let last = self.history.borrow().now_slot();
                let mut profile = self.history_profile(*first, last, false)?;
                profile.duration = duration;
                profile
            }
            Since::Counts(baseline) => {
                let kind = ProfileKind::OffCpu;
                let counted: Vec<(StackKey, u64)> = source
                    .snapshot()?
                    .into_iter()
                    .filter_map(|(key, now)| {
                        let then = baseline.get(&key).copied().unwrap_or(0);
                        let value = shown_value(kind, now.saturating_sub(then));
                        (value > 0).then_some((key, value))
                    })
                    .collect();
                source.collector.profile(
                    &mut self.symbolizer.borrow_mut().0,
                    counted,
                    kind,
                    duration,
                )?
            }
        };
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
    pub fn tidy(&self) -> Result<()> {
        self.spaces.borrow_mut().forget_exited();
        for source in self.sources() {
            source.collector.forget_exited_tables();
        }
        // The CPU history drains its counts and empties its stack maps itself.
        if let Some(offcpu) = &self.offcpu {
            offcpu
                .collector
                .reset_if_full(offcpu.max_stacks, RESET_FILL)?;
        }
        let mut symbolizer = self.symbolizer.borrow_mut();
        if symbolizer.1.elapsed() > SYMBOLIZER_LIFETIME
            || symbolizer.0.cached_addresses() > SYMBOL_CACHE_LIMIT
        {
            *symbolizer = (Symbolizer::new(self.debuginfod.clone()), Instant::now());
        }
        drop(symbolizer);
        // What exited processes held (code objects, perf maps) goes back to
        // the system, not only to the allocator.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        Ok(())
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
