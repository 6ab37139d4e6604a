//! Unwind tables for BPF, built from an object file's `.eh_frame`: one
//! compact row per change of the unwinding rules (PC → how to find the CFA,
//! and where the caller's frame pointer was saved), sorted by PC, so the
//! BPF unwinder in unwind.h can binary-search them per frame. Tables are
//! cached on disk by build ID, so a restart does not parse CFI again.
//!
//! x86-64 only: the return address is always at CFA - 8; the CFA is RSP or
//! RBP plus an offset, or the PLT's well-known expression. Other rules
//! (DWARF expressions, rare) are marked unsupported and counted when hit.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection, X86_64,
};

/// `enum cfa_rule` in unwind.h.
pub const CFA_NONE: u8 = 0;
pub const CFA_RSP: u8 = 1;
pub const CFA_RBP: u8 = 2;
pub const CFA_PLT: u8 = 3;
pub const CFA_END: u8 = 4;
pub const CFA_UNSUPPORTED: u8 = 5;
/// `enum rbp_rule` in unwind.h.
pub const RBP_SAME: u8 = 0;
pub const RBP_AT_CFA_OFFSET: u8 = 1;
pub const RBP_UNSUPPORTED: u8 = 2;

/// Mirrors `struct unwind_row` in unwind.h (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Object-relative virtual address where the rules start to apply.
    pub pc: u32,
    pub cfa_offset: i32,
    pub rbp_offset: i16,
    pub cfa_rule: u8,
    pub rbp_rule: u8,
}

impl Row {
    pub const SIZE: usize = 12;

    fn same_rules(&self, other: &Row) -> bool {
        (
            self.cfa_offset,
            self.rbp_offset,
            self.cfa_rule,
            self.rbp_rule,
        ) == (
            other.cfa_offset,
            other.rbp_offset,
            other.cfa_rule,
            other.rbp_rule,
        )
    }

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut bytes = [0u8; Self::SIZE];
        bytes[0..4].copy_from_slice(&self.pc.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.cfa_offset.to_ne_bytes());
        bytes[8..10].copy_from_slice(&self.rbp_offset.to_ne_bytes());
        bytes[10] = self.cfa_rule;
        bytes[11] = self.rbp_rule;
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Row {
        Row {
            pc: u32::from_ne_bytes(bytes[0..4].try_into().expect("4 bytes")),
            cfa_offset: i32::from_ne_bytes(bytes[4..8].try_into().expect("4 bytes")),
            rbp_offset: i16::from_ne_bytes(bytes[8..10].try_into().expect("2 bytes")),
            cfa_rule: bytes[10],
            rbp_rule: bytes[11],
        }
    }
}

/// What unwinding needs from an ELF file's headers.
pub struct ElfInfo {
    pub build_id: Option<String>,
    /// (file offset, virtual address, file size) of each PT_LOAD segment.
    pub loads: Vec<(u64, u64, u64)>,
    sections: HashMap<String, (u64, u64, u64)>, // name -> (address, offset, size)
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

impl ElfInfo {
    /// Parses a little-endian ELF64 file's program and section headers.
    pub fn parse(data: &[u8]) -> Result<ElfInfo> {
        if data.get(0..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) || data.get(5) != Some(&1)
        {
            bail!("not a little-endian 64-bit ELF file");
        }
        let header = || -> Option<ElfInfo> {
            let (phoff, phentsize, phnum) = (
                u64_at(data, 0x20)? as usize,
                u16_at(data, 0x36)? as usize,
                u16_at(data, 0x38)? as usize,
            );
            let mut loads = Vec::new();
            for i in 0..phnum {
                let at = phoff + i * phentsize;
                if u32_at(data, at)? == 1 {
                    loads.push((
                        u64_at(data, at + 8)?,
                        u64_at(data, at + 16)?,
                        u64_at(data, at + 32)?,
                    ));
                }
            }
            let (shoff, shentsize, shnum, shstrndx) = (
                u64_at(data, 0x28)? as usize,
                u16_at(data, 0x3a)? as usize,
                u16_at(data, 0x3c)? as usize,
                u16_at(data, 0x3e)? as usize,
            );
            let mut sections = HashMap::new();
            if shnum > 0 && shstrndx < shnum {
                let names_offset = u64_at(data, shoff + shstrndx * shentsize + 24)? as usize;
                for i in 0..shnum {
                    let at = shoff + i * shentsize;
                    let name_start = names_offset + u32_at(data, at)? as usize;
                    let name_len = data.get(name_start..)?.iter().position(|&b| b == 0)?;
                    let name = String::from_utf8_lossy(&data[name_start..name_start + name_len]);
                    let section_type = u32_at(data, at + 4)?;
                    let size = if section_type == 8 {
                        0
                    } else {
                        u64_at(data, at + 32)?
                    }; // NOBITS
                    sections.insert(
                        name.into_owned(),
                        (u64_at(data, at + 16)?, u64_at(data, at + 24)?, size),
                    );
                }
            }
            let mut info = ElfInfo {
                build_id: None,
                loads,
                sections,
            };
            info.build_id = info.read_build_id(data);
            Some(info)
        };
        header().context("truncated ELF headers")
    }

