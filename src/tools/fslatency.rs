//! `bpfscope fslatency` and `bpfscope fsslower`: latency of read, write,
//! open and fsync on regular files, per operation and filesystem type.
//!
//! Method: fentry/fexit on the VFS entry points (`vfs_read`, `vfs_write`,
//! `vfs_open`, `vfs_fsync_range`) where the kernel allows fentry; where it
//! refuses it (as many kernels do, this development kernel included), the
//! syscall boundary (`sys_enter` to `sys_exit`), whose tracepoints exist
//! everywhere; the tool says which it uses. At the syscall boundary the
//! latency is what the application saw, including VFS and page-cache time,
//! and descriptors are resolved to their files in BPF. Either way only
//! regular files are counted, classified by their superblock's filesystem
//! type. Asynchronous I/O (io_uring, aio) and mmap page faults are not seen.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};

use crate::bpf::decode::fs_operation_name;
use crate::bpf::filters::{set_filter_flags, write_target_filters};
use crate::bpf::histogram_maps;
use crate::bpf::loader::{load_with_fallback, object_storage, HookFlavor, ObjectStorage};
use crate::bpf::preflight;
use crate::bpf::run_stats::RunStats;
use crate::engine::events;
use crate::engine::histogram;
use crate::engine::run::time_of_day;
use crate::host::signals;
use crate::host::syscall_table;
use crate::host::target::{TargetSpec, Targets};
use crate::layouts::{self, c_string, fs_op, slow_op, syscall_class};
use crate::model::histogram::HistogramKey;
use crate::tools::flags::HistogramArgs;

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/fslatency.skel.rs"));
}
pub use skel::FslatencySkel;
use skel::FslatencySkelBuilder;

const METHOD: &str = "Method: fentry/fexit on the VFS entry points (vfs_read, vfs_write, vfs_open, vfs_fsync_range) \
where the kernel allows it; where it refuses fentry (many kernels do), the syscall boundary (sys_enter/sys_exit \
tracepoints: read, pread, readv, write, pwrite, writev, open, openat, fsync, fdatasync), which includes the syscall \
overhead. Which one is in use is printed when the tool starts. Regular files only, classified by filesystem type; \
io_uring, aio and mmap faults are not seen.";

/// File system operation latency histograms, per operation and filesystem type.
#[derive(Debug, clap::Args)]
#[command(after_help = METHOD)]
pub struct FslatencyArgs {
    /// Only this filesystem type (ext4, xfs, btrfs, tmpfs...).
    #[arg(short = 't', long = "type", value_name = "FSTYPE")]
    pub fstype: Option<String>,
    #[command(flatten)]
    pub common: HistogramArgs,
}

/// Print each file system operation slower than MIN_MS.
#[derive(Debug, clap::Args)]
#[command(after_help = METHOD)]
pub struct FsslowerArgs {
    /// Only these processes (comma-separated PIDs); stops when they have all exited.
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only tasks in this cgroup v2 directory (and below it).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Only this filesystem type (ext4, xfs, btrfs, tmpfs...).
    #[arg(short = 't', long = "type", value_name = "FSTYPE")]
    pub fstype: Option<String>,
    /// Print JSON, one object per operation.
    #[arg(long)]
    pub json: bool,
    /// Print operations at least this slow, in milliseconds (0: all).
    #[arg(value_name = "MIN_MS", default_value_t = 10.0)]
    pub min_ms: f64,
}

/// The syscalls traced, by name: (operation, the 4th argument is the offset).
fn classify(syscall: &str) -> Option<syscall_class> {
    let (op, positional) = match syscall {
        "read" | "readv" => (fs_op::FS_OP_READ, false),
        "pread64" | "preadv" | "preadv2" => (fs_op::FS_OP_READ, true),
        "write" | "writev" => (fs_op::FS_OP_WRITE, false),
        "pwrite64" | "pwritev" | "pwritev2" => (fs_op::FS_OP_WRITE, true),
        "open" | "openat" | "openat2" | "creat" => (fs_op::FS_OP_OPEN, false),
        "fsync" | "fdatasync" => (fs_op::FS_OP_FSYNC, false),
        _ => return None,
    };
    Some(syscall_class {
        op: op.0 as u8,
        positional: positional as u8,
    })
}

fn fill_syscall_classes(classes: &dyn MapCore) -> Result<()> {
    for (number, name) in syscall_table::NAMES.iter().enumerate() {
        if let Some(class) = classify(name) {
            classes.update(
                &(number as u32).to_ne_bytes(),
                layouts::bytes_of(&class),
                MapFlags::ANY,
            )?;
        }
    }
    Ok(())
}

