//! `bpfscope serve`: an always-on agent for fleets.
//! - `/metrics`: Prometheus metrics (classic text format): run-queue latency
//!   and block I/O latency (per disk and operation) histograms, summed in
//!   kernel by the runqlat and biolatency programs and read at scrape time,
//!   plus the agent's own health (events lost, maps full, memory, CPU).
//! - `/debug/pprof/profile?seconds=N` and `/flamegraph.svg?seconds=N`: CPU
//!   profiles of the next N seconds, cut from continuous sampling at `--hz`
//!   (counts are summed in kernel; a window is the difference of two
//!   snapshots). Requests wait in the main loop, so none blocks the others.
//!
//! Listens on loopback unless told otherwise; SIGTERM or Ctrl-C detaches
//! everything and exits 0.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use libbpf_rs::MapCore;

use crate::core::histograms::read_histograms;
use crate::core::loader::object_storage;
use crate::core::process_maps::AddressSpaces;
use crate::core::stack_collection;
use crate::core::stacks::{self, StackKey};
use crate::core::stats::RunStats;
use crate::core::symbolize::Symbolizer;
use crate::core::target::TargetSpec;
use crate::core::{cpus, perf_event, preflight, signals};
use crate::model::histogram::{Histogram, HistogramKey};
use crate::model::profile::ProfileKind;
use crate::output::folded::FoldOptions;
use crate::output::prometheus::{Exposition, Series};
use crate::output::{pprof, svg};
use crate::tools::biolatency::{self, BiolatencyOptions};
use crate::tools::profile::{self, SamplerOptions};
use crate::tools::runqlat::{self, RunqlatOptions};

/// Serve metrics for Prometheus.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Endpoints: /metrics (Prometheus text exposition), /debug/pprof/profile?seconds=N \
(gzipped pprof of the next N seconds, default 30), /flamegraph.svg?seconds=N (default 10)."
)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; give 0.0.0.0:PORT to expose it).
    #[arg(long, default_value = "127.0.0.1:9435", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Continuous CPU sampling frequency, per CPU, in Hz.
    #[arg(long, default_value_t = 19, value_name = "HZ")]
    pub hz: u64,
}

/// Longest profile window a request may ask for.
const MAX_WINDOW_SECONDS: u64 = 300;
/// The in-kernel stack maps are emptied when this full, between windows.
const RESET_FILL: f64 = 0.8;
const STACK_STORAGE: u32 = 16384;
const MAX_STACKS: u32 = 40960;

/// What a profile window is rendered as.
#[derive(Clone, Copy)]
enum WindowFormat {
    Pprof,
    Svg,
}

/// A request waiting for the end of its profile window.
struct Window {
    request: tiny_http::Request,
    format: WindowFormat,
    started: Instant,
    length: Duration,
    baseline: HashMap<StackKey, u64>,
}

/// `seconds=N` from a query string.
fn window_seconds(url: &str, default: u64) -> Result<u64, String> {
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

/// The kernel maps a scrape reads.
struct KernelMaps<'a> {
    runqueue_hists: &'a dyn MapCore,
    runqueue_total: &'a dyn MapCore,
    runqueue_stats: &'a dyn MapCore,
    block_hists: &'a dyn MapCore,
    block_total: &'a dyn MapCore,
    block_stats: &'a dyn MapCore,
}

/// "vda Write"-style biolatency keys (disk, then normalized flags) become
/// (disk, operation) series; sync/meta variants of an operation are summed.
fn block_series(histograms: Vec<(HistogramKey, Histogram)>) -> Vec<Series> {
    let mut by_labels: BTreeMap<(String, String), Histogram> = BTreeMap::new();
    for (key, histogram) in histograms {
        let HistogramKey::Keyed { id, name } = key else {
            continue;
        };
        let operation = biolatency::describe_flags(id & 0xff).to_lowercase();
        by_labels
            .entry((name, operation))
            .or_default()
            .merge(&histogram);
    }
    by_labels
        .into_iter()
        .map(|((disk, operation), histogram)| Series {
            labels: vec![("disk".into(), disk), ("operation".into(), operation)],
            histogram,
        })
        .collect()
}

/// Resident memory (bytes) and CPU time (seconds) of this process.
fn own_usage() -> (u64, f64) {
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf and getrusage only fill in plain values.
    let (page_size, cpu_seconds) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (
            libc::sysconf(libc::_SC_PAGESIZE) as u64,
            seconds(usage.ru_utime) + seconds(usage.ru_stime),
        )
    };
    (rss_pages * page_size, cpu_seconds)
}

