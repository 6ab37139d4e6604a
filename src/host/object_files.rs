//! Opening the object files that processes map, when any unprivileged user
//! may control them. bpfscope runs as root, so a file, path or process a
//! user owns is hostile input:
//! - a path can be swapped for a FIFO (an open() that never returns) or a
//!   symlink to a root-only file: objects are opened through
//!   /proc/PID/map_files (the file the process really maps, also in another
//!   mount namespace or deleted) without blocking, and must be a regular
//!   file with the device and inode the mapping shows;
//! - a file its owner truncates while it is memory-mapped kills the reader
//!   with SIGBUS: reads are bounded `pread`s into owned buffers, and code
//!   that maps files (the symbolizer) gets a sealed private copy of any file
//!   that someone other than root could change.
//!
//! Refusals are counted by reason, never silent.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::host::memory_budget::{budget, Kind, Reservation};
use crate::model::module::Module;

/// The largest object bpfscope reads or copies (a crafted file larger than
/// any real executable is refused, not read).
pub const MAX_OBJECT_SIZE: u64 = 1 << 30;

/// Why an object was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Gone, or not readable.
    Unreadable,
    /// A FIFO, device, directory or anything but a regular file.
    NotRegular,
    /// Not the file the mapping shows (device or inode differ).
    Replaced,
    /// Larger than MAX_OBJECT_SIZE.
    TooLarge,
}

impl Refusal {
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Unreadable => "unreadable",
            Refusal::NotRegular => "not a regular file",
            Refusal::Replaced => "replaced since it was mapped",
            Refusal::TooLarge => "larger than 1 GiB",
        }
    }
}

/// What tells one file's contents from another's for caches that outlive
/// the open file: an inode number can be reused once a file is gone, and
/// a file can be rewritten in place (which changes its ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentIdentity {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub changed_ns: i128,
}

/// A regular file opened for reading, checked and bounded.
#[derive(Debug)]
pub struct ObjectFile {
    file: File,
    pub size: u64,
    pub device: u64,
    pub inode: u64,
    /// The inode's change time (ns since the epoch) when opened.
    changed_ns: i128,
    /// The owning user.
    pub owner: u32,
    /// Owned by root and writable by nobody else: no user can change it.
    trusted: bool,
    /// A sealed private copy, made once for code that maps the file.
    sealed_copy: OnceLock<io::Result<(OwnedFd, Reservation)>>,
    elf: OnceLock<ElfFacts>,
}

/// What bpfscope needs from an object's ELF headers, read once with
/// bounded reads (all empty for a file that is not ELF).
#[derive(Debug, Clone, Default)]
pub struct ElfFacts {
    /// The GNU build ID, in hex.
    pub build_id: Option<String>,
    /// `.gnu_debuglink`: the separate debug file's name and the CRC-32 of
    /// its contents.
    pub debug_link: Option<(String, u32)>,
    /// A `.symtab` or DWARF `.debug_info` with contents: names every
    /// function without a separate debug file.
    pub has_symbols: bool,
    /// What the symbolizer holds in memory to name this object's functions,
    /// estimated from the sizes of its symbol, string and DWARF sections.
    pub symbol_table_bytes: u64,
    /// Loadable segments: (file offset, virtual address, size in the file).
    loads: Vec<(u64, u64, u64)>,
}

/// How many bytes of memory a section costs the symbolizer per byte of it:
/// symbol tables are sorted into an index of about twice their size, names
/// and DWARF are read about as large.
fn symbolizer_bytes_per_byte(section: &str) -> u64 {
    match section {
        ".symtab" | ".dynsym" => 2,
        ".strtab" | ".dynstr" => 1,
        name if name.starts_with(".debug_") || name.starts_with(".zdebug_") => 1,
        _ => 0,
    }
}

impl ElfFacts {
    fn read(file: &File) -> ElfFacts {
        use object::{Object, ObjectSection, ObjectSegment};
        let data = object::ReadCache::new(file);
        let Ok(elf) = object::File::parse(&data) else {
            return ElfFacts::default();
        };
        let has_contents = |name: &str| {
            elf.section_by_name(name)
                .and_then(|section| section.file_range())
                .is_some_and(|(_, size)| size > 0)
        };
        ElfFacts {
            build_id: elf
                .build_id()
                .ok()
                .flatten()
                .filter(|id| !id.is_empty())
                .map(|id| id.iter().map(|byte| format!("{byte:02x}")).collect()),
            debug_link: elf
                .gnu_debuglink()
                .ok()
                .flatten()
                .and_then(|(name, crc)| Some((String::from_utf8(name.to_vec()).ok()?, crc))),
            has_symbols: has_contents(".symtab") || has_contents(".debug_info"),
            symbol_table_bytes: elf
                .sections()
                .filter_map(|section| {
                    let factor = symbolizer_bytes_per_byte(section.name().ok()?);
                    Some(section.file_range()?.1.saturating_mul(factor))
                })
                .fold(0, u64::saturating_add),
            loads: elf
                .segments()
                .map(|segment| {
                    let (offset, size) = segment.file_range();
                    (offset, segment.address(), size)
                })
                .collect(),
        }
    }

