//! Snapshots of processes' executable mappings, taken when BPF first sees a
//! process image (see `announce_address_space()` in stacks.h), with the
//! object files they map opened at once through the process's own
//! /proc/PID/map_files (host::object_files). Symbolizing from these
//! snapshots, rather than from /proc at the end, is what lets stacks of
//! processes that exited mid-run keep their names, and reading the files
//! the processes map, rather than the paths they name, keeps names right
//! when a path leads elsewhere (another mount namespace, a replaced file).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use crate::host::debug_files::{self, DebugFileStats};
use crate::host::object_files::{module_identity, vdso_object, ObjectFile, Refusal};
use crate::host::perf_maps::{PerfMap, CPYTHON_TRAMPOLINE_PREFIX};
use crate::host::process_context;
use crate::host::python_runtime::{Detection, PythonFinder, PythonRuntime};
use crate::host::target::process_alive;
use crate::model::module::Module;
use crate::model::process::ProcessContext;

/// The executable mappings of one process image, sorted by address.
#[derive(Debug, Default, Clone)]
pub struct AddressSpace {
    modules: Vec<Arc<Module>>,
    /// Anonymous executable mappings (JIT code), (start, end), sorted.
    anonymous_code: Vec<(u64, u64)>,
}

impl AddressSpace {
    /// Reads a living process's executable mappings now.
    pub fn read(tgid: u32) -> Option<Self> {
        fs::read_to_string(format!("/proc/{tgid}/maps"))
            .ok()
            .map(|text| AddressSpace::parse(&text))
    }

    /// Parses /proc/PID/maps text, keeping executable mappings only.
    pub fn parse(maps: &str) -> Self {
        let mut modules: Vec<Arc<Module>> =
            maps.lines().filter_map(parse_line).map(Arc::new).collect();
        modules.sort_by_key(|module| module.start);
        let mut anonymous_code: Vec<(u64, u64)> =
            maps.lines().filter_map(anonymous_code_range).collect();
        anonymous_code.sort_unstable();
        AddressSpace {
            modules,
            anonymous_code,
        }
    }

    /// Whether `address` is in anonymous executable memory (JIT code).
    pub fn in_anonymous_code(&self, address: u64) -> bool {
        let index = self
            .anonymous_code
            .partition_point(|&(start, _)| start <= address);
        index
            .checked_sub(1)
            .is_some_and(|index| address < self.anonymous_code[index].1)
    }

    /// The module containing `address` and the file offset it corresponds to.
    pub fn resolve(&self, address: u64) -> Option<(Arc<Module>, u64)> {
        let index = self
            .modules
            .partition_point(|module| module.start <= address);
        let module = self.modules.get(index.checked_sub(1)?)?;
        (address < module.end)
            .then(|| (module.clone(), address - module.start + module.file_offset))
    }

    pub fn modules(&self) -> &[Arc<Module>] {
        &self.modules
    }

    /// Adds mappings that appeared since (e.g. libraries loaded with dlopen).
    fn merge(&mut self, newer: AddressSpace) {
        for module in newer.modules {
            if !self.modules.contains(&module) {
                self.modules.push(module);
            }
        }
        self.modules.sort_by_key(|module| module.start);
        self.anonymous_code.extend(newer.anonymous_code);
        self.anonymous_code.sort_unstable();
        self.anonymous_code.dedup();
    }
}

/// An anonymous executable mapping's (start, end): no file, no pseudo-file name.
fn anonymous_code_range(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    let (range, perms) = (fields.next()?, fields.next()?);
    let inode = fields.nth(2)?;
    let anonymous = match fields.next() {
        None => true,
        Some(name) => name.starts_with("[anon:"),
    };
    if !perms.contains('x') || inode != "0" || !anonymous {
        return None;
    }
    parse_range(range)
}

/// A maps line's `START-END` in hex.
fn parse_range(range: &str) -> Option<(u64, u64)> {
    let (start, end) = range.split_once('-')?;
    Some((
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
    ))
}

fn parse_line(line: &str) -> Option<Module> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let device = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim();
    if !perms.contains('x') || path.is_empty() {
        return None;
    }
    let (start, end) = parse_range(range)?;
    Some(Module {
        path: PathBuf::from(path),
        start,
        end,
        file_offset: u64::from_str_radix(offset, 16).ok()?,
        device: device.to_string(),
        inode: inode.parse().ok()?,
        build_id: None,
    })
}

