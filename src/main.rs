//! bpfscope: Linux performance analysis on eBPF. This file is only the
//! command line: the table of tools, parsing, dispatch, and turning any
//! error into one line on stderr and a non-zero exit.
//!
//! Layers, each importing only those below it (scripts/check-layers.py
//! proves it): `tools` (the command line and its wiring), `engine` (stack
//! engine, histogram runner, event stream), `symbolize`, `unwind`, `bpf`
//! (kernel access), `host` (/proc, cgroups, processes), `layouts` (the
//! structs shared with BPF), then `model` and `output`.

mod bpf;
mod engine;
mod host;
mod layouts;
mod model;
mod output;
mod symbolize;
mod tools;
mod unwind;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bpfscope",
    version,
    about = "CPU and off-CPU flame graphs and latency histograms from eBPF"
)]
struct Cli {
    #[command(subcommand)]
    tool: Tool,
    /// The most memory, in all, that what other users' processes and files
    /// can make bpfscope hold may take: Python code objects, perf maps,
    /// private copies of objects, symbol tables, diff input (e.g. 512M, 2G).
    /// Past it, items are dropped and counted, and the run goes on.
    #[arg(long, global = true, value_name = "SIZE", default_value = "512M",
          value_parser = host::memory_budget::parse_size)]
    memory_budget: u64,
    /// The most one item of a kind may take, as KIND=SIZE (repeatable):
    /// python-code (default 64M, one process's code objects), perf-map (128M,
    /// one process's), private-copy (256M, one object's), symbol-table (256M,
    /// one object's), diff-input (256M, one input's).
    #[arg(long, global = true, value_name = "KIND=SIZE",
          value_parser = host::memory_budget::parse_item_limit)]
    memory_limit: Vec<(host::memory_budget::Kind, u64)>,
    /// Also report how unwinding, symbolization and runtimes fared (by
    /// default only what changes how the output should be read).
    #[arg(short, long, global = true)]
    verbose: bool,
}

/// A tool's exit status: 0, or that of the command it ran.
struct ExitStatus(u8);

impl From<()> for ExitStatus {
    fn from((): ()) -> Self {
        ExitStatus(0)
    }
}

impl From<u8> for ExitStatus {
    fn from(status: u8) -> Self {
        ExitStatus(status)
    }
}

/// The table of tools: one line each (after its help text), naming the
/// subcommand, its module's entry point and its flags.
macro_rules! tools {
    ($($(#[$doc:meta])* $variant:ident => $module:ident::$run:ident($args:ident),)*) => {
        #[derive(Debug, Subcommand)]
        enum Tool {
            $($(#[$doc])* $variant(tools::$module::$args),)*
        }

        impl Tool {
            fn run(self) -> anyhow::Result<ExitStatus> {
                match self {
                    $(Tool::$variant(args) => tools::$module::$run(args).map(ExitStatus::from),)*
                }
            }
        }
    };
}

tools! {
    /// CPU flame graphs: sample on-CPU stacks, counted in kernel.
    Profile => profile::run(ProfileArgs),
    /// Off-CPU flame graphs: time blocked, summed in kernel by stack.
    Offcpu => offcpu::run(OffcpuArgs),
    /// Off-wake flame graphs: blocked time by blocked stack and waker stack.
    Offwaketime => offwake::run_offwaketime(OffwaketimeArgs),
    /// Wakeup flame graphs: blocked time until the wakeup, by waker stack.
    Wakeuptime => offwake::run_wakeuptime(WakeuptimeArgs),
    /// Run-queue (scheduler) latency histograms.
    Runqlat => runqlat::run(RunqlatArgs),
    /// Syscall counts, latency totals (-L) or latency histograms (--hist).
    Syscount => syscount::run(SyscountArgs),
    /// Block I/O latency histograms.
    Biolatency => biolatency::run(BiolatencyArgs),
    /// Latency histograms of a user-space function (uprobes).
    Funclatency => funclatency::run(FunclatencyArgs),
    /// Run-queue length histograms, sampled per CPU.
    Runqlen => runqlen::run(RunqlenArgs),
    /// File system operation latency histograms (read, write, open, fsync).
    Fslatency => fslatency::run_fslatency(FslatencyArgs),
    /// Each file system operation slower than a threshold.
    Fsslower => fslatency::run_fsslower(FsslowerArgs),
    /// TCP connect latency, per connection or as a histogram.
    Tcpconnlat => tcpconnlat::run(TcpconnlatArgs),
    /// One line per closed TCP session: process, addresses, bytes, duration.
    Tcplife => tcplife::run(TcplifeArgs),
    /// One line per TCP retransmission, with the connection's state.
    Tcpretrans => tcpretrans::run(TcpretransArgs),
    /// Always-on agent: Prometheus metrics, pprof profiles and a live page over HTTP.
    Serve => serve::run(ServeArgs),
    /// The unwind table of an ELF file (for checking frame-pointer-less stacks).
    UnwindTable => unwind_table::run(UnwindTableArgs),
    /// Compare two profiles: difffolded lines or a differential flame graph.
    Diff => diff::run(DiffArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions => docs::run_completions(CompletionsArgs),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    Man => docs::run_man(ManArgs),
}

/// The command line's definition (for completions and man pages).
fn command_line() -> clap::Command {
    Cli::command()
}

fn main() {
    if std::env::args_os().last().is_some_and(|arg| arg == "--") {
        eprintln!("bpfscope: error: `--` must be followed by the command to run");
        std::process::exit(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            // One line, like every other error: clap's first, without its usage block.
            let text = error.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "bpfscope: error: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
        Err(help_or_version) => help_or_version.exit(),
    };
    host::memory_budget::configure(cli.memory_budget, &cli.memory_limit);
    output::report::configure(cli.verbose);
    match cli.tool.run() {
        Ok(ExitStatus(status)) => std::process::exit(status.into()),
        Err(error) => {
            eprintln!("bpfscope: error: {error:#}");
            std::process::exit(1);
        }
    }
}