/// The exposition of one scrape, read from the kernel now.
fn scrape(maps: &KernelMaps) -> Result<String> {
    let mut exposition = Exposition::default();
    let runqueue: Vec<Series> = read_histograms(maps.runqueue_hists, maps.runqueue_total, false)?
        .into_iter()
        .map(|(_, histogram)| Series {
            labels: Vec::new(),
            histogram,
        })
        .collect();
    exposition.microsecond_histograms(
        "bpfscope_runqueue_latency_seconds",
        "Time tasks waited on a run queue, from becoming runnable to running.",
        &runqueue,
    );
    exposition.microsecond_histograms(
        "bpfscope_block_io_latency_seconds",
        "Block I/O latency from issue to completion, per disk and operation.",
        &block_series(read_histograms(maps.block_hists, maps.block_total, false)?),
    );
    let stats = [
        RunStats::read(maps.runqueue_stats)?,
        RunStats::read(maps.block_stats)?,
    ];
    let lost: u64 = stats.iter().map(|s| s.notifications_lost).sum();
    let full: u64 = stats
        .iter()
        .map(|s| s.counts_full + s.stack_map_full + s.stack_collisions)
        .sum();
    exposition.counter(
        "bpfscope_events_lost_total",
        "Events lost because a ring buffer was full.",
        lost as f64,
    );
    exposition.counter(
        "bpfscope_maps_full_total",
        "Events dropped because a BPF map was full.",
        full as f64,
    );
    let (rss, cpu) = own_usage();
    exposition.gauge(
        "bpfscope_resident_memory_bytes",
        "Resident memory of the bpfscope agent.",
        rss as f64,
    );
    exposition.counter(
        "bpfscope_cpu_seconds_total",
        "CPU time used by the bpfscope agent itself (user and system).",
        cpu,
    );
    Ok(exposition.finish())
}

fn http_bytes(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("valid header");
    tiny_http::Response::from_data(body)
        .with_status_code(status)
        .with_header(header)
}

fn http_response(
    status: u16,
    content_type: &str,
    body: String,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    http_bytes(status, content_type, body.into_bytes())
}

/// The continuous CPU sampler and what symbolizing its stacks needs.
struct Sampler<'a> {
    /// Kept across windows: its caches (kernel symbols, ELF files) are loaded once.
    symbolizer: RefCell<Symbolizer>,
    counts: &'a dyn MapCore,
    stacks: &'a dyn MapCore,
    spaces: &'a RefCell<AddressSpaces>,
    hz: u64,
}

