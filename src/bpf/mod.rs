//! Kernel access: everything that touches BPF objects and maps. Loading an
//! object with the best hook flavor the kernel accepts, the checks that must
//! pass first, perf events, writing the target filters, and reading what the
//! programs summed (stacks, histograms, run statistics) back into typed
//! snapshots, through the layouts generated from src/bpf/layouts.h
//! (`crate::layouts`).

pub mod decode;
pub mod filters;
pub mod histogram_maps;
pub mod loader;
pub mod perf_event;
pub mod preflight;
pub mod program_stats;
pub mod run_stats;
pub mod stack_maps;
