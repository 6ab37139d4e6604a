//! `bpfscope profile`: CPU flame graphs. A cpu-clock perf event on each CPU
//! runs `profile.bpf.c`, which counts (process, user stack, kernel stack) in
//! kernel; at the end the counts are symbolized and rendered.

use std::cell::RefCell;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use crate::bpf::filters::{
    attach_fork_follower, autoload_fork_follower, set_filter_flags, write_target_filters,
};
use crate::bpf::loader::{
    bpf_clock_ns, load_with_fallback, object_storage, ObjectStorage, TRACEPOINT_FLAVORS,
};
use crate::bpf::perf_event;
use crate::engine::stack::{
    self, size_stack_maps, stack_object_maps, StackCapture, StackObject, StackObjectMaps, StackTool,
};
use crate::host::cpus;
use crate::host::target::Targets;
use crate::model::profile::ProfileKind;
use crate::output::{heatmap, ProfileFormat};
use crate::tools::flags::StackToolArgs;

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/profile.skel.rs"));
}
use skel::{ProfileSkel, ProfileSkelBuilder};

/// Sample on-CPU stacks and write a CPU flame graph (folded, SVG or pprof).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bpfscope profile -o cpu.svg 10         system-wide for 10 s, flame graph\n  bpfscope profile -p 1234 -F 999 5      one process at 999 Hz, folded on stdout\n  bpfscope profile -o run.pb.gz -- make  profile a command and its children (pprof)"
)]
pub struct ProfileArgs {
    /// Only these threads (comma-separated TIDs); stacks are then kept per thread.
    #[arg(short = 'L', long = "tid", value_delimiter = ',', value_name = "TID")]
    pub tids: Vec<u32>,
    /// Sample this CPU only.
    #[arg(short = 'C', long = "cpu", value_name = "CPU")]
    pub cpu: Option<u32>,
    /// Sampling frequency, per CPU, in Hz.
    #[arg(
        short = 'F',
        long = "frequency",
        default_value_t = 99,
        value_name = "HZ"
    )]
    pub frequency: u64,
    /// Include the idle task (PID 0).
    #[arg(long)]
    pub include_idle: bool,
    #[command(flatten)]
    pub common: StackToolArgs,
}

impl ProfileArgs {
    fn cpus(&self) -> Result<Vec<u32>> {
        let online = cpus::online_cpus()?;
        match self.cpu {
            Some(cpu) if online.contains(&cpu) => Ok(vec![cpu]),
            Some(cpu) => bail!("no such CPU: {cpu} (online: {online:?})"),
            None => Ok(online),
        }
    }
}

/// How profile.bpf.c samples (besides the stacks it captures).
pub struct SamplerOptions {
    pub frequency: u64,
    pub cpus: Vec<u32>,
    pub include_idle: bool,
    pub per_thread: bool,
    /// Count samples per 20 ms time slot too (the heatmap page).
    pub heatmap: bool,
}

/// The loaded profile programs, sampling until stopped (also `serve`'s).
pub struct Sampler<'obj> {
    pub skel: ProfileSkel<'obj>,
    links: RefCell<Vec<Link>>,
    /// The CPUs and frequency `start` samples at.
    cpus: Vec<u32>,
    frequency: u64,
    /// With time slots (heatmap): slot 0 starts at this bpf_clock_ns() time.
    pub start_ns: u64,
}

impl StackObject for Sampler<'_> {
    fn maps(&self) -> StackObjectMaps<'_> {
        stack_object_maps!(self.skel, python)
    }

    /// Opens the cpu-clock events: sampling begins once the engine has
    /// loaded the targets' unwind tables and found their Python runtimes.
    fn start(&self) -> Result<()> {
        let mut links = self.links.borrow_mut();
        for &cpu in &self.cpus {
            let event = perf_event::open_cpu_clock(cpu, self.frequency)?;
            links.push(
                perf_event::attach(&self.skel.progs.sample_stack, event)
                    .with_context(|| format!("attaching the sampler to CPU {cpu}"))?,
            );
        }
        Ok(())
    }

    fn stop(&self) -> Result<()> {
        self.links.borrow_mut().clear();
        Ok(())
    }
}

/// Loads profile.bpf.c; sampling begins at `start`.
pub fn attach<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    capture: &StackCapture,
    options: &SamplerOptions,
) -> Result<Sampler<'obj>> {
    let filters = targets.filter_flags();
    let start_ns = bpf_clock_ns();
    let (skel, flavor) = load_with_fallback(storage, TRACEPOINT_FLAVORS, |storage, flavor| {
        let mut open = ProfileSkelBuilder::default()
            .open(storage)
            .context("opening the profile BPF object")?;
        let rodata = set_filter_flags!(open, filters);
        rodata.capture_user = capture.user;
        rodata.capture_kernel = capture.kernel;
        rodata.include_idle = options.include_idle;
        rodata.per_thread = options.per_thread;
        if options.heatmap {
            rodata.time_slot_ns = heatmap::SLOT_NS;
            rodata.start_ns = start_ns;
        }
        size_stack_maps!(open, capture);
        autoload_fork_follower!(open, filters, flavor);
        open.load().context("loading the profile BPF programs")
    })?;
    write_target_filters!(targets, skel)?;

    let mut links: Vec<Link> = Vec::new();
    links.extend(attach_fork_follower!(skel, filters, flavor)?);
    Ok(Sampler {
        skel,
        links: RefCell::new(links),
        cpus: options.cpus.clone(),
        frequency: options.frequency,
        start_ns,
    })
}

/// Returns the exit status of `-- COMMAND`, else 0.
pub fn run(args: ProfileArgs) -> Result<u8> {
    perf_event::check_frequency(args.frequency)?;
    let options = args.common.options(&args.tids)?;
    let sampler = SamplerOptions {
        frequency: args.frequency,
        cpus: args.cpus()?,
        include_idle: args.include_idle,
        per_thread: !args.tids.is_empty(),
        heatmap: options.format == ProfileFormat::Html,
    };
    let tool = StackTool {
        kind: ProfileKind::Cpu { hz: args.frequency },
        start_line: format!(
            "sampling {} CPU(s) at {} Hz",
            sampler.cpus.len(),
            args.frequency
        ),
        activity: "profiling",
        rate: format!(" at {} Hz", args.frequency),
        qualifier: String::new(),
    };
    let mut storage = object_storage();
    stack::run(&options, &tool, &mut storage, |storage, targets| {
        attach(storage, targets, &options.capture, &sampler)
    })
}
