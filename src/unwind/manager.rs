//! Feeds the BPF unwinder (src/bpf/unwind.h): when a process image is first
//! seen, its executable mappings get unwind tables (built by `table` from
//! each object's `.eh_frame`, once per object: objects are shared by device
//! and inode, read through the process's own /proc/PID/map_files, and
//! cached on disk by content in `cache`), copied into the `unwind_rows`
//! array through a shared memory mapping, and the process's mapping list
//! goes into `unwind_processes`. Tables are built on a background thread,
//! so a large binary never holds up the event loop; a process's entry is
//! written at once and again when its tables arrive. Tables of objects no
//! living process uses any more are evicted and their space reused.
//!
//! CPython's perf trampolines (`-X perf`) are copies of a four-instruction
//! stub in anonymous memory with no table of their own and no frame
//! pointer (`sub $8,%rsp; call *%rcx; add $8,%rsp; ret`): the ranges a
//! process's perf map names `py::` get one shared row, "CFA = RSP + 16,
//! for return addresses only".

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::loader::bpf_clock_ns;
use crate::host::object_files::{own_vdso_image, ObjectFile};
use crate::host::process_maps::AddressSpace;
use crate::host::target::process_alive;
use crate::layouts::{self, uw_cfa_rule, uw_mapping, uw_process, uw_rbp_rule, MAX_MAPPINGS};
use crate::model::module::Module;
use crate::unwind::cache::{content_key, TableCache};
use crate::unwind::table::{build_rows, load_bias, BuildLimits, ElfImage, Row};

/// Bytes per `unwind_rows` element.
const ROW_STRIDE: usize = std::mem::size_of::<Row>();

/// How often BPF asks for a process's mappings again (unwind.h's
/// request_refresh), and how soon after a refresh that found new objects.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
const EARLY_REFRESH: Duration = Duration::from_millis(100);

/// How long an object whose table could not be loaded is left alone.
const RETRY_UNLOADABLE: Duration = Duration::from_secs(60);

/// Identifies an object file on this host (device and inode), or the vDSO.
type ObjectKey = (String, u64);

struct LoadedObject {
    start: u32,
    len: u32,
    /// PT_LOAD segments: (file offset, virtual address, file size).
    loads: Vec<(u64, u64, u64)>,
    users: u32,
}

/// Figures for the summary line and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct TableStats {
    pub processes: u64,
    pub objects_built: u64,
    pub objects_from_cache: u64,
    pub objects_without_table: u64,
    pub rows_loaded: u64,
    pub build_time: Duration,
    /// Objects left without a table because `unwind_rows` was full.
    pub table_space_full: u64,
    /// Processes with more executable mappings than a table entry holds.
    pub mappings_dropped: u64,
    /// Processes left out because `unwind_processes` was full.
    pub processes_dropped: u64,
    /// Objects whose file was refused (not regular, replaced, too large,
    /// unreadable) or whose table was over a build limit.
    pub objects_refused: u64,
}

/// The `unwind_rows` array, written through a shared mapping of just the
/// pages a table needs, unmapped again at once: the array is kernel memory
/// and does not stay in this process's resident set.
struct RowArray {
    fd: OwnedFd,
    capacity: u32,
}

impl RowArray {
    fn new(map: &dyn MapCore, capacity: u32) -> Result<RowArray> {
        Ok(RowArray {
            fd: map.as_fd().try_clone_to_owned()?,
            capacity,
        })
    }

    fn write(&mut self, start: u32, rows: &[Row]) -> Result<()> {
        assert!(start as usize + rows.len() <= self.capacity as usize);
        // SAFETY: sysconf only returns a value.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let first_byte = start as usize * ROW_STRIDE;
        let end_byte = first_byte + rows.len() * ROW_STRIDE;
        let offset = first_byte / page * page;
        let length = end_byte - offset;
        // SAFETY: maps part of the BPF array's own memory (BPF_F_MMAPABLE),
        // within its size by the capacity check; only this function uses
        // the mapping, and it unmaps it before returning.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            bail!(
                "mapping the unwind table array: {}",
                std::io::Error::last_os_error()
            );
        }
        let base: *mut u8 = base.cast();
        for (index, row) in rows.iter().enumerate() {
            let at = first_byte - offset + index * ROW_STRIDE;
            // SAFETY: `at + ROW_STRIDE <= length`: the mapping covers every row.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    layouts::bytes_of(row).as_ptr(),
                    base.add(at),
                    ROW_STRIDE,
                )
            };
        }
        // SAFETY: unmaps exactly what was mapped above.
        unsafe { libc::munmap(base.cast(), length) };
        Ok(())
    }
}

