//! Renderers from the model to what users read: folded stacks, flame-graph
//! SVG, pprof, histogram text and JSON, Prometheus text; and writing them
//! out: regular files atomically (an exclusively created temporary file,
//! then rename), devices and FIFOs in place.

pub mod diff;
pub mod folded;
pub mod heatmap;
pub mod histogram;
pub mod pprof;
pub mod prometheus;
pub mod svg;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

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

/// Where output to `path` goes: the path itself or, when it is a symlink
/// (the user named it, so it is followed), what it points to.
fn resolved(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether `path` names something that exists and is not a regular file
/// (a device, a FIFO, /dev/stdout): such output is written in place.
fn is_special(path: &Path) -> Result<bool> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            bail!("cannot write output {}: it is a directory", path.display())
        }
        Ok(metadata) => Ok(!metadata.is_file()),
        Err(_) => Ok(false),
    }
}

/// 64 bits from the kernel's random source, for temporary names no one can
/// predict (and so plant a symlink under).
pub fn unpredictable_u64() -> std::io::Result<u64> {
    let mut random = [0u8; 8];
    // SAFETY: getrandom fills the buffer it is given.
    if unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) } != 8 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(random))
}

/// An exclusively created temporary file beside `target`, under a name no
/// one can predict (so none can be planted), never following a symlink.
fn create_temporary(target: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let mut name = std::ffi::OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    name.push(format!(".{:016x}.tmp", unpredictable_u64()?));
    let temporary = target.with_file_name(name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(&temporary)?;
    Ok((temporary, file))
}

/// Fails now, before a run, if `path` could not be written at the end.
pub fn check_writable(path: &Path) -> Result<()> {
    let target = resolved(path);
    if is_special(&target)? {
        return Ok(());
    }
    let (temporary, _) = create_temporary(&target)
        .with_context(|| format!("cannot write output {}", path.display()))?;
    fs::remove_file(&temporary).ok();
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

/// Writes `bytes` to `path`, or to stdout when `path` is None. A regular
/// file (or a new one) is replaced atomically, through an exclusively
/// created temporary file renamed over it, so no reader ever sees part of
/// it and a failed write (a full disk) leaves no partial file; anything else
/// (a device, a FIFO) is written in place, never replaced.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    let Some(path) = path else {
        return write_stdout(bytes);
    };
    let context = || format!("cannot write output {}", path.display());
    let target = resolved(path);
    if is_special(&target)? {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(&target)
            .with_context(context)?;
        return file.write_all(bytes).with_context(context);
    }
    let (temporary, mut file) = create_temporary(&target).with_context(context)?;
    let written = file
        .write_all(bytes)
        .and_then(|_| file.sync_all())
        .and_then(|_| fs::rename(&temporary, &target));
    if written.is_err() {
        fs::remove_file(&temporary).ok();
    }
    written.with_context(context)
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

    #[test]
    fn special_files_are_written_in_place_and_symlinks_followed() {
        let dir = std::env::temp_dir().join(format!("bpfscope-special-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let error = write_output(Some(Path::new("/dev/full")), b"x").unwrap_err();
        assert!(format!("{error:#}").contains("No space left"), "{error:#}");
        assert!(
            !fs::metadata("/dev/full").unwrap().is_file(),
            "/dev/full is still a device"
        );
        write_output(Some(Path::new("/dev/null")), b"x").unwrap();
        let real = dir.join("real.folded");
        fs::write(&real, b"old").unwrap();
        let link = dir.join("link.folded");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_output(Some(&link), b"new").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(write_output(Some(&dir), b"x").is_err(), "a directory");
        fs::remove_dir_all(&dir).unwrap();
    }
}
