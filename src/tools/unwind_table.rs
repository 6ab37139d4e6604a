//! `bpfscope unwind-table FILE`: builds (or loads from the disk cache) the
//! unwind table the BPF unwinder would use for an ELF file and says how big
//! it is and how long it took: for checking why a binary's stacks stop, and
//! for the table benchmarks (bench/unwind.py).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::output::write_stdout;

use crate::core::unwind_table::{self, TableCache, CFA_END, CFA_NONE, CFA_PLT, CFA_UNSUPPORTED};

/// Build the unwind table of an ELF file and print its size.
#[derive(Debug, clap::Args)]
pub struct UnwindTableArgs {
    /// Ignore the disk cache (and do not write it).
    #[arg(long)]
    pub no_cache: bool,
    /// An executable or shared library.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

pub fn run(args: UnwindTableArgs) -> Result<()> {
    let cache = if args.no_cache {
        TableCache::disabled()
    } else {
        TableCache::new()
    };
    let started = Instant::now();
    let (elf, rows, cached) = unwind_table::rows_for_file(&args.file, &cache)?;
    let elapsed = started.elapsed();
    let count = |rule: u8| rows.iter().filter(|row| row.cfa_rule == rule).count();
    let summary = format!(
        "{}: {} rows, {} KiB in the kernel, {} in {:.1} ms; build ID {}\nrules: {} gaps, {} PLT, {} outermost, {} unsupported\n",
        args.file.display(),
        rows.len(),
        rows.len() * 16 / 1024,
        if cached { "loaded from cache" } else { "built" },
        elapsed.as_secs_f64() * 1e3,
        elf.build_id.as_deref().unwrap_or("none"),
        count(CFA_NONE),
        count(CFA_PLT),
        count(CFA_END),
        count(CFA_UNSUPPORTED)
    );
    write_stdout(summary.as_bytes())
}