/// Which rows of `unwind_rows` are free: ranges of evicted objects, merged
/// with their neighbours, and the never-used tail.
struct RowSpace {
    free: Vec<(u32, u32)>,
    next_free: u32,
    capacity: u32,
}

impl RowSpace {
    fn new(capacity: u32) -> Self {
        RowSpace {
            free: Vec::new(),
            next_free: 0,
            capacity,
        }
    }

    /// Room for `len` rows: the first freed range it fits in, else the tail.
    fn allocate(&mut self, len: u32) -> Option<u32> {
        if let Some(index) = self.free.iter().position(|&(_, free)| free >= len) {
            let (start, free) = self.free[index];
            if free == len {
                self.free.remove(index);
            } else {
                self.free[index] = (start + len, free - len);
            }
            return Some(start);
        }
        let start = self.next_free;
        (start.checked_add(len)? <= self.capacity).then(|| {
            self.next_free = start + len;
            start
        })
    }

    /// Frees a range, merging it with free neighbours (and the tail).
    fn free(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        let at = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(at, (start, len));
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.free.len());
        for (start, len) in self.free.drain(..) {
            match merged.last_mut() {
                Some((last_start, last_len)) if *last_start + *last_len == start => {
                    *last_len += len
                }
                _ => merged.push((start, len)),
            }
        }
        if let Some(&(start, len)) = merged.last() {
            if start + len == self.next_free {
                self.next_free = start;
                merged.pop();
            }
        }
        self.free = merged;
    }
}

/// The object a mapping shows: the vDSO, or a file by device and inode;
/// None for anonymous executable memory (JIT), which has no table.
fn object_key(module: &Module) -> Option<ObjectKey> {
    if module.path.as_os_str() == "[vdso]" {
        Some(("[vdso]".to_string(), 0))
    } else if module.inode == 0 {
        None
    } else {
        Some((module.device.clone(), module.inode))
    }
}

/// The table of an ELF image in memory (the vDSO).
fn rows_for_image(data: &[u8]) -> Result<(ElfImage, Vec<Row>)> {
    let limits = BuildLimits::default();
    let image = ElfImage::read(data, &limits)?;
    let rows = build_rows(&image, &limits)?;
    Ok((image, rows))
}

/// What the builder thread made of one object: its PT_LOAD segments and
/// rows and whether they came from the disk cache, or None (not an ELF
/// file with usable CFI, over a build limit, or unreadable).
struct BuiltTable {
    key: ObjectKey,
    table: Option<ObjectTable>,
    elapsed: Duration,
}

/// An object's PT_LOAD segments, its rows, and whether they were cached.
type ObjectTable = (Vec<(u64, u64, u64)>, Vec<Row>, bool);

/// The table of an opened object, from the disk cache when it is there.
pub fn table_for_object(
    object: &ObjectFile,
    cache: &TableCache,
    limits: &BuildLimits,
) -> Result<(ElfImage, Vec<Row>, bool)> {
    let image = ElfImage::read_file(object, limits)?;
    // Hashing `.eh_frame` only pays where there is a cache to look in.
    let key = cache.is_enabled().then(|| content_key(&image));
    if let Some(rows) = key.as_deref().and_then(|key| cache.load(key)) {
        return Ok((image, rows, true));
    }
    let rows = build_rows(&image, limits)?;
    if let Some(key) = &key {
        cache.store(key, &rows);
    }
    Ok((image, rows, false))
}

/// Builds tables on a thread of its own until the unwinder hangs up.
fn start_builder(limits: BuildLimits) -> (Sender<(ObjectKey, ObjectFile)>, Receiver<BuiltTable>) {
    let (request_sender, requests) = channel::<(ObjectKey, ObjectFile)>();
    let (result_sender, results) = channel();
    std::thread::spawn(move || {
        let cache = TableCache::at_default();
        for (key, object) in requests {
            let started = Instant::now();
            let table = table_for_object(&object, &cache, &limits)
                .ok()
                .map(|(image, rows, cached)| (image.loads, rows, cached));
            let built = BuiltTable {
                key,
                table,
                elapsed: started.elapsed(),
            };
            if result_sender.send(built).is_err() {
                break;
            }
        }
    });
    (request_sender, results)
}