    /// The file offset of a virtual address, where the file holds its bytes.
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(_, start, size)| address >= *start && address - start < *size)
            .map(|(offset, start, _)| offset + (address - start))
    }

    /// The virtual address (as in the file and its debug file) of a file offset.
    pub fn virtual_address(&self, file_offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(offset, _, size)| (*offset..offset + size).contains(&file_offset))
            .map(|(offset, address, _)| address + (file_offset - offset))
    }
}

/// Opens `path` read-only without blocking on FIFOs or following a final
/// symlink unless `follow` (a path the user named on the command line).
fn open_nonblocking(path: &Path, follow: bool) -> io::Result<File> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: c_path is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl ObjectFile {
    fn checked(file: File) -> Result<ObjectFile, Refusal> {
        let metadata = file.metadata().map_err(|_| Refusal::Unreadable)?;
        if !metadata.file_type().is_file() {
            return Err(Refusal::NotRegular);
        }
        if metadata.size() > MAX_OBJECT_SIZE {
            return Err(Refusal::TooLarge);
        }
        Ok(ObjectFile {
            size: metadata.size(),
            device: metadata.dev(),
            inode: metadata.ino(),
            changed_ns: metadata.ctime() as i128 * 1_000_000_000 + metadata.ctime_nsec() as i128,
            owner: metadata.uid(),
            trusted: metadata.uid() == 0 && metadata.mode() & 0o022 == 0,
            file,
            sealed_copy: OnceLock::new(),
            elf: OnceLock::new(),
        })
    }

    /// A file already opened (e.g. a cache entry), checked like any other.
    pub fn from_open_file(file: File) -> Result<ObjectFile, Refusal> {
        ObjectFile::checked(file)
    }

    /// The file a process maps at `module`, through the process's own
    /// /proc/PID/map_files entry.
    pub fn open_mapped(tgid: u32, module: &Module) -> Result<ObjectFile, Refusal> {
        let path = format!("/proc/{tgid}/map_files/{:x}-{:x}", module.start, module.end);
        // map_files entries are magic links to the mapped file itself: following them is the point.
        let file = open_nonblocking(Path::new(&path), true).map_err(|_| Refusal::Unreadable)?;
        let object = ObjectFile::checked(file)?;
        if Some((object.device, object.inode)) != module_identity(module) {
            return Err(Refusal::Replaced);
        }
        Ok(object)
    }

    /// A file the user named (e.g. `unwind-table FILE`): one-line errors.
    pub fn open_named(path: &Path) -> anyhow::Result<ObjectFile> {
        let file = open_nonblocking(path, true)
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
        ObjectFile::checked(file).map_err(|refusal| {
            anyhow::anyhow!("cannot read {}: {}", path.display(), refusal.describe())
        })
    }

    pub fn content_identity(&self) -> ContentIdentity {
        ContentIdentity {
            device: self.device,
            inode: self.inode,
            size: self.size,
            changed_ns: self.changed_ns,
        }
    }

    /// What the ELF headers say, read once with bounded reads.
    pub fn elf(&self) -> &ElfFacts {
        self.elf.get_or_init(|| ElfFacts::read(&self.file))
    }

    /// The GNU build ID (hex); None without one.
    pub fn build_id(&self) -> Option<String> {
        self.elf().build_id.clone()
    }

    /// The CRC-32 of the whole file, as `.gnu_debuglink` records it.
    pub fn crc32(&self) -> io::Result<u32> {
        let mut hasher = crc32fast::Hasher::new();
        let mut offset = 0u64;
        let mut chunk = vec![0u8; 1 << 20];
        while offset < self.size {
            let len = chunk.len().min((self.size - offset) as usize);
            self.file.read_exact_at(&mut chunk[..len], offset)?;
            hasher.update(&chunk[..len]);
            offset += len as u64;
        }
        Ok(hasher.finalize())
    }

    /// `path` resolved inside the directory `root` as if it were `/`:
    /// absolute symlinks and `..` cannot leave it (openat2's
    /// RESOLVE_IN_ROOT), so a container's file cannot lead to the host's.
    /// Never blocks on FIFOs.
    pub fn open_in_root(root: &OwnedFd, path: &Path) -> Result<ObjectFile, Refusal> {
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Refusal::Unreadable)?;
        // SAFETY: open_how is plain data; zero is a valid value for every field.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid descriptor, NUL-terminated path and an open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(Refusal::Unreadable);
        }
        // SAFETY: openat2 just returned this descriptor.
        let file = unsafe { File::from_raw_fd(fd as i32) };
        ObjectFile::checked(file)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// A path to the same contents that code which memory-maps files may
    /// open: this descriptor itself where no user can change the file,
    /// else a sealed private copy (which nobody can truncate).
    pub fn stable_path(&self) -> io::Result<PathBuf> {
        if self.trusted {
            return Ok(PathBuf::from(format!(
                "/proc/self/fd/{}",
                self.file.as_raw_fd()
            )));
        }
        match self.sealed_copy.get_or_init(|| self.copy_sealed()) {
            Ok((copy, _)) => Ok(PathBuf::from(format!("/proc/self/fd/{}", copy.as_raw_fd()))),
            Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
        }
    }

    /// Copies what symbolization reads of the file (`copied_ranges`) into a
    /// memfd of the same size, holes elsewhere, within the memory budget,
    /// and seals it against any change.
    fn copy_sealed(&self) -> io::Result<(OwnedFd, Reservation)> {
        let ranges = copied_ranges(&self.file, self.size);
        let bytes = ranges.iter().map(|(_, len)| len).sum();
        let held = budget()
            .reserve(Kind::PrivateCopy, bytes)
            .ok_or_else(|| io::Error::other("over the memory budget"))?;
        let name = CString::new("bpfscope-object").expect("no NUL");
        // SAFETY: name is a valid C string; the flags are memfd_create's.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create just returned this descriptor.
        let copy = unsafe { OwnedFd::from_raw_fd(fd) };
        let target = File::from(copy.try_clone()?);
        target.set_len(self.size)?;
        let mut chunk = vec![0u8; 1 << 20];
        for (start, len) in ranges {
            let mut offset = start;
            while offset < start + len {
                let want = chunk.len().min((start + len - offset) as usize);
                self.file.read_exact_at(&mut chunk[..want], offset)?;
                target.write_all_at(&chunk[..want], offset)?;
                offset += want as u64;
            }
        }
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: adds seals to our own memfd.
        if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((copy, held))
    }
}

