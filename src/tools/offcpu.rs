//! `bpfscope offcpu`: off-CPU flame graphs. `offcpu.bpf.c` times every
//! block from sched_switch out to sched_switch in and sums it in kernel under
//! the stacks the thread blocked in; user space reads only the sums.

use std::cell::RefCell;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use crate::core::loader::{
    load_with_fallback, object_storage, HookFlavor, ObjectStorage, TRACEPOINT_FLAVORS,
};
use crate::core::process_maps::AddressSpaces;
use crate::core::stack_collection::{self, size_stack_maps, StackToolArgs};
use crate::core::stacks::StackMaps;
use crate::core::stats::{RunStats, STACK_REVALIDATE_EVERY};
use crate::core::target::{
    attach_fork_follower, autoload_fork_follower, set_filter_flags, write_target_filters, Targets,
};
use crate::core::unwinder::UnwindArgs;
use crate::core::{preflight, signals};
use crate::model::profile::ProfileKind;

mod skel {
    include!(concat!(env!("OUT_DIR"), "/offcpu.skel.rs"));
}
pub use skel::OffcpuSkel;
use skel::OffcpuSkelBuilder;

/// Task state at switch-out that `--state` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BlockState {
    /// Preempted while runnable (waiting for a CPU).
    Running,
    /// Interruptible sleep (TASK_INTERRUPTIBLE): locks, pipes, sockets, timers.
    Sleeping,
    /// Uninterruptible sleep (TASK_UNINTERRUPTIBLE), typically disk I/O.
    Disk,
    All,
}

impl BlockState {
    /// `state_filter` in offcpu.bpf.c.
    fn bpf_value(self) -> i32 {
        match self {
            BlockState::Running => 0,
            BlockState::Sleeping => 1,
            BlockState::Disk => 2,
            BlockState::All => -1,
        }
    }
}

/// Sum off-CPU time by blocked stack and write an off-CPU flame graph.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bpfscope offcpu -o offcpu.svg 10        system-wide for 10 s\n  bpfscope offcpu -p 1234 -m 1000 5       one process, blocks of 1 ms or more\n  bpfscope offcpu --state disk -o io.svg -- tar cf /tmp/x.tar /usr"
)]
pub struct OffcpuArgs {
    /// Only these threads (comma-separated TIDs).
    #[arg(short = 't', long = "tid", value_delimiter = ',', value_name = "TID")]
    pub tids: Vec<u32>,
    /// User threads only (no kernel threads).
    #[arg(
        short = 'u',
        long = "user-threads-only",
        conflicts_with = "kernel_threads_only"
    )]
    pub user_threads_only: bool,
    /// Kernel threads only.
    #[arg(short = 'k', long = "kernel-threads-only")]
    pub kernel_threads_only: bool,
    /// Ignore blocks shorter than this many microseconds.
    #[arg(
        short = 'm',
        long = "min-block-time",
        default_value_t = 1,
        value_name = "MIN_US"
    )]
    pub min_block_us: u64,
    /// Ignore blocks longer than this many microseconds.
    #[arg(short = 'M', long = "max-block-time", value_name = "MAX_US")]
    pub max_block_us: Option<u64>,
    /// Keep blocks by the task's state when it switched out.
    #[arg(long, value_enum, default_value_t = BlockState::All)]
    pub state: BlockState,
    #[command(flatten)]
    pub common: StackToolArgs,
}

/// What the offcpu programs measure (also used by `serve`).
pub struct OffcpuOptions {
    pub capture_user: bool,
    pub capture_kernel: bool,
    pub user_threads_only: bool,
    pub kernel_threads_only: bool,
    pub state: BlockState,
    pub min_block_ns: u64,
    pub max_block_ns: u64,
    pub stack_storage_size: u32,
    pub max_stacks: u32,
    /// Also sum off-CPU time per cgroup (`cgroup_totals`).
    pub total_by_cgroup: bool,
    pub unwind: UnwindArgs,
}

/// The loaded offcpu programs and their links.
pub struct Attached<'obj> {
    pub skel: OffcpuSkel<'obj>,
    pub links: Vec<Link>,
    /// The thread-exit hook (BTF flavor): detach it only after
    /// `flush_all_threads`, so no exiting thread's time is lost.
    pub exit_hook: Option<Link>,
}

