//! `bpfscope profile`: CPU flame graphs. A cpu-clock perf event on each CPU
//! runs `profile.bpf.c`, which counts (process, user stack, kernel stack) in
//! kernel; at the end the counts are symbolized and rendered.

use std::cell::RefCell;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use crate::core::loader::{load_with_fallback, object_storage, ObjectStorage, TRACEPOINT_FLAVORS};
use crate::core::process_maps::AddressSpaces;
use crate::core::stack_collection::{self, size_stack_maps, StackToolArgs};
use crate::core::stacks::StackMaps;
use crate::core::stats::RunStats;
use crate::core::target::Targets;
use crate::core::target::{
    attach_fork_follower, autoload_fork_follower, set_filter_flags, write_target_filters,
};
use crate::core::unwinder::UnwindArgs;
use crate::core::{cpus, perf_event, preflight, signals};
use crate::model::profile::ProfileKind;

mod skel {
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

/// What profile.bpf.c samples and how much it can hold.
pub struct SamplerOptions {
    pub frequency: u64,
    pub cpus: Vec<u32>,
    pub capture_user: bool,
    pub capture_kernel: bool,
    pub include_idle: bool,
    pub per_thread: bool,
    pub stack_storage_size: u32,
    pub max_stacks: u32,
    pub unwind: UnwindArgs,
}

/// Loads profile.bpf.c and starts sampling (also used by `serve`).
pub fn attach<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    options: &SamplerOptions,
) -> Result<(ProfileSkel<'obj>, Vec<Link>)> {
    let filters = targets.filter_flags();
    let (skel, flavor) = load_with_fallback(storage, TRACEPOINT_FLAVORS, |storage, flavor| {
        let mut open = ProfileSkelBuilder::default()
            .open(storage)
            .context("opening the profile BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("profile object has no .rodata")?;
        set_filter_flags!(&mut *rodata, filters);
        rodata.capture_user = options.capture_user;
        rodata.capture_kernel = options.capture_kernel;
        rodata.include_idle = options.include_idle;
        rodata.per_thread = options.per_thread;
        size_stack_maps!(open, options.unwind, options.stack_storage_size);
        open.maps.counts.set_max_entries(options.max_stacks)?;
        autoload_fork_follower!(open, filters, flavor);
        open.load().context("loading the profile BPF programs")
    })?;
    write_target_filters!(targets, skel)?;

    let mut links: Vec<Link> = Vec::new();
    links.extend(attach_fork_follower!(skel, filters, flavor)?);
    for &cpu in &options.cpus {
        let event = perf_event::open_cpu_clock(cpu, options.frequency)?;
        links.push(
            perf_event::attach(&skel.progs.sample_stack, event)
                .with_context(|| format!("attaching the sampler to CPU {cpu}"))?,
        );
    }
    Ok((skel, links))
}

pub fn run(args: ProfileArgs) -> Result<()> {
    let common = &args.common;
    perf_event::check_frequency(args.frequency)?;
    let format = common.validate()?;
    let cpus = args.cpus()?;
    preflight::check_all()?;
    let started = Instant::now();
    let mut targets = common.target_spec(&args.tids).resolve()?;
    let mut storage = object_storage();
    let options = SamplerOptions {
        frequency: args.frequency,
        cpus: cpus.clone(),
        capture_user: !common.kernel_stacks_only,
        capture_kernel: !common.user_stacks_only,
        include_idle: args.include_idle,
        per_thread: !args.tids.is_empty(),
        stack_storage_size: common.stack_storage_size,
        max_stacks: common.max_stacks,
        unwind: common.unwind,
    };
    let (skel, links) = attach(&mut storage, &targets, &options)?;
    let unwinder = stack_collection::table_unwinder(
        common.unwind,
        &skel.maps.unwind_rows,
        &skel.maps.unwind_processes,
        &targets,
    )?;
    let spaces = RefCell::new(AddressSpaces::default());
    let ring = stack_collection::address_space_ring(
        &skel.maps.address_space_events,
        &spaces,
        unwinder.as_ref(),
    )?;

    signals::install();
    let command = targets
        .command
        .take()
        .map(|pending| pending.release())
        .transpose()?;
    eprintln!(
        "bpfscope: sampling {} CPU(s) at {} Hz{} (attached in {} ms)",
        cpus.len(),
        args.frequency,
        common.describe_scope(),
        started.elapsed().as_millis()
    );
    let (stop, duration) = stack_collection::collect(
        common,
        command.as_ref(),
        &targets,
        &ring,
        unwinder.as_ref(),
        "profiling",
    );
    // Stop sampling before reading, so the counts are a consistent snapshot.
    drop(links);
    drop(ring);
    if let Some(message) = stop.describe() {
        eprintln!("bpfscope: {message}");
    }

    let stats = RunStats::read(&skel.maps.stats)?;
    let mut spaces = spaces.into_inner();
    let stack_maps = StackMaps {
        traces: &skel.maps.stacks,
        unwound: &skel.maps.unwound_stacks,
    };
    let profile = stack_collection::read_profile(
        &skel.maps.counts,
        &stack_maps,
        &mut spaces,
        ProfileKind::Cpu { hz: args.frequency },
        duration,
    )?;
    let subtitle = format!(
        "{:.1} s at {} Hz on {}{}",
        duration.as_secs_f64(),
        args.frequency,
        stack_collection::hostname(),
        common.describe_scope()
    );
    stack_collection::write_profile(common, format, &profile, &subtitle)?;
    stack_collection::print_summary(
        &profile,
        &format!("{} samples", profile.total()),
        &stats,
        &spaces,
        common.output.as_deref(),
    );
    stack_collection::print_unwind_summary(&stats, unwinder.as_ref());
    Ok(())
}
