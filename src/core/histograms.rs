//! What the histogram tools share: reading (and, between intervals,
//! clearing) the in-kernel histograms of histogram.h, the common flags
//! (`[INTERVAL [COUNT]]`, `-T`, `-m`, `--json`) and the loop that prints one
//! report per interval.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::core::c_string;
use crate::core::run::Collection;
use crate::core::stats::RunStats;
use crate::core::target::{TargetSpec, Targets};
use crate::model::histogram::{Histogram, HistogramKey, HistogramReport, Scale};
use crate::output::histogram::{render_json, render_text};
use crate::output::write_stdout;

/// `HIST_SLOTS` in histogram.h.
const HIST_SLOTS: usize = 40;
/// sizeof(struct hist) and sizeof(struct hist_key).
const HIST_SIZE: usize = HIST_SLOTS * 8 + 16;
pub const KEY_SIZE: usize = 32;

/// Flags every histogram tool takes (BCC's conventions).
#[derive(Debug, clap::Args)]
pub struct HistogramArgs {
    /// Only these processes (comma-separated PIDs).
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only tasks in this cgroup v2 directory (and below it); absolute or relative to the cgroup2 mount.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Print a timestamp before each interval's output.
    #[arg(short = 'T', long = "timestamp")]
    pub timestamp: bool,
    /// Millisecond histograms (default: microseconds).
    #[arg(short = 'm', long = "milliseconds")]
    pub milliseconds: bool,
    /// Print JSON, one object per interval, instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print a report every INTERVAL seconds (default: once, at Ctrl-C).
    #[arg(value_name = "INTERVAL")]
    pub interval: Option<u64>,
    /// Stop after COUNT reports.
    #[arg(value_name = "COUNT")]
    pub count: Option<u64>,
}

impl HistogramArgs {
    pub fn validate(&self) -> Result<()> {
        if self.interval == Some(0) {
            bail!("bad interval 0: give a number of seconds greater than 0");
        }
        if self.count == Some(0) {
            bail!("bad count 0: give a number of reports greater than 0");
        }
        Ok(())
    }

    pub fn target_spec(&self, tids: &[u32]) -> TargetSpec {
        TargetSpec {
            pids: self.pids.clone(),
            tids: tids.to_vec(),
            cgroup: self.cgroup.clone(),
            command: Vec::new(),
        }
    }

    /// Nanoseconds per histogram unit, for the BPF side.
    pub fn unit_ns(&self) -> u64 {
        if self.milliseconds {
            1_000_000
        } else {
            1_000
        }
    }

    /// The unit and scale of latency histograms.
    pub fn latency_unit(&self) -> (&'static str, Scale) {
        (
            if self.milliseconds { "msecs" } else { "usecs" },
            Scale::Log2,
        )
    }
}

