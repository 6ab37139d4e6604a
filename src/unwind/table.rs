//! Unwind tables for BPF, built from an object file's `.eh_frame`: one
//! compact row (`struct uw_row`, layouts.h) per change of the unwinding
//! rules (PC → how to find the CFA, and where the caller's frame pointer
//! was saved), sorted by PC, so the BPF unwinder in unwind.h can
//! binary-search them per frame.
//!
//! Objects are read with the `object` crate through bounded reads of an
//! opened file (host::object_files), never mapped, and every build is
//! capped (section size, rows, time): a crafted or shrinking file costs its
//! own table, not the process.
//!
//! x86-64 only: the return address is always at CFA - 8; the CFA is RSP or
//! RBP plus an offset, or the PLT's well-known expression. Other rules
//! (DWARF expressions, rare) are marked unsupported and counted when hit.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection, X86_64,
};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection, ReadCache, ReadRef};

use crate::host::object_files::ObjectFile;
use crate::layouts::{uw_cfa_rule, uw_rbp_rule, uw_row};

/// One row of a table, exactly as the kernel array holds it.
pub type Row = uw_row;

/// Bounds on one object's table: what a real binary stays far below.
#[derive(Debug, Clone, Copy)]
pub struct BuildLimits {
    /// The largest `.eh_frame` section read (libLLVM 14's is 5 MiB).
    pub max_section: u64,
    /// The most rows a table may have (the kernel array's capacity).
    pub max_rows: usize,
    /// The longest a build may take.
    pub max_time: Duration,
}

impl Default for BuildLimits {
    fn default() -> Self {
        BuildLimits {
            max_section: 64 << 20,
            max_rows: 1 << 24,
            max_time: Duration::from_secs(10),
        }
    }
}

fn rule(cfa: uw_cfa_rule) -> u8 {
    cfa.0 as u8
}

fn rbp(rule: uw_rbp_rule) -> u8 {
    rule.0 as u8
}

fn same_rules(a: &Row, b: &Row) -> bool {
    (a.cfa_offset, a.rbp_offset, a.cfa_rule, a.rbp_rule)
        == (b.cfa_offset, b.rbp_offset, b.cfa_rule, b.rbp_rule)
}

/// What unwinding needs from an ELF file, read from its headers.
pub struct ElfImage {
    pub build_id: Option<String>,
    /// (file offset, virtual address, file size) of each PT_LOAD segment.
    pub loads: Vec<(u64, u64, u64)>,
    /// `.eh_frame`'s address and contents, and `.text`'s and `.got`'s addresses.
    eh_frame: Option<(u64, Vec<u8>)>,
    text: Option<u64>,
    got: Option<u64>,
}

impl ElfImage {
    /// Reads a little-endian ELF64 file's segments and the sections tables
    /// are built from, through `data` (an opened file or bytes in memory).
    pub fn read<'data, R: ReadRef<'data>>(data: R, limits: &BuildLimits) -> Result<ElfImage> {
        let elf = ElfFile64::<object::LittleEndian, R>::parse(data)
            .context("not a little-endian 64-bit ELF file")?;
        let endian = elf.endian();
        let loads = elf
            .elf_program_headers()
            .iter()
            .filter(|header| header.p_type(endian) == object::elf::PT_LOAD)
            .map(|header| {
                (
                    header.p_offset(endian),
                    header.p_vaddr(endian),
                    header.p_filesz(endian),
                )
            })
            .collect();
        let eh_frame = match elf.section_by_name(".eh_frame") {
            Some(section) if section.size() > limits.max_section => bail!(
                ".eh_frame of {} MiB is over the {} MiB limit",
                section.size() >> 20,
                limits.max_section >> 20
            ),
            Some(section) => Some((
                section.address(),
                section.data().context("reading .eh_frame")?.to_vec(),
            )),
            None => None,
        };
        let build_id = elf
            .build_id()
            .ok()
            .flatten()
            .map(|id| id.iter().map(|byte| format!("{byte:02x}")).collect());
        let address = |name: &str| elf.section_by_name(name).map(|section| section.address());
        Ok(ElfImage {
            build_id,
            loads,
            text: address(".text"),
            got: address(".got"),
            eh_frame,
        })
    }

