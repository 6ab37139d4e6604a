//! `bpfscope diff BEFORE AFTER`: compares two profiles (folded text or
//! pprof, gzipped or not, each up to 1 GiB) stack by stack and writes
//! difffolded.pl's format or a differential flame graph.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::model::diff::DiffProfile;
use crate::output::{self, diff, folded, pprof};

/// The largest input read.
const MAX_INPUT_BYTES: u64 = 1 << 30;

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

/// A profile file as folded stacks, whichever format it is in.
fn read_profile(path: &Path) -> Result<std::collections::BTreeMap<String, u64>> {
    let name = path.display();
    let file = File::open(path).with_context(|| format!("cannot read {name}"))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read {name}"))?;
    if !metadata.is_file() {
        bail!("cannot read {name}: not a regular file");
    }
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        bail!("{name}: larger than 1 GiB");
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) if !bytes.starts_with(&[0x1f, 0x8b]) => {
            folded::parse(text).map_err(|reason| anyhow::anyhow!("{name}: {reason}"))
        }
        _ => pprof::fold_pprof(&bytes).with_context(|| format!("{name}")),
    }
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
    let before = read_profile(&args.before)?;
    let after = read_profile(&args.after)?;
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
