//! A profile: symbolized stacks, each with a value (samples for CPU
//! profiles, microseconds for off-CPU ones). Renderers (folded, SVG, pprof)
//! read only this.

use std::sync::Arc;
use std::time::Duration;

use crate::model::module::Module;
use crate::model::process::ProcessContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    User,
    Kernel,
    /// User code in no file mapping, named from the runtime's perf map.
    Jit,
}

/// One stack frame. `functions` lists the function at this address and the
/// functions inlined into it, outermost first; it is empty when the address
/// could not be named.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: FrameKind,
    pub address: u64,
    pub functions: Vec<String>,
    pub module: Option<Arc<Module>>,
}

/// One stack and its total value. Frames run from the root to the leaf: user
/// frames first, then kernel frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Where the process ran (cgroup, container), where it was seen alive.
    pub context: Option<Arc<ProcessContext>>,
    pub user: Vec<Frame>,
    pub kernel: Vec<Frame>,
    /// The user stack was asked for but could not be captured.
    pub user_missing: bool,
    /// The kernel stack was asked for but was lost (stack map full or collision).
    pub kernel_missing: bool,
    pub value: u64,
}

/// What the values of a profile measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProfileKind {
    /// On-CPU samples taken at `hz` per CPU.
    Cpu { hz: u64 },
    /// Off-CPU time in microseconds.
    OffCpu,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub kind: ProfileKind,
    pub duration: Duration,
    pub samples: Vec<Sample>,
}

impl Profile {
    pub fn total(&self) -> u64 {
        self.samples.iter().map(|sample| sample.value).sum()
    }
}
