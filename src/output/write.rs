//! Writing output where the user said, as root, in directories other users
//! can write. A regular file (or a new one) is replaced atomically: an
//! exclusively created temporary file under an unpredictable name, renamed
//! over it, with the replaced file's mode and owner. A device, FIFO or
//! terminal is written in place, never replaced.
//!
//! The last component of the path is resolved here, not by
//! `fs::canonicalize`: a symlink there is followed only when it belongs to
//! the caller or to root, because another user can plant one in a shared
//! directory (`/tmp`) to point root's output at a root-only file or device.
//! The kernel's `fs.protected_symlinks` guards the directories above it.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Symlinks followed at the end of an output path before giving up.
const MAX_LINKS: usize = 16;

/// 64 bits from the kernel's random source, for temporary names no one can
/// predict (and so plant a symlink under).
pub fn unpredictable_u64() -> io::Result<u64> {
    let mut random = [0u8; 8];
    // SAFETY: getrandom fills the buffer it is given.
    if unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) } != 8 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(random))
}

/// Writes to stdout and flushes; a closed pipe is an error, not a panic.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|_| stdout.flush())
        .context("writing to stdout")
}

/// Fails now, before a run, if `path` could not be written at the end.
pub fn check_writable(path: &Path) -> Result<()> {
    let context = || format!("cannot write output {}", path.display());
    match resolve(path, false)? {
        Destination::InPlace(_) => Ok(()),
        Destination::Replace(replace) => {
            let (temporary, _) = replace.create_temporary().with_context(context)?;
            replace.remove(&temporary);
            Ok(())
        }
    }
}

/// Writes `bytes` to `path`, or to stdout when `path` is None (see the
/// module doc for how).
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    let Some(path) = path else {
        return write_stdout(bytes);
    };
    let context = || format!("cannot write output {}", path.display());
    match resolve(path, true)? {
        Destination::InPlace(file) => file
            .with_context(context)?
            .write_all(bytes)
            .with_context(context),
        Destination::Replace(replace) => replace.write(bytes).with_context(context),
    }
}

/// Where output goes.
enum Destination {
    /// A device, FIFO or terminal, opened for writing (None when only
    /// checking).
    InPlace(Option<File>),
    Replace(Replacement),
}

/// A regular file, or a name with nothing yet, in an open directory.
struct Replacement {
    dir: OwnedFd,
    name: CString,
    /// The replaced file's (mode, uid, gid).
    kept: Option<(libc::mode_t, libc::uid_t, libc::gid_t)>,
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL"))
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Opens `path`'s directory (relative to `base`) and returns it with the
/// path's last component.
fn open_parent(base: libc::c_int, path: &Path) -> Result<(OwnedFd, CString)> {
    let bytes = path.as_os_str().as_bytes();
    let name = match path.file_name() {
        Some(name) if !bytes.ends_with(b"/") && !bytes.ends_with(b"/.") => name,
        _ => bail!("cannot write output {}: it is a directory", path.display()),
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.as_os_str(),
        _ => OsStr::new("."),
    };
    let c_parent = c_string(parent.as_bytes())?;
    // SAFETY: a valid descriptor (or AT_FDCWD) and a NUL-terminated path.
    let fd = unsafe {
        libc::openat(
            base,
            c_parent.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_error())
            .with_context(|| format!("cannot write output {}", path.display()));
    }
    // SAFETY: openat just returned this descriptor.
    Ok((
        unsafe { OwnedFd::from_raw_fd(fd) },
        c_string(name.as_bytes())?,
    ))
}

fn stat_at(dir: &OwnedFd, name: &CString, flags: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by fstatat.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid directory descriptor, a NUL-terminated name and a stat buffer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut stat, flags) } != 0 {
        return Err(last_error());
    }
    Ok(stat)
}

fn file_type(stat: &libc::stat) -> libc::mode_t {
    stat.st_mode & libc::S_IFMT
}

/// Opens `name` in `dir` for writing in place, without blocking on a FIFO
/// with no reader or taking a terminal as controlling one; None when it is
/// a regular file after all (a link followed to one).
fn open_in_place(dir: &OwnedFd, name: &CString, follow: bool) -> io::Result<Option<File>> {
    let mut flags = libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: openat just returned this descriptor.
    let file = unsafe { File::from_raw_fd(fd) };
    Ok((!file.metadata()?.is_file()).then_some(file))
}

/// A symlink at the end of an output path is followed only when it belongs
/// to the caller or to root: anyone else's may have been planted.
fn check_link_owner(shown: &Path, link: &libc::stat) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if link.st_uid != me && link.st_uid != 0 {
        bail!(
            "cannot write output {}: it is a symlink owned by uid {}, neither you nor root, \
             so it is not followed (another user may have planted it); name its target instead",
            shown.display(),
            link.st_uid
        );
    }
    Ok(())
}

