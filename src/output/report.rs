//! The run report: what a run collected and lost, on stderr, built in one
//! place per run and printed at its end. Lines that change how the output
//! should be read (the result, losses, unreadable targets, how to name
//! unnamed frames) are always printed; how unwinding, symbolization and the
//! runtimes fared only with `-v`, so that a first run's expected misses are
//! not read as failures.

use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Sets whether detail lines are printed (the global `-v`).
pub fn configure(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// The lines of one run's report, in order.
#[derive(Default)]
pub struct Report {
    lines: Vec<(bool, String)>,
}

impl Report {
    /// A line every run prints.
    pub fn always(&mut self, line: impl Into<String>) {
        self.lines.push((true, line.into()));
    }

    /// A line printed with `-v` only.
    pub fn detail(&mut self, line: impl Into<String>) {
        self.lines.push((false, line.into()));
    }

    /// A warning every run prints.
    pub fn warning(&mut self, line: impl AsRef<str>) {
        self.always(format!("warning: {}", line.as_ref()));
    }

    /// Prints the report, each line after "bpfscope: ".
    pub fn print(self) {
        let verbose = VERBOSE.load(Ordering::Relaxed);
        for (always, line) in self.lines {
            if always || verbose {
                eprintln!("bpfscope: {line}");
            }
        }
    }
}
