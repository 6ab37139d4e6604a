//! Checks run before anything is loaded, so that the common ways a run can
//! fail (privileges, no BTF) are reported as one clear line
//! instead of a libbpf error from deep inside a load.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use anyhow::{bail, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Effective capability bits of this process, from /proc/self/status.
fn effective_capabilities() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Loading tracing programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN).
pub fn check_privileges() -> Result<()> {
    let caps = effective_capabilities();
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!("this needs root, or the capabilities CAP_BPF and CAP_PERFMON (run it with sudo)")
}

/// CO-RE relocation and BTF-typed programs need the kernel's own BTF.
pub fn check_kernel_btf() -> Result<()> {
    if Path::new(BTF_VMLINUX).exists() {
        return Ok(());
    }
    bail!(
        "this kernel exposes no BTF ({BTF_VMLINUX} is missing); bpfscope needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )
}

/// A kernel field a program reads, and why a user would lack it.
pub struct KernelField {
    pub structure: &'static str,
    pub member: &'static str,
    pub requirement: &'static str,
}

/// Does the kernel have every one of `fields`? Fields behind kernel
/// configuration options exist only where the option is on, and a program
/// reading a missing one fails to load with a CO-RE error; this names the
/// option instead. The kernel's BTF is read once for all of them.
pub fn check_kernel_fields(fields: &[KernelField]) -> Result<()> {
    let btf = libbpf_rs::btf::Btf::from_vmlinux()
        .map_err(|error| anyhow::anyhow!("reading the kernel's BTF: {error}"))?;
    for field in fields {
        let found = btf
            .type_by_name::<libbpf_rs::btf::types::Struct>(field.structure)
            .is_some_and(|found| {
                found
                    .iter()
                    .any(|m| m.name == Some(OsStr::new(field.member)))
            });
        if !found {
            bail!(
                "this kernel has no {}.{}: {}",
                field.structure,
                field.member,
                field.requirement
            );
        }
    }
    Ok(())
}

/// Everything every tool needs before it opens a BPF object.
pub fn check_all() -> Result<()> {
    check_privileges()?;
    check_kernel_btf()?;
    silence_libbpf();
    Ok(())
}

/// libbpf prints its own multi-line diagnostics on stderr; bpfscope reports
/// failures itself, so those are shown only with BPFSCOPE_LIBBPF_LOG=1.
fn silence_libbpf() {
    if std::env::var_os("BPFSCOPE_LIBBPF_LOG").is_some() {
        fn show(_level: libbpf_rs::PrintLevel, message: String) {
            eprint!("{message}");
        }
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, show)));
        return;
    }
    fn ignore(_level: libbpf_rs::PrintLevel, _message: String) {}
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, ignore)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_sys_admin_or_check_fails_cleanly() {
        // Whatever the caller's privileges, the check never panics and its
        // verdict matches the capability bits.
        let caps = effective_capabilities();
        let allowed = caps & (1 << CAP_SYS_ADMIN) != 0
            || (caps & (1 << CAP_BPF) != 0 && caps & (1 << CAP_PERFMON) != 0);
        assert_eq!(check_privileges().is_ok(), allowed);
    }
}
