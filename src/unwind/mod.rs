//! Table-driven user-stack unwinding for binaries without frame pointers,
//! in single-purpose parts: `table` turns an object's `.eh_frame` into the
//! rows BPF walks (src/bpf/unwind.h), `cache` keeps built tables on disk,
//! and `manager` feeds them to the kernel as processes come and go.

pub mod cache;
pub mod manager;
pub mod table;

/// How user stacks are walked (`--unwind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Unwind tables where a process's are loaded, frame pointers elsewhere.
    Auto,
    /// Frame pointers only (what the kernel's bpf_get_stackid does).
    Fp,
    /// Unwind tables only: no frame-pointer guesses.
    Dwarf,
}

impl UnwindMode {
    /// `enum uw_mode` in layouts.h.
    pub fn bpf_value(self) -> i32 {
        use crate::layouts::uw_mode;
        let mode = match self {
            UnwindMode::Fp => uw_mode::UNWIND_FP,
            UnwindMode::Auto => uw_mode::UNWIND_AUTO,
            UnwindMode::Dwarf => uw_mode::UNWIND_TABLES,
        };
        mode.0 as i32
    }
}

/// What the stack walkers are asked to do: the table unwinder's mode and
/// row array's size, and whether Python frames are read.
#[derive(Debug, Clone, Copy)]
pub struct UnwindOptions {
    pub mode: UnwindMode,
    /// Rows the kernel array holds (16 bytes each).
    pub rows: u32,
    /// Read CPython's frames in Python processes (python.h).
    pub python: bool,
}

impl UnwindOptions {
    /// Entries to create `unwind_rows` with: one when tables go unused
    /// (`fp`, or an architecture whose unwinding rules are not implemented).
    pub fn array_entries(&self) -> u32 {
        if self.mode == UnwindMode::Fp || cfg!(not(target_arch = "x86_64")) {
            1
        } else {
            self.rows
        }
    }
}

/// Rows `unwind_rows` holds by default (16 MiB).
pub const DEFAULT_ROW_CAPACITY: u32 = 1 << 20;