    fn section<'d>(&self, data: &'d [u8], name: &str) -> Option<(u64, &'d [u8])> {
        let &(address, offset, size) = self.sections.get(name)?;
        Some((
            address,
            data.get(offset as usize..(offset + size) as usize)?,
        ))
    }

    fn read_build_id(&self, data: &[u8]) -> Option<String> {
        let (_, note) = self.section(data, ".note.gnu.build-id")?;
        let (name_size, desc_size) = (u32_at(note, 0)? as usize, u32_at(note, 4)? as usize);
        let desc_start = 12 + name_size.div_ceil(4) * 4;
        let id = note.get(desc_start..desc_start + desc_size)?;
        Some(id.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Converts runtime addresses to the object's virtual addresses: the bias
/// to subtract, for a mapping of `file_offset` at `start`, from the PT_LOAD
/// segments (file offset, virtual address, file size) of the object.
pub fn load_bias(loads: &[(u64, u64, u64)], start: u64, file_offset: u64) -> Option<u64> {
    let &(offset, vaddr, _) = loads
        .iter()
        .find(|(offset, _, size)| (*offset..offset + (*size).max(1)).contains(&file_offset))?;
    Some(
        start
            .wrapping_sub(file_offset)
            .wrapping_add(offset)
            .wrapping_sub(vaddr),
    )
}

/// The PLT's CFA expression (rsp + 8, + 8 more past the 11th byte of a
/// 16-byte stub), as GNU ld emits it; DW_OP_lit10 or lit11 in the middle.
fn is_plt_expression(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [
            0x77,
            0x08,
            0x80,
            0x00,
            0x3f,
            0x1a,
            0x3a | 0x3b,
            0x2a,
            0x33,
            0x24,
            0x22
        ]
    )
}

/// Builds the unwind rows of an ELF file's `.eh_frame`, sorted by PC with
/// repeated rules merged. An object without `.eh_frame` has no rows.
pub fn build_rows(data: &[u8], elf: &ElfInfo) -> Result<Vec<Row>> {
    let Some((eh_frame_address, eh_frame_data)) = elf.section(data, ".eh_frame") else {
        return Ok(Vec::new());
    };
    let mut bases = BaseAddresses::default().set_eh_frame(eh_frame_address);
    if let Some((address, _)) = elf.section(data, ".text") {
        bases = bases.set_text(address);
    }
    if let Some((address, _)) = elf.section(data, ".got") {
        bases = bases.set_got(address);
    }
    let eh_frame = EhFrame::new(eh_frame_data, LittleEndian);
    let mut context = Box::new(UnwindContext::new());
    let mut rows: Vec<(u64, bool, Row)> = Vec::new();
    let mut entries = eh_frame.entries(&bases);
    while let Some(entry) = entries.next().context("reading .eh_frame")? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        let Ok(mut table) = fde.rows(&eh_frame, &bases, &mut context) else {
            continue;
        };
        while let Ok(Some(row)) = table.next_row() {
            let mut converted = Row {
                pc: 0,
                cfa_offset: 0,
                rbp_offset: 0,
                cfa_rule: CFA_UNSUPPORTED,
                rbp_rule: RBP_SAME,
            };
            match row.cfa() {
                CfaRule::RegisterAndOffset { register, offset } => {
                    if let Ok(offset) = i32::try_from(*offset) {
                        converted.cfa_offset = offset;
                        if *register == X86_64::RSP {
                            converted.cfa_rule = CFA_RSP;
                        } else if *register == X86_64::RBP {
                            converted.cfa_rule = CFA_RBP;
                        }
                    }
                }
                CfaRule::Expression(expression) => {
                    if let Ok(expression) = expression.get(&eh_frame) {
                        if is_plt_expression(expression.0.slice()) {
                            converted.cfa_rule = CFA_PLT;
                        }
                    }
                }
            }
            match row.register(X86_64::RA) {
                Some(RegisterRule::Undefined) => converted.cfa_rule = CFA_END,
                None | Some(RegisterRule::Offset(-8)) => {}
                Some(_) => converted.cfa_rule = CFA_UNSUPPORTED,
            }
            match row.register(X86_64::RBP) {
                None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => {}
                Some(RegisterRule::Offset(offset)) => match i16::try_from(offset) {
                    Ok(offset) => {
                        converted.rbp_rule = RBP_AT_CFA_OFFSET;
                        converted.rbp_offset = offset;
                    }
                    Err(_) => converted.rbp_rule = RBP_UNSUPPORTED,
                },
                Some(_) => converted.rbp_rule = RBP_UNSUPPORTED,
            }
            rows.push((row.start_address(), true, converted));
        }
        // Past the function's end there is no information (until the next FDE).
        let end = Row {
            pc: 0,
            cfa_offset: 0,
            rbp_offset: 0,
            cfa_rule: CFA_NONE,
            rbp_rule: RBP_SAME,
        };
        rows.push((fde.end_address(), false, end));
    }
    // At equal PCs a function's first row wins over the previous one's end.
    rows.sort_by_key(|(pc, is_rule, _)| (*pc, *is_rule));
    let mut table: Vec<Row> = Vec::with_capacity(rows.len());
    for (pc, _, mut row) in rows {
        let Ok(pc) = u32::try_from(pc) else {
            bail!("unwind information above 4 GiB is not supported");
        };
        row.pc = pc;
        match table.last_mut() {
            Some(last) if last.pc == pc => *last = row,
            Some(last) if last.same_rules(&row) => {}
            _ => table.push(row),
        }
    }
    // Merging at equal PCs can leave neighbours with equal rules.
    table.dedup_by(|later, earlier| earlier.same_rules(later));
    Ok(table)
}

/// Unwind tables cached on disk, one file per build ID (or file version).
pub struct TableCache {
    dir: Option<PathBuf>,
}

const CACHE_MAGIC: &[u8; 8] = b"BPFSUW01";

impl TableCache {
    /// `$BPFSCOPE_CACHE_DIR`, else /var/cache/bpfscope/unwind (root), else none.
    pub fn new() -> TableCache {
        let dir = std::env::var_os("BPFSCOPE_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/bpfscope/unwind"));
        TableCache {
            dir: fs::create_dir_all(&dir).ok().map(|_| dir),
        }
    }