fn fstype_bytes(fstype: &Option<String>) -> Result<Option<[i8; 16]>> {
    let Some(name) = fstype else {
        return Ok(None);
    };
    if name.is_empty() || name.len() > 15 {
        bail!("bad filesystem type {name:?}");
    }
    let mut bytes = [0i8; 16];
    for (slot, byte) in bytes.iter_mut().zip(name.bytes()) {
        *slot = byte as i8;
    }
    Ok(Some(bytes))
}

/// What the fslatency programs measure (also used by `serve`).
pub struct Setup {
    pub unit_ns: u64,
    /// fsslower: report each operation at least this slow instead of histograms.
    pub slow_ns: Option<u64>,
    pub fstype: Option<[i8; 16]>,
    /// Histograms keyed by the cgroup of the calling task too.
    pub key_by_cgroup: bool,
}

/// fentry on the VFS where the kernel allows it, else the syscall boundary.
const FLAVORS: &[HookFlavor] = &[HookFlavor::Fentry, HookFlavor::BtfTyped, HookFlavor::Raw];

/// Loads fslatency.bpf.c with the first hooks the kernel accepts and attaches it.
pub fn load<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    setup: &Setup,
) -> Result<(FslatencySkel<'obj>, Vec<Link>)> {
    let filters = targets.filter_flags();
    let (skel, flavor) = load_with_fallback(storage, FLAVORS, |storage, flavor| {
        let mut open = FslatencySkelBuilder::default()
            .open(storage)
            .context("opening the fslatency BPF object")?;
        let rodata = set_filter_flags!(open, filters);
        rodata.unit_ns = setup.unit_ns;
        rodata.report_slow = setup.slow_ns.is_some();
        rodata.own_tgid = std::process::id();
        rodata.slow_ns = setup.slow_ns.unwrap_or(0);
        rodata.key_by_cgroup = setup.key_by_cgroup;
        if let Some(fstype) = setup.fstype {
            rodata.filter_fstype = true;
            rodata.wanted_fstype = fstype;
        }
        let progs = &mut open.progs;
        let vfs = [
            &mut progs.vfs_read_entry,
            &mut progs.vfs_read_exit,
            &mut progs.vfs_write_entry,
            &mut progs.vfs_write_exit,
            &mut progs.vfs_open_entry,
            &mut progs.vfs_open_exit,
            &mut progs.vfs_fsync_entry,
            &mut progs.vfs_fsync_exit,
        ];
        for program in vfs {
            program.set_autoload(flavor == HookFlavor::Fentry);
        }
        progs.enter_btf.set_autoload(flavor == HookFlavor::BtfTyped);
        progs.exit_btf.set_autoload(flavor == HookFlavor::BtfTyped);
        progs.enter_raw.set_autoload(flavor == HookFlavor::Raw);
        progs.exit_raw.set_autoload(flavor == HookFlavor::Raw);
        open.load().context("loading the fslatency BPF programs")
    })?;
    write_target_filters!(targets, skel)?;
    let progs = &skel.progs;
    let programs = match flavor {
        HookFlavor::Fentry => vec![
            &progs.vfs_read_entry,
            &progs.vfs_read_exit,
            &progs.vfs_write_entry,
            &progs.vfs_write_exit,
            &progs.vfs_open_entry,
            &progs.vfs_open_exit,
            &progs.vfs_fsync_entry,
            &progs.vfs_fsync_exit,
        ],
        HookFlavor::BtfTyped => vec![&progs.enter_btf, &progs.exit_btf],
        HookFlavor::Raw => vec![&progs.enter_raw, &progs.exit_raw],
    };
    if flavor != HookFlavor::Fentry {
        fill_syscall_classes(&skel.maps.syscall_classes)?;
    }
    let links = programs
        .into_iter()
        .map(|program| program.attach())
        .collect::<Result<Vec<Link>, _>>()
        .context("attaching the file system hooks")?;
    eprintln!(
        "bpfscope: measuring {}",
        if flavor == HookFlavor::Fentry {
            "at the VFS (fentry/fexit on vfs_read, vfs_write, vfs_open, vfs_fsync_range)"
        } else {
            "at the syscall boundary (sys_enter/sys_exit)"
        }
    );
    Ok((skel, links))
}

