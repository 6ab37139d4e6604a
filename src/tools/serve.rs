//! `bpfscope serve`: an always-on agent for fleets. This first part serves
//! Prometheus metrics (classic text format): run-queue latency and block I/O latency (per disk and
//! operation) histograms, summed in kernel by the runqlat and biolatency
//! programs and read at scrape time, plus the agent's own health (events
//! lost, maps full, memory, CPU). Listens on loopback unless told otherwise;
//! SIGTERM or Ctrl-C detaches everything and exits 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use libbpf_rs::MapCore;

use crate::core::histograms::read_histograms;
use crate::core::loader::object_storage;
use crate::core::stats::RunStats;
use crate::core::target::TargetSpec;
use crate::core::{preflight, signals};
use crate::model::histogram::{Histogram, HistogramKey};
use crate::output::prometheus::{Exposition, Series};
use crate::tools::biolatency::{self, BiolatencyOptions};
use crate::tools::runqlat::{self, RunqlatOptions};

/// Serve metrics for Prometheus.
#[derive(Debug, clap::Args)]
#[command(after_help = "Endpoints: /metrics (Prometheus text exposition).")]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; give 0.0.0.0:PORT to expose it).
    #[arg(long, default_value = "127.0.0.1:9435", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
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

fn http_response(
    status: u16,
    content_type: &str,
    body: String,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("valid header");
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
}

pub fn run(args: ServeArgs) -> Result<()> {
    preflight::check_all()?;
    let server = tiny_http::Server::http(args.listen)
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.listen))?;
    let targets = TargetSpec::default().resolve()?;
    let (mut runqueue_storage, mut block_storage) = (object_storage(), object_storage());
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
        "bpfscope: serving metrics on http://{}/metrics",
        args.listen
    );
    while !signals::stop_requested() {
        let Some(request) = server.recv_timeout(Duration::from_millis(200))? else {
            continue;
        };
        let response = match request.url().split('?').next().unwrap_or("") {
            "/metrics" => match scrape(&maps) {
                Ok(body) => http_response(200, "text/plain; version=0.0.4; charset=utf-8", body),
                Err(error) => http_response(
                    500,
                    "text/plain",
                    format!("reading the kernel maps failed: {error:#}\n"),
                ),
            },
            "/" => http_response(200, "text/plain", "bpfscope: metrics at /metrics\n".into()),
            _ => http_response(404, "text/plain", "not found\n".into()),
        };
        // A client that went away is not the agent's problem.
        let _ = request.respond(response);
    }
    drop(runqueue_links);
    drop(block_links);
    eprintln!("bpfscope: stopping");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