pub struct Unwinder<'a> {
    rows: RowArray,
    processes: &'a dyn MapCore,
    /// When BPF last asked for each process's mappings to be read again.
    refreshes: &'a dyn MapCore,
    requests: Sender<(ObjectKey, ObjectFile)>,
    results: Receiver<BuiltTable>,
    /// Objects the builder is working on, and processes waiting for them.
    building: HashSet<ObjectKey>,
    /// Objects that could not be built or did not fit, and when: not asked
    /// for again before RETRY_UNLOADABLE (every new process of a program
    /// too big for the array would otherwise rebuild its table).
    unloadable: HashMap<ObjectKey, Instant>,
    waiting: HashSet<u32>,
    objects: HashMap<ObjectKey, LoadedObject>,
    /// Objects each process uses (each once).
    process_objects: HashMap<u32, Vec<ObjectKey>>,
    space: RowSpace,
    /// The row of every CPython perf trampoline (None if the array had no room).
    trampoline_row: Option<u32>,
    /// Each process's CPython trampoline ranges, from its perf map.
    trampolines: HashMap<u32, Vec<(u64, u64)>>,
    /// Entries written so far: each write carries the next value as its
    /// generation, so stacks the BPF side cached from an older entry of the
    /// process are walked again (0 stands for "no entry").
    writes: u32,
    pub stats: TableStats,
}

impl<'a> Unwinder<'a> {
    /// Takes the loaded `unwind_rows` (created with `capacity` entries),
    /// `unwind_processes` and `unwind_refreshes` (see `allow_early_refresh`)
    /// maps.
    pub fn new(
        rows: &dyn MapCore,
        capacity: u32,
        processes: &'a dyn MapCore,
        refreshes: &'a dyn MapCore,
    ) -> Result<Self> {
        let limits = BuildLimits {
            max_rows: capacity as usize,
            ..BuildLimits::default()
        };
        let (requests, results) = start_builder(limits);
        let mut rows = RowArray::new(rows, capacity)?;
        let mut space = RowSpace::new(capacity);
        let trampoline_row = space.allocate(1).filter(|&start| {
            let row = Row {
                pc: 0,
                cfa_offset: 16,
                cfa_rule: uw_cfa_rule::CFA_RSP_AFTER_CALL.0 as u8,
                rbp_rule: uw_rbp_rule::RBP_SAME.0 as u8,
                ..Default::default()
            };
            rows.write(start, &[row]).is_ok()
        });
        Ok(Unwinder {
            rows,
            processes,
            refreshes,
            requests,
            results,
            building: HashSet::new(),
            unloadable: HashMap::new(),
            waiting: HashSet::new(),
            objects: HashMap::new(),
            process_objects: HashMap::new(),
            space,
            trampoline_row,
            trampolines: HashMap::new(),
            writes: 0,
            stats: TableStats::default(),
        })
    }

    /// Puts a built table into `unwind_rows` (an object without one is
    /// remembered too, so it is not built again).
    fn load_object(&mut self, key: ObjectKey, loads: Vec<(u64, u64, u64)>, rows: Vec<Row>) {
        let len = rows.len() as u32;
        let start = if rows.is_empty() {
            self.stats.objects_without_table += 1;
            0
        } else if let Some(start) = self.space.allocate(len) {
            if self.rows.write(start, &rows).is_err() {
                self.space.free(start, len);
                self.stats.table_space_full += 1;
                self.unloadable.insert(key, Instant::now());
                return;
            }
            self.stats.rows_loaded += len as u64;
            start
        } else {
            self.stats.table_space_full += 1;
            self.unloadable.insert(key, Instant::now());
            return;
        };
        self.objects.insert(
            key,
            LoadedObject {
                start,
                len,
                loads,
                users: 0,
            },
        );
    }

