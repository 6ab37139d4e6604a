//! Reading what the kernel summed: the counts map (keyed by `struct
//! stack_key`, src/bpf/common.h) and the stack-trace map its ids point into.

use std::collections::HashMap;

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use crate::core::c_string;

/// bpf_get_stackid() result meaning "not requested" (set by the BPF side).
pub const STACK_NOT_REQUESTED: i32 = -1;
/// bpf_get_stackid() result meaning "there was no stack" (e.g. no kernel
/// frames because the sample hit user mode).
pub const STACK_EMPTY: i32 = -14; // -EFAULT

/// Mirrors `struct stack_key` in src/bpf/common.h (40 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    pub tid: u32,
    pub address_space: u64,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub comm: String,
}

impl StackKey {
    pub const SIZE: usize = 40;

    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < Self::SIZE {
            return None;
        }
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Some(StackKey {
            tgid: u32_at(0),
            tid: u32_at(4),
            address_space: u64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes")),
            user_stack_id: u32_at(16) as i32,
            kernel_stack_id: u32_at(20) as i32,
            comm: c_string(&bytes[24..40]),
        })
    }
}

/// Every (key, summed value) pair of a counts map.
pub fn read_counts(counts: &dyn MapCore) -> Result<Vec<(StackKey, u64)>> {
    let mut entries = Vec::new();
    for raw_key in counts.keys() {
        let Some(value) = counts.lookup(&raw_key, MapFlags::ANY)? else {
            continue;
        };
        if let Some(key) = StackKey::parse(&raw_key) {
            entries.push((
                key,
                u64::from_ne_bytes(value[..8].try_into().expect("u64 value")),
            ));
        }
    }
    Ok(entries)
}

/// Instruction pointers of a stack-trace map entry, leaf first.
pub fn parse_stack(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|word| u64::from_ne_bytes(word.try_into().expect("8 bytes")))
        .take_while(|&ip| ip != 0)
        .collect()
}

/// User stacks walked with unwind tables have ids from here up (unwind.h).
pub const UNWOUND_STACK_BASE: i32 = 0x4000_0000;

/// Where a stack tool's stacks are interned: the kernel's stack-trace map
/// (`stacks`) and the table unwinder's `unwound_stacks`.
pub struct StackMaps<'a> {
    pub traces: &'a dyn MapCore,
    pub unwound: &'a dyn MapCore,
}

impl StackMaps<'_> {
    /// Empties both (serve, between windows).
    pub fn clear(&self) {
        for map in [self.traces, self.unwound] {
            for key in map.keys().collect::<Vec<_>>() {
                map.delete(&key).ok();
            }
        }
    }
}

/// Instruction pointers of a `struct uw_stack` (hash, length, frames).
fn parse_unwound(raw: &[u8]) -> Vec<u64> {
    let len = raw.get(8..12).map_or(0, |bytes| {
        u32::from_ne_bytes(bytes.try_into().expect("4 bytes")) as usize
    });
    raw.get(16..)
        .unwrap_or_default()
        .chunks_exact(8)
        .take(len)
        .map(|word| u64::from_ne_bytes(word.try_into().expect("8 bytes")))
        .collect()
}

/// Reads the stacks with the given ids (negative ids are skipped).
pub fn read_stacks(
    maps: &StackMaps,
    ids: impl IntoIterator<Item = i32>,
) -> Result<HashMap<i32, Vec<u64>>> {
    let mut table = HashMap::new();
    for id in ids {
        if id < 0 || table.contains_key(&id) {
            continue;
        }
        let key = (id as u32).to_ne_bytes();
        if id >= UNWOUND_STACK_BASE {
            if let Some(raw) = maps.unwound.lookup(&key, MapFlags::ANY)? {
                table.insert(id, parse_unwound(&raw));
            }
        } else if let Some(raw) = maps.traces.lookup(&key, MapFlags::ANY)? {
            table.insert(id, parse_stack(&raw));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_layout() {
        let mut raw = Vec::new();
        raw.extend(7u32.to_ne_bytes());
        raw.extend(9u32.to_ne_bytes());
        raw.extend(0xdead_beefu64.to_ne_bytes());
        raw.extend(3i32.to_ne_bytes());
        raw.extend((-14i32).to_ne_bytes());
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"burn");
        raw.extend(comm);
        let key = StackKey::parse(&raw).unwrap();
        assert_eq!(
            key,
            StackKey {
                tgid: 7,
                tid: 9,
                address_space: 0xdead_beef,
                user_stack_id: 3,
                kernel_stack_id: STACK_EMPTY,
                comm: "burn".into()
            }
        );
        assert!(StackKey::parse(&raw[..39]).is_none());
    }

    #[test]
    fn unwound_stack_has_its_length() {
        let mut raw = 77u64.to_ne_bytes().to_vec();
        raw.extend(2u32.to_ne_bytes());
        raw.extend(0u32.to_ne_bytes());
        for ip in [0x10u64, 0x20, 0x30] {
            raw.extend(ip.to_ne_bytes());
        }
        assert_eq!(parse_unwound(&raw), vec![0x10, 0x20]);
    }

    #[test]
    fn stack_ends_at_first_zero() {
        let raw: Vec<u8> = [0x10u64, 0x20, 0, 0x30]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(parse_stack(&raw), vec![0x10, 0x20]);
    }
}
