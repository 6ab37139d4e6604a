//! Turns instruction pointers into function names with blazesym: kernel
//! addresses through kallsyms, user addresses through the ELF file the
//! process mapped (file offsets from the snapshots in `process_maps`, the
//! file itself as opened then, through a path no user can redirect or
//! truncate: `ObjectFile::stable_path`), demangled, with inlined functions.
//! Lookups are batched per file and cached by the file's identity (device,
//! inode, size and change time: `ContentIdentity`), never by its path. A stripped object is named from its
//! separate debug file (found by host::debug_files when the object was
//! first seen, or fetched by `debuginfod`), by virtual address. Code in no
//! file mapping is named from the process's perf map (host::perf_maps).
//! Code in anonymous executable memory that no perf map names is
//! `[unknown] (JIT)`. An object whose symbol table would pass the memory budget
//! (`host::memory_budget`) is not read: its frames stay `[unknown]`.

pub mod debuginfod;
pub mod python;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blazesym};
use blazesym::MaybeDefault;

use self::debuginfod::Debuginfod;
use self::python::PythonNames;

use crate::bpf::stack_maps::{StackKey, STACK_EMPTY, STACK_NOT_REQUESTED, TRUNCATED};
use crate::host::memory_budget::{budget, Kind, Reservation};
use crate::host::object_files::{ContentIdentity, ObjectFile};
use crate::host::process_maps::AddressSpaces;
use crate::layouts::SIGNAL_FRAME_IP;
use crate::model::module::Module;
use crate::model::profile::{Frame, FrameKind, Sample};

/// A frame in anonymous executable memory (JIT code) that no perf map names.
pub const UNNAMED_JIT_FRAME: &str = "[unknown] (JIT)";

/// Names of the function at an address and those inlined into it, outermost first.
type Names = Vec<String>;

pub struct Symbolizer {
    blazesym: Blazesym,
    kernel: HashMap<u64, Names>,
    /// By file identity, then file offset.
    user: HashMap<ContentIdentity, HashMap<u64, Names>>,
    /// Objects whose cached names came from a separate debug file.
    named_from_debug_file: HashSet<ContentIdentity>,
    debuginfod: Option<Arc<Debuginfod>>,
    /// Each object's symbol table's share of the memory budget, held while
    /// blazesym may hold the table; None: refused, the object is not read.
    symbol_tables: HashMap<ContentIdentity, Option<Reservation>>,
}

/// The addresses wanted from one object, and the file to read names from.
struct WantedObject {
    object: Arc<ObjectFile>,
    debug_file: Option<Arc<ObjectFile>>,
    offsets: HashSet<u64>,
}

/// Collects every address a profile needs so each source is read once.
#[derive(Default)]
struct Wanted {
    kernel: HashSet<u64>,
    user: HashMap<ContentIdentity, WantedObject>,
}

impl Wanted {
    fn kernel(&mut self, address: u64) {
        self.kernel.insert(address);
    }

    fn user(
        &mut self,
        object: &Arc<ObjectFile>,
        debug_file: Option<&Arc<ObjectFile>>,
        file_offset: u64,
    ) {
        self.user
            .entry(object.content_identity())
            .or_insert_with(|| WantedObject {
                object: Arc::clone(object),
                debug_file: debug_file.cloned(),
                offsets: HashSet::new(),
            })
            .offsets
            .insert(file_offset);
    }
}

fn names_of(symbolized: &Symbolized<'_>) -> Names {
    match symbolized {
        Symbolized::Sym(sym) => std::iter::once(sym.name.to_string())
            .chain(sym.inlined.iter().map(|inlined| inlined.name.to_string()))
            .collect(),
        Symbolized::Unknown(_) => Vec::new(),
    }
}

