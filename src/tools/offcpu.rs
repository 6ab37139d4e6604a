//! `bpfscope offcpu`: off-CPU flame graphs. `offcpu.bpf.c` times every
//! block from sched_switch out to sched_switch in and sums it in kernel under
//! the stacks the thread blocked in; user space reads only the sums.

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use crate::bpf::filters::{
    attach_fork_follower, autoload_fork_follower, set_filter_flags, write_target_filters,
};
use crate::bpf::loader::{
    load_with_fallback, object_storage, AccumulatingLinks, HookFlavor, ObjectStorage,
    TRACEPOINT_FLAVORS,
};
use crate::bpf::run_stats::STACK_REVALIDATE_EVERY;
use crate::engine::stack::{
    self, size_stack_maps, stack_object_maps, StackCapture, StackObject, StackObjectMaps, StackTool,
};
use crate::host::target::Targets;
use crate::model::profile::ProfileKind;
use crate::tools::flags::{BlockArgs, StackToolArgs};

pub(super) mod skel {
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
    #[command(flatten)]
    pub blocks: BlockArgs,
    /// Keep blocks by the task's state when it switched out.
    #[arg(long, value_enum, default_value_t = BlockState::All)]
    pub state: BlockState,
    #[command(flatten)]
    pub common: StackToolArgs,
}

/// What the offcpu programs measure, besides the stacks they capture
/// (also `serve`'s).
pub struct OffcpuOptions {
    pub user_threads_only: bool,
    pub kernel_threads_only: bool,
    pub state: BlockState,
    pub min_block_ns: u64,
    pub max_block_ns: u64,
    /// Also sum off-CPU time per cgroup (`cgroup_totals`).
    pub total_by_cgroup: bool,
}

/// The loaded offcpu programs and their links.
pub struct OffcpuTracer<'obj> {
    pub skel: OffcpuSkel<'obj>,
    links: AccumulatingLinks,
}

impl StackObject for OffcpuTracer<'_> {
    fn maps(&self) -> StackObjectMaps<'_> {
        stack_object_maps!(self.skel, python)
    }

    /// Runs the task iterator that adds every thread's accumulated time to
    /// the counts map.
    fn flush(&self) -> Result<()> {
        self.links.flush(&self.skel.progs.flush_all)
    }

    fn stop(&self) -> Result<()> {
        self.links.stop(&self.skel.progs.flush_all)
    }
}

/// Loads offcpu.bpf.c and attaches it to sched_switch.
pub fn attach<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    capture: &StackCapture,
    options: &OffcpuOptions,
) -> Result<OffcpuTracer<'obj>> {
    let filters = targets.filter_flags();
    let (skel, flavor) = load_with_fallback(storage, TRACEPOINT_FLAVORS, |storage, flavor| {
        let mut open = OffcpuSkelBuilder::default()
            .open(storage)
            .context("opening the offcpu BPF object")?;
        let rodata = set_filter_flags!(open, filters);
        rodata.capture_user = capture.user;
        rodata.capture_kernel = capture.kernel;
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
        size_stack_maps!(open, capture);
        open.progs.switch_btf.set_autoload(btf);
        open.progs.exit_btf.set_autoload(btf);
        open.progs.flush_all.set_autoload(btf);
        open.progs.switch_raw.set_autoload(!btf);
        autoload_fork_follower!(open, filters, flavor);
        if btf {
            // Unused by this flavor: keep it minimal.
            open.maps.blocked_by_tid.set_max_entries(1)?;
        }
        if !options.total_by_cgroup {
            open.maps.cgroup_totals.set_max_entries(1)?;
        }
        open.load().context("loading the offcpu BPF programs")
    })?;
    write_target_filters!(targets, skel)?;
    let mut links: Vec<Link> = Vec::new();
    links.extend(attach_fork_follower!(skel, filters, flavor)?);
    let btf = flavor == HookFlavor::BtfTyped;
    let exit_hook = if btf {
        Some(
            skel.progs
                .exit_btf
                .attach()
                .context("attaching to sched_process_exit")?,
        )
    } else {
        None
    };
    let switch = if btf {
        &skel.progs.switch_btf
    } else {
        &skel.progs.switch_raw
    };
    links.push(switch.attach().context("attaching to sched_switch")?);
    Ok(OffcpuTracer {
        skel,
        links: AccumulatingLinks::new(links, exit_hook, btf),
    })
}

/// Returns the exit status of `-- COMMAND`, else 0.
pub fn run(args: OffcpuArgs) -> Result<u8> {
    let options = args.common.options(&args.blocks.tids)?;
    let (min_block_ns, max_block_ns) = args.blocks.bounds_ns()?;
    let offcpu = OffcpuOptions {
        user_threads_only: args.blocks.user_threads_only,
        kernel_threads_only: args.blocks.kernel_threads_only,
        state: args.state,
        min_block_ns,
        max_block_ns,
        total_by_cgroup: false,
    };
    let tool = StackTool {
        kind: ProfileKind::OffCpu,
        start_line: "tracing off-CPU time".to_string(),
        activity: "tracing off-CPU time",
        rate: String::new(),
        qualifier: args.blocks.qualifier(),
    };
    let mut storage = object_storage();
    stack::run(&options, &tool, &mut storage, |storage, targets| {
        attach(storage, targets, &options.capture, &offcpu)
    })
}
