//! The command-line flags several tools share, and their translation into
//! the typed options the engines take: stack tools (profile, offcpu,
//! offwaketime, wakeuptime, and the blocked threads the last three time),
//! histogram tools (BCC's `[INTERVAL [COUNT]]` conventions), event tools,
//! and the unwinding flags. Engines never see these structs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::engine::histogram::ReportOptions;
use crate::engine::stack::{StackCapture, StackOptions};
use crate::host::target::TargetSpec;
use crate::model::histogram::Scale;
use crate::model::process::GroupBy;
use crate::output::ProfileFormat;
use crate::symbolize::debuginfod::Debuginfod;
use crate::unwind::{UnwindMode, UnwindOptions, DEFAULT_ROW_CAPACITY};

/// Which blocked threads and blocks the sched_switch tools time (offcpu,
/// offwaketime, wakeuptime), with BCC's flags.
#[derive(Debug, clap::Args)]
pub struct BlockArgs {
    /// Only these threads (comma-separated TIDs).
    #[arg(short = 't', long = "tid", value_delimiter = ',', value_name = "TID")]
    pub tids: Vec<u32>,
    /// User threads only (no kernel threads).
    #[arg(
        short = 'u',
        long = "user-threads-only",
        conflicts_with = "kernel_threads_only"
    )]
    pub user_threads_only: bool,
    /// Kernel threads only.
    #[arg(short = 'k', long = "kernel-threads-only")]
    pub kernel_threads_only: bool,
    /// Ignore blocks shorter than this many microseconds.
    #[arg(
        short = 'm',
        long = "min-block-time",
        default_value_t = 1,
        value_name = "MIN_US"
    )]
    pub min_block_us: u64,
    /// Ignore blocks longer than this many microseconds.
    #[arg(short = 'M', long = "max-block-time", value_name = "MAX_US")]
    pub max_block_us: Option<u64>,
}

impl BlockArgs {
    /// The block-time bounds in nanoseconds (-m, -M), checked.
    pub fn bounds_ns(&self) -> Result<(u64, u64)> {
        if let Some(max) = self.max_block_us {
            if max < self.min_block_us {
                bail!(
                    "bad block-time bounds: -M {max} is below -m {}",
                    self.min_block_us
                );
            }
        }
        Ok((
            self.min_block_us.saturating_mul(1000),
            self.max_block_us
                .map_or(u64::MAX, |us| us.saturating_mul(1000)),
        ))
    }

    /// The subtitle's last words.
    pub fn qualifier(&self) -> String {
        match self.max_block_us {
            Some(max) => format!(", blocks of {} to {max} us", self.min_block_us),
            None => format!(", blocks of {} us or more", self.min_block_us),
        }
    }
}

/// The longest DURATION or INTERVAL any tool takes: a year, in seconds.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// DURATION / INTERVAL: 1 to MAX_SECONDS, or a one-line error naming `what`.
fn check_seconds(what: &str, value: Option<u64>) -> Result<()> {
    match value {
        Some(seconds) if !(1..=MAX_SECONDS).contains(&seconds) => {
            bail!("bad {what} {seconds}: give a number of seconds from 1 to {MAX_SECONDS}")
        }
        _ => Ok(()),
    }
}

/// The debuginfod flags of profile, offcpu and serve.
#[derive(Debug, Clone, clap::Args)]
pub struct DebuginfodArgs {
    /// debuginfod servers (space-separated http:// URLs) for stripped
    /// objects' debug files; default: $DEBUGINFOD_URLS ("" turns it off).
    #[arg(long, value_name = "URLS")]
    pub debuginfod: Option<String>,
    /// The most the output waits for debuginfod downloads after collection ends.
    #[arg(long, default_value_t = 5, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=600))]
    pub debuginfod_timeout: u64,
}