/// All snapshots of a run, keyed by (tgid, address-space id).
#[derive(Default)]
pub struct AddressSpaces {
    spaces: HashMap<(u32, u64), AddressSpace>,
    /// The address space each process announced last: its current image.
    current: HashMap<u32, u64>,
    /// The object files the snapshots refer to, by (device, inode).
    objects: HashMap<(u64, u64), Arc<ObjectFile>>,
    /// Separate debug files of stripped objects, by the object's identity.
    debug_files: HashMap<(u64, u64), Arc<ObjectFile>>,
    /// Build IDs of stripped objects with no debug file installed, not yet
    /// handed to a debuginfod client.
    wanting_debug_info: Vec<String>,
    pub debug_stats: DebugFileStats,
    /// Names of JIT code, from each process's perf map (read again at each
    /// snapshot: BPF asks for one about once a second while walks go
    /// through JIT code).
    perf_maps: HashMap<u32, PerfMap>,
    /// Where each snapshotted process runs (cgroup, container, namespace PID).
    contexts: HashMap<u32, Arc<ProcessContext>>,
    /// Each process's Python runtime, where it has one (python_runtime).
    python: HashMap<u32, Detection>,
    python_finder: PythonFinder,
    /// Processes that were gone before their mappings could be read.
    pub missed: u64,
    /// Object files not opened, by why.
    pub refused: HashMap<Refusal, u64>,
}

impl AddressSpaces {
    /// Reads /proc/TGID/maps now, while the process lives, and opens the
    /// files it maps; returns what was read (the snapshot itself also keeps
    /// earlier mappings).
    pub fn snapshot(&mut self, tgid: u32, address_space: u64) -> Option<AddressSpace> {
        let Some(space) = self.read_and_open(tgid) else {
            self.missed += 1;
            return None;
        };
        self.spaces
            .entry((tgid, address_space))
            .or_default()
            .merge(space.clone());
        self.current.insert(tgid, address_space);
        if let Some(context) = process_context::read(tgid) {
            self.contexts.insert(tgid, Arc::new(context));
        }
        self.perf_maps.entry(tgid).or_default().refresh(tgid);
        self.detect_python(tgid, &space);
        Some(space)
    }

    /// The Python runtime of a living process, found now (a -p target,
    /// before BPF announces it).
    pub fn find_python(&mut self, tgid: u32) -> Option<Arc<PythonRuntime>> {
        let space = self.read_and_open(tgid)?;
        self.detect_python(tgid, &space);
        self.python(tgid).cloned()
    }

    /// Finds the Python runtime of a process whose objects are open.
    fn detect_python(&mut self, tgid: u32, space: &AddressSpace) {
        let objects = &self.objects;
        let detection = self.python_finder.detect(space, |module| {
            objects.get(&module_identity(module)?).cloned()
        });
        self.python.insert(tgid, detection);
    }

    /// The Python runtime of process `tgid`, as its last snapshot found it.
    pub fn python(&self, tgid: u32) -> Option<&Arc<PythonRuntime>> {
        match self.python.get(&tgid)? {
            Detection::Supported(runtime) => Some(runtime),
            _ => None,
        }
    }

    /// "python: …" for the summary: the Python processes whose frames were
    /// walked, and those that were not, and why.
    pub fn python_summary(&self) -> Option<String> {
        let mut walked = 0;
        let mut unsupported: HashMap<&str, u64> = HashMap::new();
        for detection in self.python.values() {
            match detection {
                Detection::Supported(_) => walked += 1,
                Detection::Unsupported(why) => *unsupported.entry(why).or_default() += 1,
                Detection::NotPython => {}
            }
        }
        if walked == 0 && unsupported.is_empty() {
            return None;
        }
        let mut line = format!("python: {walked} processes with Python frames read");
        let mut reasons: Vec<_> = unsupported.into_iter().collect();
        reasons.sort();
        for (why, count) in reasons {
            line.push_str(&format!("; {count} not read: {why}, native frames only"));
        }
        Some(line)
    }

    /// A living process's mappings now, with the files they map opened (the
    /// ones not opened yet) and each module's build ID from its file.
    fn read_and_open(&mut self, tgid: u32) -> Option<AddressSpace> {
        let space = AddressSpace::read(tgid)?;
        self.open_objects(tgid, &space);
        Some(self.with_build_ids(space))
    }

