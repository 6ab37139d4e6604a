//! Host access: what bpfscope reads from /proc and cgroupfs and does with
//! processes. Which targets a run observes (PIDs, TIDs, cgroups, a command
//! it starts), snapshots of processes' mappings, cgroup names, CPUs,
//! syscall names and signals; and the memory budget for what they can make
//! bpfscope hold.

pub mod capabilities;
pub mod cgroup_names;
pub mod containers;
pub mod cpus;
pub mod debug_files;
pub mod limits;
pub mod memory_budget;
pub mod object_files;
pub mod perf_maps;
pub mod private_dir;
pub mod process_context;
pub mod process_maps;
pub mod python_runtime;
pub mod signals;
pub mod syscall_table;
pub mod target;