impl Symbolizer {
    /// A symbolizer that also names stripped objects from `debuginfod`'s
    /// downloads, where one is given.
    pub fn new(debuginfod: Option<Arc<Debuginfod>>) -> Self {
        Symbolizer {
            blazesym: Blazesym::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                // Debug files are found and checked by host::debug_files only.
                .set_debug_dirs(Some(Vec::<std::path::PathBuf>::new()))
                .build(),
            kernel: HashMap::new(),
            user: HashMap::new(),
            named_from_debug_file: HashSet::new(),
            debuginfod,
            symbol_tables: HashMap::new(),
        }
    }

    /// The separate debug file to name `object` from: one found on disk
    /// when it was first seen, else one debuginfod fetched.
    fn debug_file_of(
        &self,
        object: &ObjectFile,
        found: Option<&Arc<ObjectFile>>,
    ) -> Option<Arc<ObjectFile>> {
        if let Some(found) = found {
            return Some(Arc::clone(found));
        }
        if object.elf().has_symbols {
            return None;
        }
        self.debuginfod.as_ref()?.debug_file(&object.build_id()?)
    }

    /// Whether `object`'s symbol table fits the memory budget (asked once
    /// per object while this symbolizer lives).
    fn symbol_table_fits(&mut self, object: &ObjectFile) -> bool {
        self.symbol_tables
            .entry(object.content_identity())
            .or_insert_with(|| budget().reserve(Kind::SymbolTable, object.elf().symbol_table_bytes))
            .is_some()
    }

    /// Names of `offsets` in `object` from its debug file, by virtual address.
    fn names_from_debug_file(
        &mut self,
        object: &ObjectFile,
        debug_file: &ObjectFile,
        offsets: &[u64],
    ) -> Vec<Names> {
        let facts = object.elf();
        let addresses: Vec<(usize, u64)> = offsets
            .iter()
            .enumerate()
            .filter_map(|(index, offset)| Some((index, facts.virtual_address(*offset)?)))
            .collect();
        let mut names = vec![Names::new(); offsets.len()];
        if !self.symbol_table_fits(debug_file) {
            return names;
        }
        let Ok(path) = debug_file.stable_path() else {
            return names;
        };
        let virtual_addresses: Vec<u64> = addresses.iter().map(|(_, address)| *address).collect();
        let source = Source::Elf(Elf::new(path));
        if let Ok(results) = self
            .blazesym
            .symbolize(&source, Input::VirtOffset(&virtual_addresses))
        {
            for ((index, _), result) in addresses.iter().zip(results.iter()) {
                names[*index] = names_of(result);
            }
        }
        names
    }

    /// Symbolizes everything in `wanted` that is not cached yet. Sources that
    /// cannot be read leave their addresses unnamed (rendered `[unknown]`).
    fn resolve(&mut self, wanted: Wanted) {
        let kernel: Vec<u64> = wanted
            .kernel
            .into_iter()
            .filter(|a| !self.kernel.contains_key(a))
            .collect();
        if !kernel.is_empty() {
            let source = Source::Kernel(Kernel {
                vmlinux: MaybeDefault::None,
                ..Kernel::default()
            });
            let results = self
                .blazesym
                .symbolize(&source, Input::AbsAddr(&kernel))
                .unwrap_or_default();
            for (index, address) in kernel.iter().enumerate() {
                let names = results.get(index).map(names_of).unwrap_or_default();
                self.kernel.insert(*address, names);
            }
        }
        for (identity, wanted) in wanted.user {
            if wanted.debug_file.is_some() && self.named_from_debug_file.insert(identity) {
                // Names cached before the debug file arrived (debuginfod) are stale.
                self.user.remove(&identity);
            }
            let known = self.user.entry(identity).or_default();
            let offsets: Vec<u64> = wanted
                .offsets
                .into_iter()
                .filter(|offset| !known.contains_key(offset))
                .collect();
            if offsets.is_empty() {
                continue;
            }
            let names: Vec<Names> = match &wanted.debug_file {
                Some(debug_file) => {
                    self.names_from_debug_file(&wanted.object, debug_file, &offsets)
                }
                // Unreadable files, and files over the memory budget,
                // leave their addresses unnamed.
                None => {
                    let fits = self.symbol_table_fits(&wanted.object);
                    let results = wanted
                        .object
                        .stable_path()
                        .ok()
                        .filter(|_| fits)
                        .and_then(|path| {
                            let source = Source::Elf(Elf::new(path));
                            self.blazesym
                                .symbolize(&source, Input::FileOffset(&offsets))
                                .ok()
                        })
                        .unwrap_or_default();
                    (0..offsets.len())
                        .map(|index| results.get(index).map(names_of).unwrap_or_default())
                        .collect()
                }
            };
            let known = self.user.entry(identity).or_default();
            for (offset, names) in offsets.into_iter().zip(names) {
                known.insert(offset, names);
            }
        }
    }