impl DebuginfodArgs {
    /// The client, with its download threads started; None without servers.
    pub fn client(&self) -> Option<Arc<Debuginfod>> {
        Debuginfod::from_settings(
            self.debuginfod.as_deref(),
            Duration::from_secs(self.debuginfod_timeout),
        )
    }
}

/// The unwinding flags of profile, offcpu and serve.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct UnwindArgs {
    /// How user stacks are walked: `auto` uses unwind tables from .eh_frame
    /// where a process's are loaded (right without frame pointers) and frame
    /// pointers elsewhere; `fp` frame pointers only; `dwarf` tables only.
    #[arg(long, value_enum, default_value_t = UnwindMode::Auto)]
    pub unwind: UnwindMode,
    /// Unwind-table rows the kernel array holds, 16 bytes each (libc needs
    /// about 28 000, LLVM's shared library 1.4 million).
    #[arg(long, default_value_t = DEFAULT_ROW_CAPACITY, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1 << 24))]
    pub unwind_rows: u32,
    /// Leave CPython's frames out: Python processes show the interpreter's
    /// native frames (`_PyEval_EvalFrameDefault`) instead of Python functions.
    #[arg(long)]
    pub no_python: bool,
}

impl UnwindArgs {
    pub fn options(&self) -> UnwindOptions {
        UnwindOptions {
            mode: self.unwind,
            rows: self.unwind_rows,
            python: !self.no_python,
        }
    }
}

/// Flags every stack tool takes.
#[derive(Debug, clap::Args)]
pub struct StackToolArgs {
    /// Only these processes (comma-separated PIDs), and the processes they
    /// fork after the start (as perf -p; see --no-children).
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,
    /// With -p: only the given processes, not those they fork after the start.
    #[arg(long, requires = "pids")]
    pub no_children: bool,
    /// Only tasks in this cgroup v2 directory (and below it); absolute or relative to the cgroup2 mount.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// User stacks only.
    #[arg(
        short = 'U',
        long = "user-stacks-only",
        conflicts_with = "kernel_stacks_only"
    )]
    pub user_stacks_only: bool,
    /// Kernel stacks only.
    #[arg(short = 'K', long = "kernel-stacks-only")]
    pub kernel_stacks_only: bool,
    /// Insert a "-" frame between user and kernel stacks.
    #[arg(short = 'd', long = "delimited")]
    pub delimited: bool,
    /// Root each stack at its process's cgroup or container (Docker,
    /// containerd, CRI-O, Podman, systemd service; "[host]" for others).
    #[arg(long, value_enum, default_value = "process", value_name = "WHAT")]
    pub group_by: GroupBy,
    /// Write to this file (format from its extension: .svg, .folded/.txt, .pb.gz/.pprof) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: from -o's extension, else folded).
    #[arg(short = 'f', long = "format", value_enum)]
    pub format: Option<ProfileFormat>,
    #[command(flatten)]
    pub unwind: UnwindArgs,
    #[command(flatten)]
    pub debug_info: DebuginfodArgs,
    /// Number of distinct stacks the stack-trace map can hold.
    #[arg(long, default_value_t = 16384, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1 << 22))]
    pub stack_storage_size: u32,
    /// Number of distinct (process, stack) counters.
    #[arg(long, default_value_t = 40960, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1 << 22))]
    pub max_stacks: u32,
    /// Seconds to run (default: until Ctrl-C, or until COMMAND exits).
    #[arg(value_name = "DURATION")]
    pub duration: Option<u64>,
    /// Run this command and observe it and its children until it exits
    /// (bpfscope then exits with its status).
    #[arg(last = true, num_args = 1.., value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl StackToolArgs {
    /// The engine's options, after checking the flags; `tids` are the
    /// tool's own thread filter, `per_thread` whether stacks are kept per thread.
    pub fn options(&self, tids: &[u32]) -> Result<StackOptions> {
        check_seconds("duration", self.duration)?;
        if self.duration.is_some() && !self.command.is_empty() {
            bail!("give either DURATION or -- COMMAND, not both");
        }
        Ok(StackOptions {
            targets: TargetSpec {
                pids: self.pids.clone(),
                tids: tids.to_vec(),
                cgroup: self.cgroup.clone(),
                command: self.command.clone(),
                pid_children: !self.no_children,
            },
            duration: self.duration.map(Duration::from_secs),
            capture: StackCapture {
                user: !self.kernel_stacks_only,
                kernel: !self.user_stacks_only,
                unwind: self.unwind.options(),
                stack_storage_size: self.stack_storage_size,
                max_stacks: self.max_stacks,
            },
            delimited: self.delimited,
            group_by: self.group_by,
            format: ProfileFormat::choose(self.format, self.output.as_deref())?,
            output: self.output.clone(),
            debuginfod: self.debug_info.client(),
        })
    }
}

