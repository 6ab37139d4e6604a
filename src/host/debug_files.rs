//! Finds the separate debug file of a stripped object where gdb and perf
//! look, in the process's own root first, then the host's:
//! - `/usr/lib/debug/.build-id/xx/rest.debug` from the GNU build ID;
//! - the `.gnu_debuglink` name in the object's directory, in its `.debug`
//!   subdirectory, and under `/usr/lib/debug` plus that directory.
//!
//! Paths in a process's root are resolved inside it (openat2
//! RESOLVE_IN_ROOT), so a container's symlink cannot point at a host file.
//! Every candidate is checked: its build ID must equal the object's (or,
//! for an object without one, the debug link's CRC-32 must match), and it
//! must hold symbols. Mismatches are counted, never used.
//!
//! Lookups happen when the object is first seen, while its process lives
//! (its root is gone once it exits); the debug file is kept open.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::host::object_files::ObjectFile;

/// Where a debug file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DebugSource {
    BuildIdDirectory,
    DebugLink,
}

impl DebugSource {
    pub fn describe(self) -> &'static str {
        match self {
            DebugSource::BuildIdDirectory => "build-ID directory",
            DebugSource::DebugLink => ".gnu_debuglink",
        }
    }
}

/// How debug-file lookups went over a run.
#[derive(Debug, Default)]
pub struct DebugFileStats {
    /// Objects without symbols of their own.
    pub stripped: u64,
    pub found: HashMap<DebugSource, u64>,
    /// Candidates whose build ID or CRC-32 did not match (ignored).
    pub mismatched: u64,
}

impl DebugFileStats {
    /// "3 stripped objects: 2 named through a build-ID directory, ..." or
    /// None when no object lacked symbols.
    pub fn summary(&self) -> Option<String> {
        if self.stripped == 0 && self.mismatched == 0 {
            return None;
        }
        let found: u64 = self.found.values().sum();
        let mut parts: Vec<String> = self
            .found
            .iter()
            .map(|(source, count)| format!("{count} through {}", source.describe()))
            .collect();
        parts.sort();
        let mut line = format!(
            "debug files: {} of {} objects without symbols found one",
            found, self.stripped
        );
        if !parts.is_empty() {
            line.push_str(&format!(" ({})", parts.join(", ")));
        }
        if self.mismatched > 0 {
            line.push_str(&format!(
                "; {} candidates ignored (build ID or CRC-32 differs from the object's)",
                self.mismatched
            ));
        }
        Some(line)
    }
}

/// A directory opened to resolve paths inside (O_PATH).
fn open_directory(path: &Path) -> Option<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: c_path is a valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: open just returned this descriptor.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The (device, inode) of a path's target.
fn identity(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The roots to look in for `tgid`: its own (when its root or mount
/// namespace differs from bpfscope's), then the host's.
fn roots(tgid: u32) -> Vec<OwnedFd> {
    let own_root = format!("/proc/{tgid}/root");
    let same_view = identity(&own_root) == identity("/")
        && identity(&format!("/proc/{tgid}/ns/mnt")) == identity("/proc/self/ns/mnt");
    let mut roots = Vec::new();
    if !same_view {
        roots.extend(open_directory(Path::new(&own_root)));
    }
    roots.extend(open_directory(Path::new("/")));
    roots
}

/// `/usr/lib/debug/.build-id/xx/rest.debug` for a build ID.
pub fn build_id_path(build_id: &str) -> Option<PathBuf> {
    (build_id.len() > 2 && build_id.is_ascii()).then(|| {
        PathBuf::from(format!(
            "/usr/lib/debug/.build-id/{}/{}.debug",
            &build_id[..2],
            &build_id[2..]
        ))
    })
}

/// The paths gdb tries for a debug link `name` of an object at `object_path`.
fn debug_link_paths(object_path: &Path, name: &str) -> Vec<PathBuf> {
    let Some(directory) = object_path.parent() else {
        return Vec::new();
    };
    if name.contains('/') || name.is_empty() {
        return Vec::new(); // a bare file name, as the format says
    }
    let relative = directory.strip_prefix("/").unwrap_or(directory);
    vec![
        directory.join(name),
        directory.join(".debug").join(name),
        Path::new("/usr/lib/debug").join(relative).join(name),
    ]
}

/// Whether a candidate is the debug file of `object`.
fn matches(object: &ObjectFile, candidate: &ObjectFile, expected_crc: Option<u32>) -> bool {
    if (candidate.device, candidate.inode) == (object.device, object.inode) {
        return false; // the object itself, named by its own debug link
    }
    match (object.build_id(), expected_crc) {
        (Some(id), _) => candidate.build_id().as_deref() == Some(id.as_str()),
        (None, Some(crc)) => candidate.crc32().is_ok_and(|actual| actual == crc),
        (None, None) => false,
    }
}

/// A checked debug file for `object` (mapped by `tgid` at `object_path`,
/// a path in the process's mount namespace), if one is installed.
pub fn find_local(
    tgid: u32,
    object_path: &Path,
    object: &ObjectFile,
    stats: &mut DebugFileStats,
) -> Option<(ObjectFile, DebugSource)> {
    let facts = object.elf();
    let mut candidates: Vec<(PathBuf, DebugSource, Option<u32>)> = Vec::new();
    if let Some(path) = facts.build_id.as_deref().and_then(build_id_path) {
        candidates.push((path, DebugSource::BuildIdDirectory, None));
    }
    if let Some((name, crc)) = &facts.debug_link {
        for path in debug_link_paths(object_path, name) {
            candidates.push((path, DebugSource::DebugLink, Some(*crc)));
        }
    }
    if candidates.is_empty() {
        return None;
    }
    for root in roots(tgid) {
        for (path, source, crc) in &candidates {
            let Ok(candidate) = ObjectFile::open_in_root(&root, path) else {
                continue;
            };
            if !matches(object, &candidate, *crc) {
                stats.mismatched += 1;
                continue;
            }
            if candidate.elf().has_symbols {
                return Some((candidate, *source));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_where_gdb_looks() {
        assert_eq!(
            build_id_path("ab12cd").unwrap(),
            PathBuf::from("/usr/lib/debug/.build-id/ab/12cd.debug")
        );
        assert_eq!(
            debug_link_paths(Path::new("/opt/app/bin/server"), "server.debug"),
            vec![
                PathBuf::from("/opt/app/bin/server.debug"),
                PathBuf::from("/opt/app/bin/.debug/server.debug"),
                PathBuf::from("/usr/lib/debug/opt/app/bin/server.debug"),
            ]
        );
        assert!(debug_link_paths(Path::new("/bin/x"), "../../etc/shadow").is_empty());
    }
}
