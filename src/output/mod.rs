//! Renderers from the model to what users read: folded stacks, flame-graph
//! SVG, pprof, histogram text and JSON, Prometheus text; and writing them
//! out (`write`: atomically, never through another user's symlink).

pub mod diff;
pub mod folded;
pub mod heatmap;
pub mod histogram;
pub mod pprof;
pub mod prometheus;
pub mod report;
pub mod svg;
mod write;

pub use write::{check_writable, unpredictable_u64, write_output, write_stdout};

use std::path::Path;

use anyhow::{Context, Result};

/// Profile output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileFormat {
    Folded,
    Svg,
    Pprof,
    /// A subsecond heatmap page with flame graphs of selected ranges (profile only).
    Html,
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
        } else if name.ends_with(".html") || name.ends_with(".htm") {
            Some(Self::Html)
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
                    "cannot tell the output format from {:?}; use .svg, .folded/.txt, .pb.gz/.pprof or .html, or pass -f",
                    path.display()
                )
            }),
            (None, None) => Ok(Self::Folded),
        }
    }
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
}
