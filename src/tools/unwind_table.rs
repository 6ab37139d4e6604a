//! `bpfscope unwind-table FILE`: builds (or loads from the disk cache) the
//! unwind table the BPF unwinder would use for an ELF file and says how big
//! it is and how long it took: for checking why a binary's stacks stop, and
//! for the table benchmarks (bench/unwind.py).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::host::object_files::ObjectFile;
use crate::layouts::uw_cfa_rule;
use crate::output::write_stdout;
use crate::unwind::cache::TableCache;
use crate::unwind::manager::table_for_object;
use crate::unwind::table::{count_rule, BuildLimits};

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
        TableCache::at_default()
    };
    let object = ObjectFile::open_named(&args.file)?;
    let started = Instant::now();
    let (image, rows, cached) = table_for_object(&object, &cache, &BuildLimits::default())
        .map_err(|error| anyhow::anyhow!("{}: {error:#}", args.file.display()))?;
    let elapsed = started.elapsed();
    let count = |rule| count_rule(&rows, rule);
    let summary = format!(
        "{}: {} rows, {} KiB in the kernel, {} in {:.1} ms; build ID {}\nrules: {} gaps, {} PLT, {} outermost, {} unsupported\n",
        args.file.display(),
        rows.len(),
        rows.len() * 16 / 1024,
        if cached { "loaded from cache" } else { "built" },
        elapsed.as_secs_f64() * 1e3,
        image.build_id.as_deref().unwrap_or("none"),
        count(uw_cfa_rule::CFA_NONE),
        count(uw_cfa_rule::CFA_PLT),
        count(uw_cfa_rule::CFA_END),
        count(uw_cfa_rule::CFA_UNSUPPORTED)
    );
    write_stdout(summary.as_bytes())
}
