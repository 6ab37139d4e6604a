//! Run time of our own BPF programs, for `serve`'s self metrics. The kernel
//! counts it only while run-time statistics are enabled (sysctl
//! kernel.bpf_stats_enabled=1, or a BPF_ENABLE_STATS descriptor held open,
//! which `serve --bpf-stats` does): each program run then costs two clock
//! reads more.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{bail, Result};
use libbpf_rs::libbpf_sys;

/// Enables run-time statistics until the returned descriptor is closed.
pub fn enable() -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper; returns a new descriptor or a negative error.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        bail!(
            "cannot enable BPF run-time statistics: {}",
            std::io::Error::from_raw_os_error(-fd)
        );
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether run-time statistics are on by sysctl (a descriptor held open by
/// another process does not show here).
pub fn enabled_by_sysctl() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

/// (nanoseconds run, runs) of one loaded program.
pub fn run_time(program: BorrowedFd<'_>) -> Result<(u64, u64)> {
    // SAFETY: bpf_prog_info is plain data; the kernel fills at most `length` bytes.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    let status = unsafe {
        libbpf_sys::bpf_prog_get_info_by_fd(
            program.as_raw_fd(),
            &mut info as *mut _,
            &mut length as *mut u32,
        )
    };
    if status != 0 {
        bail!(
            "reading BPF program info: {}",
            std::io::Error::from_raw_os_error(-status)
        );
    }
    Ok((info.run_time_ns, info.run_cnt))
}

/// (name, descriptor) of every program an object loaded.
pub fn loaded_programs(object: &libbpf_rs::Object) -> Result<Vec<(String, OwnedFd)>> {
    object
        .progs()
        .filter(|program| program.autoload())
        .map(|program| {
            let fd = program.as_fd().try_clone_to_owned()?;
            Ok((program.name().to_string_lossy().into_owned(), fd))
        })
        .collect()
}