impl Sampler<'_> {
    fn snapshot(&self) -> Result<HashMap<StackKey, u64>> {
        Ok(stacks::read_counts(self.counts)?.into_iter().collect())
    }

    /// The profile of a finished window: counts now minus counts then.
    fn window_profile(&self, window: &Window) -> Result<Vec<u8>> {
        let counted: Vec<(StackKey, u64)> = stacks::read_counts(self.counts)?
            .into_iter()
            .filter_map(|(key, now)| {
                let then = window.baseline.get(&key).copied().unwrap_or(0);
                (now > then).then(|| (key, now - then))
            })
            .collect();
        let duration = window.started.elapsed();
        let mut spaces = self.spaces.borrow_mut();
        let profile = stack_collection::profile_from_counts(
            &mut self.symbolizer.borrow_mut(),
            counted,
            self.stacks,
            &mut spaces,
            ProfileKind::Cpu { hz: self.hz },
            duration,
        )?;
        Ok(match window.format {
            WindowFormat::Pprof => pprof::render(&profile)?,
            WindowFormat::Svg => {
                let subtitle = format!(
                    "{:.1} s at {} Hz on {}, from bpfscope serve",
                    duration.as_secs_f64(),
                    self.hz,
                    stack_collection::hostname()
                );
                svg::render(&profile, FoldOptions::default(), &subtitle)?
            }
        })
    }

    /// Empties the stack maps when nearly full (only between windows, so no
    /// window's baseline is lost): kernel memory stays flat.
    fn reset_if_full(&self) -> Result<()> {
        let keys: Vec<Vec<u8>> = self.counts.keys().collect();
        if (keys.len() as f64) < RESET_FILL * MAX_STACKS as f64 {
            return Ok(());
        }
        for key in keys {
            self.counts.delete(&key).ok();
        }
        for key in self.stacks.keys().collect::<Vec<_>>() {
            self.stacks.delete(&key).ok();
        }
        Ok(())
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    perf_event::check_frequency(args.hz)?;
    preflight::check_all()?;
    let server = tiny_http::Server::http(args.listen)
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.listen))?;
    let targets = TargetSpec::default().resolve()?;
    let (mut runqueue_storage, mut block_storage, mut sampler_storage) =
        (object_storage(), object_storage(), object_storage());
    let runqueue_options = RunqlatOptions {
        unit_ns: 1000,
        per_process: false,
        per_thread: false,
    };
    let (runqueue, runqueue_links) =
        runqlat::attach(&mut runqueue_storage, &targets, &runqueue_options)?;
    let block_options = BiolatencyOptions {
        unit_ns: 1000,
        queued: false,
        per_disk: true,
        per_flags: true,
    };
    let (block, block_links) = biolatency::attach(&mut block_storage, &targets, &block_options)?;
    let sampler_options = SamplerOptions {
        frequency: args.hz,
        cpus: cpus::online_cpus()?,
        capture_user: true,
        capture_kernel: true,
        include_idle: false,
        per_thread: false,
        stack_storage_size: STACK_STORAGE,
        max_stacks: MAX_STACKS,
    };
    let (profiler, profiler_links) =
        profile::attach(&mut sampler_storage, &targets, &sampler_options)?;
    let spaces = RefCell::new(AddressSpaces::default());
    let ring = stack_collection::address_space_ring(&profiler.maps.address_space_events, &spaces)?;
    let sampler = Sampler {
        symbolizer: RefCell::new(Symbolizer::new()),
        counts: &profiler.maps.counts,
        stacks: &profiler.maps.stacks,
        spaces: &spaces,
        hz: args.hz,
    };
    let maps = KernelMaps {
        runqueue_hists: &runqueue.maps.hists,
        runqueue_total: &runqueue.maps.total_hist,
        runqueue_stats: &runqueue.maps.stats,
        block_hists: &block.maps.hists,
        block_total: &block.maps.total_hist,
        block_stats: &block.maps.stats,
    };

    signals::install();
    eprintln!(
        "bpfscope: serving on http://{} (/metrics, /debug/pprof/profile, /flamegraph.svg)",
        args.listen
    );
    let mut windows: Vec<Window> = Vec::new();
    let mut last_reset_check = Instant::now();
    while !signals::stop_requested() {
        ring.consume_raw();
        // Answer the windows that have ended.
        let (done, waiting): (Vec<Window>, Vec<Window>) = windows
            .into_iter()
            .partition(|w| w.started.elapsed() >= w.length);
        windows = waiting;
        for window in done {
            let response = match sampler.window_profile(&window) {
                Ok(body) => match window.format {
                    WindowFormat::Pprof => http_bytes(200, "application/octet-stream", body),
                    WindowFormat::Svg => http_bytes(200, "image/svg+xml", body),
                },
                Err(error) => http_response(
                    500,
                    "text/plain",
                    format!("building the profile failed: {error:#}\n"),
                ),
            };
            let _ = window.request.respond(response);
            // Symbolizing allocates a lot briefly: give it back, so memory stays flat.
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe { libc::malloc_trim(0) };
        }
        if windows.is_empty() && last_reset_check.elapsed() >= Duration::from_secs(10) {
            // No window is open, so no snapshot of an exited process can still be needed.
            spaces.borrow_mut().forget_exited();
            sampler.reset_if_full()?;
            last_reset_check = Instant::now();
        }

        let Some(request) = server.recv_timeout(Duration::from_millis(100))? else {
            continue;
        };
        let url = request.url().to_string();
        let window_format = match url.split('?').next().unwrap_or("") {
            "/debug/pprof/profile" => Some((WindowFormat::Pprof, 30)),
            "/flamegraph.svg" => Some((WindowFormat::Svg, 10)),
            _ => None,
        };
        if let Some((format, default_seconds)) = window_format {
            match window_seconds(&url, default_seconds) {
                Ok(seconds) => windows.push(Window {
                    request,
                    format,
                    started: Instant::now(),
                    length: Duration::from_secs(seconds),
                    baseline: sampler.snapshot()?,
                }),
                Err(message) => {
                    let _ = request.respond(http_response(400, "text/plain", message));
                }
            }
            continue;
        }
        let response = match url.split('?').next().unwrap_or("") {
            "/metrics" => match scrape(&maps) {
                Ok(body) => http_response(200, "text/plain; version=0.0.4; charset=utf-8", body),
                Err(error) => http_response(
                    500,
                    "text/plain",
                    format!("reading the kernel maps failed: {error:#}\n"),
                ),
            },
            "/" => http_response(
                200,
                "text/plain",
                "bpfscope: /metrics, /debug/pprof/profile?seconds=N, /flamegraph.svg?seconds=N\n"
                    .into(),
            ),
            _ => http_response(404, "text/plain", "not found\n".into()),
        };
        // A client that went away is not the agent's problem.
        let _ = request.respond(response);
    }
    drop(profiler_links);
    drop(runqueue_links);
    drop(block_links);
    eprintln!("bpfscope: stopping");
    Ok(())
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

    #[test]
    fn block_series_group_by_disk_and_operation() {
        let one = |count| Histogram {
            slots: vec![count],
            count,
            sum: count,
        };
        let series = block_series(vec![
            (
                HistogramKey::Keyed {
                    id: 1,
                    name: "vda".into(),
                },
                one(2),
            ),
            (
                HistogramKey::Keyed {
                    id: 1 | 1 << 8,
                    name: "vda".into(),
                },
                one(3),
            ),
            (
                HistogramKey::Keyed {
                    id: 0,
                    name: "vda".into(),
                },
                one(1),
            ),
        ]);
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[1].labels,
            vec![
                ("disk".to_string(), "vda".to_string()),
                ("operation".to_string(), "write".to_string())
            ]
        );
        assert_eq!(series[1].histogram.count, 5);
    }
}