    /// Reads an opened object file (bounded reads, owned buffers).
    pub fn read_file(object: &ObjectFile, limits: &BuildLimits) -> Result<ElfImage> {
        let cache = ReadCache::new(object.file());
        ElfImage::read(&cache, limits)
    }

    /// Everything a table is built from: the addresses that place the
    /// sections and `.eh_frame`'s contents (the cache keys tables by these).
    pub fn table_source(&self) -> ([u64; 3], &[u8]) {
        let (address, contents) = self
            .eh_frame
            .as_ref()
            .map_or((0, &[][..]), |(address, data)| (*address, data.as_slice()));
        (
            [address, self.text.unwrap_or(0), self.got.unwrap_or(0)],
            contents,
        )
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

fn row(cfa_rule: uw_cfa_rule) -> Row {
    Row {
        cfa_rule: rule(cfa_rule),
        rbp_rule: rbp(uw_rbp_rule::RBP_SAME),
        ..Default::default()
    }
}

/// Builds the unwind rows of an image's `.eh_frame`, sorted by PC with
/// repeated rules merged, within `limits`. An object without `.eh_frame`
/// has no rows.
pub fn build_rows(image: &ElfImage, limits: &BuildLimits) -> Result<Vec<Row>> {
    let Some((eh_frame_address, eh_frame_data)) = &image.eh_frame else {
        return Ok(Vec::new());
    };
    let started = Instant::now();
    let mut bases = BaseAddresses::default().set_eh_frame(*eh_frame_address);
    if let Some(address) = image.text {
        bases = bases.set_text(address);
    }
    if let Some(address) = image.got {
        bases = bases.set_got(address);
    }
    let eh_frame = EhFrame::new(eh_frame_data, LittleEndian);
    let mut context = Box::new(UnwindContext::new());
    let mut rows: Vec<(u64, bool, Row)> = Vec::new();
    let mut entries = eh_frame.entries(&bases);
    while let Some(entry) = entries.next().context("reading .eh_frame")? {
        if rows.len() > limits.max_rows * 2 {
            bail!("more than {} unwind rows", limits.max_rows);
        }
        if started.elapsed() > limits.max_time {
            bail!("building the table took over {:?}", limits.max_time);
        }
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        if fde.cie().is_signal_trampoline() {
            // Its CFI describes the kernel's signal frame with expressions;
            // the walker reads that frame's saved registers itself.
            rows.push((fde.initial_address(), true, row(uw_cfa_rule::CFA_SIGNAL)));
            rows.push((fde.end_address(), false, row(uw_cfa_rule::CFA_NONE)));
            continue;
        }
        let Ok(mut table) = fde.rows(&eh_frame, &bases, &mut context) else {
            continue;
        };
        while let Ok(Some(table_row)) = table.next_row() {
            let mut converted = row(uw_cfa_rule::CFA_UNSUPPORTED);
            match table_row.cfa() {
                CfaRule::RegisterAndOffset { register, offset } => {
                    if let Ok(offset) = i32::try_from(*offset) {
                        converted.cfa_offset = offset;
                        if *register == X86_64::RSP {
                            converted.cfa_rule = rule(uw_cfa_rule::CFA_RSP);
                        } else if *register == X86_64::RBP {
                            converted.cfa_rule = rule(uw_cfa_rule::CFA_RBP);
                        }
                    }
                }
                CfaRule::Expression(expression) => {
                    if let Ok(expression) = expression.get(&eh_frame) {
                        if is_plt_expression(expression.0.slice()) {
                            converted.cfa_rule = rule(uw_cfa_rule::CFA_PLT);
                        }
                    }
                }
            }
            match table_row.register(X86_64::RA) {
                Some(RegisterRule::Undefined) => converted.cfa_rule = rule(uw_cfa_rule::CFA_END),
                None | Some(RegisterRule::Offset(-8)) => {}
                Some(_) => converted.cfa_rule = rule(uw_cfa_rule::CFA_UNSUPPORTED),
            }
            match table_row.register(X86_64::RBP) {
                None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => {}
                Some(RegisterRule::Offset(offset)) => match i16::try_from(offset) {
                    Ok(offset) => {
                        converted.rbp_rule = rbp(uw_rbp_rule::RBP_AT_CFA_OFFSET);
                        converted.rbp_offset = offset;
                    }
                    Err(_) => converted.rbp_rule = rbp(uw_rbp_rule::RBP_UNSUPPORTED),
                },
                Some(_) => converted.rbp_rule = rbp(uw_rbp_rule::RBP_UNSUPPORTED),
            }
            rows.push((table_row.start_address(), true, converted));
        }
        // Past the function's end there is no information (until the next FDE).
        rows.push((fde.end_address(), false, row(uw_cfa_rule::CFA_NONE)));
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
            Some(last) if same_rules(last, &row) => {}
            _ => table.push(row),
        }
    }
    // Merging at equal PCs can leave neighbours with equal rules.
    table.dedup_by(|later, earlier| same_rules(earlier, later));
    if table.len() > limits.max_rows {
        bail!(
            "{} unwind rows, over the limit of {}",
            table.len(),
            limits.max_rows
        );
    }
    Ok(table)
}

/// How many rows have each CFA rule, for `unwind-table`'s summary.
pub fn count_rule(rows: &[Row], cfa_rule: uw_cfa_rule) -> usize {
    rows.iter()
        .filter(|row| row.cfa_rule == rule(cfa_rule))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let object = ObjectFile::open_named(&path).unwrap();
        let image = ElfImage::read_file(&object, &BuildLimits::default()).unwrap();
        assert!(image.build_id.is_some(), "rustc links a build ID");
        let rows = build_rows(&image, &BuildLimits::default()).unwrap();
        assert!(rows.len() > 1000, "{} rows", rows.len());
        assert!(rows.windows(2).all(|pair| pair[0].pc < pair[1].pc));
        let count = |cfa: uw_cfa_rule, offset: i32| {
            rows.iter()
                .filter(|r| r.cfa_rule == rule(cfa) && r.cfa_offset == offset)
                .count()
        };
        // Functions start with the return address on top (CFA = RSP + 8),
        // push and use RBP or not, and end before the next one starts.
        assert!(count(uw_cfa_rule::CFA_RSP, 8) > 500);
        assert!(count(uw_cfa_rule::CFA_RSP, 16) > 100);
        assert!(count_rule(&rows, uw_cfa_rule::CFA_NONE) > 0);
        // _start marks the return address undefined: the outermost frame.
        assert!(count_rule(&rows, uw_cfa_rule::CFA_END) > 0);
        let small = BuildLimits {
            max_rows: 100,
            ..BuildLimits::default()
        };
        assert!(build_rows(&image, &small).is_err(), "the row cap holds");
    }

    #[test]
    fn the_signal_trampoline_gets_the_signal_rule() {
        // Debian's libc: __restore_rt's FDE, under a CIE with augmentation "zRS".
        let object =
            ObjectFile::open_named(std::path::Path::new("/lib/x86_64-linux-gnu/libc.so.6"))
                .unwrap();
        let image = ElfImage::read_file(&object, &BuildLimits::default()).unwrap();
        let rows = build_rows(&image, &BuildLimits::default()).unwrap();
        assert_eq!(count_rule(&rows, uw_cfa_rule::CFA_SIGNAL), 1);
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
