//! The histogram runner: runs a histogram tool's collection and prints its
//! report (text or JSON) every interval or once at the end, then the loss
//! summary. Tools supply how to read and label their histograms.

use std::time::Duration;

use anyhow::Result;

use crate::bpf::run_stats::{LossWords, RunStats};
use crate::engine::run::{time_of_day, Collection};
use crate::host::target::Targets;
use crate::model::histogram::{Histogram, HistogramKey, HistogramReport, Scale};
use crate::output::histogram::{render_json, render_text};
use crate::output::write_stdout;

/// How and how often a histogram tool reports (BCC's `[INTERVAL [COUNT]]`,
/// `-T`, `--json`).
pub struct ReportOptions {
    /// A report every this long (None: once, at the end).
    pub interval: Option<Duration>,
    /// Stop after this many reports.
    pub count: Option<u64>,
    pub timestamp: bool,
    pub json: bool,
}
/// Renders histograms as the tool's report (text or JSON, per `options`);
/// returns it with the number of events it covers.
pub fn render_histograms(
    tool: &str,
    options: &ReportOptions,
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
    let text = if options.json {
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
    options: &ReportOptions,
    targets: &Targets,
    mut report: impl FnMut(bool, Option<&str>) -> Result<(String, u64)>,
    stats: impl Fn() -> Result<RunStats>,
) -> Result<()> {
    let interval = options.interval;
    let mut events = 0u64;
    let mut print = |clear: bool| -> Result<()> {
        let time = options.timestamp.then(time_of_day);
        let (text, covered) = report(clear, time.as_deref())?;
        events += covered;
        write_stdout(text.as_bytes())
    };
    let mut tick_error = None;
    let stop = Collection {
        // COUNT reports; an absurdly long run is simply open-ended.
        duration: interval
            .zip(options.count)
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
        stats()?.loss_summary(&LossWords::NO_SIZE_FLAGS)
    );
    Ok(())
}
