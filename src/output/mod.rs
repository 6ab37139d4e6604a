//! Renderers from the model to what users read: folded stacks, flame-graph
//! SVG, pprof. Files are written atomically (temporary file, then rename).

pub mod folded;
pub mod histogram;
pub mod pprof;
pub mod prometheus;
pub mod svg;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Profile output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileFormat {
    Folded,
    Svg,
    Pprof,
}

impl ProfileFormat {
    /// The format implied by an output file's name, if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".svg") {
            Some(Self::Svg)
        } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") || name.ends_with(".pb") {
            Some(Self::Pprof)
        } else if name.ends_with(".folded") || name.ends_with(".txt") {
            Some(Self::Folded)
        } else {
            None
        }
    }

    /// `-f` wins; else the `-o` extension; else folded.
    pub fn choose(explicit: Option<Self>, output: Option<&Path>) -> Result<Self> {
        match (explicit, output) {
            (Some(format), _) => Ok(format),
            (None, Some(path)) => Self::from_path(path).with_context(|| {
                format!(
                    "cannot tell the output format from {:?}; use .svg, .folded/.txt or .pb.gz/.pprof, or pass -f",
                    path.display()
                )
            }),
            (None, None) => Ok(Self::Folded),
        }
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Fails now, before a run, if `path` could not be written at the end.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write output {}: it is a directory", path.display());
    }
    let probe = temporary_path(path);
    fs::File::create(&probe).with_context(|| format!("cannot write output {}", path.display()))?;
    fs::remove_file(&probe).ok();
    Ok(())
}

/// Writes to stdout and flushes; a closed pipe is an error, not a panic.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|_| stdout.flush())
        .context("writing to stdout")
}

/// Writes `bytes` to `path` atomically, or to stdout when `path` is None.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    let Some(path) = path else {
        return write_stdout(bytes);
    };
    let temporary = temporary_path(path);
    let result = fs::write(&temporary, bytes).and_then(|_| fs::rename(&temporary, path));
    if result.is_err() {
        fs::remove_file(&temporary).ok();
    }
    result.with_context(|| format!("cannot write output {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension_and_flag() {
        let choose = |flag, path: &str| ProfileFormat::choose(flag, Some(Path::new(path)));
        assert_eq!(choose(None, "a.svg").unwrap(), ProfileFormat::Svg);
        assert_eq!(choose(None, "a.pb.gz").unwrap(), ProfileFormat::Pprof);
        assert_eq!(choose(None, "a.pprof").unwrap(), ProfileFormat::Pprof);
        assert_eq!(choose(None, "a.folded").unwrap(), ProfileFormat::Folded);
        assert_eq!(choose(None, "a.txt").unwrap(), ProfileFormat::Folded);
        assert_eq!(
            choose(Some(ProfileFormat::Svg), "a.txt").unwrap(),
            ProfileFormat::Svg
        );
        assert!(choose(None, "a.png").is_err());
        assert_eq!(
            ProfileFormat::choose(None, None).unwrap(),
            ProfileFormat::Folded
        );
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = std::env::temp_dir().join(format!("bpfscope-write-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.folded");
        write_output(Some(&path), b"old contents that are longer").unwrap();
        write_output(Some(&path), b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
