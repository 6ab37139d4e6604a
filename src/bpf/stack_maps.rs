//! Reading what the stack tools summed in kernel: the counts map (keyed by
//! `struct stack_key`) and the two maps its stack ids point into, the
//! kernel's stack-trace map and the table unwinder's interned stacks.

use std::collections::HashMap;

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::layouts::{self, c_string, stack_key, uw_stack};

/// bpf_get_stackid() result meaning "not requested" (set by the BPF side).
pub const STACK_NOT_REQUESTED: i32 = -1;
/// bpf_get_stackid() result meaning "there was no stack" (e.g. no kernel
/// frames because the sample hit user mode).
pub const STACK_EMPTY: i32 = -14; // -EFAULT

/// User stacks walked with unwind tables have ids from here up (unwind.h).
pub const UNWOUND_STACK_BASE: i32 = 0x4000_0000;

/// A counts key as user space keeps it (`struct stack_key`, comm decoded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    pub tid: u32,
    pub address_space: u64,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub comm: String,
}

impl From<&stack_key> for StackKey {
    fn from(key: &stack_key) -> Self {
        StackKey {
            tgid: key.tgid,
            tid: key.tid,
            address_space: key.address_space,
            user_stack_id: key.user_stack_id,
            kernel_stack_id: key.kernel_stack_id,
            comm: c_string(&key.comm),
        }
    }
}

/// Every (key, summed value) pair of a counts map.
pub fn read_counts(counts: &dyn MapCore) -> Result<Vec<(StackKey, u64)>> {
    let mut entries = Vec::new();
    for raw_key in counts.keys() {
        let Some(value) = counts.lookup(&raw_key, MapFlags::ANY)? else {
            continue;
        };
        if let (Some(key), Some(value)) = (
            layouts::read::<stack_key>(&raw_key),
            layouts::read::<u64>(&value),
        ) {
            entries.push((StackKey::from(&key), value));
        }
    }
    Ok(entries)
}

/// Instruction pointers of a stack-trace map entry, leaf first.
fn parse_stack(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .filter_map(layouts::read::<u64>)
        .take_while(|&ip| ip != 0)
        .collect()
}

/// Stands for the callers a table walk did not reach (it stopped at
/// MAX_UNWOUND_FRAMES): the last "address" of such a stack.
pub const TRUNCATED: u64 = u64::MAX;

/// Instruction pointers of an interned table-unwound stack, leaf first,
/// ending with TRUNCATED if the walk was cut.
fn unwound_frames(stack: &uw_stack) -> Vec<u64> {
    let mut frames = stack.ips[..(stack.len as usize).min(stack.ips.len())].to_vec();
    if stack.truncated != 0 {
        frames.push(TRUNCATED);
    }
    frames
}

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

    /// Reads the stacks with the given ids (negative ids are skipped).
    pub fn read(&self, ids: impl IntoIterator<Item = i32>) -> Result<HashMap<i32, Vec<u64>>> {
        let mut table = HashMap::new();
        for id in ids {
            if id < 0 || table.contains_key(&id) {
                continue;
            }
            let key = (id as u32).to_ne_bytes();
            if id >= UNWOUND_STACK_BASE {
                if let Some(stack) = self
                    .unwound
                    .lookup(&key, MapFlags::ANY)?
                    .and_then(|raw| layouts::read::<uw_stack>(&raw))
                {
                    table.insert(id, unwound_frames(&stack));
                }
            } else if let Some(raw) = self.traces.lookup(&key, MapFlags::ANY)? {
                table.insert(id, parse_stack(&raw));
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwound_stack_has_its_length() {
        let mut stack = uw_stack {
            len: 2,
            ..Default::default()
        };
        stack.ips[..3].copy_from_slice(&[0x10, 0x20, 0x30]);
        assert_eq!(unwound_frames(&stack), vec![0x10, 0x20]);
        stack.len = u32::MAX;
        assert_eq!(unwound_frames(&stack).len(), stack.ips.len());
        stack.truncated = 1;
        assert_eq!(unwound_frames(&stack).last(), Some(&TRUNCATED));
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
