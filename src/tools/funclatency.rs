//! `bpfscope funclatency`: latency histograms of a user-space function, from
//! a uprobe at its entry to a uretprobe at its return, summed in kernel by
//! `funclatency.bpf.c`.

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::UprobeOpts;

use crate::bpf::filters::{set_filter_flags, write_target_filters};
use crate::bpf::histogram_maps;
use crate::bpf::preflight;
use crate::bpf::run_stats::RunStats;
use crate::engine::histogram;
use crate::host::signals;
use crate::tools::flags::HistogramArgs;

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/funclatency.skel.rs"));
}
use skel::FunclatencySkelBuilder;

/// Time a user-space function's calls as a latency histogram.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bpfscope funclatency /usr/bin/bash:readline     every bash process\n  bpfscope funclatency c:malloc 5 1               libc's malloc, one 5 s report\n  bpfscope funclatency -p 1234 handle_request     a function of process 1234's executable"
)]
pub struct FunclatencyArgs {
    /// BINARY:FUNCTION (BINARY a path, a program on PATH, or a library such as c or libc.so.6),
    /// or FUNCTION of the executable of the process given with -p.
    #[arg(value_name = "[BINARY:]FUNCTION")]
    pub target: String,
    /// A histogram per process.
    #[arg(short = 'P', long = "pids")]
    pub per_process: bool,
    #[command(flatten)]
    pub common: HistogramArgs,
}

/// Where to attach: the ELF file and the function's symbol name.
#[derive(Debug, PartialEq, Eq)]
struct ProbeTarget {
    binary: PathBuf,
    function: String,
}

/// "c" and "libc" mean libc.so.6, as in BCC; other bare names are looked up
/// as programs on PATH, then as libraries.
fn resolve_binary(name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        if !path.is_file() {
            bail!("no such binary: {name}");
        }
        return Ok(path);
    }
    let library = match name {
        "c" | "libc" => "libc.so.6".to_string(),
        _ if name.contains(".so") => name.to_string(),
        _ => format!("lib{name}.so"),
    };
    let search = std::env::var_os("PATH").unwrap_or_default();
    let program = std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    let library_dirs = [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ];
    program
        .or_else(|| {
            library_dirs
                .iter()
                .map(|dir| Path::new(dir).join(&library))
                .find(|path| path.is_file())
        })
        .with_context(|| format!("no such binary: {name} (not on PATH, no library {library})"))
}

fn probe_target(target: &str, pids: &[u32]) -> Result<ProbeTarget> {
    if let Some((binary, function)) = target.rsplit_once(':') {
        if function.is_empty() {
            bail!("no function given in {target:?}; use BINARY:FUNCTION");
        }
        return Ok(ProbeTarget {
            binary: resolve_binary(binary)?,
            function: function.to_string(),
        });
    }
    let [pid] = pids else {
        bail!(
            "{target:?} has no BINARY: give BINARY:FUNCTION, or one -p PID to use its executable"
        );
    };
    let binary = std::fs::read_link(format!("/proc/{pid}/exe"))
        .with_context(|| format!("no such process: PID {pid}"))?;
    Ok(ProbeTarget {
        binary,
        function: target.to_string(),
    })
}

pub fn run(args: FunclatencyArgs) -> Result<()> {
    let common = &args.common;
    let report = common.report_options()?;
    preflight::check_all()?;
    let targets = common.target_spec(&[]).resolve()?;
    let probe = probe_target(&args.target, &common.pids)?;
    let filters = targets.filter_flags();

    let mut storage = MaybeUninit::uninit();
    let mut open = FunclatencySkelBuilder::default()
        .open(&mut storage)
        .context("opening the funclatency BPF object")?;
    let rodata = set_filter_flags!(open, filters);
    rodata.unit_ns = common.unit_ns();
    rodata.per_process = args.per_process;
    let skel = open
        .load()
        .context("loading the funclatency BPF programs")?;
    write_target_filters!(&targets, skel)?;

    // One PID can be filtered by the kernel at attach time; more use the BPF filter.
    let attach_pid = match common.pids.as_slice() {
        [pid] => *pid as i32,
        _ => -1,
    };
    let attach = |program: &libbpf_rs::ProgramMut<'_>, retprobe: bool| {
        let options = UprobeOpts {
            func_name: Some(probe.function.clone()),
            retprobe,
            ..Default::default()
        };
        program
            .attach_uprobe_with_opts(attach_pid, &probe.binary, 0, options)
            .map_err(|error| {
                // Uprobe perf events need CAP_SYS_ADMIN; bpf and perfmon are not enough.
                let hint = if error.kind() == libbpf_rs::ErrorKind::PermissionDenied {
                    "attaching uprobes needs root or CAP_SYS_ADMIN"
                } else {
                    "is the function there, with a symbol?"
                };
                anyhow::Error::new(error).context(format!(
                    "cannot attach to {} in {} ({hint})",
                    probe.function,
                    probe.binary.display()
                ))
            })
    };
    let links = [
        attach(&skel.progs.function_entry, false)?,
        attach(&skel.progs.function_return, true)?,
    ];

    signals::install();
    eprintln!(
        "bpfscope: tracing {} in {}... Hit Ctrl-C to end.",
        probe.function,
        probe.binary.display()
    );
    histogram::report_until_stopped(
        "funclatency",
        &report,
        &targets,
        |clear, time| {
            let histograms =
                histogram_maps::read_histograms(&skel.maps.hists, &skel.maps.total_hist, clear)?;
            let (mut text, events) = histogram::render_histograms(
                "funclatency",
                &report,
                "pid",
                common.latency_unit(),
                histograms,
                time,
            );
            if !common.json {
                text.insert_str(
                    0,
                    &format!(
                        "Function = {} [{}]\n",
                        probe.function,
                        probe.binary.display()
                    ),
                );
            }
            Ok((text, events))
        },
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(links);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_function_targets() {
        let target = probe_target("/bin/sh:main", &[]).unwrap();
        assert_eq!(
            target,
            ProbeTarget {
                binary: "/bin/sh".into(),
                function: "main".into()
            }
        );
        let libc = probe_target("c:malloc", &[]).unwrap();
        assert!(libc.binary.ends_with("libc.so.6"), "{libc:?}");
        assert_eq!(libc.function, "malloc");
        assert!(probe_target("/no/such/binary:f", &[])
            .unwrap_err()
            .to_string()
            .contains("no such binary"));
        assert!(probe_target("f", &[])
            .unwrap_err()
            .to_string()
            .contains("give BINARY:FUNCTION"));
        assert!(probe_target("/bin/sh:", &[]).is_err());
    }
}
