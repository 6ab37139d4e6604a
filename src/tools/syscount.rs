//! `bpfscope syscount`: syscalls counted in kernel, by syscall or process,
//! with total latency (`-L`) or a latency histogram per syscall (`--hist`,
//! BCC's syslat).

use std::fmt::Write;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};

use crate::bpf::filters::{set_filter_flags, write_target_filters};
use crate::bpf::histogram_maps;
use crate::bpf::loader::{load_with_fallback, object_storage, HookFlavor, TRACEPOINT_FLAVORS};
use crate::bpf::preflight;
use crate::bpf::run_stats::RunStats;
use crate::engine::histogram;
use crate::host::signals;
use crate::host::syscall_table;
use crate::layouts::{self, c_string, hist_key, syscall_total};
use crate::model::histogram::HistogramKey;
use crate::tools::flags::HistogramArgs;
use serde_json::{json, Map, Value};

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/syscount.skel.rs"));
}
use skel::SyscountSkelBuilder;

/// Count syscalls, with their latency.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bpfscope syscount              top 10 syscalls until Ctrl-C\n  bpfscope syscount -L -P 5 1    top processes by syscall time, one 5 s report\n  bpfscope syscount --hist -p 1234  latency histogram per syscall"
)]
pub struct SyscountArgs {
    /// Count by process instead of by syscall.
    #[arg(short = 'P', long = "process", conflicts_with = "histogram")]
    pub per_process: bool,
    /// Also measure total latency (sys_enter to sys_exit).
    #[arg(short = 'L', long = "latency")]
    pub latency: bool,
    /// A latency histogram per syscall (BCC's syslat) instead of counts.
    #[arg(long = "hist")]
    pub histogram: bool,
    /// Only failed syscalls (negative return value).
    #[arg(short = 'x', long = "failures")]
    pub failures: bool,
    /// Print only the top N rows.
    #[arg(long = "top", default_value_t = 10, value_name = "N")]
    pub top: usize,
    #[command(flatten)]
    pub common: HistogramArgs,
}

/// A syscall number's name.
pub fn syscall_name(number: u64) -> String {
    syscall_table::NAMES
        .get(number as usize)
        .filter(|name| !name.is_empty())
        .map(|name| name.to_string())
        .unwrap_or_else(|| format!("syscall_{number}"))
}

/// One row of the table: a syscall (or process) and its totals.
struct Row {
    id: u64,
    name: String,
    count: u64,
    total_ns: u64,
}

/// Per-process totals (`totals`, keyed by `struct hist_key`: tgid and comm).
fn read_process_rows(totals: &dyn MapCore, clear: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for key in totals.keys().collect::<Vec<_>>() {
        let value = if clear {
            totals.lookup_and_delete(&key)?
        } else {
            totals.lookup(&key, MapFlags::ANY)?
        };
        let (Some(key), Some(total)) = (
            layouts::read::<hist_key>(&key),
            value.and_then(|value| layouts::read::<syscall_total>(&value)),
        ) else {
            continue;
        };
        rows.push(Row {
            id: key.id,
            name: c_string(&key.name),
            count: total.count,
            total_ns: total.total_ns,
        });
    }
    Ok(rows)
}

/// Per-syscall totals (`syscall_totals`, a per-CPU array indexed by number).
fn read_syscall_rows(syscall_totals: &dyn MapCore, clear: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for number in 0..syscall_totals.max_entries() {
        let key = number.to_ne_bytes();
        let Some(per_cpu) = syscall_totals.lookup_percpu(&key, MapFlags::ANY)? else {
            continue;
        };
        let totals: Vec<syscall_total> = per_cpu
            .iter()
            .filter_map(|bytes| layouts::read::<syscall_total>(bytes))
            .collect();
        let count: u64 = totals.iter().map(|total| total.count).sum();
        if count == 0 {
            continue;
        }
        if clear {
            let zeros = vec![layouts::bytes_of(&syscall_total::default()).to_vec(); per_cpu.len()];
            syscall_totals.update_percpu(&key, &zeros, MapFlags::ANY)?;
        }
        rows.push(Row {
            id: number as u64,
            name: syscall_name(number as u64),
            count,
            total_ns: totals.iter().map(|total| total.total_ns).sum(),
        });
    }
    Ok(rows)
}