/// The byte ranges (offset, length) of `file` a private copy holds: of a
/// 64-bit ELF file, its headers and every section but loaded code and
/// data (symbol and string tables, notes, debug sections stay), which is
/// all symbolization reads; of anything else, its data without holes.
fn copied_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    let ranges = elf_ranges_for_symbols(file).unwrap_or_else(|| data_ranges(file, size));
    ranges
        .into_iter()
        .filter(|&(start, _)| start < size)
        .map(|(start, len)| (start, len.min(size - start)))
        .filter(|&(_, len)| len > 0)
        .collect()
}

fn elf_ranges_for_symbols(file: &File) -> Option<Vec<(u64, u64)>> {
    use object::elf;
    use object::read::elf::{FileHeader, SectionHeader};
    let data = object::ReadCache::new(file);
    let header = elf::FileHeader64::<object::Endianness>::parse(&data).ok()?;
    let endian = header.endian().ok()?;
    let table = |offset: u64, count: usize, entry: u16| (offset, count as u64 * u64::from(entry));
    let mut ranges = vec![
        (
            0,
            std::mem::size_of::<elf::FileHeader64<object::Endianness>>() as u64,
        ),
        table(
            header.e_phoff(endian),
            header.phnum(endian, &data).ok()?,
            header.e_phentsize(endian),
        ),
        table(
            header.e_shoff(endian),
            header.shnum(endian, &data).ok()?,
            header.e_shentsize(endian),
        ),
    ];
    for section in header.section_headers(endian, &data).ok()? {
        let loaded = section.sh_flags(endian) & u64::from(elf::SHF_ALLOC) != 0;
        let symbols = matches!(
            section.sh_type(endian),
            elf::SHT_DYNSYM
                | elf::SHT_STRTAB
                | elf::SHT_NOTE
                | elf::SHT_HASH
                | elf::SHT_GNU_HASH
                | elf::SHT_GNU_VERSYM
                | elf::SHT_GNU_VERDEF
                | elf::SHT_GNU_VERNEED
                | elf::SHT_DYNAMIC
        );
        if !loaded || symbols {
            ranges.extend(section.file_range(endian));
        }
    }
    Some(ranges)
}

