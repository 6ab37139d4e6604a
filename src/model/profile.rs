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
    /// A Python function, read from the interpreter's frames.
    Python,
}

/// Where in its source file a frame was (Python frames).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceLine {
    pub file: String,
    /// The function's first line, and the line running.
    pub function_line: u32,
    pub line: u32,
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
    pub source: Option<Arc<SourceLine>>,
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
    /// The 20 ms slot since the start of the profile it was counted in
    /// (heatmaps), else 0.
    pub time_slot: u32,
    /// Who woke the thread (off-wake and wakeup profiles only).
    pub waker: Option<Box<Waker>>,
}

/// The frame between a blocked stack and its waker's, as BCC's offwaketime
/// writes it.
pub const WAKER_SEPARATOR: &str = "--";

/// What ran the wakeup of a blocked thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WakerContext {
    /// A task in process context: the waker's own stacks.
    Task,
    /// An interrupt handler, the softirqs run at its exit, or the idle loop
    /// running work deferred to it: the task it interrupted is not the waker.
    Interrupt,
    /// The thread ran again and no wakeup was seen (woken before the run).
    Unseen,
}

/// The waker of a blocked thread, in the same shape as the blocked sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Waker {
    pub context: WakerContext,
    /// 0 unless a task woke the thread.
    pub pid: u32,
    /// The task's name, or what ran the wakeup: `[interrupt]`, `[waker not seen]`.
    pub name: String,
    pub user: Vec<Frame>,
    /// For interrupts, only the interrupt's own frames: those below its
    /// entry belong to whatever task it landed on.
    pub kernel: Vec<Frame>,
    pub user_missing: bool,
    pub kernel_missing: bool,
}

/// Kernel entry points of interrupts (x86 `asm_sysvec_*`, `asm_common_interrupt`;
/// arm64 `el1h_64_irq`, `el0t_64_irq`...): frames below them are the interrupted task's.
fn is_interrupt_entry(frame: &Frame) -> bool {
    frame.functions.first().is_some_and(|name| {
        name.starts_with("asm_")
            || (name.starts_with("el") && (name.ends_with("_irq") || name.ends_with("_fiq")))
    })
}

impl Waker {
    /// The waker from its context and the stacks captured where it woke the
    /// thread (`stacks`: a sample of the waking context, value unused).
    pub fn new(context: WakerContext, stacks: Sample) -> Waker {
        match context {
            WakerContext::Task => Waker {
                context,
                pid: stacks.pid,
                name: stacks.comm,
                user: stacks.user,
                kernel: stacks.kernel,
                user_missing: stacks.user_missing,
                kernel_missing: stacks.kernel_missing,
            },
            WakerContext::Interrupt => {
                let mut kernel = stacks.kernel;
                if let Some(entry) = kernel.iter().rposition(is_interrupt_entry) {
                    kernel.drain(..entry);
                }
                Waker {
                    context,
                    pid: 0,
                    name: "[interrupt]".to_string(),
                    user: Vec::new(),
                    kernel,
                    user_missing: false,
                    kernel_missing: stacks.kernel_missing,
                }
            }
            WakerContext::Unseen => Waker {
                context,
                pid: 0,
                name: "[waker not seen]".to_string(),
                user: Vec::new(),
                kernel: Vec::new(),
                user_missing: false,
                kernel_missing: false,
            },
        }
    }
}

/// What the values of a profile measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProfileKind {
    /// On-CPU samples taken at `hz` per CPU.
    Cpu { hz: u64 },
    /// Off-CPU time in microseconds.
    OffCpu,
    /// Blocked time in microseconds, from block to running again, under the
    /// blocked stack and its waker's (offwaketime).
    OffWake,
    /// Blocked time in microseconds, from block to wakeup, under the
    /// waker's stack (wakeuptime).
    Wakeup,
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