    /// A cache that never has anything and stores nothing.
    pub fn disabled() -> TableCache {
        TableCache { dir: None }
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{key}.rows")))
    }

    pub fn load(&self, key: &str) -> Option<Vec<Row>> {
        let bytes = fs::read(self.path(key)?).ok()?;
        let body = bytes.strip_prefix(CACHE_MAGIC.as_slice())?;
        if body.len() % Row::SIZE != 0 {
            return None;
        }
        Some(body.chunks_exact(Row::SIZE).map(Row::from_bytes).collect())
    }

    /// Writes atomically (a temporary file renamed into place).
    pub fn store(&self, key: &str, rows: &[Row]) {
        let Some(path) = self.path(key) else {
            return;
        };
        let mut bytes = CACHE_MAGIC.to_vec();
        for row in rows {
            bytes.extend(row.to_bytes());
        }
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&temporary, bytes).is_ok() && fs::rename(&temporary, &path).is_err() {
            let _ = fs::remove_file(&temporary);
        }
    }
}

/// The disk-cache key of a file: its build ID, else its identity and
/// version on this host (device, inode, size, modification time).
fn cache_key(elf: &ElfInfo, path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if let Some(id) = &elf.build_id {
        return Some(id.clone());
    }
    let metadata = fs::metadata(path).ok()?;
    Some(format!(
        "file-{:x}-{:x}-{:x}-{:x}",
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime()
    ))
}