/// Flags every histogram tool takes (BCC's conventions).
#[derive(Debug, clap::Args)]
pub struct HistogramArgs {
    /// Only these processes (comma-separated PIDs).
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only tasks in this cgroup v2 directory (and below it); absolute or relative to the cgroup2 mount.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Print a timestamp before each interval's output.
    #[arg(short = 'T', long = "timestamp")]
    pub timestamp: bool,
    /// Millisecond histograms (default: microseconds).
    #[arg(short = 'm', long = "milliseconds")]
    pub milliseconds: bool,
    /// Print JSON, one object per interval, instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print a report every INTERVAL seconds (default: once, at Ctrl-C).
    #[arg(value_name = "INTERVAL")]
    pub interval: Option<u64>,
    /// Stop after COUNT reports.
    #[arg(value_name = "COUNT")]
    pub count: Option<u64>,
}

impl HistogramArgs {
    /// How the runner reports, after checking INTERVAL and COUNT.
    pub fn report_options(&self) -> Result<ReportOptions> {
        check_seconds("interval", self.interval)?;
        if self.count == Some(0) {
            bail!("bad count 0: give a number of reports greater than 0");
        }
        Ok(ReportOptions {
            interval: self.interval.map(Duration::from_secs),
            count: self.count,
            timestamp: self.timestamp,
            json: self.json,
        })
    }

    pub fn target_spec(&self, tids: &[u32]) -> TargetSpec {
        TargetSpec {
            pids: self.pids.clone(),
            tids: tids.to_vec(),
            cgroup: self.cgroup.clone(),
            ..Default::default()
        }
    }

    /// Nanoseconds per histogram unit, for the BPF side.
    pub fn unit_ns(&self) -> u64 {
        if self.milliseconds {
            1_000_000
        } else {
            1_000
        }
    }

    /// The unit and scale of latency histograms.
    pub fn latency_unit(&self) -> (&'static str, Scale) {
        (
            if self.milliseconds { "msecs" } else { "usecs" },
            Scale::Log2,
        )
    }
}

/// Flags the per-event tools share.
#[derive(Debug, clap::Args)]
pub struct EventArgs {
    /// Only these processes (comma-separated PIDs); stops when they have all exited.
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only tasks in this cgroup v2 directory (and below it).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Print JSON, one object per event.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(short = 'd', long = "duration", value_name = "SECONDS")]
    pub duration: Option<u64>,
}

impl EventArgs {
    /// What to observe, after checking the duration.
    pub fn target_spec(&self) -> Result<TargetSpec> {
        check_seconds("duration", self.duration)?;
        Ok(TargetSpec {
            pids: self.pids.clone(),
            cgroup: self.cgroup.clone(),
            ..Default::default()
        })
    }

    pub fn run_duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_bounded() {
        assert!(check_seconds("interval", Some(0)).is_err());
        assert!(check_seconds("interval", Some(u64::MAX)).is_err());
        assert!(check_seconds("interval", Some(MAX_SECONDS)).is_ok());
        assert!(check_seconds("interval", None).is_ok());
    }
}