fn render_rows(args: &SyscountArgs, mut rows: Vec<Row>, time: Option<&str>) -> (String, u64) {
    let events = rows.iter().map(|row| row.count).sum();
    if args.latency {
        rows.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.id.cmp(&b.id)));
    } else {
        rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
    }
    rows.truncate(args.top);
    let unit_ns = args.common.unit_ns() as f64;
    let unit = if args.common.milliseconds { "ms" } else { "us" };
    let mut out = String::new();
    if args.common.json {
        let (id_field, name_field) = if args.per_process {
            ("pid", "comm")
        } else {
            ("nr", "syscall")
        };
        let rows: Vec<Value> = rows
            .iter()
            .map(|row| {
                let mut object = Map::new();
                object.insert(id_field.into(), json!(row.id));
                object.insert(name_field.into(), json!(row.name));
                object.insert("count".into(), json!(row.count));
                if args.latency {
                    object.insert("total_ns".into(), json!(row.total_ns));
                }
                Value::Object(object)
            })
            .collect();
        let mut line = Map::new();
        line.insert("tool".into(), json!("syscount"));
        if let Some(time) = time {
            line.insert("time".into(), json!(time));
        }
        line.insert("rows".into(), Value::Array(rows));
        return (format!("{}\n", Value::Object(line)), events);
    }
    if let Some(time) = time {
        let _ = writeln!(out, "[{time}]");
    }
    let first = if args.per_process {
        "PID    COMM"
    } else {
        "SYSCALL"
    };
    if args.latency {
        let _ = writeln!(
            out,
            "{first:<22} {:>8} {:>16}",
            "COUNT",
            format!("TIME ({unit})")
        );
    } else {
        let _ = writeln!(out, "{first:<22} {:>8}", "COUNT");
    }
    for row in &rows {
        let label = if args.per_process {
            format!("{:<6} {:<15}", row.id, row.name)
        } else {
            row.name.clone()
        };
        if args.latency {
            let _ = writeln!(
                out,
                "{label:<22} {:>8} {:>16.3}",
                row.count,
                row.total_ns as f64 / unit_ns
            );
        } else {
            let _ = writeln!(out, "{label:<22} {:>8}", row.count);
        }
    }
    out.push('\n');
    (out, events)
}

pub fn run(args: SyscountArgs) -> Result<()> {
    let common = &args.common;
    let report = common.report_options()?;
    if args.top == 0 {
        bail!("bad --top 0: give a number of rows greater than 0");
    }
    preflight::check_all()?;
    let targets = common.target_spec(&[]).resolve()?;
    let filters = targets.filter_flags();
    let measure_latency = args.latency || args.histogram;

    let mut storage = object_storage();
    let (skel, flavor) =
        load_with_fallback(&mut storage, TRACEPOINT_FLAVORS, |storage, flavor| {
            let mut open = SyscountSkelBuilder::default()
                .open(storage)
                .context("opening the syscount BPF object")?;
            let rodata = set_filter_flags!(open, filters);
            rodata.measure_latency = measure_latency;
            rodata.per_process = args.per_process;
            rodata.histogram_per_syscall = args.histogram;
            rodata.failures_only = args.failures;
            rodata.unit_ns = common.unit_ns();
            let btf = flavor == HookFlavor::BtfTyped;
            open.progs.enter_btf.set_autoload(btf && measure_latency);
            open.progs.exit_btf.set_autoload(btf);
            open.progs.enter_raw.set_autoload(!btf && measure_latency);
            open.progs.exit_raw.set_autoload(!btf);
            if btf {
                open.maps.entered_by_tid.set_max_entries(1)?;
            }
            open.load().context("loading the syscount BPF programs")
        })?;
    write_target_filters!(&targets, skel)?;
    let (enter, exit) = if flavor == HookFlavor::Raw {
        (&skel.progs.enter_raw, &skel.progs.exit_raw)
    } else {
        (&skel.progs.enter_btf, &skel.progs.exit_btf)
    };
    let mut links: Vec<Link> = Vec::new();
    if measure_latency {
        links.push(enter.attach().context("attaching to sys_enter")?);
    }
    links.push(exit.attach().context("attaching to sys_exit")?);

    signals::install();
    eprintln!("bpfscope: tracing syscalls... Hit Ctrl-C to end.");
    histogram::report_until_stopped(
        "syscount",
        &report,
        &targets,
        |clear, time| {
            if args.histogram {
                let mut histograms = histogram_maps::read_histograms(
                    &skel.maps.hists,
                    &skel.maps.total_hist,
                    clear,
                )?;
                for (key, _) in &mut histograms {
                    if let HistogramKey::Keyed { id, name } = key {
                        *name = syscall_name(*id);
                    }
                }
                Ok(histogram::render_histograms(
                    "syslat",
                    &report,
                    "syscall",
                    common.latency_unit(),
                    histograms,
                    time,
                ))
            } else {
                let rows = if args.per_process {
                    read_process_rows(&skel.maps.totals, clear)?
                } else {
                    read_syscall_rows(&skel.maps.syscall_totals, clear)?
                };
                Ok(render_rows(&args, rows, time))
            }
        },
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(links);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_unknown_syscalls() {
        assert_eq!(syscall_name(0), "read");
        assert_eq!(syscall_name(110), "getppid");
        assert_eq!(syscall_name(100_000), "syscall_100000");
    }
}
