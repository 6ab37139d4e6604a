//! `bpfscope runqlat`: run-queue (scheduler) latency histograms. The time
//! from a task becoming runnable to it running is summed in kernel by
//! `runqlat.bpf.c` as log2 histograms (total, per process or per thread),
//! from the scheduler's own enqueue timestamps read at sched_switch.

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use crate::bpf::filters::{set_filter_flags, write_target_filters};
use crate::bpf::histogram_maps;
use crate::bpf::loader::{
    load_with_fallback, object_storage, HookFlavor, ObjectStorage, TRACEPOINT_FLAVORS,
};
use crate::bpf::preflight;
use crate::bpf::preflight::KernelField;
use crate::bpf::run_stats::RunStats;
use crate::engine::histogram;
use crate::host::signals;
use crate::host::target::Targets;
use crate::tools::flags::HistogramArgs;

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/runqlat.skel.rs"));
}
use skel::{RunqlatSkel, RunqlatSkelBuilder};

/// Summarize run-queue latency as histograms.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Measured by one program on sched_switch: the scheduler's enqueue time of the task switched in\n(CONFIG_SCHED_INFO) to now. --cgroup keeps the waits of the cgroup's tasks, whoever woke them.\n\nExamples:\n  bpfscope runqlat             until Ctrl-C, one histogram\n  bpfscope runqlat -m 5 3      three 5-second reports, in milliseconds\n  bpfscope runqlat -P --json   per process, as JSON"
)]
pub struct RunqlatArgs {
    /// A histogram per process.
    #[arg(short = 'P', long = "pids", conflicts_with = "per_thread")]
    pub per_process: bool,
    /// A histogram per thread.
    #[arg(short = 'L', long = "tids")]
    pub per_thread: bool,
    #[command(flatten)]
    pub common: HistogramArgs,
}

/// How runqlat.bpf.c keys and scales its histograms.
pub struct RunqlatOptions {
    pub unit_ns: u64,
    pub per_process: bool,
    pub per_thread: bool,
    /// Histograms keyed by the cgroup of the task that waited too.
    pub key_by_cgroup: bool,
}

/// Loads and attaches runqlat.bpf.c (also used by `serve`).
pub fn attach<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    options: &RunqlatOptions,
) -> Result<(RunqlatSkel<'obj>, Vec<Link>)> {
    let filters = targets.filter_flags();
    filters.check_other_task_cgroup()?;
    preflight::check_kernel_fields(&[
        KernelField {
            structure: "sched_info",
            member: "last_queued",
            requirement: "runqlat reads the scheduler's enqueue times, kept with CONFIG_SCHED_INFO",
        },
        KernelField {
            structure: "cfs_rq",
            member: "rq",
            requirement:
                "runqlat reaches the run queue clock through CONFIG_FAIR_GROUP_SCHED's cfs_rq.rq",
        },
    ])?;
    let (skel, flavor) = load_with_fallback(storage, TRACEPOINT_FLAVORS, |storage, flavor| {
        let mut open = RunqlatSkelBuilder::default()
            .open(storage)
            .context("opening the runqlat BPF object")?;
        let rodata = set_filter_flags!(open, filters);
        rodata.unit_ns = options.unit_ns;
        rodata.per_process = options.per_process;
        rodata.per_thread = options.per_thread;
        rodata.key_by_cgroup = options.key_by_cgroup;
        let btf = flavor == HookFlavor::BtfTyped;
        open.progs.switch_btf.set_autoload(btf);
        open.progs.switch_raw.set_autoload(!btf);
        if btf {
            open.maps.waited_before_by_tid.set_max_entries(1)?;
        }
        open.load().context("loading the runqlat BPF programs")
    })?;
    write_target_filters!(targets, skel)?;
    let program = if flavor == HookFlavor::Raw {
        &skel.progs.switch_raw
    } else {
        &skel.progs.switch_btf
    };
    let link = program
        .attach()
        .context("attaching to the sched_switch tracepoint")?;
    Ok((skel, vec![link]))
}

pub fn run(args: RunqlatArgs) -> Result<()> {
    let common = &args.common;
    let report = common.report_options()?;
    preflight::check_all()?;
    let targets = common.target_spec(&[]).resolve()?;
    let mut storage = object_storage();
    let options = RunqlatOptions {
        unit_ns: common.unit_ns(),
        per_process: args.per_process,
        per_thread: args.per_thread,
        key_by_cgroup: false,
    };
    let (skel, links) = attach(&mut storage, &targets, &options)?;

    signals::install();
    eprintln!("bpfscope: tracing run-queue latency... Hit Ctrl-C to end.");
    let key_name = if args.per_thread { "tid" } else { "pid" };
    histogram::report_until_stopped(
        "runqlat",
        &report,
        &targets,
        |clear, time| {
            let histograms =
                histogram_maps::read_histograms(&skel.maps.hists, &skel.maps.total_hist, clear)?;
            Ok(histogram::render_histograms(
                "runqlat",
                &report,
                key_name,
                common.latency_unit(),
                histograms,
                time,
            ))
        },
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(links);
    Ok(())
}