/// Resolves the last component of `path` (see the module doc). `open`:
/// open a device or FIFO now, for writing.
fn resolve(path: &Path, open: bool) -> Result<Destination> {
    let (mut dir, mut name) = open_parent(libc::AT_FDCWD, path)?;
    let mut shown = path.to_path_buf();
    let context = |shown: &Path| format!("cannot write output {}", shown.display());
    for _ in 0..MAX_LINKS {
        let stat = match stat_at(&dir, &name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Destination::Replace(Replacement {
                    dir,
                    name,
                    kept: None,
                }))
            }
            Err(error) => return Err(error).with_context(|| context(&shown)),
        };
        match file_type(&stat) {
            libc::S_IFDIR => bail!("cannot write output {}: it is a directory", shown.display()),
            libc::S_IFREG => {
                return Ok(Destination::Replace(Replacement {
                    dir,
                    name,
                    kept: Some((stat.st_mode & 0o777, stat.st_uid, stat.st_gid)),
                }))
            }
            libc::S_IFLNK => {
                check_link_owner(&shown, &stat)?;
                // A link to a device, FIFO or terminal (/dev/stdout) is
                // written through; a link to a regular file is replaced at
                // its target, so the link stays.
                if let Ok(target) = stat_at(&dir, &name, 0) {
                    if file_type(&target) == libc::S_IFDIR {
                        bail!("cannot write output {}: it is a directory", shown.display());
                    }
                    if file_type(&target) != libc::S_IFREG {
                        if !open {
                            return Ok(Destination::InPlace(None));
                        }
                        if let Some(file) =
                            open_in_place(&dir, &name, true).with_context(|| context(&shown))?
                        {
                            return Ok(Destination::InPlace(Some(file)));
                        }
                    }
                }
                let mut target = vec![0u8; libc::PATH_MAX as usize];
                // SAFETY: reads the link into a buffer of the length passed.
                let length = unsafe {
                    libc::readlinkat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        target.as_mut_ptr().cast(),
                        target.len(),
                    )
                };
                if length < 0 {
                    return Err(last_error()).with_context(|| context(&shown));
                }
                target.truncate(length as usize);
                let target = PathBuf::from(OsString::from_vec(target));
                (dir, name) = open_parent(dir.as_raw_fd(), &target)?;
                shown = target;
            }
            _ if !open => return Ok(Destination::InPlace(None)),
            _ => match open_in_place(&dir, &name, false).with_context(|| context(&shown))? {
                Some(file) => return Ok(Destination::InPlace(Some(file))),
                None => bail!(
                    "cannot write output {}: it changed while opened",
                    shown.display()
                ),
            },
        }
    }
    bail!(
        "cannot write output {}: more than {MAX_LINKS} symlinks",
        path.display()
    )
}

impl Replacement {
    /// An exclusively created temporary file beside the destination, under
    /// a name no one can predict, never following a symlink.
    fn create_temporary(&self) -> io::Result<(CString, File)> {
        let mut name = b".".to_vec();
        name.extend_from_slice(self.name.as_bytes());
        name.extend_from_slice(format!(".{:016x}.tmp", unpredictable_u64()?).as_bytes());
        let temporary = c_string(&name)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                temporary.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(last_error());
        }
        // SAFETY: openat just returned this descriptor.
        Ok((temporary, unsafe { File::from_raw_fd(fd) }))
    }

    fn remove(&self, temporary: &CString) {
        // SAFETY: removes the entry we created in our directory.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), temporary.as_ptr(), 0) };
    }

    /// Writes the temporary file, gives it the replaced file's owner and
    /// mode, and renames it over the destination.
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let (temporary, mut file) = self.create_temporary()?;
        let written = (|| {
            if let Some((mode, uid, gid)) = self.kept {
                // Only root can give a file away; anyone else keeps the mode.
                // SAFETY: fchown and fchmod on our own descriptor.
                unsafe { libc::fchown(file.as_raw_fd(), uid, gid) };
                if unsafe { libc::fchmod(file.as_raw_fd(), mode) } != 0 {
                    return Err(last_error());
                }
            }
            file.write_all(bytes)?;
            file.sync_all()?;
            let dir = self.dir.as_raw_fd();
            // SAFETY: renames within one directory descriptor, names NUL-terminated.
            if unsafe { libc::renameat(dir, temporary.as_ptr(), dir, self.name.as_ptr()) } != 0 {
                return Err(last_error());
            }
            Ok(())
        })();
        if written.is_err() {
            self.remove(&temporary);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bpfscope-{name}-{}", std::process::id()));
        fs::remove_dir_all(&dir).ok();
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn atomic_write_replaces_whole_file_keeping_mode_and_owner() {
        let dir = test_dir("write");
        let path = dir.join("out.folded");
        write_output(Some(&path), b"old contents that are longer").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).ok();
        let before = fs::metadata(&path).unwrap();
        write_output(Some(&path), b"new").unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(after.mode() & 0o7777, 0o600);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn special_files_are_written_in_place_and_own_symlinks_followed() {
        let dir = test_dir("special");
        let error = write_output(Some(Path::new("/dev/full")), b"x").unwrap_err();
        assert!(format!("{error:#}").contains("No space left"), "{error:#}");
        assert!(!fs::metadata("/dev/full").unwrap().is_file());
        write_output(Some(Path::new("/dev/null")), b"x").unwrap();
        let real = dir.join("real.folded");
        fs::write(&real, b"old").unwrap();
        let link = dir.join("link.folded");
        std::os::unix::fs::symlink("real.folded", &link).unwrap();
        write_output(Some(&link), b"new").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(write_output(Some(&dir), b"x").is_err(), "a directory");
        assert!(check_writable(&dir.join("sub/")).is_err(), "a directory");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_users_symlink_is_not_followed() {
        let dir = test_dir("foreign-link");
        let real = dir.join("real");
        fs::write(&real, b"root's").unwrap();
        let link = dir.join("out.folded");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        for error in [
            check_writable(&link).unwrap_err(),
            write_output(Some(&link), b"x").unwrap_err(),
        ] {
            let text = format!("{error:#}");
            assert!(text.contains("symlink owned by uid 65534"), "{text}");
        }
        assert_eq!(fs::read(&real).unwrap(), b"root's");
        fs::remove_dir_all(&dir).unwrap();
    }
}