pub fn run_fslatency(args: FslatencyArgs) -> Result<()> {
    let common = &args.common;
    let report = common.report_options()?;
    let fstype = fstype_bytes(&args.fstype)?;
    preflight::check_all()?;
    let targets = common.target_spec(&[]).resolve()?;
    let mut storage = object_storage();
    let setup = Setup {
        unit_ns: common.unit_ns(),
        slow_ns: None,
        fstype,
        key_by_cgroup: false,
    };
    let (skel, links) = load(&mut storage, &targets, &setup)?;

    signals::install();
    eprintln!("bpfscope: tracing file system operations... Hit Ctrl-C to end.");
    histogram::report_until_stopped(
        "fslatency",
        &report,
        &targets,
        |clear, time| {
            let histograms =
                histogram_maps::read_histograms(&skel.maps.hists, &skel.maps.total_hist, clear)?
                    .into_iter()
                    .map(|(key, hist)| match key {
                        HistogramKey::Keyed { id, name } => {
                            let operation = fs_operation_name(id);
                            (HistogramKey::Named(format!("{name} {operation}")), hist)
                        }
                        other => (other, hist),
                    })
                    .collect();
            Ok(histogram::render_histograms(
                "fslatency",
                &report,
                "operation",
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

/// One line (text or JSON) for a `struct slow_op`.
fn render_slow_op(raw: &[u8], json: bool) -> Option<String> {
    let op = layouts::read::<slow_op>(raw)?;
    let operation = fs_operation_name(op.op as u64);
    let (comm, fstype, file_name) = (
        c_string(&op.comm),
        c_string(&op.fstype),
        c_string(&op.file_name),
    );
    if json {
        let line = serde_json::json!({
            "time": time_of_day(),
            "comm": comm,
            "pid": op.tgid,
            "op": operation,
            "fstype": fstype,
            "bytes": op.bytes,
            "offset": op.offset,
            "latency_ns": op.latency_ns,
            "file": file_name,
        });
        return Some(format!("{line}\n"));
    }
    let letter = operation.chars().next().unwrap_or('?').to_ascii_uppercase();
    Some(format!(
        "{:<8} {comm:<14} {:<7} {letter} {fstype:<7} {:<6} {:<8} {:>8.2} {file_name}\n",
        time_of_day(),
        op.tgid,
        op.bytes,
        op.offset / 1024,
        op.latency_ns as f64 / 1e6,
    ))
}

pub fn run_fsslower(args: FsslowerArgs) -> Result<()> {
    if !(args.min_ms >= 0.0 && args.min_ms.is_finite()) {
        bail!("bad MIN_MS {}: give milliseconds, 0 or more", args.min_ms);
    }
    let fstype = fstype_bytes(&args.fstype)?;
    preflight::check_all()?;
    let spec = TargetSpec {
        pids: args.pids.clone(),
        cgroup: args.cgroup.clone(),
        ..Default::default()
    };
    let targets = spec.resolve()?;
    let mut storage = object_storage();
    let setup = Setup {
        unit_ns: 1000,
        slow_ns: Some((args.min_ms * 1e6) as u64),
        fstype,
        key_by_cgroup: false,
    };
    let (skel, links) = load(&mut storage, &targets, &setup)?;

    signals::install();
    eprintln!(
        "bpfscope: tracing file system operations slower than {} ms... Hit Ctrl-C to end.",
        args.min_ms
    );
    let header = format!(
        "{:<8} {:<14} {:<7} T {:<7} {:<6} {:<8} {:>8} FILENAME",
        "TIME", "COMM", "PID", "FSTYPE", "BYTES", "OFF_KB", "LAT(ms)"
    );
    events::EventStream {
        tool: "fsslower",
        what: "operations on regular files",
        events: &skel.maps.slow_ops,
        targets: &targets,
        duration: None,
        header: (!args.json).then_some(header.as_str()),
    }
    .run(
        |raw| render_slow_op(raw, args.json),
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(links);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_file_syscalls() {
        let class = |name| classify(name).map(|class| (class.op, class.positional));
        assert_eq!(class("pread64"), Some((fs_op::FS_OP_READ.0 as u8, 1)));
        assert_eq!(class("write"), Some((fs_op::FS_OP_WRITE.0 as u8, 0)));
        assert_eq!(class("openat"), Some((fs_op::FS_OP_OPEN.0 as u8, 0)));
        assert_eq!(class("fdatasync"), Some((fs_op::FS_OP_FSYNC.0 as u8, 0)));
        assert_eq!(class("getppid"), None);
    }

    #[test]
    fn fstype_must_fit_the_kernel_buffer() {
        assert!(fstype_bytes(&Some("ext4".into())).unwrap().is_some());
        assert!(fstype_bytes(&Some("a-very-long-fstype".into())).is_err());
        assert!(fstype_bytes(&None).unwrap().is_none());
    }
}