/// Loads offcpu.bpf.c and attaches it to sched_switch.
pub fn attach<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    options: &OffcpuOptions,
) -> Result<Attached<'obj>> {
    let filters = targets.filter_flags();
    let (skel, flavor) = load_with_fallback(storage, TRACEPOINT_FLAVORS, |storage, flavor| {
        let mut open = OffcpuSkelBuilder::default()
            .open(storage)
            .context("opening the offcpu BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("offcpu object has no .rodata")?;
        set_filter_flags!(&mut *rodata, filters);
        rodata.capture_user = options.capture_user;
        rodata.capture_kernel = options.capture_kernel;
        rodata.user_threads_only = options.user_threads_only;
        rodata.kernel_threads_only = options.kernel_threads_only;
        rodata.state_filter = options.state.bpf_value();
        rodata.min_block_ns = options.min_block_ns;
        rodata.max_block_ns = options.max_block_ns;
        rodata.revalidate_every = STACK_REVALIDATE_EVERY;
        rodata.total_by_cgroup = options.total_by_cgroup;
        let btf = flavor == HookFlavor::BtfTyped;
        // Per-thread accumulation needs task storage (BTF flavor only).
        rodata.flush_every = if btf { 64 } else { 1 };
        size_stack_maps!(open, options.unwind, options.stack_storage_size);
        open.maps.counts.set_max_entries(options.max_stacks)?;
        open.progs.switch_btf.set_autoload(btf);
        open.progs.exit_btf.set_autoload(btf);
        open.progs.flush_all.set_autoload(btf);
        open.progs.switch_raw.set_autoload(!btf);
        autoload_fork_follower!(open, filters, flavor);
        if btf {
            // Unused by this flavor: keep it minimal.
            open.maps.blocked_by_tid.set_max_entries(1)?;
        }
        open.load().context("loading the offcpu BPF programs")
    })?;
    write_target_filters!(targets, skel)?;
    let mut links: Vec<Link> = Vec::new();
    links.extend(attach_fork_follower!(skel, filters, flavor)?);
    let mut exit_hook = None;
    if flavor == HookFlavor::BtfTyped {
        exit_hook = Some(
            skel.progs
                .exit_btf
                .attach()
                .context("attaching to sched_process_exit")?,
        );
        links.push(
            skel.progs
                .switch_btf
                .attach()
                .context("attaching to sched_switch")?,
        );
    } else {
        links.push(
            skel.progs
                .switch_raw
                .attach()
                .context("attaching to sched_switch")?,
        );
    }
    Ok(Attached {
        skel,
        links,
        exit_hook,
    })
}

pub fn run(args: OffcpuArgs) -> Result<()> {
    let common = &args.common;
    let format = common.validate()?;
    if let Some(max) = args.max_block_us {
        if max < args.min_block_us {
            bail!(
                "bad block-time bounds: -M {max} is below -m {}",
                args.min_block_us
            );
        }
    }
    preflight::check_all()?;
    let started = Instant::now();
    let mut targets = common.target_spec(&args.tids).resolve()?;
    let options = OffcpuOptions {
        capture_user: !common.kernel_stacks_only,
        capture_kernel: !common.user_stacks_only,
        user_threads_only: args.user_threads_only,
        kernel_threads_only: args.kernel_threads_only,
        state: args.state,
        min_block_ns: args.min_block_us.saturating_mul(1000),
        max_block_ns: args
            .max_block_us
            .map_or(u64::MAX, |us| us.saturating_mul(1000)),
        stack_storage_size: common.stack_storage_size,
        max_stacks: common.max_stacks,
        total_by_cgroup: false,
        unwind: common.unwind,
    };
    let mut storage = object_storage();
    let Attached {
        skel,
        links,
        exit_hook,
    } = attach(&mut storage, &targets, &options)?;
    let spaces = RefCell::new(AddressSpaces::default());
    let unwinder = stack_collection::table_unwinder(
        common.unwind,
        &skel.maps.unwind_rows,
        &skel.maps.unwind_processes,
        &targets,
    )?;
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
        "bpfscope: tracing off-CPU time{} (attached in {} ms)",
        common.describe_scope(),
        started.elapsed().as_millis()
    );
    let (stop, duration) = stack_collection::collect(
        common,
        command.as_ref(),
        &targets,
        &ring,
        unwinder.as_ref(),
        "tracing off-CPU time",
    );
    drop(links);
    if let Some(exit_hook) = exit_hook {
        // Time still accumulated per thread goes to the counts map; the exit
        // hook stays until then so no exiting thread's time is lost.
        flush_all_threads(&skel.progs.flush_all)?;
        drop(exit_hook);
    }
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
    let mut profile = stack_collection::read_profile(
        &skel.maps.counts,
        &stack_maps,
        &mut spaces,
        ProfileKind::OffCpu,
        duration,
    )?;
    for sample in &mut profile.samples {
        sample.value = (sample.value + 500) / 1000; // counted in ns, shown in us
    }
    profile.samples.retain(|sample| sample.value > 0);
    let subtitle = format!(
        "{:.1} s on {}{}, blocks of {} us or more",
        duration.as_secs_f64(),
        stack_collection::hostname(),
        common.describe_scope(),
        args.min_block_us
    );
    stack_collection::write_profile(common, format, &profile, &subtitle)?;
    stack_collection::print_summary(
        &profile,
        &format!(
            "{:.3} s off-CPU in {} blocks",
            profile.total() as f64 / 1e6,
            stats.events
        ),
        &stats,
        &spaces,
        common.output.as_deref(),
    );
    stack_collection::print_unwind_summary(&stats, unwinder.as_ref());
    Ok(())
}

/// Runs the task iterator that adds every thread's accumulated time to the
/// counts map. BTF flavor only (`exit_hook` is set): the raw flavor adds each
/// block at once and does not load the iterator.
pub fn flush_all_threads(flush_all: &libbpf_rs::ProgramMut<'_>) -> Result<()> {
    let link = flush_all
        .attach_iter_with_opts(libbpf_rs::IterOpts::None)
        .context("attaching the flush iterator")?;
    let mut iter = libbpf_rs::Iter::new(&link).context("creating the flush iterator")?;
    std::io::copy(&mut iter, &mut std::io::sink()).context("running the flush iterator")?;
    Ok(())
}
