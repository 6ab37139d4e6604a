//! A directory only bpfscope's user can change, for caches shared by every
//! run on the host (unwind tables, debuginfod downloads). Files in it
//! come from inputs any user controls, so the directory is created 0700
//! and refused when it is a symlink, owned by someone else or writable by
//! others (and parents it creates are 0700 too); entries are opened by name
//! relative to it without following symlinks, written into an unnamed file
//! (O_TMPFILE: a run that ends mid-write leaves nothing behind) or, where
//! the file system has none, an unpredictable temporary name created
//! exclusively, renamed into place, and pruned least recently used first.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;
use std::time::SystemTime;

use crate::output::unpredictable_u64;

pub struct PrivateDir {
    fd: OwnedFd,
}

fn c_name(name: &str) -> Option<CString> {
    (!name.contains('/'))
        .then(|| CString::new(name).ok())
        .flatten()
}

impl PrivateDir {
    /// Opens `dir`, creating it (and its parents, 0700) first; `purpose`
    /// names it in the one-line reason it is refused.
    pub fn open(dir: &Path, purpose: &str) -> Result<PrivateDir, String> {
        if let Some(parent) = dir.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .ok();
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(format!("cannot create {}: {error}", dir.display())),
        }
        let c_dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| format!("the {purpose} path contains NUL"))?;
        // SAFETY: c_dir is a valid path; O_NOFOLLOW refuses a symlink planted in its place.
        let fd = unsafe {
            libc::open(
                c_dir.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "cannot use {} as the {purpose}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: open just returned this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let metadata = File::from(fd.try_clone().map_err(|e| e.to_string())?)
            .metadata()
            .map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        if metadata.uid() != unsafe { libc::geteuid() } || metadata.mode() & 0o022 != 0 {
            return Err(format!(
                "not using {} as the {purpose}: owned by another user or writable by others",
                dir.display()
            ));
        }
        Ok(PrivateDir { fd })
    }

    /// Opens an entry by name without following symlinks or blocking.
    pub fn open_entry(&self, name: &str, flags: libc::c_int, mode: libc::mode_t) -> Option<File> {
        let name = c_name(name)?;
        // SAFETY: openat on our directory with a plain file name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
                mode as libc::c_uint,
            )
        };
        // SAFETY: openat just returned this descriptor.
        (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
    }

    /// Writes entry `name` through a temporary file: `fill` writes the
    /// contents and says whether to keep them.
    pub fn write_entry(&self, name: &str, fill: impl FnOnce(&mut File) -> bool) -> bool {
        let Ok(random) = unpredictable_u64() else {
            return false;
        };
        let temporary = format!(".{name}.{random:016x}.tmp");
        let unnamed = self.open_entry(".", libc::O_WRONLY | libc::O_TMPFILE, 0o600);
        let named = unnamed.is_none();
        let Some(mut file) = unnamed.or_else(|| {
            self.open_entry(
                &temporary,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )
        }) else {
            return false;
        };
        let (Some(from), Some(to)) = (c_name(&temporary), c_name(name)) else {
            return false;
        };
        let dir = self.fd.as_raw_fd();
        let mut keep = fill(&mut file) && file.flush().is_ok();
        if keep && !named {
            // The unnamed file gets its temporary name only once complete.
            let Ok(proc_path) = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
                return false;
            };
            // SAFETY: links our own descriptor's file into our directory.
            keep = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc_path.as_ptr(),
                    dir,
                    from.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            } == 0;
            if !keep {
                return false;
            }
        }
        drop(file);
        // SAFETY: renames within our own directory descriptor.
        let renamed = keep && unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) } == 0;
        if !renamed && (named || keep) {
            self.remove_entry(&temporary);
        }
        renamed
    }

    /// Removes entry `name` (a file), if it is there.
    pub fn remove_entry(&self, name: &str) {
        if let Some(name) = c_name(name) {
            // SAFETY: removes an entry of our own directory.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), 0) };
        }
    }

    /// Deletes the least recently modified entries whose names end with
    /// `suffix` while they total more than `max_bytes`.
    pub fn prune(&self, suffix: &str, max_bytes: u64) {
        let Ok(entries) = fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd())) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, String)> = entries
            .flatten()
            .filter_map(|entry| {
                let metadata = entry.metadata().ok()?;
                let name = entry.file_name().into_string().ok()?;
                let modified = metadata.modified().ok()?;
                (metadata.file_type().is_file() && name.ends_with(suffix)).then_some((
                    modified,
                    metadata.size(),
                    name,
                ))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
        files.sort();
        for (_, size, name) in files {
            if total <= max_bytes {
                break;
            }
            let Some(name) = c_name(&name) else { continue };
            // SAFETY: removes an entry of our own directory.
            if unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), 0) } == 0 {
                total -= size;
            }
        }
    }
}