fn parse_hist(bytes: &[u8]) -> Histogram {
    let word = |index: usize| {
        u64::from_ne_bytes(bytes[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
    };
    Histogram {
        slots: (0..HIST_SLOTS).map(word).collect(),
        count: word(HIST_SLOTS),
        sum: word(HIST_SLOTS + 1),
    }
}

/// Mirrors `struct hist_key` in histogram.h: an id, a cgroup id and a name.
pub fn parse_key(bytes: &[u8]) -> HistogramKey {
    HistogramKey::Keyed {
        id: u64::from_ne_bytes(bytes[0..8].try_into().expect("8 bytes")),
        name: c_string(&bytes[16..KEY_SIZE]),
    }
}

/// The cgroup v2 id of a `struct hist_key` (0 unless keyed by cgroup).
fn key_cgroup(bytes: &[u8]) -> u64 {
    u64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes"))
}

/// Reads the keyed histograms (`hists`) and the per-CPU total
/// (`total_hist`), emptying them when `clear` (interval mode).
pub fn read_histograms(
    hists: &dyn MapCore,
    total: &dyn MapCore,
    clear: bool,
) -> Result<Vec<(HistogramKey, Histogram)>> {
    Ok(read_histograms_by_cgroup(hists, total, clear)?
        .into_iter()
        .map(|(_, key, histogram)| (key, histogram))
        .collect())
}

/// As `read_histograms`, with each histogram's cgroup id (0 for the total
/// and for programs not keyed by cgroup).
pub fn read_histograms_by_cgroup(
    hists: &dyn MapCore,
    total: &dyn MapCore,
    clear: bool,
) -> Result<Vec<(u64, HistogramKey, Histogram)>> {
    let mut histograms = Vec::new();
    for key in hists.keys().collect::<Vec<_>>() {
        let value = if clear {
            hists.lookup_and_delete(&key)?
        } else {
            hists.lookup(&key, MapFlags::ANY)?
        };
        if let Some(value) = value.filter(|v| v.len() >= HIST_SIZE && key.len() >= KEY_SIZE) {
            histograms.push((key_cgroup(&key), parse_key(&key), parse_hist(&value)));
        }
    }
    let zero = 0u32.to_ne_bytes();
    if let Some(per_cpu) = total.lookup_percpu(&zero, MapFlags::ANY)? {
        let mut sum = Histogram::default();
        for bytes in &per_cpu {
            sum.merge(&parse_hist(bytes));
        }
        if clear {
            let zeros = vec![vec![0u8; HIST_SIZE]; per_cpu.len()];
            total.update_percpu(&zero, &zeros, MapFlags::ANY)?;
        }
        if sum.count > 0 {
            histograms.push((0, HistogramKey::Total, sum));
        }
    }
    Ok(histograms)
}

/// Deletes the entries of `map` whose key holds, at byte `offset`, the id of
/// a cgroup in `gone` (histograms and totals of removed cgroups).
pub fn delete_cgroup_keys(map: &dyn MapCore, offset: usize, gone: &HashSet<u64>) {
    for key in map.keys().collect::<Vec<_>>() {
        let id = key
            .get(offset..offset + 8)
            .map(|bytes| u64::from_ne_bytes(bytes.try_into().expect("8 bytes")));
        if id.is_some_and(|id| gone.contains(&id)) {
            // A key deleted meanwhile needs no deleting.
            map.delete(&key).ok();
        }
    }
}

/// The wall-clock time of day, "HH:MM:SS" (local time), for -T.
pub fn time_of_day() -> String {
    // SAFETY: time and localtime_r only fill the structures they are given.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut parts: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut parts);
        format!(
            "{:02}:{:02}:{:02}",
            parts.tm_hour, parts.tm_min, parts.tm_sec
        )
    }
}

/// Renders histograms as the tool's report (text or JSON, per `args`);
/// returns it with the number of events it covers.
pub fn render_histograms(
    tool: &str,
    args: &HistogramArgs,
    key_name: &'static str,
    (unit, scale): (&'static str, Scale),
    histograms: Vec<(HistogramKey, Histogram)>,
    time: Option<&str>,
) -> (String, u64) {
    let events = histograms.iter().map(|(_, hist)| hist.count).sum();
    let report = HistogramReport {
        unit,
        scale,
        key_name,
        histograms,
    };
    let text = if args.json {
        render_json(tool, &report, time)
    } else {
        let mut text = time.map(|time| format!("{time}\n")).unwrap_or_default();
        text.push_str(&render_text(&report));
        text.push('\n');
        text
    };
    (text, events)
}

/// Runs a summarizing tool's collection: prints a report every interval (or
/// once at the end) and the loss summary on stderr when it stops.
/// `report(clear, time)` reads the kernel's summary (emptying it when
/// `clear`) and returns the rendered report and how many events it covers.
pub fn report_until_stopped(
    tool: &str,
    args: &HistogramArgs,
    targets: &Targets,
    mut report: impl FnMut(bool, Option<&str>) -> Result<(String, u64)>,
    stats: impl Fn() -> Result<RunStats>,
) -> Result<()> {
    let interval = args.interval.map(Duration::from_secs);
    let mut events = 0u64;
    let mut print = |clear: bool| -> Result<()> {
        let time = args.timestamp.then(time_of_day);
        let (text, covered) = report(clear, time.as_deref())?;
        events += covered;
        write_stdout(text.as_bytes())
    };
    let mut tick_error = None;
    let stop = Collection {
        // COUNT reports; an absurdly long run is simply open-ended.
        duration: interval
            .zip(args.count)
            .and_then(|(every, count)| every.checked_mul(u32::try_from(count).ok()?)),
        command: None,
        targets,
        ring: None,
        activity: tool,
        after_poll: None,
    }
    .run_with_ticks(interval, &mut || {
        if let Err(error) = print(true) {
            tick_error.get_or_insert(error);
        }
    });
    if let Some(error) = tick_error {
        return Err(error);
    }
    // The last (possibly partial) interval, or the whole run without one.
    print(interval.is_some())?;
    if let Some(message) = stop.describe() {
        eprintln!("bpfscope: {message}");
    }
    eprintln!(
        "bpfscope: {tool}: {events} events{}",
        stats()?.loss_summary()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hist_and_key_layouts() {
        let mut raw = Vec::new();
        for slot in 0..HIST_SLOTS as u64 {
            raw.extend((slot % 3).to_ne_bytes());
        }
        raw.extend(39u64.to_ne_bytes());
        raw.extend(1234u64.to_ne_bytes());
        let hist = parse_hist(&raw);
        assert_eq!(hist.slots.len(), HIST_SLOTS);
        assert_eq!(hist.slots[4], 1);
        assert_eq!((hist.count, hist.sum), (39, 1234));

        let mut key = 77u64.to_ne_bytes().to_vec();
        key.extend(4242u64.to_ne_bytes());
        let mut name = [0u8; 16];
        name[..3].copy_from_slice(b"sda");
        key.extend(name);
        assert_eq!(key.len(), KEY_SIZE);
        assert_eq!(
            parse_key(&key),
            HistogramKey::Keyed {
                id: 77,
                name: "sda".into()
            }
        );
        assert_eq!(key_cgroup(&key), 4242);
    }
}
