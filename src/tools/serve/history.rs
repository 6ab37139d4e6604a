//! serve's CPU profile of the last five minutes, 20 ms slot by slot. The sampler
//! counts per (time slot, stack) in kernel; about every second the history
//! drains the counts map and reads the frames of the stacks it has not seen
//! yet, so the kernel maps stay small however long the agent runs, and the
//! stack maps can be emptied once every id in use has been read. CPU windows
//! (`/flamegraph.svg`, `/debug/pprof/profile`), `diff_base` comparisons and
//! the heatmap page are all read from it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bpf::loader::bpf_clock_ns;
use crate::bpf::stack_maps::StackKey;
use crate::engine::stack::StackCollector;
use crate::output::heatmap::{ROWS_PER_SECOND, SLOT_NS};

/// How far back requests may look (diff_base + seconds, heatmaps): the
/// longest profile window.
pub const HISTORY_SECONDS: u64 = 300;
/// How long samples are kept: a window of HISTORY_SECONDS may be answered
/// a little after it ended.
const KEEP_SECONDS: u64 = HISTORY_SECONDS + 20;
/// Ticks closer than this do nothing (the main loop calls often).
const TICK_EVERY: Duration = Duration::from_secs(1);
/// Unreferenced keys and stacks are dropped this often.
const COMPACT_EVERY: Duration = Duration::from_secs(60);
/// A stack id that could not be read (shows as a missed stack).
const STACK_UNREADABLE: i32 = -12;

pub struct History {
    /// (slot, index into `keys`, samples), oldest first.
    entries: VecDeque<(u32, u32, u64)>,
    /// Counted keys, with stack ids local to the history (into `stacks`)
    /// and time_slot 0.
    keys: Vec<StackKey>,
    key_index: HashMap<StackKey, u32>,
    /// Frames by local stack id, and the reverse.
    stacks: HashMap<i32, Vec<u64>>,
    stack_ids: HashMap<Vec<u64>, i32>,
    next_stack_id: i32,
    /// Kernel stack id → local id, until the stack maps are next emptied.
    from_kernel: HashMap<i32, i32>,
    /// The sampler's slot 0, on the bpf_clock_ns() clock.
    start_ns: u64,
    /// The slot the history began at.
    first_slot: u32,
    /// Kernel stack ids read since the stack maps were emptied, past which
    /// they are emptied again.
    stack_storage: u32,
    last_tick: Option<Instant>,
    last_compaction: Instant,
}

impl History {
    pub fn new(start_ns: u64, stack_storage: u32) -> Self {
        let mut history = History {
            entries: VecDeque::new(),
            keys: Vec::new(),
            key_index: HashMap::new(),
            stacks: HashMap::new(),
            stack_ids: HashMap::new(),
            next_stack_id: 0,
            from_kernel: HashMap::new(),
            start_ns,
            first_slot: 0,
            stack_storage,
            last_tick: None,
            last_compaction: Instant::now(),
        };
        history.first_slot = history.now_slot();
        history
    }

    /// The slot under way now.
    pub fn now_slot(&self) -> u32 {
        (bpf_clock_ns().saturating_sub(self.start_ns) / SLOT_NS) as u32
    }

    /// Whole seconds of history kept so far.
    pub fn covered_seconds(&self) -> u64 {
        u64::from(self.now_slot() - self.first_slot) / u64::from(ROWS_PER_SECOND)
    }

    /// Frames by the stack ids of the keys `counts` and `slots` return.
    pub fn stacks(&self) -> &HashMap<i32, Vec<u64>> {
        &self.stacks
    }

