//! Reading what the stack tools summed in kernel: the counts map (keyed by
//! `struct stack_key`, or `struct wake_key` for the wakeup tools) and the maps its stack ids point into, the kernel's
//! stack-trace map and the table unwinder's interned stacks (a head of
//! STACK_CHUNK_FRAMES frames and, for deeper stacks, further chunks).

use std::collections::HashMap;

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use crate::model::profile::WakerContext;

use crate::layouts::{
    self, c_string, py_stack, stack_key, uw_stack, uw_stack_chunk, uw_stack_chunk_key, wake_key,
    waker_context, MAX_PYTHON_FRAMES, MAX_UNWOUND_FRAMES, STACK_CHUNK_FRAMES,
};

/// bpf_get_stackid() result meaning "not requested" (set by the BPF side).
pub const STACK_NOT_REQUESTED: i32 = -1;
/// bpf_get_stackid() result meaning "there was no stack" (e.g. no kernel
/// frames because the sample hit user mode).
pub const STACK_EMPTY: i32 = -14; // -EFAULT

/// User stacks walked with unwind tables have ids from here up (unwind.h).
pub const UNWOUND_STACK_BASE: i32 = 0x4000_0000;
/// Python stacks have ids from here up to UNWOUND_STACK_BASE (python.h).
pub const PYTHON_STACK_BASE: i32 = 0x2000_0000;

/// A counts key as user space keeps it (`struct stack_key`, comm decoded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    pub tid: u32,
    pub address_space: u64,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub comm: String,
    pub time_slot: u32,
    /// The Python frames of the same moment (python.h); negative: none.
    pub python_stack_id: i32,
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
            time_slot: key.time_slot,
            // Objects that walk no Python frames leave the field 0.
            python_stack_id: if (PYTHON_STACK_BASE..UNWOUND_STACK_BASE)
                .contains(&key.python_stack_id)
            {
                key.python_stack_id
            } else {
                -1
            },
        }
    }
}

impl StackKey {
    /// The ids of its stacks (negative: none), to read them by.
    pub fn stack_ids(&self) -> [i32; 3] {
        [
            self.user_stack_id,
            self.kernel_stack_id,
            self.python_stack_id,
        ]
    }
}

/// Every (key, summed value) pair of a counts map.
pub fn read_counts(counts: &dyn MapCore) -> Result<Vec<(StackKey, u64)>> {
    counts_by(counts, |key| Ok(counts.lookup(key, MapFlags::ANY)?))
}

/// Takes every (key, summed value) pair out of a counts map: what BPF adds
/// afterwards starts from zero under a new entry (serve's CPU history).
pub fn drain_counts(counts: &dyn MapCore) -> Result<Vec<(StackKey, u64)>> {
    counts_by(counts, |key| Ok(counts.lookup_and_delete(key)?))
}

