//! Least privilege for the long-running agent: once `serve` has loaded and
//! attached its programs, it keeps only the capabilities it still uses and
//! drops every other one from its effective, permitted, inheritable,
//! ambient and bounding sets, so nothing it runs can regain them.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};

/// What the agent needs once started: bpf and perfmon (loading programs,
/// perf events, maps, iterators), sys_ptrace (other users' /proc/PID/maps,
/// mem and root), checkpoint_restore (opening mapped files through
/// /proc/PID/map_files), dac_read_search (other users' perf maps and mapped
/// files), syslog (kernel symbol addresses in /proc/kallsyms).
pub const KEEP_BY_DEFAULT: [&str; 6] = [
    "bpf",
    "perfmon",
    "sys_ptrace",
    "checkpoint_restore",
    "dac_read_search",
    "syslog",
];

/// Capability names and numbers (linux/capability.h), without `cap_`.
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The set named by `names` (`bpf`, `cap_bpf` or `CAP_BPF`), as a bit mask.
pub fn parse(names: &[String]) -> Result<u64> {
    let mut mask = 0u64;
    for name in names {
        let bare = name.trim().to_ascii_lowercase();
        let bare = bare.strip_prefix("cap_").unwrap_or(&bare);
        let Some(bit) = NAMES.iter().position(|known| *known == bare) else {
            bail!("unknown capability {name:?} in --capabilities.keep");
        };
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// `cap_bpf,cap_perfmon` for a mask.
pub fn describe(mask: u64) -> String {
    let mut text = String::new();
    for (bit, name) in NAMES.iter().enumerate() {
        if mask & (1 << bit) != 0 {
            let _ = write!(text, "{}cap_{name}", if text.is_empty() { "" } else { "," });
        }
    }
    text
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Keeps only `keep` (and only what the process has now): the bounding set
/// loses the rest first (which needs CAP_SETPCAP, dropped last), then the
/// ambient set is cleared and the other sets are set. Returns the kept mask,
/// and whether the bounding set could be cut too (not without CAP_SETPCAP,
/// as for a non-root user given ambient capabilities).
pub fn keep_only(keep: u64) -> Result<(u64, bool)> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading this process's capabilities");
    }
    let permitted = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    let kept = keep & permitted;
    let mut bounding_cut = true;
    for bit in 0..64u64 {
        if kept & (1 << bit) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments. EINVAL: a capability this kernel does not have.
        let dropped = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, bit, 0, 0, 0) };
        if dropped != 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINVAL) => break,
                _ => bounding_cut = false,
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let low = kept as u32;
    let high = (kept >> 32) as u32;
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads two CapData for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("dropping capabilities");
    }
    Ok((kept, bounding_cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_kernels_numbers() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&names(&["bpf"])).unwrap(), 1 << 39);
        assert_eq!(
            parse(&names(&["CAP_PERFMON", "cap_sys_ptrace"])).unwrap(),
            (1 << 38) | (1 << 19)
        );
        assert!(parse(&names(&["cap_fly"])).is_err());
        let defaults: Vec<String> = KEEP_BY_DEFAULT
            .iter()
            .map(|name| name.to_string())
            .collect();
        assert_eq!(
            describe(parse(&defaults).unwrap()),
            "cap_dac_read_search,cap_sys_ptrace,cap_syslog,cap_perfmon,cap_bpf,cap_checkpoint_restore"
        );
    }
}
