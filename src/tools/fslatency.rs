//! `bpfscope fslatency` and `bpfscope fsslower`: latency of read, write,
//! open and fsync on regular files, per operation and filesystem type.
//!
//! Method: the syscall boundary (`sys_enter` to `sys_exit`), not fentry on
//! each filesystem's functions: fentry is refused on many kernels (this one
//! included), and the syscall tracepoints exist everywhere. So the latency is
//! what the application saw, including VFS and page-cache time; descriptors
//! are resolved to their files in BPF and only regular files are counted,
//! classified by their superblock's filesystem type. Asynchronous I/O
//! (io_uring, aio) and mmap page faults are not seen.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};

use crate::core::histograms::{self, time_of_day, HistogramArgs};
use crate::core::loader::{load_with_fallback, object_storage, HookFlavor, ObjectStorage};
use crate::core::stats::RunStats;
use crate::core::target::{set_filter_flags, write_target_filters};
use crate::core::target::{TargetSpec, Targets};
use crate::core::{c_string, event_stream};
use crate::core::{preflight, signals, syscall_table};
use crate::model::histogram::HistogramKey;
use crate::output::histogram::json_string;

mod skel {
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

/// `enum fs_op` in fslatency.bpf.c.
pub const OPERATIONS: [&str; 5] = ["none", "read", "write", "open", "fsync"];

/// The syscalls traced, by name: (operation, the 4th argument is the offset).
fn classify(syscall: &str) -> Option<(u8, bool)> {
    Some(match syscall {
        "read" | "readv" => (1, false),
        "pread64" | "preadv" | "preadv2" => (1, true),
        "write" | "writev" => (2, false),
        "pwrite64" | "pwritev" | "pwritev2" => (2, true),
        "open" | "openat" | "openat2" | "creat" => (3, false),
        "fsync" | "fdatasync" => (4, false),
        _ => return None,
    })
}

fn fill_syscall_classes(classes: &dyn MapCore) -> Result<()> {
    for (number, name) in syscall_table::X86_64.iter().enumerate() {
        if let Some((op, positional)) = classify(name) {
            classes.update(
                &(number as u32).to_ne_bytes(),
                &[op, positional as u8],
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
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("fslatency object has no .rodata")?;
        set_filter_flags!(&mut *rodata, filters);
        rodata.unit_ns = setup.unit_ns;
        rodata.report_slow = setup.slow_ns.is_some();
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
    common.validate()?;
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
    histograms::report_until_stopped(
        "fslatency",
        common,
        &targets,
        |clear, time| {
            let histograms =
                histograms::read_histograms(&skel.maps.hists, &skel.maps.total_hist, clear)?
                    .into_iter()
                    .map(|(key, hist)| match key {
                        HistogramKey::Keyed { id, name } => {
                            let operation = OPERATIONS.get(id as usize).unwrap_or(&"unknown");
                            (HistogramKey::Named(format!("{name} {operation}")), hist)
                        }
                        other => (other, hist),
                    })
                    .collect();
            Ok(histograms::render_histograms(
                "fslatency",
                common,
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

/// Mirrors `struct slow_op` in fslatency.bpf.c (112 bytes).
struct SlowOp {
    latency_ns: u64,
    offset: u64,
    bytes: i64,
    tgid: u32,
    op: u32,
    comm: String,
    fstype: String,
    file_name: String,
}

impl SlowOp {
    fn parse(raw: &[u8]) -> Option<Self> {
        if raw.len() < 96 {
            return None;
        }
        let u64_at = |at: usize| u64::from_ne_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        Some(SlowOp {
            latency_ns: u64_at(0),
            offset: u64_at(8),
            bytes: u64_at(16) as i64,
            tgid: u32::from_ne_bytes(raw[24..28].try_into().expect("4 bytes")),
            op: u32::from_ne_bytes(raw[28..32].try_into().expect("4 bytes")),
            comm: c_string(&raw[32..48]),
            fstype: c_string(&raw[48..64]),
            file_name: c_string(&raw[64..96]),
        })
    }

    fn render(&self, json: bool) -> String {
        let operation = OPERATIONS.get(self.op as usize).unwrap_or(&"unknown");
        if json {
            return format!(
                "{{\"time\":{},\"comm\":{},\"pid\":{},\"op\":{},\"fstype\":{},\"bytes\":{},\"offset\":{},\"latency_ns\":{},\"file\":{}}}\n",
                json_string(&time_of_day()),
                json_string(&self.comm),
                self.tgid,
                json_string(operation),
                json_string(&self.fstype),
                self.bytes,
                self.offset,
                self.latency_ns,
                json_string(&self.file_name)
            );
        }
        let letter = operation.chars().next().unwrap_or('?').to_ascii_uppercase();
        format!(
            "{:<8} {:<14} {:<7} {letter} {:<7} {:<6} {:<8} {:>8.2} {}\n",
            time_of_day(),
            self.comm,
            self.tgid,
            self.fstype,
            self.bytes,
            self.offset / 1024,
            self.latency_ns as f64 / 1e6,
            self.file_name
        )
    }
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
    event_stream::EventStream {
        tool: "fsslower",
        what: "operations on regular files",
        events: &skel.maps.slow_ops,
        targets: &targets,
        duration: None,
        header: (!args.json).then_some(header.as_str()),
    }
    .run(
        |raw| SlowOp::parse(raw).map(|op| op.render(args.json)),
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
        assert_eq!(classify("pread64"), Some((1, true)));
        assert_eq!(classify("write"), Some((2, false)));
        assert_eq!(classify("openat"), Some((3, false)));
        assert_eq!(classify("fdatasync"), Some((4, false)));
        assert_eq!(classify("getppid"), None);
    }

    #[test]
    fn fstype_must_fit_the_kernel_buffer() {
        assert!(fstype_bytes(&Some("ext4".into())).unwrap().is_some());
        assert!(fstype_bytes(&Some("a-very-long-fstype".into())).is_err());
        assert!(fstype_bytes(&None).unwrap().is_none());
    }
}
