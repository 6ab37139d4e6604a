//! Writes a run's selection (host::target) into the filter state every BPF
//! object shares through task_filter.h: the `filter_*` flags before load,
//! the size of the filter maps, and the PIDs, TIDs and cgroup after load;
//! and, for tools that run commands, loads and attaches the fork follower
//! of the hook flavor in use. Skeletons each have their own types, hence
//! macros.

use std::os::fd::AsRawFd;

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use crate::host::target::Targets;

/// Writes the selection into the shared filter maps of a loaded object.
pub fn write_filters(
    targets: &Targets,
    target_tgids: &dyn MapCore,
    target_tids: &dyn MapCore,
    target_cgroup: &dyn MapCore,
) -> Result<()> {
    let one = [1u8];
    let tgids = targets
        .pids
        .iter()
        .chain(targets.command.as_ref().map(|c| &c.pid));
    for tgid in tgids {
        target_tgids.update(&tgid.to_ne_bytes(), &one, MapFlags::ANY)?;
    }
    for tid in &targets.tids {
        target_tids.update(&tid.to_ne_bytes(), &one, MapFlags::ANY)?;
    }
    if let Some(cgroup) = &targets.cgroup {
        target_cgroup.update(
            &0u32.to_ne_bytes(),
            &cgroup.fd.as_raw_fd().to_ne_bytes(),
            MapFlags::ANY,
        )?;
    }
    Ok(())
}

/// Sets the `filter_*` flags of task_filter.h in an opened skeleton's
/// `.rodata`, and shrinks the filter maps a run does not use to one entry;
/// evaluates to the `.rodata`, for the tool's own settings.
macro_rules! set_filter_flags {
    ($open:expr, $flags:expr) => {{
        let open = &mut $open;
        let flags = &$flags;
        if !flags.tgids {
            open.maps.target_tgids.set_max_entries(1)?;
        }
        if !flags.tids {
            open.maps.target_tids.set_max_entries(1)?;
        }
        let rodata = anyhow::Context::context(
            open.maps.rodata_data.as_deref_mut(),
            "the BPF object has no .rodata",
        )?;
        rodata.filter_tgids = flags.tgids;
        rodata.filter_tids = flags.tids;
        rodata.filter_cgroup = flags.cgroup;
        rodata.target_cgroup_id = flags.cgroup_id;
        // An unknown depth selects no task (see task_in_target_cgroup()).
        rodata.target_cgroup_level = flags.cgroup_level.unwrap_or(u32::MAX);
        rodata.follow_children = flags.follow_children;
        rodata
    }};
}
pub(crate) use set_filter_flags;

/// COMMAND mode follows forks with task_filter.h's `follow_fork_btf` or
/// `follow_fork_raw`: loads the one of the flavor in use, and only in that mode.
macro_rules! autoload_fork_follower {
    ($open:expr, $filters:expr, $flavor:expr) => {{
        let btf = $flavor == $crate::bpf::loader::HookFlavor::BtfTyped;
        $open
            .progs
            .follow_fork_btf
            .set_autoload($filters.follow_children && btf);
        $open
            .progs
            .follow_fork_raw
            .set_autoload($filters.follow_children && !btf);
    }};
}
pub(crate) use autoload_fork_follower;

/// Attaches the fork follower loaded by `autoload_fork_follower!`, in COMMAND mode.
macro_rules! attach_fork_follower {
    ($skel:expr, $filters:expr, $flavor:expr) => {{
        let follower = if $flavor == $crate::bpf::loader::HookFlavor::BtfTyped {
            &$skel.progs.follow_fork_btf
        } else {
            &$skel.progs.follow_fork_raw
        };
        if $filters.follow_children {
            anyhow::Context::context(follower.attach(), "attaching the fork follower").map(Some)
        } else {
            anyhow::Ok(None)
        }
    }};
}
pub(crate) use attach_fork_follower;

/// Writes the selection into a loaded skeleton's shared filter maps.
macro_rules! write_target_filters {
    ($targets:expr, $skel:expr) => {
        $crate::bpf::filters::write_filters(
            $targets,
            &$skel.maps.target_tgids,
            &$skel.maps.target_tids,
            &$skel.maps.target_cgroup,
        )
    };
}
pub(crate) use write_target_filters;
