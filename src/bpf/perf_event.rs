//! Opens the software cpu-clock perf event on each CPU that the profile
//! program is attached to. No hardware PMU is needed.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use libbpf_rs::{Link, ProgramMut};

use anyhow::{bail, Result};

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// The first published layout of `struct perf_event_attr` (PERF_ATTR_SIZE_VER0);
/// the kernel accepts it and zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// Opens a cpu-clock event on `cpu` that fires `hz` times per second of CPU time.
pub fn open_cpu_clock(cpu: u32, hz: u64) -> Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        // cpu-clock counts nanoseconds, so a fixed period gives an exact rate.
        sample_period: 1_000_000_000 / hz,
        ..Default::default()
    };
    // SAFETY: attr is a valid perf_event_attr prefix whose size field says so.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        bail!("cannot open the cpu-clock perf event on CPU {cpu}: {err}");
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A sampling frequency must be at least 1 Hz and at most what the kernel allows.
pub fn check_frequency(hz: u64) -> Result<()> {
    let max = max_sample_rate();
    if hz == 0 || hz > max {
        bail!("bad frequency {hz} Hz: must be between 1 and {max} (kernel.perf_event_max_sample_rate)");
    }
    Ok(())
}

/// The highest sampling rate the kernel allows (kernel.perf_event_max_sample_rate).
pub fn max_sample_rate() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100_000)
}

/// Attaches a perf_event program; the returned link owns (and closes) the event.
pub fn attach(program: &ProgramMut<'_>, event: OwnedFd) -> Result<Link> {
    let raw = event.into_raw_fd();
    program.attach_perf_event(raw).map_err(|err| {
        // SAFETY: the attach failed, so the descriptor is still ours to close.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        anyhow::Error::from(err)
    })
}
