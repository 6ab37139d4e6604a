//! `bpfscope runqlen`: run-queue length, sampled on every CPU by a cpu-clock
//! perf event and summed in kernel by `runqlen.bpf.c` as a linear histogram
//! (in total, or per CPU with `-C`).

use std::mem::MaybeUninit;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use crate::bpf::histogram_maps;
use crate::bpf::perf_event;
use crate::bpf::preflight;
use crate::bpf::run_stats::RunStats;
use crate::engine::histogram;
use crate::host::cpus;
use crate::host::signals;
use crate::model::histogram::Scale;
use crate::tools::flags::HistogramArgs;

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/runqlen.skel.rs"));
}
use skel::RunqlenSkelBuilder;

/// Sample run-queue length (tasks waiting for a CPU) as a linear histogram.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bpfscope runqlen            until Ctrl-C\n  bpfscope runqlen -C 1 5     per CPU, five 1 s reports\n\n-p/--cgroup are not supported: run-queue length is a property of a CPU."
)]
pub struct RunqlenArgs {
    /// A histogram per CPU.
    #[arg(short = 'C', long = "cpus")]
    pub per_cpu: bool,
    /// Sampling frequency, per CPU, in Hz.
    #[arg(
        short = 'F',
        long = "frequency",
        default_value_t = 99,
        value_name = "HZ"
    )]
    pub frequency: u64,
    #[command(flatten)]
    pub common: HistogramArgs,
}

pub fn run(args: RunqlenArgs) -> Result<()> {
    let common = &args.common;
    let report = common.report_options()?;
    if !common.pids.is_empty() || common.cgroup.is_some() {
        bail!("runqlen samples CPUs, not processes: -p and --cgroup do not apply");
    }
    if common.milliseconds {
        bail!("runqlen counts tasks, not time: -m does not apply");
    }
    perf_event::check_frequency(args.frequency)?;
    preflight::check_all()?;
    let targets = common.target_spec(&[]).resolve()?;

    let mut storage = MaybeUninit::uninit();
    let mut open = RunqlenSkelBuilder::default()
        .open(&mut storage)
        .context("opening the runqlen BPF object")?;
    open.maps
        .rodata_data
        .as_deref_mut()
        .context("runqlen object has no .rodata")?
        .per_cpu = args.per_cpu;
    let skel = open.load().context("loading the runqlen BPF program")?;
    let links = cpus::online_cpus()?
        .into_iter()
        .map(|cpu| {
            let event = perf_event::open_cpu_clock(cpu, args.frequency)?;
            perf_event::attach(&skel.progs.sample_queue, event)
                .with_context(|| format!("attaching the sampler to CPU {cpu}"))
        })
        .collect::<Result<Vec<Link>>>()?;

    signals::install();
    eprintln!("bpfscope: sampling run-queue length... Hit Ctrl-C to end.");
    histogram::report_until_stopped(
        "runqlen",
        &report,
        &targets,
        |clear, time| {
            let histograms =
                histogram_maps::read_histograms(&skel.maps.hists, &skel.maps.total_hist, clear)?;
            Ok(histogram::render_histograms(
                "runqlen",
                &report,
                "cpu",
                ("runqlen", Scale::Linear),
                histograms,
                time,
            ))
        },
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(links);
    Ok(())
}
