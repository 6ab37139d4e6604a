//! What `/metrics` and the live page show: the latency histograms of the
//! selected sources, read from the kernel maps at request time, labelled
//! (per cgroup with `--cgroup-labels`) and capped at `--max-series` series
//! per family, plus off-CPU time and the agent's own health.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::decode::{describe_block_flags, fs_operation_name};
use crate::bpf::histogram_maps::{delete_cgroup_keys, read_histograms, read_histograms_by_cgroup};
use crate::bpf::program_stats;
use crate::bpf::run_stats::{RunStats, UnwindStats};
use crate::host::cgroup_names::CgroupNames;
use crate::host::containers::container_of_cgroup;
use crate::host::memory_budget::{budget, KindUsage};
use crate::layouts::{self, hist_key, uw_row};
use crate::model::histogram::{Histogram, HistogramKey, HistogramReport, Scale};
use crate::output::histogram::render_text;
use crate::output::prometheus::{Exposition, Sample, Series};

use super::http::HttpCounters;

/// A histogram tool's maps: keyed histograms and the per-CPU total.
pub struct HistogramMaps<'a> {
    pub hists: &'a dyn MapCore,
    pub total: &'a dyn MapCore,
}

/// The kernel maps and programs of the attached sources.
#[derive(Default)]
pub struct Sources<'a> {
    pub runqueue: Option<HistogramMaps<'a>>,
    pub block: Option<HistogramMaps<'a>>,
    pub filesystem: Option<HistogramMaps<'a>>,
    pub connect: Option<HistogramMaps<'a>>,
    /// Off-CPU nanoseconds per cgroup id.
    pub offcpu_by_cgroup: Option<&'a dyn MapCore>,
    /// Every loaded object's `stats` map.
    pub stats: Vec<&'a dyn MapCore>,
    /// (tool, program, descriptor) of every loaded program.
    pub programs: Vec<(&'static str, String, OwnedFd)>,
}

/// One histogram family as read now.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// Heading on the live page.
    pub title: &'static str,
    pub series: Vec<Series>,
    /// Series folded into the `other` series by `--max-series`.
    pub folded: usize,
}