    /// Asks for an object's table unless it is loaded or being built; the
    /// vDSO (a few rows, from this process's own copy) is built at once.
    fn request(&mut self, key: &ObjectKey, tgid: u32, module: &Module) {
        if self.objects.contains_key(key) || self.building.contains(key) {
            return;
        }
        if let Some(when) = self.unloadable.get(key) {
            if when.elapsed() < RETRY_UNLOADABLE {
                return;
            }
            self.unloadable.remove(key);
        }
        if key.0 == "[vdso]" {
            let started = Instant::now();
            if let Some((image, rows)) =
                own_vdso_image().and_then(|image| rows_for_image(&image).ok())
            {
                self.stats.build_time += started.elapsed();
                self.stats.objects_built += 1;
                self.load_object(key.clone(), image.loads, rows);
            }
            return;
        }
        match ObjectFile::open_mapped(tgid, module) {
            Ok(object) => {
                if self.requests.send((key.clone(), object)).is_ok() {
                    self.building.insert(key.clone());
                }
            }
            Err(_) => {
                self.stats.objects_refused += 1;
                self.unloadable.insert(key.clone(), Instant::now());
            }
        }
    }

    /// Polls until no table is being built, or `timeout` passes (at start,
    /// for the target processes, whose mappings are read here).
    pub fn wait_for_tables(&mut self, timeout: Duration) {
        let started = Instant::now();
        while !self.building.is_empty() && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(5));
            for tgid in self.poll() {
                if let Some(space) = AddressSpace::read(tgid) {
                    self.add_process(tgid, &space);
                }
            }
            self.evict_unused();
        }
    }

    /// Takes the tables the builder has finished; returns the processes
    /// that were waiting for them, whose entries the caller rewrites with
    /// their mappings read again (`add_process`), so that the snapshots
    /// symbolization uses see what the unwinder sees. Call it often.
    pub fn poll(&mut self) -> Vec<u32> {
        let mut arrived = false;
        while let Ok(built) = self.results.try_recv() {
            arrived = true;
            self.building.remove(&built.key);
            self.stats.build_time += built.elapsed;
            match built.table {
                Some((loads, rows, cached)) => {
                    if cached {
                        self.stats.objects_from_cache += 1;
                    } else {
                        self.stats.objects_built += 1;
                    }
                    self.load_object(built.key, loads, rows);
                }
                // Not a usable ELF file, over a limit, or gone before it could be read.
                None => {
                    self.stats.objects_refused += 1;
                    self.unloadable.insert(built.key, Instant::now());
                }
            }
        }
        if !arrived {
            return Vec::new();
        }
        std::mem::take(&mut self.waiting).into_iter().collect()
    }

    /// Evicts the tables no process uses (built for processes that exited
    /// meanwhile); call it after re-adding the processes `poll` returned.
    pub fn evict_unused(&mut self) {
        let unused: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(_, object)| object.users == 0)
            .map(|(key, _)| key.clone())
            .collect();
        for key in unused {
            self.evict(&key);
        }
    }

    /// Removes an object and frees its rows.
    fn evict(&mut self, key: &ObjectKey) {
        if let Some(object) = self.objects.remove(key) {
            self.space.free(object.start, object.len);
        }
    }

    /// The CPython perf-trampoline ranges of `tgid` (from its perf map),
    /// used from its next `add_process` on.
    pub fn set_trampolines(&mut self, tgid: u32, ranges: Vec<(u64, u64)>) {
        if ranges.is_empty() {
            self.trampolines.remove(&tgid);
        } else {
            self.trampolines.insert(tgid, ranges);
        }
    }

    /// Loads the tables of process `tgid`'s current image (again after an
    /// exec or when libraries were loaded since).
    pub fn add_process(&mut self, tgid: u32, space: &AddressSpace) {
        let previous = self.process_objects.remove(&tgid);
        if previous.is_none() {
            self.stats.processes += 1;
        }
        let previous = previous.unwrap_or_default();
        let mut used: Vec<ObjectKey> = Vec::new();
        let mut entries: Vec<uw_mapping> = Vec::new();
        for module in space.modules() {
            let Some(key) = object_key(module) else {
                continue; // no entry: a walk stops there as at JIT code
            };
            self.request(&key, tgid, module);
            // Until its table arrives a mapping has none: frame pointers (auto)
            // or a stop there (dwarf), rather than "unmapped code".
            let (bias, table_start, table_len) = match self.objects.get_mut(&key) {
                Some(object) => {
                    if !used.contains(&key) {
                        object.users += 1;
                        used.push(key);
                    }
                    match load_bias(&object.loads, module.start, module.file_offset) {
                        Some(bias) => (bias, object.start, object.len),
                        None => (0, 0, 0),
                    }
                }
                None => {
                    if self.building.contains(&key) {
                        self.waiting.insert(tgid);
                    }
                    (0, 0, 0)
                }
            };
            entries.push(uw_mapping {
                start: module.start,
                end: module.end,
                bias,
                table_start,
                table_len,
            });
        }
        if let (Some(row), Some(ranges)) = (self.trampoline_row, self.trampolines.get(&tgid)) {
            for &(start, end) in ranges {
                if !entries.iter().any(|m| m.start < end && start < m.end) {
                    entries.push(uw_mapping {
                        start,
                        end,
                        bias: start,
                        table_start: row,
                        table_len: 1,
                    });
                }
            }
            entries.sort_by_key(|mapping| mapping.start);
        }
        if !previous.is_empty() && used.iter().any(|key| !previous.contains(key)) {
            self.allow_early_refresh(tgid);
        }
        self.process_objects.insert(tgid, used);
        self.release(previous);
        if entries.len() > MAX_MAPPINGS {
            self.stats.mappings_dropped += (entries.len() - MAX_MAPPINGS) as u64;
            entries.truncate(MAX_MAPPINGS);
        }
        self.writes = self.writes.checked_add(1).unwrap_or(1);
        let mut value = uw_process {
            count: entries.len() as u32,
            generation: self.writes,
            ..Default::default()
        };
        value.mappings[..entries.len()].copy_from_slice(&entries);
        if self
            .processes
            .update(
                &tgid.to_ne_bytes(),
                layouts::bytes_of(&value),
                MapFlags::ANY,
            )
            .is_err()
        {
            self.stats.processes_dropped += 1;
        }
    }

    /// A process that loaded a library since its last entry (an import of
    /// an extension module, dlopen) often loads more in a row, and walks
    /// stop in code mapped after the entry: BPF may ask for its mappings
    /// again EARLY_REFRESH after this one, instead of a second.
    fn allow_early_refresh(&self, tgid: u32) {
        let asked =
            bpf_clock_ns().saturating_sub((REFRESH_EVERY - EARLY_REFRESH).as_nanos() as u64);
        let _ = self
            .refreshes
            .update(&tgid.to_ne_bytes(), &asked.to_ne_bytes(), MapFlags::ANY);
    }

    /// Drops one use of each object; unused ones are evicted.
    fn release(&mut self, keys: Vec<ObjectKey>) {
        for key in keys {
            let Some(object) = self.objects.get_mut(&key) else {
                continue;
            };
            object.users = object.users.saturating_sub(1);
            if object.users == 0 {
                self.evict(&key);
            }
        }
    }

    /// Forgets processes that have exited: their entries and object uses.
    pub fn forget_exited(&mut self) {
        let gone: Vec<u32> = self
            .process_objects
            .keys()
            .copied()
            .filter(|tgid| !process_alive(*tgid))
            .collect();
        for tgid in gone {
            self.trampolines.remove(&tgid);
            let _ = self.processes.delete(&tgid.to_ne_bytes());
            let keys = self.process_objects.remove(&tgid).unwrap_or_default();
            self.release(keys);
        }
    }

    /// Rows in use now.
    pub fn rows_in_use(&self) -> u64 {
        self.objects.values().map(|object| object.len as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_rows_merge_and_are_reused() {
        let mut space = RowSpace::new(100);
        let (a, b, c) = (
            space.allocate(30).unwrap(),
            space.allocate(30).unwrap(),
            space.allocate(30).unwrap(),
        );
        assert_eq!((a, b, c), (0, 30, 60));
        assert_eq!(space.allocate(20), None);
        space.free(a, 30);
        space.free(b, 30);
        assert_eq!(space.free, vec![(0, 60)]);
        assert_eq!(space.allocate(50), Some(0));
        // The last range and the 10 rows left before it go back to the tail.
        space.free(c, 30);
        assert_eq!((space.next_free, space.free.len()), (50, 0));
        assert_eq!(space.allocate(50), Some(50));
    }

    #[test]
    fn own_mappings_name_files_and_the_vdso() {
        let me = std::process::id();
        let space = AddressSpace::read(me).unwrap();
        let keys: Vec<ObjectKey> = space
            .modules()
            .iter()
            .filter_map(|m| object_key(m))
            .collect();
        assert!(keys.iter().any(|key| key.0 == "[vdso]"));
        assert!(keys.iter().any(|key| key.1 != 0));
        let image = own_vdso_image().unwrap();
        let (_, rows) = rows_for_image(&image).unwrap();
        assert!(!rows.is_empty(), "the vDSO has .eh_frame");
    }
}