/// The ranges of `file` that hold data (SEEK_DATA/SEEK_HOLE): a sparse
/// file's holes cost nothing to copy.
fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut offset = 0i64;
    while (offset as u64) < size {
        // SAFETY: lseek on our own descriptor (reads use pread, not the offset).
        let data = unsafe { libc::lseek(fd, offset, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { size as i64 } else { hole };
        ranges.push((data as u64, (end - data) as u64));
        offset = end;
    }
    ranges
}

/// The vDSO image of this process: the kernel maps the same one into every
/// process of this architecture.
pub fn own_vdso_image() -> Option<Vec<u8>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|line| line.ends_with("[vdso]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let (start, end) = (
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    );
    // SAFETY: the vDSO is mapped readable in this process for its lifetime.
    Some(unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }.to_vec())
}

/// The vDSO as an object file (this process's image, in a sealed memfd),
/// so that frames in any process's `[vdso]` mapping are named from it.
pub fn vdso_object() -> Option<&'static Arc<ObjectFile>> {
    static VDSO: OnceLock<Option<Arc<ObjectFile>>> = OnceLock::new();
    VDSO.get_or_init(|| {
        let image = own_vdso_image()?;
        let name = CString::new("bpfscope-vdso").expect("no NUL");
        // SAFETY: name is a valid C string; the flags are memfd_create's.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: memfd_create just returned this descriptor.
        let file = unsafe { File::from_raw_fd(fd) };
        file.write_all_at(&image, 0).ok()?;
        ObjectFile::checked(file).ok().map(Arc::new)
    })
    .as_ref()
}

/// The (device, inode) a /proc/PID/maps line shows for a module.
pub fn module_identity(module: &Module) -> Option<(u64, u64)> {
    let (major, minor) = module.device.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    Some((libc::makedev(major, minor), module.inode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::process_maps::AddressSpace;

    #[test]
    fn opens_own_mappings_and_checks_their_identity() {
        let me = std::process::id();
        let space = AddressSpace::read(me).unwrap();
        let executable = space.modules().iter().find(|m| m.inode != 0).unwrap();
        let object = ObjectFile::open_mapped(me, executable).unwrap();
        let mut magic = [0u8; 4];
        object.file().read_exact_at(&mut magic, 0).unwrap();
        assert_eq!(&magic, b"\x7fELF");
        assert!(object.build_id().is_some(), "rustc links a build ID");
        let mut moved = (**executable).clone();
        moved.inode += 1;
        assert_eq!(
            ObjectFile::open_mapped(me, &moved).unwrap_err(),
            Refusal::Replaced
        );
    }

    #[test]
    fn refuses_fifos_without_blocking() {
        let dir = std::env::temp_dir().join(format!("bpfscope-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("object");
        let c_path = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: creates a FIFO at a valid path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let error = ObjectFile::open_named(&fifo).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copies_keep_the_symbols_and_skip_code_and_holes() {
        use object::{Object, ObjectSymbol};
        let dir = std::env::temp_dir().join(format!("bpfscope-sparse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("true");
        std::fs::copy("/bin/true", &path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let original = std::fs::read(&path).unwrap();
        // A user pads their executable with a hole of half a gigabyte.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let object = ObjectFile::open_named(&path).unwrap();
        let stable = object.stable_path().unwrap();
        let copy = File::open(&stable).unwrap();
        assert!(
            copy.metadata().unwrap().blocks() * 512 < 1 << 20,
            "holes and code skipped"
        );
        let mut copied = vec![0u8; original.len()];
        copy.read_exact_at(&mut copied, 0).unwrap();
        let names = |bytes: &[u8]| -> Vec<String> {
            let elf = object::File::parse(bytes).unwrap();
            elf.dynamic_symbols()
                .map(|symbol| symbol.name().unwrap().to_string())
                .collect()
        };
        assert!(!names(&original).is_empty());
        assert_eq!(names(&copied), names(&original));
        assert_ne!(copied, original, "loaded code is not copied");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn untrusted_files_are_read_through_a_sealed_copy() {
        let dir = std::env::temp_dir().join(format!("bpfscope-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("object");
        std::fs::write(&path, b"contents").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let object = ObjectFile::open_named(&path).unwrap();
        let stable = object.stable_path().unwrap();
        std::fs::write(&path, b"").unwrap(); // truncated by its "owner"
        assert_eq!(std::fs::read(&stable).unwrap(), b"contents");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