    /// Opens the files of `space` not opened yet.
    fn open_objects(&mut self, tgid: u32, space: &AddressSpace) {
        for module in space.modules() {
            let Some(identity) = module_identity(module).filter(|(_, inode)| *inode != 0) else {
                continue;
            };
            if self.objects.contains_key(&identity) {
                continue;
            }
            match ObjectFile::open_mapped(tgid, module) {
                Ok(object) => {
                    self.find_debug_file(tgid, module, identity, &object);
                    self.objects.insert(identity, Arc::new(object));
                }
                Err(refusal) => *self.refused.entry(refusal).or_default() += 1,
            }
        }
    }

    /// Looks for the separate debug file of an object without symbols
    /// (while its process, and so its root, still exists).
    fn find_debug_file(
        &mut self,
        tgid: u32,
        module: &Module,
        identity: (u64, u64),
        object: &ObjectFile,
    ) {
        if object.elf().has_symbols || module.path.starts_with("[") {
            return;
        }
        self.debug_stats.stripped += 1;
        match debug_files::find_local(tgid, &module.path, object, &mut self.debug_stats) {
            Some((debug_file, source)) => {
                *self.debug_stats.found.entry(source).or_default() += 1;
                self.debug_files.insert(identity, Arc::new(debug_file));
            }
            None => self.wanting_debug_info.extend(object.build_id()),
        }
    }

    /// Build IDs of stripped objects without an installed debug file seen
    /// since the last call (for a debuginfod client).
    pub fn take_debug_requests(&mut self) -> Vec<String> {
        std::mem::take(&mut self.wanting_debug_info)
    }

    /// The separate debug file found for a module's object, if any.
    pub fn debug_file(&self, module: &Module) -> Option<&Arc<ObjectFile>> {
        self.debug_files.get(&module_identity(module)?)
    }

    /// The space with each module's build ID, from the file opened for it.
    fn with_build_ids(&self, space: AddressSpace) -> AddressSpace {
        let AddressSpace {
            modules,
            anonymous_code,
        } = space;
        let modules = modules
            .into_iter()
            .map(
                |module| match self.object(&module).and_then(|o| o.build_id()) {
                    Some(id) => Arc::new(Module {
                        build_id: Some(id),
                        ..(*module).clone()
                    }),
                    None => module,
                },
            )
            .collect();
        AddressSpace {
            modules,
            anonymous_code,
        }
    }

    /// Re-reads the current image of processes still alive, to catch
    /// late-loaded libraries (never into a snapshot from before an exec).
    pub fn refresh_living(&mut self) {
        let current: Vec<u32> = self.current.keys().copied().collect();
        for tgid in current {
            self.refresh_process(tgid);
        }
    }

    /// Re-reads one living process's current image (and its perf map) into
    /// its snapshot; returns the fresh mappings.
    pub fn refresh_process(&mut self, tgid: u32) -> Option<AddressSpace> {
        let address_space = *self.current.get(&tgid)?;
        let fresh = self.read_and_open(tgid)?;
        if let Some(space) = self.spaces.get_mut(&(tgid, address_space)) {
            space.merge(fresh.clone());
        }
        self.perf_maps.entry(tgid).or_default().refresh(tgid);
        Some(fresh)
    }

    /// Reads every perf map to its end (after collection, before naming:
    /// a runtime appends to its map until it exits).
    pub fn read_perf_maps_to_end(&mut self) {
        for map in self.perf_maps.values_mut() {
            map.read_to_end();
        }
    }

    /// Drops the snapshots of processes that have exited, and the files
    /// only they mapped (for long-running agents, once no counted stack
    /// refers to them any more).
    pub fn forget_exited(&mut self) {
        self.spaces.retain(|(tgid, _), _| process_alive(*tgid));
        self.current.retain(|tgid, _| process_alive(*tgid));
        let spaces = &self.spaces;
        self.contexts
            .retain(|tgid, _| spaces.keys().any(|(t, _)| t == tgid));
        self.perf_maps
            .retain(|tgid, _| spaces.keys().any(|(t, _)| t == tgid));
        self.python
            .retain(|tgid, _| spaces.keys().any(|(t, _)| t == tgid));
        let used: HashSet<(u64, u64)> = self
            .spaces
            .values()
            .flat_map(|space| space.modules().iter().filter_map(|m| module_identity(m)))
            .collect();
        self.objects.retain(|identity, _| used.contains(identity));
        self.debug_files
            .retain(|identity, _| used.contains(identity));
    }

    pub fn get(&self, tgid: u32, address_space: u64) -> Option<&AddressSpace> {
        self.spaces.get(&(tgid, address_space))
    }