/// The headers and rows of the file at `path`, the rows from the disk cache
/// when they are there (the last value says whether they were).
pub fn rows_for_file(path: &Path, cache: &TableCache) -> Result<(ElfInfo, Vec<Row>, bool)> {
    let file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    // SAFETY: a read-only private mapping; a file truncated meanwhile could
    // fault, as with any reader of mapped executables, which the kernel
    // prevents for files being executed (ETXTBSY).
    let data = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("reading {}", path.display()))?;
    let elf = ElfInfo::parse(&data).with_context(|| path.display().to_string())?;
    let key = cache_key(&elf, path);
    if let Some(rows) = key.as_deref().and_then(|key| cache.load(key)) {
        return Ok((elf, rows, true));
    }
    let rows = build_rows(&data, &elf)?;
    if let Some(key) = &key {
        cache.store(key, &rows);
    }
    Ok((elf, rows, false))
}

/// Rows of an ELF image already in memory (the vDSO).
pub fn rows_for_image(data: &[u8]) -> Result<(ElfInfo, Vec<Row>)> {
    let elf = ElfInfo::parse(data)?;
    let rows = build_rows(data, &elf)?;
    Ok((elf, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_bytes() {
        let original = Row {
            pc: 0x1234,
            cfa_offset: -40,
            rbp_offset: -16,
            cfa_rule: CFA_RBP,
            rbp_rule: RBP_AT_CFA_OFFSET,
        };
        assert_eq!(Row::from_bytes(&original.to_bytes()), original);
    }

    #[test]
    fn recognizes_the_plt_expression() {
        assert!(is_plt_expression(&[
            0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22
        ]));
        assert!(!is_plt_expression(&[0x77, 0x08]));
    }

    #[test]
    fn own_executable_has_sorted_rows_with_the_usual_rules() {
        let path = std::env::current_exe().unwrap();
        let data = fs::read(&path).unwrap();
        let elf = ElfInfo::parse(&data).unwrap();
        let rows = build_rows(&data, &elf).unwrap();
        assert!(rows.len() > 1000, "{} rows", rows.len());
        assert!(rows.windows(2).all(|pair| pair[0].pc < pair[1].pc));
        let count = |rule: u8, offset: i32| {
            rows.iter()
                .filter(|r| r.cfa_rule == rule && r.cfa_offset == offset)
                .count()
        };
        // Functions start with the return address on top (CFA = RSP + 8),
        // push and use RBP or not, and end before the next one starts.
        assert!(count(CFA_RSP, 8) > 500, "{}", count(CFA_RSP, 8));
        assert!(count(CFA_RSP, 16) > 100);
        assert!(rows.iter().any(|r| r.cfa_rule == CFA_NONE));
        // _start marks the return address undefined: the outermost frame.
        assert!(rows.iter().any(|r| r.cfa_rule == CFA_END));
    }

    #[test]
    fn load_bias_of_pie_and_fixed_executables() {
        // PIE text at file offset 0x1000 mapped at 0x5555_0000_1000.
        let pie = [(0, 0, 0x1000), (0x1000, 0x1000, 0x5000)];
        assert_eq!(
            load_bias(&pie, 0x5555_0000_1000, 0x1000),
            Some(0x5555_0000_0000)
        );
        let fixed = [(0x1000, 0x401000, 0x5000)];
        assert_eq!(load_bias(&fixed, 0x401000, 0x1000), Some(0));
        assert_eq!(load_bias(&fixed, 0x401000, 0x9000), None);
    }
}
