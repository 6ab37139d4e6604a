//! bpfscope: Linux performance analysis on eBPF. This file is only the
//! command line: it parses arguments, dispatches to a tool, and turns any
//! error into one line on stderr and a non-zero exit.

mod bpf;
mod engine;
mod host;
mod model;
mod output;
mod symbolize;
mod tools;
mod unwind;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bpfscope",
    version,
    about = "CPU and off-CPU flame graphs and latency histograms from eBPF"
)]
struct Cli {
    #[command(subcommand)]
    tool: Tool,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// CPU flame graphs: sample on-CPU stacks, counted in kernel.
    Profile(tools::profile::ProfileArgs),
    /// Off-CPU flame graphs: time blocked, summed in kernel by stack.
    Offcpu(tools::offcpu::OffcpuArgs),
    /// Run-queue (scheduler) latency histograms.
    Runqlat(tools::runqlat::RunqlatArgs),
    /// Syscall counts, latency totals (-L) or latency histograms (--hist).
    Syscount(tools::syscount::SyscountArgs),
    /// Block I/O latency histograms.
    Biolatency(tools::biolatency::BiolatencyArgs),
    /// Latency histograms of a user-space function (uprobes).
    Funclatency(tools::funclatency::FunclatencyArgs),
    /// Run-queue length histograms, sampled per CPU.
    Runqlen(tools::runqlen::RunqlenArgs),
    /// File system operation latency histograms (read, write, open, fsync).
    Fslatency(tools::fslatency::FslatencyArgs),
    /// Each file system operation slower than a threshold.
    Fsslower(tools::fslatency::FsslowerArgs),
    /// TCP connect latency, per connection or as a histogram.
    Tcpconnlat(tools::tcpconnlat::TcpconnlatArgs),
    /// One line per closed TCP session: process, addresses, bytes, duration.
    Tcplife(tools::tcplife::TcplifeArgs),
    /// One line per TCP retransmission, with the connection's state.
    Tcpretrans(tools::tcpretrans::TcpretransArgs),
    /// Always-on agent: Prometheus metrics, pprof profiles and a live page over HTTP.
    Serve(tools::serve::ServeArgs),
    /// The unwind table of an ELF file (for checking frame-pointer-less stacks).
    UnwindTable(tools::unwind_table::UnwindTableArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.tool {
        Tool::Profile(args) => tools::profile::run(args),
        Tool::Offcpu(args) => tools::offcpu::run(args),
        Tool::Runqlat(args) => tools::runqlat::run(args),
        Tool::Syscount(args) => tools::syscount::run(args),
        Tool::Biolatency(args) => tools::biolatency::run(args),
        Tool::Funclatency(args) => tools::funclatency::run(args),
        Tool::Runqlen(args) => tools::runqlen::run(args),
        Tool::Fslatency(args) => tools::fslatency::run_fslatency(args),
        Tool::Fsslower(args) => tools::fslatency::run_fsslower(args),
        Tool::Tcpconnlat(args) => tools::tcpconnlat::run(args),
        Tool::Tcplife(args) => tools::tcplife::run(args),
        Tool::Tcpretrans(args) => tools::tcpretrans::run(args),
        Tool::Serve(args) => tools::serve::run(args),
        Tool::UnwindTable(args) => tools::unwind_table::run(args),
    };
    if let Err(error) = result {
        eprintln!("bpfscope: error: {error:#}");
        std::process::exit(1);
    }
}