/// Reads and labels what the sources measured.
pub struct Metrics {
    cgroup_labels: bool,
    max_series: usize,
    /// Whether the kernel counts BPF program run time.
    run_time_counted: bool,
    names: CgroupNames,
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// At most `max` items: the `max - 1` heaviest and one that `fold` makes of
/// the rest. Returns the items and how many were folded.
fn keep_heaviest<T>(
    mut items: Vec<T>,
    max: usize,
    weight: impl Fn(&T) -> u64,
    fold: impl FnOnce(Vec<T>) -> T,
) -> (Vec<T>, usize) {
    if items.len() <= max {
        return (items, 0);
    }
    items.sort_by_key(|item| std::cmp::Reverse(weight(item)));
    let rest = items.split_off(max.saturating_sub(1));
    let folded = rest.len();
    items.push(fold(rest));
    (items, folded)
}

/// `cgroup`, plus `container_id` and `pod_uid` where the path names a
/// container (host::containers) and its pod.
fn cgroup_labels(path: &str) -> Labels {
    let mut labels = vec![("cgroup".to_string(), path.to_string())];
    if let Some(container) = container_of_cgroup(path).filter(|c| c.runtime != "systemd") {
        labels.push(("container_id".to_string(), container.id));
        if let Some(pod) = container.pod_uid {
            labels.push(("pod_uid".to_string(), pod));
        }
    }
    labels
}

/// At most `max` series: the busiest `max - 1` and one `other` series (every
/// label "other") summing the rest. Returns the series and how many were folded.
fn cap_series(series: Vec<Series>, max: usize) -> (Vec<Series>, usize) {
    keep_heaviest(
        series,
        max,
        |one| one.histogram.count,
        |rest| {
            let mut other = Series {
                labels: rest[0]
                    .labels
                    .iter()
                    .map(|(k, _)| (k.clone(), "other".to_string()))
                    .collect(),
                histogram: Histogram::default(),
            };
            for one in &rest {
                other.histogram.merge(&one.histogram);
            }
            other
        },
    )
}

/// "vda Write"-style biolatency keys (disk, then normalized flags) become
/// (disk, operation) series; sync/meta variants of an operation are summed.
fn block_series(histograms: Vec<(HistogramKey, Histogram)>) -> Vec<Series> {
    let mut by_labels: BTreeMap<Labels, Histogram> = BTreeMap::new();
    for (key, histogram) in histograms {
        let HistogramKey::Keyed { id, name } = key else {
            continue;
        };
        let operation = describe_block_flags(id & 0xff).to_lowercase();
        by_labels
            .entry(labels(&[("disk", &name), ("operation", &operation)]))
            .or_default()
            .merge(&histogram);
    }
    by_labels
        .into_iter()
        .map(|(labels, histogram)| Series { labels, histogram })
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

impl Metrics {
    pub fn new(cgroup_labels: bool, max_series: usize, run_time_counted: bool) -> Self {
        Metrics {
            cgroup_labels,
            max_series,
            run_time_counted,
            names: CgroupNames::default(),
        }
    }

    /// Names the cgroups of `ids`; histograms and totals of cgroups that no
    /// longer exist are deleted from `map` (whose keys' cgroup id
    /// `cgroup_of` reads), so the maps stay bounded under container churn.
    fn cgroup_names(
        &mut self,
        ids: impl IntoIterator<Item = u64>,
        map: &dyn MapCore,
        cgroup_of: fn(&[u8]) -> Option<u64>,
    ) -> Result<HashMap<u64, String>> {
        let resolved = self.names.resolve(ids);
        let gone: HashSet<u64> = resolved
            .iter()
            .filter(|(_, name)| name.is_none())
            .map(|(id, _)| *id)
            .collect();
        if !gone.is_empty() {
            delete_cgroup_keys(map, cgroup_of, &gone);
        }
        Ok(resolved
            .into_iter()
            .filter_map(|(id, name)| Some((id, name?)))
            .collect())
    }

    /// Series of a histogram tool: labels from each key, after the cgroup's
    /// path with `--cgroup-labels`; equal label sets merged.
    fn series(
        &mut self,
        maps: &HistogramMaps,
        key_labels: impl Fn(&HistogramKey) -> Labels,
    ) -> Result<Vec<Series>> {
        let raw = read_histograms_by_cgroup(maps.hists, maps.total, false)?;
        let names = if self.cgroup_labels {
            self.cgroup_names(raw.iter().map(|(id, _, _)| *id), maps.hists, |key| {
                layouts::read::<hist_key>(key).map(|key| key.cgroup)
            })?
        } else {
            HashMap::new()
        };
        let mut merged: BTreeMap<Labels, Histogram> = BTreeMap::new();
        for (cgroup, key, histogram) in raw {
            let mut labels = Vec::new();
            if self.cgroup_labels {
                let Some(name) = names.get(&cgroup) else {
                    continue;
                };
                labels.extend(cgroup_labels(name));
            }
            labels.extend(key_labels(&key));
            merged.entry(labels).or_default().merge(&histogram);
        }
        Ok(merged
            .into_iter()
            .map(|(labels, histogram)| Series { labels, histogram })
            .collect())
    }

    fn family(
        &self,
        name: &'static str,
        help: &'static str,
        title: &'static str,
        series: Vec<Series>,
    ) -> Family {
        let (series, folded) = cap_series(series, self.max_series);
        Family {
            name,
            help,
            title,
            series,
            folded,
        }
    }

    /// Every histogram family of the attached sources, read now.
    pub fn families(&mut self, sources: &Sources) -> Result<Vec<Family>> {
        let mut families = Vec::new();
        if let Some(maps) = &sources.runqueue {
            let series = self.series(maps, |_| Vec::new())?;
            families.push(self.family(
                "bpfscope_runqueue_latency_seconds",
                "Time tasks waited on a run queue, from becoming runnable to running.",
                "Run-queue latency",
                series,
            ));
        }
        if let Some(maps) = &sources.block {
            // Completions run in interrupt context: no cgroup to label them with.
            let series = block_series(read_histograms(maps.hists, maps.total, false)?);
            families.push(self.family(
                "bpfscope_block_io_latency_seconds",
                "Block I/O latency from issue to completion, per disk and operation.",
                "Block I/O latency",
                series,
            ));
        }
        if let Some(maps) = &sources.filesystem {
            let series = self.series(maps, |key| match key {
                HistogramKey::Keyed { id, name } => {
                    labels(&[("fstype", name), ("operation", fs_operation_name(*id))])
                }
                _ => Vec::new(),
            })?;
            families.push(self.family(
                "bpfscope_filesystem_latency_seconds",
                "Latency of read, write, open and fsync on regular files, per filesystem type and operation.",
                "File system operation latency",
                series,
            ));
        }
        if let Some(maps) = &sources.connect {
            let series = self.series(maps, |_| Vec::new())?;
            families.push(self.family(
                "bpfscope_tcp_connect_latency_seconds",
                "Active TCP connect latency, from SYN sent to established.",
                "TCP connect latency",
                series,
            ));
        }
        Ok(families)
    }

    /// Off-CPU seconds, per cgroup with `--cgroup-labels`, else one total.
    fn offcpu_samples(&mut self, map: &dyn MapCore) -> Result<(Vec<Sample>, usize)> {
        let mut by_id: Vec<(u64, u64)> = Vec::new();
        for key in map.keys() {
            let value = map.lookup(&key, MapFlags::ANY)?;
            if let (Some(id), Some(ns)) = (
                layouts::read::<u64>(&key),
                value.and_then(|value| layouts::read::<u64>(&value)),
            ) {
                by_id.push((id, ns));
            }
        }
        if !self.cgroup_labels {
            let total: u64 = by_id.iter().map(|(_, ns)| ns).sum();
            return Ok((vec![(Vec::new(), total as f64 / 1e9)], 0));
        }
        let names =
            self.cgroup_names(by_id.iter().map(|(id, _)| *id), map, layouts::read::<u64>)?;
        let mut samples: Vec<(String, u64)> = by_id
            .into_iter()
            .filter_map(|(id, ns)| Some((names.get(&id)?.clone(), ns)))
            .collect();
        samples.sort_by_key(|(_, ns)| std::cmp::Reverse(*ns));
        let (samples, folded) = keep_heaviest(
            samples,
            self.max_series,
            |(_, ns)| *ns,
            |rest| ("other".to_string(), rest.iter().map(|(_, ns)| ns).sum()),
        );
        Ok((
            samples
                .into_iter()
                .map(|(cgroup, ns)| (cgroup_labels(&cgroup), ns as f64 / 1e9))
                .collect(),
            folded,
        ))
    }

    /// The `/metrics` exposition, read from the kernel now.
    /// The exposition; `unwind_rows` is the rows the profiles' table unwinders hold.
    pub fn scrape(
        &mut self,
        sources: &Sources,
        unwind_rows: u64,
        http: &HttpCounters,
    ) -> Result<String> {
        let mut exposition = Exposition::default();
        let mut folded: Vec<Sample> = Vec::new();
        for family in self.families(sources)? {
            exposition.microsecond_histograms(family.name, family.help, &family.series);
            folded.push((labels(&[("metric", family.name)]), family.folded as f64));
        }
        if let Some(map) = sources.offcpu_by_cgroup {
            let (samples, folded_cgroups) = self.offcpu_samples(map)?;
            let name = "bpfscope_offcpu_seconds_total";
            exposition.samples(
                name,
                "Time threads spent blocked (switched out and not runnable, or preempted).",
                "counter",
                &samples,
            );
            folded.push((labels(&[("metric", name)]), folded_cgroups as f64));
        }

        let stats = sources
            .stats
            .iter()
            .map(|map| RunStats::read(*map))
            .collect::<Result<Vec<_>>>()?;
        exposition.counter(
            "bpfscope_events_lost_total",
            "Events lost because a ring buffer was full.",
            stats.iter().map(|s| s.notifications_lost).sum::<u64>() as f64,
        );
        exposition.counter(
            "bpfscope_maps_full_total",
            "Events dropped because a BPF map was full.",
            stats
                .iter()
                .map(|s| s.counts_full + s.stack_map_full + s.stack_collisions)
                .sum::<u64>() as f64,
        );
        exposition.samples(
            "bpfscope_series_folded",
            "Series folded into one labelled \"other\" at this scrape because of --max-series.",
            "gauge",
            &folded,
        );
        if self.run_time_counted {
            let mut seconds = Vec::new();
            let mut runs = Vec::new();
            for (tool, program, fd) in &sources.programs {
                let (ns, count) = program_stats::run_time(fd.as_fd())?;
                let labels = labels(&[("tool", tool), ("program", program)]);
                seconds.push((labels.clone(), ns as f64 / 1e9));
                runs.push((labels, count as f64));
            }
            exposition.samples(
                "bpfscope_bpf_program_run_seconds_total",
                "Time the agent's BPF programs ran, as the kernel counts it.",
                "counter",
                &seconds,
            );
            exposition.samples(
                "bpfscope_bpf_program_runs_total",
                "Times the agent's BPF programs ran.",
                "counter",
                &runs,
            );
        }
        let mut unwind = UnwindStats::default();
        for one in &stats {
            unwind.add(&one.unwind);
        }
        let by_result = |ends: [(&str, u64); 6]| -> Vec<Sample> {
            ends.iter()
                .map(|(reason, count)| (labels(&[("result", reason)]), *count as f64))
                .collect()
        };
        let walks = by_result(unwind.by_reason());
        exposition.samples(
            "bpfscope_unwind_walks_total",
            "User-stack walks with unwind tables, by how they ended (complete: reached the outermost frame).",
            "counter",
            &walks,
        );
        let jit_walks = by_result(unwind.through_jit_by_reason());
        exposition.samples(
            "bpfscope_unwind_jit_walks_total",
            "Of those walks, the ones that went through JIT code (no file mapping) by frame pointers, by how they ended.",
            "counter",
            &jit_walks,
        );
        exposition.counter(
            "bpfscope_unwind_before_tables_total",
            "User stacks walked by frame pointers because their process's unwind tables were not loaded yet (its first samples).",
            unwind.before_tables as f64,
        );
        exposition.gauge(
            "bpfscope_unwind_table_bytes",
            "Kernel memory holding unwind tables in use (16 bytes per row).",
            (unwind_rows * std::mem::size_of::<uw_row>() as u64) as f64,
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
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        exposition.gauge(
            "bpfscope_http_connections_open",
            "HTTP connections the agent holds now (at most --web.max-connections).",
            count(&http.connections_open),
        );
        exposition.samples(
            "bpfscope_http_connections_rejected_total",
            "HTTP connections (requests, for unauthorized) turned away, by why: over --web.max-connections, closed to make room before sending a request, accept failed (out of descriptors), TLS handshake failed or timed out, no valid credentials, a client's password attempts over its limit (429).",
            "counter",
            &[
                ("limit", &http.connections_refused),
                ("evicted_before_request", &http.evicted),
                ("accept_failed", &http.accept_errors),
                ("tls_failed", &http.tls_handshakes_failed),
                ("unauthorized", &http.unauthorized),
                ("auth_rate_limited", &http.auth_rate_limited),
            ]
            .map(|(reason, counter)| (labels(&[("reason", reason)]), count(counter))),
        );
        let usage = budget().usage();
        let by_kind = |value: fn(&KindUsage) -> u64| -> Vec<Sample> {
            usage
                .iter()
                .map(|kind| (labels(&[("kind", kind.kind.name())]), value(kind) as f64))
                .collect()
        };
        exposition.samples(
            "bpfscope_memory_budget_bytes",
            "Memory held under the memory budget (--memory-budget), by kind of item.",
            "gauge",
            &by_kind(|kind| kind.bytes),
        );
        exposition.samples(
            "bpfscope_memory_budget_refused_total",
            "Items dropped because they would have passed their limit or the memory budget's total, by kind: their frames show [unknown] or lose lines.",
            "counter",
            &by_kind(|kind| kind.refused),
        );
        Ok(exposition.finish())
    }

    /// The histogram families as BCC-style text, for the live page.
    pub fn histogram_text(&mut self, sources: &Sources) -> Result<String> {
        let mut text = String::new();
        for family in self.families(sources)? {
            let histograms = family
                .series
                .into_iter()
                .map(|series| {
                    let key = if series.labels.is_empty() {
                        HistogramKey::Total
                    } else {
                        let described: Vec<String> = series
                            .labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        HistogramKey::Named(described.join(" "))
                    };
                    (key, series.histogram)
                })
                .collect();
            text.push_str(&format!("{}\n", family.title));
            text.push_str(&render_text(&HistogramReport {
                unit: "usecs",
                scale: Scale::Log2,
                key_name: "series",
                histograms,
            }));
            text.push('\n');
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, count: u64) -> Series {
        Series {
            labels: labels(&[("cgroup", name), ("operation", "read")]),
            histogram: Histogram {
                slots: vec![count],
                count,
                sum: count,
            },
        }
    }

    #[test]
    fn series_beyond_the_cap_fold_into_other() {
        let all = vec![
            series("a", 1),
            series("b", 5),
            series("c", 3),
            series("d", 2),
        ];
        let (capped, folded) = cap_series(all, 3);
        assert_eq!(folded, 2);
        let names: Vec<&str> = capped.iter().map(|s| s.labels[0].1.as_str()).collect();
        assert_eq!(names, ["b", "c", "other"]);
        assert_eq!(capped[2].labels[1].1, "other");
        assert_eq!(capped[2].histogram.count, 3);
        let (uncapped, none) = cap_series(vec![series("a", 1)], 3);
        assert_eq!((uncapped.len(), none), (1, 0));
    }

    #[test]
    fn block_series_group_by_disk_and_operation() {
        let one = |count| Histogram {
            slots: vec![count],
            count,
            sum: count,
        };
        let keyed = |id| HistogramKey::Keyed {
            id,
            name: "vda".into(),
        };
        let series = block_series(vec![
            (keyed(1), one(2)),
            (keyed(1 | 1 << 8), one(3)),
            (keyed(0), one(1)),
        ]);
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[1].labels,
            labels(&[("disk", "vda"), ("operation", "write")])
        );
        assert_eq!(series[1].histogram.count, 5);
    }
}