/// The counts map's pairs, each value got by `value_of(key)`.
fn counts_by(
    counts: &dyn MapCore,
    value_of: impl Fn(&[u8]) -> Result<Option<Vec<u8>>>,
) -> Result<Vec<(StackKey, u64)>> {
    let mut entries = Vec::new();
    for raw_key in counts.keys().collect::<Vec<_>>() {
        let Some(value) = value_of(&raw_key)? else {
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

/// A wakeup tools' counts key: the blocked thread, and its waker
/// (`waker_context` tells how much of `waker` is set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WakeKey {
    pub target: StackKey,
    pub waker: StackKey,
    pub context: WakerContext,
}

/// Every (key, summed value) pair of a wakeup tool's counts map.
pub fn read_wake_counts(counts: &dyn MapCore) -> Result<Vec<(WakeKey, u64)>> {
    let mut entries = Vec::new();
    for raw_key in counts.keys() {
        let Some(value) = counts.lookup(&raw_key, MapFlags::ANY)? else {
            continue;
        };
        if let (Some(key), Some(value)) = (
            layouts::read::<wake_key>(&raw_key),
            layouts::read::<u64>(&value),
        ) {
            let context = match waker_context(key.waker_context) {
                waker_context::WAKER_TASK => WakerContext::Task,
                waker_context::WAKER_INTERRUPT => WakerContext::Interrupt,
                _ => WakerContext::Unseen,
            };
            entries.push((
                WakeKey {
                    target: StackKey::from(&key.target),
                    waker: StackKey::from(&key.waker),
                    context,
                },
                value,
            ));
        }
    }
    Ok(entries)
}

/// Instruction pointers of a stack-trace map entry, leaf first.
fn parse_stack(raw: &[u8]) -> Vec<u64> {
    let mut frames: Vec<u64> = raw
        .chunks_exact(8)
        .filter_map(layouts::read::<u64>)
        .take_while(|&ip| ip != 0)
        .collect();
    // The kernel fills at most a value's worth of frames
    // (perf_event_max_stack, 127): a full value lost its outer callers.
    if frames.len() == raw.len() / 8 {
        frames.push(TRUNCATED);
    }
    frames
}

/// Stands for the callers a walk did not reach (a table walk stopped at
/// MAX_UNWOUND_FRAMES, or the kernel's trace filled its map value): the
/// last "address" of such a stack.
pub const TRUNCATED: u64 = u64::MAX;

/// Instruction pointers of an interned table-unwound stack, leaf first,
/// ending with TRUNCATED if the walk was cut. `chunk(i)` gives the frames
/// from i * STACK_CHUNK_FRAMES on; a missing one cuts the stack there too.
fn unwound_frames(
    stack: &uw_stack,
    mut chunk: impl FnMut(u32) -> Result<Option<uw_stack_chunk>>,
) -> Result<Vec<u64>> {
    let len = (stack.len as usize).min(MAX_UNWOUND_FRAMES);
    let mut frames = stack.ips[..len.min(STACK_CHUNK_FRAMES)].to_vec();
    let mut index = 1;
    while frames.len() < len {
        let Some(more) = chunk(index)? else {
            frames.push(TRUNCATED);
            return Ok(frames);
        };
        let wanted = (len - frames.len()).min(STACK_CHUNK_FRAMES);
        frames.extend_from_slice(&more.ips[..wanted]);
        index += 1;
    }
    if stack.truncated != 0 {
        frames.push(TRUNCATED);
    }
    Ok(frames)
}

/// An interned Python stack as two words per frame, leaf first: the code
/// object's address, then `instruction | check << 32` (see `struct
/// py_frame`), ending with TRUNCATED if the walk was cut.
pub fn python_frames(stack: &py_stack) -> Vec<u64> {
    let len = (stack.len as usize).min(MAX_PYTHON_FRAMES);
    let mut words: Vec<u64> = stack.frames[..len]
        .iter()
        .flat_map(|frame| {
            [
                frame.code,
                u64::from(frame.instruction) | u64::from(frame.check) << 32,
            ]
        })
        .collect();
    if stack.truncated != 0 {
        words.push(TRUNCATED);
    }
    words
}

/// Where a stack tool's stacks are interned: the kernel's stack-trace map
/// (`stacks`) and the table unwinder's `unwound_stacks` and
/// `unwound_stack_chunks`.
pub struct StackMaps<'a> {
    pub traces: &'a dyn MapCore,
    /// How many times they were emptied (BPF drops ids kept from before).
    pub cleared: &'a dyn MapCore,
    pub unwound: &'a dyn MapCore,
    pub unwound_chunks: &'a dyn MapCore,
    /// Interned Python stacks, in the tools that walk them.
    pub python: Option<&'a dyn MapCore>,
}

impl StackMaps<'_> {
    /// Empties them (serve, between windows), then counts it: ids the BPF
    /// side kept from before (stack caches, unflushed time) are dropped
    /// there instead of naming whatever stack takes their slot next.
    pub fn clear(&self) -> Result<()> {
        for map in [self.traces, self.unwound, self.unwound_chunks]
            .into_iter()
            .chain(self.python)
        {
            for key in map.keys().collect::<Vec<_>>() {
                map.delete(&key).ok();
            }
        }
        let zero = 0u32.to_ne_bytes();
        let cleared = self
            .cleared
            .lookup(&zero, MapFlags::ANY)?
            .and_then(|raw| layouts::read::<u32>(&raw))
            .unwrap_or(0);
        self.cleared
            .update(&zero, &cleared.wrapping_add(1).to_ne_bytes(), MapFlags::ANY)?;
        Ok(())
    }

    /// Reads the stacks with the given ids (negative ids are skipped).
    pub fn read(&self, ids: impl IntoIterator<Item = i32>) -> Result<HashMap<i32, Vec<u64>>> {
        let mut table = HashMap::new();
        for id in ids {
            if id < 0 || table.contains_key(&id) {
                continue;
            }
            let key = (id as u32).to_ne_bytes();
            if (PYTHON_STACK_BASE..UNWOUND_STACK_BASE).contains(&id) {
                if let Some(stack) = self
                    .python
                    .map(|map| map.lookup(&key, MapFlags::ANY))
                    .transpose()?
                    .flatten()
                    .and_then(|raw| layouts::read::<py_stack>(&raw))
                {
                    table.insert(id, python_frames(&stack));
                }
            } else if id >= UNWOUND_STACK_BASE {
                if let Some(stack) = self
                    .unwound
                    .lookup(&key, MapFlags::ANY)?
                    .and_then(|raw| layouts::read::<uw_stack>(&raw))
                {
                    let chunk = |index| -> Result<Option<uw_stack_chunk>> {
                        let key = uw_stack_chunk_key {
                            stack_id: id as u32,
                            index,
                        };
                        Ok(self
                            .unwound_chunks
                            .lookup(layouts::bytes_of(&key), MapFlags::ANY)?
                            .and_then(|raw| layouts::read::<uw_stack_chunk>(&raw)))
                    };
                    table.insert(id, unwound_frames(&stack, chunk)?);
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
        let no_chunks = |_| Ok(None);
        let mut stack = uw_stack {
            len: 2,
            ..Default::default()
        };
        stack.ips[..3].copy_from_slice(&[0x10, 0x20, 0x30]);
        assert_eq!(unwound_frames(&stack, no_chunks).unwrap(), vec![0x10, 0x20]);
        stack.truncated = 1;
        assert_eq!(
            unwound_frames(&stack, no_chunks).unwrap().last(),
            Some(&TRUNCATED)
        );
    }

    #[test]
    fn deep_stacks_continue_in_chunks_up_to_the_walk_limit() {
        let stack = uw_stack {
            len: u32::MAX,
            truncated: 1,
            ..Default::default()
        };
        let mut asked = Vec::new();
        let frames = unwound_frames(&stack, |index| {
            asked.push(index);
            let mut chunk = uw_stack_chunk::default();
            chunk.ips.fill(u64::from(index));
            Ok(Some(chunk))
        })
        .unwrap();
        assert_eq!(frames.len(), MAX_UNWOUND_FRAMES + 1);
        let chunks = (MAX_UNWOUND_FRAMES / STACK_CHUNK_FRAMES) as u32;
        assert_eq!(asked, (1..chunks).collect::<Vec<u32>>());
        assert_eq!(frames[STACK_CHUNK_FRAMES], 1);
        assert_eq!(frames.last(), Some(&TRUNCATED));

        // A chunk missing: its callers are unknown, so the stack is cut.
        let stack = uw_stack {
            len: 700,
            ..Default::default()
        };
        let frames = unwound_frames(&stack, |_| Ok(None)).unwrap();
        assert_eq!(frames.len(), STACK_CHUNK_FRAMES + 1);
        assert_eq!(frames.last(), Some(&TRUNCATED));
    }

    #[test]
    fn stack_ends_at_first_zero() {
        let raw: Vec<u8> = [0x10u64, 0x20, 0, 0x30]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(parse_stack(&raw), vec![0x10, 0x20]);
    }

    #[test]
    fn a_trace_that_fills_its_value_is_marked_cut() {
        let raw: Vec<u8> = [0x10u64, 0x20, 0x30]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(parse_stack(&raw), vec![0x10, 0x20, 0x30, TRUNCATED]);
    }
}
