//! `bpfscope offwaketime` and `bpfscope wakeuptime`: who woke blocked
//! threads. `offwake.bpf.c` times each block of a selected thread and sums
//! it in kernel under its waker (a task's stacks, or the interrupt context
//! that woke it): offwaketime from block to running again, under the
//! blocked stack and the waker's; wakeuptime from block to wakeup, under the
//! waker's stack only.

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
    include!(concat!(env!("OUT_DIR"), "/offwake.skel.rs"));
}
use skel::{OffwakeSkel, OffwakeSkelBuilder};

/// Sum blocked time by blocked stack and waker stack: an off-wake flame graph.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Folded lines read: blocked thread's name; its stack, outermost first; `--`; the waker's stack from its wakeup call outwards; the waker's name ([interrupt] when an interrupt woke it).\n\nExamples:\n  bpfscope offwaketime -o offwake.svg 10       system-wide for 10 s\n  bpfscope offwaketime -p 1234 -m 1000 5       one process, blocks of 1 ms or more"
)]
pub struct OffwaketimeArgs {
    #[command(flatten)]
    pub blocks: BlockArgs,
    #[command(flatten)]
    pub common: StackToolArgs,
}

/// Sum blocked time (until the wakeup) by waker stack: a wakeup flame graph.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Folded lines read: blocked thread's name; `--`; the waker's stack from its wakeup call outwards; the waker's name ([interrupt] when an interrupt woke it).\n\nExamples:\n  bpfscope wakeuptime -o wakeup.svg 10         system-wide for 10 s\n  bpfscope wakeuptime -p 1234 5                who wakes process 1234"
)]
pub struct WakeuptimeArgs {
    #[command(flatten)]
    pub blocks: BlockArgs,
    #[command(flatten)]
    pub common: StackToolArgs,
}

/// What the offwake programs measure, besides the stacks they capture.
struct OffwakeOptions {
    kind: ProfileKind,
    user_threads_only: bool,
    kernel_threads_only: bool,
    min_block_ns: u64,
    max_block_ns: u64,
}

/// The loaded offwake programs and their links.
struct OffwakeTracer<'obj> {
    skel: OffwakeSkel<'obj>,
    links: AccumulatingLinks,
}

impl StackObject for OffwakeTracer<'_> {
    fn maps(&self) -> StackObjectMaps<'_> {
        stack_object_maps!(self.skel)
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

/// Loads offwake.bpf.c and attaches it to sched_switch, sched_waking and
/// sched_process_exit.
fn attach<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    capture: &StackCapture,
    options: &OffwakeOptions,
) -> Result<OffwakeTracer<'obj>> {
    let filters = targets.filter_flags();
    let (skel, flavor) = load_with_fallback(storage, TRACEPOINT_FLAVORS, |storage, flavor| {
        let mut open = OffwakeSkelBuilder::default()
            .open(storage)
            .context("opening the offwake BPF object")?;
        let rodata = set_filter_flags!(open, filters);
        rodata.capture_user = capture.user;
        rodata.capture_kernel = capture.kernel;
        rodata.blocked_stacks = options.kind == ProfileKind::OffWake;
        rodata.end_at_wakeup = options.kind == ProfileKind::Wakeup;
        rodata.user_threads_only = options.user_threads_only;
        rodata.kernel_threads_only = options.kernel_threads_only;
        rodata.min_block_ns = options.min_block_ns;
        rodata.max_block_ns = options.max_block_ns;
        rodata.revalidate_every = STACK_REVALIDATE_EVERY;
        let btf = flavor == HookFlavor::BtfTyped;
        rodata.flush_every = if btf { 64 } else { 1 };
        size_stack_maps!(open, capture);
        for (program, wanted) in [
            (&mut open.progs.switch_btf, btf),
            (&mut open.progs.waking_btf, btf),
            (&mut open.progs.exit_btf, btf),
            (&mut open.progs.flush_all, btf),
            (&mut open.progs.switch_raw, !btf),
            (&mut open.progs.waking_raw, !btf),
            (&mut open.progs.exit_raw, !btf),
        ] {
            program.set_autoload(wanted);
        }
        autoload_fork_follower!(open, filters, flavor);
        if btf {
            open.maps.wake_by_tid.set_max_entries(1)?;
        }
        open.load().context("loading the offwake BPF programs")
    })?;
    write_target_filters!(targets, skel)?;
    let mut links: Vec<Link> = Vec::new();
    links.extend(attach_fork_follower!(skel, filters, flavor)?);
    let btf = flavor == HookFlavor::BtfTyped;
    let (switch, waking, exit) = if btf {
        (
            &skel.progs.switch_btf,
            &skel.progs.waking_btf,
            &skel.progs.exit_btf,
        )
    } else {
        (
            &skel.progs.switch_raw,
            &skel.progs.waking_raw,
            &skel.progs.exit_raw,
        )
    };
    let exit_hook = Some(exit.attach().context("attaching to sched_process_exit")?);
    links.push(waking.attach().context("attaching to sched_waking")?);
    links.push(switch.attach().context("attaching to sched_switch")?);
    Ok(OffwakeTracer {
        skel,
        links: AccumulatingLinks::new(links, exit_hook, btf),
    })
}

fn run(kind: ProfileKind, blocks: &BlockArgs, common: &StackToolArgs) -> Result<u8> {
    let options = common.options(&blocks.tids)?;
    let (min_block_ns, max_block_ns) = blocks.bounds_ns()?;
    let offwake = OffwakeOptions {
        kind,
        user_threads_only: blocks.user_threads_only,
        kernel_threads_only: blocks.kernel_threads_only,
        min_block_ns,
        max_block_ns,
    };
    let activity = if kind == ProfileKind::OffWake {
        "tracing blocked time with blocked and waker stacks"
    } else {
        "tracing blocked time until wakeup with waker stacks"
    };
    let tool = StackTool {
        kind,
        start_line: activity.to_string(),
        activity,
        rate: String::new(),
        qualifier: blocks.qualifier(),
    };
    let mut storage = object_storage();
    stack::run(&options, &tool, &mut storage, |storage, targets| {
        attach(storage, targets, &options.capture, &offwake)
    })
}

/// Returns the exit status of `-- COMMAND`, else 0.
pub fn run_offwaketime(args: OffwaketimeArgs) -> Result<u8> {
    run(ProfileKind::OffWake, &args.blocks, &args.common)
}

/// Returns the exit status of `-- COMMAND`, else 0.
pub fn run_wakeuptime(args: WakeuptimeArgs) -> Result<u8> {
    run(ProfileKind::Wakeup, &args.blocks, &args.common)
}