    /// Addresses named so far (long-running callers bound their caches with it).
    pub fn cached_addresses(&self) -> usize {
        self.kernel.len() + self.user.values().map(HashMap::len).sum::<usize>()
    }

    fn kernel_frame(&self, address: u64) -> Frame {
        Frame {
            kind: FrameKind::Kernel,
            address,
            functions: self.kernel.get(&address).cloned().unwrap_or_default(),
            module: None,
            source: None,
        }
    }

    /// The frame at `address`, in `location` (module, file offset) of the
    /// file with `identity` where those are known.
    fn user_frame(
        &self,
        address: u64,
        location: Option<(Arc<Module>, u64)>,
        identity: Option<ContentIdentity>,
    ) -> Frame {
        let functions = location
            .as_ref()
            .zip(identity)
            .and_then(|((_, offset), identity)| self.user.get(&identity)?.get(offset).cloned())
            .unwrap_or_default();
        Frame {
            kind: FrameKind::User,
            address,
            functions,
            module: location.map(|(module, _)| module),
            source: None,
        }
    }
}

/// Frames of the tracing machinery itself (the BPF program and the code that
/// ran it), which sit at the leaf of stacks captured from tracepoints.
fn is_tracing_frame(frame: &Frame) -> bool {
    const PREFIXES: [&str; 5] = [
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "__traceiter_",
        "__bpf_prog_run",
    ];
    frame
        .functions
        .first()
        .is_some_and(|name| PREFIXES.iter().any(|prefix| name.starts_with(prefix)))
}

/// Return addresses point after the call; looking up `address - 1` names
/// the calling line even when a call is a function's last instruction.
pub fn lookup_address(address: u64, is_leaf: bool) -> u64 {
    if is_leaf {
        address
    } else {
        address.saturating_sub(1)
    }
}

/// Whether frame `index` of a leaf-first stack is an instruction itself,
/// not a return address: the leaf, and the frame a signal interrupted.
fn is_exact(stack: &[u64], index: usize) -> bool {
    index == 0 || stack[index - 1] == SIGNAL_FRAME_IP
}

/// Marks where a signal handler was entered (the kernel's signal frame).
fn signal_frame() -> Frame {
    Frame {
        kind: FrameKind::User,
        address: SIGNAL_FRAME_IP,
        functions: vec!["[signal]".to_string()],
        module: None,
        source: None,
    }
}

/// Stands for the callers a cut stack lost, at its root.
fn truncated_frame(kind: FrameKind) -> Frame {
    Frame {
        kind,
        address: TRUNCATED,
        functions: vec!["[truncated]".to_string()],
        module: None,
        source: None,
    }
}