    /// The perf-map name of JIT code at `address` in process `tgid`.
    pub fn jit_name(&self, tgid: u32, address: u64) -> Option<&str> {
        self.perf_maps.get(&tgid)?.name(address)
    }

    /// The address ranges of CPython's perf trampolines in process `tgid`
    /// (its perf map's `py::` entries, merged).
    pub fn python_trampolines(&self, tgid: u32) -> Vec<(u64, u64)> {
        self.perf_maps
            .get(&tgid)
            .map(|map| map.ranges_named(CPYTHON_TRAMPOLINE_PREFIX))
            .unwrap_or_default()
    }

    /// Perf-map entries not kept (maps over their size bound).
    pub fn perf_map_entries_dropped(&self) -> u64 {
        self.perf_maps.values().map(|map| map.dropped).sum()
    }

    /// "perf maps: …" for the summary, when any process had one.
    pub fn perf_map_summary(&self) -> Option<String> {
        let read: Vec<&PerfMap> = self
            .perf_maps
            .values()
            .filter(|map| map.lines_read > 0)
            .collect();
        if read.is_empty() {
            return None;
        }
        let entries: usize = read.iter().map(|map| map.entry_count()).sum();
        let lines: u64 = read.iter().map(|map| map.lines_read).sum();
        let time: std::time::Duration = read.iter().map(|map| map.read_time).sum();
        let skipped: u64 = read.iter().map(|map| map.skipped_bytes).sum();
        let skipped = if skipped > 0 {
            format!(
                "; {} MiB of {} maps not read (over their memory budget: those JIT frames [unknown])",
                skipped.div_ceil(1 << 20),
                read.iter().filter(|map| map.skipped_bytes > 0).count()
            )
        } else {
            String::new()
        };
        Some(format!(
            "perf maps: {} processes, {entries} entries ({lines} lines read in {} ms){skipped}",
            read.len(),
            time.as_millis()
        ))
    }

    /// Where a process ran when it was snapshotted.
    pub fn context(&self, tgid: u32) -> Option<&Arc<ProcessContext>> {
        self.contexts.get(&tgid)
    }

    /// The file a module maps, as opened while its process lived.
    pub fn object(&self, module: &Module) -> Option<&Arc<ObjectFile>> {
        if module.path.as_os_str() == "[vdso]" {
            return vdso_object();
        }
        self.objects.get(&module_identity(module)?)
    }

    /// "N unreadable, M not a regular file" or None when every file opened.
    pub fn refusal_summary(&self) -> Option<String> {
        let parts: Vec<String> = self
            .refused
            .iter()
            .map(|(refusal, count)| format!("{count} {}", refusal.describe()))
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123 /usr/bin/burn
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 123 /usr/bin/burn
7f1e2c028000-7f1e2c1bd000 r-xp 00028000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2c200000-7f1e2c201000 rw-p 00000000 00:00 0
7ffd3a5fe000-7ffd3a600000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn refresh_reads_into_the_current_image_only() {
        let mut spaces = AddressSpaces::default();
        let me = std::process::id();
        spaces.spaces.insert((me, 1), AddressSpace::default());
        spaces.spaces.insert((me, 2), AddressSpace::default());
        spaces.current.insert(me, 2);
        spaces.refresh_living();
        assert!(
            spaces.get(me, 1).unwrap().modules.is_empty(),
            "the pre-exec image was changed"
        );
        assert!(!spaces.get(me, 2).unwrap().modules.is_empty());
    }

    #[test]
    fn keeps_executable_mappings_and_resolves_file_offsets() {
        let space = AddressSpace::parse(MAPS);
        assert_eq!(space.modules.len(), 3);
        let (module, offset) = space.resolve(0x55d0c0a01234).unwrap();
        assert_eq!(module.path, PathBuf::from("/usr/bin/burn"));
        assert_eq!(offset, 0x1234);
        let (libc, offset) = space.resolve(0x7f1e2c028010).unwrap();
        assert_eq!(libc.file_name(), "libc.so.6");
        assert_eq!(offset, 0x28010);
        assert_eq!((libc.device.as_str(), libc.inode), ("fe:01", 456));
        let (vdso, _) = space.resolve(0x7ffd3a5fe100).unwrap();
        assert_eq!(vdso.inode, 0, "a pseudo-file");
        assert!(
            space.resolve(0x55d0c0a00010).is_none(),
            "non-executable mapping"
        );
        assert!(space.resolve(0x1).is_none());
    }
}
