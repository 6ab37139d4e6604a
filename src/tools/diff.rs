//! `bpfscope diff BEFORE AFTER`: compares two profiles (folded text or
//! pprof, gzipped or not, each up to 1 GiB, and its stacks within the
//! memory budget's diff-input limit) stack by stack and writes
//! difffolded.pl's format or a differential flame graph.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::host::memory_budget::{budget, Kind, Reservation};
use crate::model::diff::DiffProfile;
use crate::output::{self, diff, folded, pprof};

/// The largest input read (folded text is read line by line, so this
/// bounds time, not memory).
const MAX_INPUT_BYTES: u64 = 1 << 30;
/// The longest line of folded text read.
const MAX_LINE_BYTES: u64 = 1 << 20;
/// Memory a distinct stack costs besides its text (tree node, count).
const STACK_OVERHEAD: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// `stack before after` lines (difffolded.pl's format).
    Folded,
    /// A differential flame graph.
    Svg,
}

/// Compare two profiles: difffolded lines or a differential flame graph.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The earlier profile (folded text, or pprof: .pb.gz, .pprof).
    #[arg(value_name = "BEFORE")]
    pub before: PathBuf,
    /// The later profile.
    #[arg(value_name = "AFTER")]
    pub after: PathBuf,
    /// Scale BEFORE to AFTER's total, so a change in load does not paint everything.
    #[arg(short = 'n', long)]
    pub normalize: bool,
    /// Colour by BEFORE - AFTER instead of AFTER - BEFORE (SVG).
    #[arg(long)]
    pub negate: bool,
    /// Write to this file (format from its extension: .svg, .folded/.txt) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: from -o's extension, else folded).
    #[arg(short = 'f', long = "format", value_enum)]
    pub format: Option<DiffFormat>,
}

/// A profile file as folded stacks, whichever format it is in, held within
/// the memory budget's limit for one diff input (and its total): folded
/// text is read line by line, a pprof profile whole.
fn read_profile(path: &Path) -> Result<(BTreeMap<String, u64>, Reservation)> {
    let name = path.display();
    let file = File::open(path).with_context(|| format!("cannot read {name}"))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read {name}"))?;
    if !metadata.is_file() {
        bail!("cannot read {name}: not a regular file");
    }
    let limit = budget().item_limit(Kind::DiffInput);
    let over_budget = || {
        anyhow::anyhow!(
            "{name}: its stacks need more than the memory budget allows ({} MiB for one diff input; raise it with --memory-limit diff-input=SIZE or --memory-budget)",
            limit >> 20
        )
    };
    let mut held = budget()
        .reserve(Kind::DiffInput, 0)
        .ok_or_else(over_budget)?;
    let mut reader = BufReader::new(file.take(MAX_INPUT_BYTES + 1));
    let start = reader
        .fill_buf()
        .with_context(|| format!("cannot read {name}"))?;
    let text = match std::str::from_utf8(&start[..start.len().min(4096)]) {
        Ok(_) => true,
        // A character cut at the end of the sample is still text.
        Err(error) => {
            error.error_len().is_none() && error.valid_up_to() + 4 > start.len().min(4096)
        }
    };
    if start.starts_with(&[0x1f, 0x8b]) || !text {
        // The protobuf is decoded whole: it may take a quarter of the limit.
        let mut bytes = Vec::new();
        reader
            .take(limit / 4 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {name}"))?;
        if bytes.len() as u64 > limit / 4 {
            return Err(over_budget());
        }
        let stacks = pprof::fold_pprof(&bytes, limit / 4).with_context(|| format!("{name}"))?;
        drop(bytes);
        let size = stacks
            .keys()
            .map(|stack| stack.len() as u64 + STACK_OVERHEAD)
            .sum();
        if !held.grow(size) {
            return Err(over_budget());
        }
        return Ok((stacks, held));
    }
    let mut stacks = BTreeMap::new();
    let mut line = Vec::new();
    let mut read = 0u64;
    for number in 1.. {
        line.clear();
        let got = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {name}"))?;
        if got == 0 {
            break;
        }
        read += got as u64;
        if read > MAX_INPUT_BYTES {
            bail!("{name}: larger than 1 GiB");
        }
        if line.len() as u64 > MAX_LINE_BYTES {
            bail!("{name}: line {number} is longer than 1 MiB");
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| anyhow::anyhow!("{name}: line {number} is not UTF-8 text"))?;
        let added = folded::add_line(&mut stacks, number, text)
            .map_err(|reason| anyhow::anyhow!("{name}: {reason}"))?;
        if added > 0 && !held.grow(added as u64 + STACK_OVERHEAD) {
            return Err(over_budget());
        }
    }
    Ok((stacks, held))
}

pub fn run(args: DiffArgs) -> Result<()> {
    let format = match (args.format, args.output.as_deref()) {
        (Some(format), _) => format,
        (None, Some(path)) => match output::ProfileFormat::from_path(path) {
            Some(output::ProfileFormat::Svg) => DiffFormat::Svg,
            Some(output::ProfileFormat::Folded) => DiffFormat::Folded,
            _ => bail!(
                "cannot tell the output format from {:?}; use .svg or .folded/.txt, or pass -f",
                path.display()
            ),
        },
        (None, None) => DiffFormat::Folded,
    };
    if let Some(path) = &args.output {
        output::check_writable(path)?;
    }
    let (before, _before_held) = read_profile(&args.before)?;
    let (after, _after_held) = read_profile(&args.after)?;
    let mut profile = DiffProfile::new(&before, &after);
    if args.normalize {
        profile = profile.normalized();
    }
    let bytes = match format {
        DiffFormat::Folded => diff::render_folded(&profile).into_bytes(),
        DiffFormat::Svg => {
            let (before_total, after_total) = DiffProfile::new(&before, &after).totals();
            let subtitle = format!(
                "{} ({before_total}) → {} ({after_total}){}{}",
                args.before.display(),
                args.after.display(),
                if args.normalize { ", normalized" } else { "" },
                if args.negate { ", negated" } else { "" }
            );
            diff::render_svg(&profile, args.negate, &subtitle)?
        }
    };
    output::write_output(args.output.as_deref(), &bytes)
}