/// Turns counted stack keys into symbolized samples, using the address-space
/// snapshots for user frames and `python` for Python frames.
pub fn symbolize_counts(
    symbolizer: &mut Symbolizer,
    python: &mut PythonNames,
    counts: Vec<(StackKey, u64)>,
    stacks: &HashMap<i32, Vec<u64>>,
    spaces: &AddressSpaces,
) -> Vec<Sample> {
    let no_stack: Vec<u64> = Vec::new();
    let stack_of = |id: i32| stacks.get(&id).unwrap_or(&no_stack);
    let locate = |key: &StackKey, address: u64| {
        spaces
            .get(key.tgid, key.address_space)
            .and_then(|space| space.resolve(address))
    };

    let mut wanted = Wanted::default();
    let mut debug_files: HashMap<ContentIdentity, Option<Arc<ObjectFile>>> = HashMap::new();
    for (key, _) in &counts {
        for (index, &address) in stack_of(key.kernel_stack_id).iter().enumerate() {
            if address != TRUNCATED {
                wanted.kernel(lookup_address(address, index == 0));
            }
        }
        let user = stack_of(key.user_stack_id);
        for (index, &address) in user.iter().enumerate() {
            if let Some((module, offset)) =
                locate(key, lookup_address(address, is_exact(user, index)))
            {
                if let Some(object) = spaces.object(&module) {
                    let debug_file =
                        debug_files
                            .entry(object.content_identity())
                            .or_insert_with(|| {
                                symbolizer.debug_file_of(object, spaces.debug_file(&module))
                            });
                    wanted.user(object, debug_file.as_ref(), offset);
                }
            }
        }
    }
    symbolizer.resolve(wanted);

    counts
        .into_iter()
        .map(|(key, value)| {
            let mut kernel: Vec<Frame> = stack_of(key.kernel_stack_id)
                .iter()
                .enumerate()
                .rev()
                .map(|(index, &address)| {
                    if address == TRUNCATED {
                        return truncated_frame(FrameKind::Kernel);
                    }
                    let mut frame = symbolizer.kernel_frame(lookup_address(address, index == 0));
                    frame.address = address;
                    frame
                })
                .collect();
            while kernel.last().is_some_and(is_tracing_frame) {
                kernel.pop();
            }
            let user_addresses = stack_of(key.user_stack_id);
            let user = user_addresses
                .iter()
                .enumerate()
                .rev()
                .map(|(index, &address)| {
                    let lookup = lookup_address(address, is_exact(user_addresses, index));
                    if address == TRUNCATED {
                        return truncated_frame(FrameKind::User);
                    }
                    if address == SIGNAL_FRAME_IP {
                        return signal_frame();
                    }
                    let location = locate(&key, lookup);
                    if location.is_none() {
                        // JIT code: named by the perf map, else labelled as such.
                        let name = spaces.jit_name(key.tgid, lookup).or_else(|| {
                            spaces
                                .get(key.tgid, key.address_space)
                                .is_some_and(|space| space.in_anonymous_code(lookup))
                                .then_some(UNNAMED_JIT_FRAME)
                        });
                        if let Some(name) = name {
                            return Frame {
                                kind: FrameKind::Jit,
                                address,
                                functions: vec![name.to_string()],
                                module: None,
                                source: None,
                            };
                        }
                    }
                    let identity = location
                        .as_ref()
                        .and_then(|(module, _)| spaces.object(module))
                        .map(|object| object.content_identity());
                    let mut frame = symbolizer.user_frame(lookup, location, identity);
                    frame.address = address;
                    frame
                })
                .collect();
            let user = match spaces.python(key.tgid) {
                Some(runtime) => {
                    let mut user = match stacks.get(&key.python_stack_id) {
                        Some(words) if key.python_stack_id >= 0 => {
                            python.merge(key.tgid, runtime, words, user)
                        }
                        _ => user,
                    };
                    python::mark_gil_wait(&mut user);
                    user
                }
                None => user,
            };
            let user_missing = key.address_space != 0
                && key.user_stack_id < 0
                && key.user_stack_id != STACK_NOT_REQUESTED;
            let kernel_missing = key.kernel_stack_id < 0
                && key.kernel_stack_id != STACK_NOT_REQUESTED
                && key.kernel_stack_id != STACK_EMPTY;
            Sample {
                pid: key.tgid,
                tid: key.tid,
                comm: key.comm,
                context: spaces.context(key.tgid).cloned(),
                user,
                kernel,
                user_missing,
                kernel_missing,
                value,
                time_slot: key.time_slot,
                waker: None,
            }
        })
        .collect()
}