    /// Drains the kernel counts into the history, at most once a second
    /// unless `now` (a window is being answered).
    pub fn tick(&mut self, collector: &StackCollector<'_>, now: bool) -> Result<()> {
        if !now && self.last_tick.is_some_and(|at| at.elapsed() < TICK_EVERY) {
            return Ok(());
        }
        self.last_tick = Some(Instant::now());
        let drained = collector.drain()?;
        let unknown: Vec<i32> = drained
            .iter()
            .flat_map(|(key, _)| key.stack_ids())
            .filter(|id| *id >= 0 && !self.from_kernel.contains_key(id))
            .collect();
        let read = collector.read_stacks(unknown)?;
        for (kernel_id, frames) in read {
            let local = self.intern_stack(frames);
            self.from_kernel.insert(kernel_id, local);
        }
        for (mut key, count) in drained {
            let slot = key.time_slot;
            key.time_slot = 0;
            key.user_stack_id = self.local_id(key.user_stack_id);
            key.kernel_stack_id = self.local_id(key.kernel_stack_id);
            key.python_stack_id = self.local_id(key.python_stack_id);
            let index = match self.key_index.get(&key) {
                Some(&index) => index,
                None => {
                    self.keys.push(key.clone());
                    let index = (self.keys.len() - 1) as u32;
                    self.key_index.insert(key, index);
                    index
                }
            };
            self.entries.push_back((slot, index, count));
        }
        if self.from_kernel.len() as u32 > self.stack_storage / 2
            || collector.python_stacks_filling(0.5)
        {
            // Every id counted so far has been read: the maps can start afresh.
            collector.clear_stacks()?;
            self.from_kernel.clear();
        }
        let keep_from = self
            .now_slot()
            .saturating_sub((KEEP_SECONDS * u64::from(ROWS_PER_SECOND)) as u32);
        while self
            .entries
            .front()
            .is_some_and(|entry| entry.0 < keep_from)
        {
            self.entries.pop_front();
        }
        if self.last_compaction.elapsed() >= COMPACT_EVERY {
            self.compact();
        }
        Ok(())
    }

    fn intern_stack(&mut self, frames: Vec<u64>) -> i32 {
        if let Some(&id) = self.stack_ids.get(&frames) {
            return id;
        }
        let mut id = self.next_stack_id;
        // After 2^31 stacks the ids wrap: never over one still in use.
        while self.stacks.contains_key(&id) {
            id = id.wrapping_add(1) & i32::MAX;
        }
        self.next_stack_id = id.wrapping_add(1) & i32::MAX;
        self.stacks.insert(id, frames.clone());
        self.stack_ids.insert(frames, id);
        id
    }

    /// A kernel key's stack id as a local one (negative ids say why there
    /// is no stack and stay).
    fn local_id(&self, kernel_id: i32) -> i32 {
        if kernel_id < 0 {
            return kernel_id;
        }
        self.from_kernel
            .get(&kernel_id)
            .copied()
            .unwrap_or(STACK_UNREADABLE)
    }

    /// Drops keys and stacks no entry refers to any more.
    fn compact(&mut self) {
        self.last_compaction = Instant::now();
        let mut remap: HashMap<u32, u32> = HashMap::new();
        let mut keys = Vec::new();
        for entry in self.entries.iter_mut() {
            let new_index = *remap.entry(entry.1).or_insert_with(|| {
                keys.push(self.keys[entry.1 as usize].clone());
                (keys.len() - 1) as u32
            });
            entry.1 = new_index;
        }
        self.key_index = keys
            .iter()
            .enumerate()
            .map(|(index, key)| (key.clone(), index as u32))
            .collect();
        self.keys = keys;
        let used: std::collections::HashSet<i32> = self
            .keys
            .iter()
            .flat_map(StackKey::stack_ids)
            .chain(self.from_kernel.values().copied())
            .collect();
        self.stacks.retain(|id, _| used.contains(id));
        self.stack_ids.retain(|_, id| used.contains(id));
        // Give back what a busy minute grew them to.
        self.entries.shrink_to_fit();
        self.stacks.shrink_to_fit();
        self.stack_ids.shrink_to_fit();
        self.key_index.shrink_to_fit();
        self.from_kernel.shrink_to_fit();
    }

    /// Samples per key in slots first..=last (time_slot 0).
    pub fn counts(&self, first: u32, last: u32) -> Vec<(StackKey, u64)> {
        let mut sums: HashMap<u32, u64> = HashMap::new();
        for &(slot, index, count) in &self.entries {
            if (first..=last).contains(&slot) {
                *sums.entry(index).or_default() += count;
            }
        }
        sums.into_iter()
            .map(|(index, count)| (self.keys[index as usize].clone(), count))
            .collect()
    }

    /// Samples per key and slot in slots first..=last, time_slot counted
    /// from `first` (a heatmap's cells).
    pub fn slots(&self, first: u32, last: u32) -> Vec<(StackKey, u64)> {
        let mut sums: HashMap<(u32, u32), u64> = HashMap::new();
        for &(slot, index, count) in &self.entries {
            if (first..=last).contains(&slot) {
                *sums.entry((slot - first, index)).or_default() += count;
            }
        }
        sums.into_iter()
            .map(|((slot, index), count)| {
                let mut key = self.keys[index as usize].clone();
                key.time_slot = slot;
                (key, count)
            })
            .collect()
    }
}
