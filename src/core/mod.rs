//! The shared core every tool is built on: checks that must pass before any
//! BPF is loaded, selecting what to observe, loading and attaching programs
//! (with fallbacks), feeding the BPF unwinder its tables, reading stacks and
//! histograms back from kernel maps, symbolizing them, and running a
//! collection until it should stop.

pub mod bpf_stats;
pub mod cgroup_names;
pub mod cpus;
pub mod event_stream;
pub mod histograms;
pub mod loader;
pub mod net;
pub mod perf_event;
pub mod preflight;
pub mod process_maps;
pub mod run;
pub mod signals;
pub mod stack_collection;
pub mod stacks;
pub mod stats;
pub mod symbolize;
pub mod syscall_table;
pub mod target;
pub mod unwind_table;
pub mod unwinder;

/// A NUL-terminated string from a BPF struct (comm, names), lossily as UTF-8.
pub fn c_string(bytes: &[u8]) -> String {
    let length = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..length]).into_owned()
}
