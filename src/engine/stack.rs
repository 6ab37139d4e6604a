//! The stack engine that every stack tool (profile, offcpu, serve's
//! profiles, and tools to come) plugs into. A tool supplies its BPF
//! object's attach step, through `StackObject`, and says what it measures
//! (`StackTool`); the engine does the rest: resolving targets, snapshotting
//! new processes' mappings as BPF announces them, feeding the table
//! unwinder, collecting until the run ends, reading the in-kernel summary,
//! symbolizing it into a profile, writing the output, and the summary.
//!
//! Counts keys are `struct stack_key` (`struct wake_key` for the wakeup
//! tools, whose samples carry their wakers) and every stack object declares the
//! maps of common.h's STACK_TRACE_MAP, ADDRESS_SPACE_MAPS, UNWIND_MAPS and
//! RUN_STATS_MAP, plus a `counts` hash.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags, RingBuffer, RingBufferBuilder};

use crate::bpf::loader::ObjectStorage;
use crate::bpf::preflight;
use crate::bpf::run_stats::{LossWords, RunStats};
use crate::bpf::stack_maps::{self, StackKey, StackMaps};
use crate::engine::run::{Collection, StopReason};
use crate::host::memory_budget::budget;
use crate::host::process_maps::{AddressSpace, AddressSpaces};
use crate::host::python_runtime::PythonRuntime;
use crate::host::signals;
use crate::host::target::process_alive;
use crate::host::target::{TargetSpec, Targets};
use crate::layouts::{self, address_space_event, address_space_event_kind, py_stack};
use crate::model::process::GroupBy;
use crate::model::profile::{Frame, FrameKind, Profile, ProfileKind, Waker, WakerContext};
use crate::output::folded::{self, FoldOptions};
use crate::output::report::Report;
use crate::output::{self, heatmap, pprof, svg, ProfileFormat};
use crate::symbolize::debuginfod::Debuginfod;
use crate::symbolize::python::PythonNames;
use crate::symbolize::{self, Symbolizer};
use crate::unwind::manager::Unwinder;
use crate::unwind::{UnwindMode, UnwindOptions};

/// Which stacks a stack object captures and how much it can hold.
pub struct StackCapture {
    pub user: bool,
    pub kernel: bool,
    pub unwind: UnwindOptions,
    /// Entries of the stack-trace maps.
    pub stack_storage_size: u32,
    /// Entries of the counts map.
    pub max_stacks: u32,
}

/// What a stack tool's run collects and writes (from its flags).
pub struct StackOptions {
    pub targets: TargetSpec,
    /// None: until Ctrl-C, the command exits, or every -p process has.
    pub duration: Option<Duration>,
    pub capture: StackCapture,
    /// A "-" frame between user and kernel stacks.
    pub delimited: bool,
    /// What the root frame of each stack says.
    pub group_by: GroupBy,
    pub format: ProfileFormat,
    /// None: stdout.
    pub output: Option<PathBuf>,
    /// Where stripped objects' debug files are fetched from, if anywhere.
    pub debuginfod: Option<Arc<Debuginfod>>,
}

impl StackOptions {
    /// ", command ..." / ", PID [..]" for progress and subtitles.
    pub fn describe_scope(&self) -> String {
        let targets = &self.targets;
        if !targets.command.is_empty() {
            format!(", command {:?} and its children", targets.command.join(" "))
        } else if !targets.pids.is_empty() {
            format!(", PID {:?}", targets.pids)
        } else if let Some(cgroup) = &targets.cgroup {
            format!(", cgroup {}", cgroup.display())
        } else {
            String::new()
        }
    }
}

/// Entries of `python_stacks` (common.h's PYTHON_MAPS).
const PYTHON_STACK_CAPACITY: usize = 2048;
/// How often new Python stacks have their code objects read.
const PYTHON_READ_EVERY: Duration = Duration::from_millis(250);

/// The maps the engine reads from any stack object.
pub struct StackObjectMaps<'a> {
    pub counts: &'a dyn MapCore,
    pub stacks: &'a dyn MapCore,
    pub stacks_cleared: &'a dyn MapCore,
    pub unwound_stacks: &'a dyn MapCore,
    pub unwound_stack_chunks: &'a dyn MapCore,
    pub unwind_rows: &'a dyn MapCore,
    pub unwind_processes: &'a dyn MapCore,
    pub unwind_refreshes: &'a dyn MapCore,
    pub address_space_events: &'a dyn MapCore,
    pub stats: &'a dyn MapCore,
    /// The tools that walk Python frames have their maps.
    pub python: Option<PythonMaps<'a>>,
}

/// python_processes, python_present and python_stacks (common.h).
#[derive(Clone, Copy)]
pub struct PythonMaps<'a> {
    pub processes: &'a dyn MapCore,
    pub present: &'a dyn MapCore,
    pub stacks: &'a dyn MapCore,
}

/// The engine's maps of a loaded stack skeleton (each skeleton has its own
/// type, with the same map names).
macro_rules! stack_object_maps {
    ($skel:expr, python) => {
        $crate::engine::stack::StackObjectMaps {
            python: Some($crate::engine::stack::PythonMaps {
                processes: &$skel.maps.python_processes,
                present: &$skel.maps.python_present,
                stacks: &$skel.maps.python_stacks,
            }),
            ..stack_object_maps!($skel)
        }
    };
    ($skel:expr) => {
        $crate::engine::stack::StackObjectMaps {
            python: None,
            counts: &$skel.maps.counts,
            stacks: &$skel.maps.stacks,
            stacks_cleared: &$skel.maps.stacks_cleared,
            unwound_stacks: &$skel.maps.unwound_stacks,
            unwound_stack_chunks: &$skel.maps.unwound_stack_chunks,
            unwind_rows: &$skel.maps.unwind_rows,
            unwind_processes: &$skel.maps.unwind_processes,
            unwind_refreshes: &$skel.maps.unwind_refreshes,
            address_space_events: &$skel.maps.address_space_events,
            stats: &$skel.maps.stats,
        }
    };
}
pub(crate) use stack_object_maps;

/// Sets a stack tool's unwinding mode and sizes its stack maps (the
/// kernel's stack-trace map, the unwinder's interned stacks and row array,
/// the counts map) in an opened skeleton.
macro_rules! size_stack_maps {
    ($open:expr, $options:expr) => {{
        let open = &mut $open;
        let options: &$crate::engine::stack::StackCapture = $options;
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.unwind_mode = options.unwind.mode.bpf_value();
        }
        open.maps
            .stacks
            .set_max_entries(options.stack_storage_size)?;
        open.maps
            .unwound_stacks
            .set_max_entries(options.stack_storage_size)?;
        // Preallocated, so smaller: a chunk of 128 deeper frames (1 KiB)
        // per 4 stacks (4 MiB at the default), as deep stacks are few.
        open.maps
            .unwound_stack_chunks
            .set_max_entries((options.stack_storage_size / 4).max(1))?;
        open.maps
            .unwind_rows
            .set_max_entries(options.unwind.array_entries())?;
        open.maps.counts.set_max_entries(options.max_stacks)?;
    }};
}
pub(crate) use size_stack_maps;

/// A stack tool's attached BPF object, as the engine drives it.
pub trait StackObject {
    fn maps(&self) -> StackObjectMaps<'_>;
    /// Begins counting, once the engine is ready for the first stacks
    /// (samplers attach here; tracepoint tools count from `attach`).
    fn start(&self) -> Result<()> {
        Ok(())
    }
    /// Brings the counts map up to date without stopping (what a tool keeps
    /// per thread in kernel, as offcpu does, is added to it).
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Stops counting (detaches), after a last flush: the counts are then a
    /// consistent snapshot.
    fn stop(&self) -> Result<()>;
}

/// What a stack tool measures, for the engine's messages and output.
pub struct StackTool {
    pub kind: ProfileKind,
    /// The start line, e.g. "sampling 2 CPU(s) at 99 Hz".
    pub start_line: String,
    /// The progress line, e.g. "profiling".
    pub activity: &'static str,
    /// The subtitle's rate after the duration (" at 99 Hz"), if any.
    pub rate: String,
    /// The subtitle's last words (", blocks of 1 us or more"), if any.
    pub qualifier: String,
}

/// The summary line's "what was collected", from the profile and counters.
fn collected(tool: &StackTool, profile: &Profile, stats: &RunStats) -> String {
    match tool.kind {
        ProfileKind::Cpu { .. } => format!("{} samples", profile.total()),
        ProfileKind::OffCpu => format!(
            "{:.3} s off-CPU in {} blocks",
            profile.total() as f64 / 1e6,
            stats.events
        ),
        ProfileKind::OffWake | ProfileKind::Wakeup => {
            let by_interrupts: u64 = profile
                .samples
                .iter()
                .filter(|s| {
                    s.waker
                        .as_ref()
                        .is_some_and(|w| w.context == WakerContext::Interrupt)
                })
                .map(|s| s.value)
                .sum();
            format!(
                "{:.3} s blocked in {} blocks ({:.1} % of it woken from interrupt context)",
                profile.total() as f64 / 1e6,
                stats.events,
                100.0 * by_interrupts as f64 / profile.total().max(1) as f64
            )
        }
    }
}

/// Counted values as profiles show them: off-CPU time is counted in ns
/// and shown in us.
pub fn shown_value(kind: ProfileKind, counted: u64) -> u64 {
    match kind {
        ProfileKind::Cpu { .. } => counted,
        ProfileKind::OffCpu | ProfileKind::OffWake | ProfileKind::Wakeup => {
            counted.saturating_add(500) / 1000
        }
    }
}

/// Losses of the command-line stack tools name the flags that avoid them.
const STACK_TOOL_LOSSES: LossWords = LossWords {
    counts_flag: Some("--max-stacks"),
    stack_flag: Some("--stack-storage-size"),
    ring_record: "new-process notifications lost (those may show [unknown] frames)",
};

/// Runs a stack tool from start to written output: `attach` loads and
/// attaches its BPF object for the resolved targets. Returns the exit
/// status of `-- COMMAND` (128 + the signal that killed it), else 0.
pub fn run<'obj, O: StackObject>(
    options: &StackOptions,
    tool: &StackTool,
    storage: &'obj mut ObjectStorage,
    attach: impl FnOnce(&'obj mut ObjectStorage, &Targets) -> Result<O>,
) -> Result<u8> {
    if options.format == ProfileFormat::Html && !matches!(tool.kind, ProfileKind::Cpu { .. }) {
        anyhow::bail!("the subsecond heatmap page (.html, -f html) is made by `profile` only");
    }
    if let Some(path) = &options.output {
        output::check_writable(path)?;
    }
    if cfg!(not(target_arch = "x86_64")) && options.capture.unwind.mode != UnwindMode::Fp {
        eprintln!("bpfscope: note: unwind tables are x86-64 only; walking frame pointers");
    }
    preflight::check_all()?;
    let started = Instant::now();
    let mut targets = options.targets.resolve()?;
    let object = attach(storage, &targets)?;
    let spaces = Rc::new(RefCell::new(AddressSpaces::default()));
    let collector = StackCollector::new(
        object.maps(),
        &targets,
        options.capture.unwind,
        spaces,
        options.debuginfod.clone(),
    )?;
    object.start()?;

    signals::install();
    let command = targets
        .command
        .take()
        .map(|pending| pending.release())
        .transpose()?;
    eprintln!(
        "bpfscope: {}{} (attached in {} ms)",
        tool.start_line,
        options.describe_scope(),
        started.elapsed().as_millis()
    );
    let collect_started = Instant::now();
    let stop = Collection {
        duration: options.duration,
        command: command.as_ref(),
        targets: &targets,
        ring: Some(collector.ring()),
        activity: tool.activity,
        after_poll: Some(&|| collector.after_poll()),
    }
    .run();
    let duration = collect_started.elapsed();
    object.stop()?;
    collector.consume();
    collector.read_python_now();
    collector.spaces.borrow_mut().read_perf_maps_to_end();
    let mut report = Report::default();
    if let Some(message) = stop.describe() {
        report.always(message);
    }
    let waited = Instant::now();
    if let Some(debuginfod) = &options.debuginfod {
        debuginfod.wait();
    }
    let waited = waited.elapsed();

    let stats = collector.stats()?;
    let symbolize_started = Instant::now();
    let mut symbolizer = Symbolizer::new(options.debuginfod.clone());
    let profile = if matches!(tool.kind, ProfileKind::OffWake | ProfileKind::Wakeup) {
        collector.wake_profile(&mut symbolizer, tool.kind, duration)?
    } else {
        let counted = collector
            .snapshot()?
            .into_iter()
            .map(|(key, value)| (key, shown_value(tool.kind, value)))
            .filter(|(_, value)| *value > 0)
            .collect();
        collector.profile(&mut symbolizer, counted, tool.kind, duration)?
    };
    let symbolized = symbolize_started.elapsed();
    let subtitle = format!(
        "{:.1} s{} on {}{}{}",
        duration.as_secs_f64(),
        tool.rate,
        hostname(),
        options.describe_scope(),
        tool.qualifier
    );
    write_profile(options, &profile, &subtitle)?;
    summarize(
        &mut report,
        &profile,
        &collected(tool, &profile, &stats),
        &stats,
        &collector.spaces.borrow(),
        options.output.as_ref(),
    );
    let debuginfod = options.debuginfod.as_ref();
    if let Some(line) = debuginfod.and_then(|d| d.summary()) {
        let line = format!(
            "{line}; waited {} ms after collection, then symbolized in {} ms",
            waited.as_millis(),
            symbolized.as_millis()
        );
        if debuginfod.is_some_and(|d| d.failed()) {
            report.warning(line);
        } else {
            report.detail(line);
        }
    } else {
        report.detail(format!("symbolized in {} ms", symbolized.as_millis()));
    }
    collector.report_unwinding(&mut report, &stats);
    collector.report_python(&mut report, &stats);
    if let Some(line) = budget().summary() {
        report.warning(line);
    }
    report.print();
    Ok(match stop {
        StopReason::CommandExited(status) => u8::try_from(status).unwrap_or(u8::MAX),
        _ => 0,
    })
}

/// What the engine keeps around one attached stack object while it counts:
/// the ring buffer whose announcements snapshot new processes' mappings
/// (and load their unwind tables), the table unwinder, and the snapshots.
/// serve keeps one per profile source for its whole life.
pub struct StackCollector<'a> {
    maps: StackObjectMaps<'a>,
    unwinder: Option<Rc<RefCell<Unwinder<'a>>>>,
    spaces: Rc<RefCell<AddressSpaces>>,
    ring: RingBuffer<'a>,
    debuginfod: Option<Arc<Debuginfod>>,
    /// Python code objects, read while their processes live.
    python_names: RefCell<PythonNames>,
    /// Python stacks whose code objects were read ahead, and when.
    python_stacks_read: RefCell<HashSet<u32>>,
    python_read_at: Cell<Option<Instant>>,
    /// Python stacks BPF announced as new, to be read at once.
    new_python_stacks: Rc<RefCell<Vec<u32>>>,
}

impl<'a> StackCollector<'a> {
    /// Starts serving `maps`' announcements; with a table unwinder, loads
    /// the target processes' tables first so their first samples have them.
    pub fn new(
        mut maps: StackObjectMaps<'a>,
        targets: &Targets,
        unwind: UnwindOptions,
        spaces: Rc<RefCell<AddressSpaces>>,
        debuginfod: Option<Arc<Debuginfod>>,
    ) -> Result<Self> {
        let unwinder = if unwind.mode == UnwindMode::Fp || cfg!(not(target_arch = "x86_64")) {
            None
        } else {
            let mut unwinder = Unwinder::new(
                maps.unwind_rows,
                unwind.rows,
                maps.unwind_processes,
                maps.unwind_refreshes,
            )?;
            for &pid in &targets.pids {
                if let Some(space) = AddressSpace::read(pid) {
                    unwinder.add_process(pid, &space);
                }
            }
            unwinder.wait_for_tables(Duration::from_secs(10));
            Some(Rc::new(RefCell::new(unwinder)))
        };
        // Under --no-python the object's Python maps stay empty: none is read.
        maps.python = maps.python.filter(|_| unwind.python);
        let python_maps = maps.python;
        if let Some(python_maps) = python_maps {
            for &pid in &targets.pids {
                if let Some(runtime) = spaces.borrow_mut().find_python(pid) {
                    register_python(python_maps, pid, &runtime);
                }
            }
        }
        let new_python_stacks = Rc::default();
        let ring = address_space_ring(
            maps.address_space_events,
            &spaces,
            unwinder.as_ref(),
            python_maps,
            &new_python_stacks,
        )?;
        Ok(StackCollector {
            maps,
            unwinder,
            spaces,
            ring,
            debuginfod,
            python_names: RefCell::default(),
            python_stacks_read: RefCell::default(),
            python_read_at: Cell::new(None),
            new_python_stacks,
        })
    }

    /// Reads the Python stacks' code objects now (at the end of a run:
    /// processes may exit before symbolization), then polls.
    pub fn read_python_now(&self) {
        self.python_read_at.set(None);
        self.after_poll();
    }

    /// Reads the code objects of the Python stacks interned since the last
    /// call, while their processes live (a process that exits before the
    /// end keeps its names): those BPF announced at once (code run by an
    /// import is freed when it ends), and every PYTHON_READ_EVERY any whose
    /// announcement the ring buffer lost.
    fn read_python_ahead(&self) {
        let Some(PythonMaps { stacks, .. }) = self.maps.python else {
            return;
        };
        let announced = std::mem::take(&mut *self.new_python_stacks.borrow_mut());
        for id in announced {
            self.read_python_stack(stacks, id);
        }
        // Listing the map costs a system call per entry: not at every poll.
        if self
            .python_read_at
            .get()
            .is_some_and(|at| at.elapsed() < PYTHON_READ_EVERY)
        {
            return;
        }
        self.python_read_at.set(Some(Instant::now()));
        for key in stacks.keys() {
            if let Ok(id) = key.as_slice().try_into().map(u32::from_ne_bytes) {
                self.read_python_stack(stacks, id);
            }
        }
    }

    /// Reads the code objects of Python stack `id`, once.
    fn read_python_stack(&self, stacks: &dyn MapCore, id: u32) {
        if !self.python_stacks_read.borrow_mut().insert(id) {
            return;
        }
        let Some(stack) = stacks
            .lookup(&id.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|raw| layouts::read::<py_stack>(&raw))
        else {
            return;
        };
        if let Some(runtime) = self.spaces.borrow().python(stack.tgid) {
            self.python_names.borrow_mut().read_ahead(
                stack.tgid,
                runtime,
                &stack_maps::python_frames(&stack),
            );
        }
    }

    pub fn ring(&self) -> &RingBuffer<'a> {
        &self.ring
    }

    /// Handles every announcement waiting in the ring buffer.
    pub fn consume(&self) {
        self.ring.consume_raw();
    }

    /// Takes the tables the builder has finished and hands new stripped
    /// objects' build IDs to debuginfod (call after every poll).
    pub fn after_poll(&self) {
        self.read_python_ahead();
        if let Some(unwinder) = &self.unwinder {
            let mut unwinder = unwinder.borrow_mut();
            let mut spaces = self.spaces.borrow_mut();
            for tgid in unwinder.poll() {
                // Not announced by BPF yet (a -p target): its mappings as they are.
                let space = spaces
                    .refresh_process(tgid)
                    .or_else(|| AddressSpace::read(tgid));
                if let Some(space) = space {
                    unwinder.set_trampolines(tgid, spaces.python_trampolines(tgid));
                    unwinder.add_process(tgid, &space);
                }
            }
            unwinder.evict_unused();
        }
        if let Some(debuginfod) = &self.debuginfod {
            for build_id in self.spaces.borrow_mut().take_debug_requests() {
                debuginfod.request(&build_id);
            }
        }
    }

    pub fn stats(&self) -> Result<RunStats> {
        RunStats::read(self.maps.stats)
    }

    /// The counts now, as the kernel summed them.
    pub fn snapshot(&self) -> Result<HashMap<StackKey, u64>> {
        Ok(stack_maps::read_counts(self.maps.counts)?
            .into_iter()
            .collect())
    }

    /// Takes the counts out of the kernel map (serve's CPU history drains
    /// it every second and keeps what it read).
    pub fn drain(&self) -> Result<Vec<(StackKey, u64)>> {
        stack_maps::drain_counts(self.maps.counts)
    }

    /// The frames of the stacks with these ids, as interned now.
    pub fn read_stacks(
        &self,
        ids: impl IntoIterator<Item = i32>,
    ) -> Result<HashMap<i32, Vec<u64>>> {
        self.stack_maps().read(ids)
    }

    /// Empties the stack maps (once every id in use has been read).
    pub fn clear_stacks(&self) -> Result<()> {
        self.python_read_at.set(None);
        self.read_python_ahead(); // names of the stacks about to go
        self.python_stacks_read.borrow_mut().clear();
        self.stack_maps().clear()
    }

    fn stack_maps(&self) -> StackMaps<'a> {
        StackMaps {
            traces: self.maps.stacks,
            cleared: self.maps.stacks_cleared,
            unwound: self.maps.unwound_stacks,
            unwound_chunks: self.maps.unwound_stack_chunks,
            python: self.maps.python.map(|maps| maps.stacks),
        }
    }

    /// Symbolizes counted stacks into a profile; a symbolizer kept across
    /// calls keeps its caches.
    pub fn profile(
        &self,
        symbolizer: &mut Symbolizer,
        counted: Vec<(StackKey, u64)>,
        kind: ProfileKind,
        duration: Duration,
    ) -> Result<Profile> {
        let stack_ids = counted.iter().flat_map(|(key, _)| key.stack_ids());
        let stack_table = self.stack_maps().read(stack_ids)?;
        Ok(self.profile_from(symbolizer, counted, &stack_table, kind, duration))
    }

    /// Symbolizes counted stacks whose ids index `stack_table` (frames read
    /// earlier, as serve's history keeps them) into a profile.
    pub fn profile_from(
        &self,
        symbolizer: &mut Symbolizer,
        counted: Vec<(StackKey, u64)>,
        stack_table: &HashMap<i32, Vec<u64>>,
        kind: ProfileKind,
        duration: Duration,
    ) -> Profile {
        let mut spaces = self.spaces.borrow_mut();
        spaces.refresh_living();
        Profile {
            kind,
            duration,
            samples: symbolize::symbolize_counts(
                symbolizer,
                &mut self.python_names.borrow_mut(),
                counted,
                stack_table,
                &spaces,
            ),
        }
    }

    /// The profile of a wakeup tool's counts (`struct wake_key`): each
    /// blocked stack with its waker's, symbolized in one pass.
    pub fn wake_profile(
        &self,
        symbolizer: &mut Symbolizer,
        kind: ProfileKind,
        duration: Duration,
    ) -> Result<Profile> {
        let counted: Vec<_> = stack_maps::read_wake_counts(self.maps.counts)?
            .into_iter()
            .map(|(key, value)| (key, shown_value(kind, value)))
            .filter(|(_, value)| *value > 0)
            .collect();
        // Blocked and waker stacks alternate, so the samples come back in pairs.
        let both_sides = counted
            .iter()
            .flat_map(|(key, value)| [(key.target.clone(), *value), (key.waker.clone(), 0)])
            .collect();
        let mut profile = self.profile(symbolizer, both_sides, kind, duration)?;
        let mut sides = std::mem::take(&mut profile.samples).into_iter();
        for (key, _) in counted {
            let (Some(mut blocked), Some(waker)) = (sides.next(), sides.next()) else {
                break;
            };
            blocked.waker = Some(Box::new(Waker::new(key.context, waker)));
            profile.samples.push(blocked);
        }
        Ok(profile)
    }

    /// Drops the unwind tables only exited processes used (long-running
    /// agents; their snapshots, which collectors may share, are the owner's
    /// to forget).
    pub fn forget_exited_tables(&self) {
        if let Some(unwinder) = &self.unwinder {
            unwinder.borrow_mut().forget_exited();
        }
        self.python_names.borrow_mut().forget(process_alive);
        if let Some(PythonMaps { processes, .. }) = self.maps.python {
            for key in processes.keys().collect::<Vec<_>>() {
                let tgid = key.as_slice().try_into().map(u32::from_ne_bytes);
                if tgid.is_ok_and(|tgid| !process_alive(tgid)) {
                    let _ = processes.delete(&key);
                }
            }
        }
    }

    /// Empties the counts and stack maps once `fill` of `max_stacks` is
    /// used (only between windows, so no window's baseline is lost).
    pub fn reset_if_full(&self, max_stacks: u32, fill: f64) -> Result<()> {
        let keys: Vec<Vec<u8>> = self.maps.counts.keys().collect();
        if (keys.len() as f64) < fill * max_stacks as f64 && !self.python_stacks_filling(fill) {
            return Ok(());
        }
        for key in keys {
            self.maps.counts.delete(&key).ok();
        }
        self.clear_stacks()
    }

    /// Whether the Python stacks interned since the maps were last cleared
    /// fill `fill` of their map (serve clears them then, as it does the
    /// others).
    pub fn python_stacks_filling(&self, fill: f64) -> bool {
        self.read_python_ahead();
        self.python_stacks_read.borrow().len() as f64 >= fill * PYTHON_STACK_CAPACITY as f64
    }

    /// Unwind-table rows in the kernel array now (0 without tables).
    pub fn unwind_rows_in_use(&self) -> u64 {
        self.unwinder
            .as_ref()
            .map_or(0, |unwinder| unwinder.borrow().rows_in_use())
    }

    /// The Python lines of the report (details): processes read or not
    /// and why, how walks ended, frames that could not be named.
    pub fn report_python(&self, report: &mut Report, stats: &RunStats) {
        if self.maps.python.is_none() {
            return;
        }
        if let Some(line) = self.spaces.borrow().python_summary() {
            report.detail(line);
        }
        let names = self.python_names.borrow();
        if let Some(line) = stats.python.summary(names.unnamed, names.unmerged) {
            report.detail(line);
        }
    }

    /// How the table unwinder fared: details, but for tables left out for
    /// want of room (stacks there are walked by frame pointers, often cut).
    pub fn report_unwinding(&self, report: &mut Report, stats: &RunStats) {
        let Some(unwinder) = &self.unwinder else {
            return;
        };
        let tables = &unwinder.borrow().stats;
        report.detail(format!(
            "unwind tables: {} processes, {} objects ({} built in {:.0} ms, {} from cache, {} without .eh_frame), {} rows",
            tables.processes,
            tables.objects_built + tables.objects_from_cache,
            tables.objects_built,
            tables.build_time.as_secs_f64() * 1e3,
            tables.objects_from_cache,
            tables.objects_without_table,
            tables.rows_loaded
        ));
        if let Some(line) = stats.unwind.summary() {
            report.detail(line);
        }
        if tables.objects_refused > 0 {
            report.detail(format!(
                "{} objects got no unwind table (not a regular file, replaced, over a build limit, or not a usable ELF file); frame pointers were used there",
                tables.objects_refused
            ));
        }
        if tables.table_space_full + tables.mappings_dropped + tables.processes_dropped > 0 {
            report.warning(format!(
                "unwind tables left out: {} objects (table array full: raise --unwind-rows), {} mappings (over 256 per process), {} processes (process map full); frame pointers were used there",
                tables.table_space_full, tables.mappings_dropped, tables.processes_dropped
            ));
        }
    }
}

/// Snapshots a process's mappings as soon as BPF announces its address
/// space, and loads its unwind tables where a table unwinder runs. The
/// table unwinder announces an image again when a walk meets code outside
/// its known mappings.
fn address_space_ring<'a>(
    events: &'a dyn MapCore,
    spaces: &Rc<RefCell<AddressSpaces>>,
    unwinder: Option<&Rc<RefCell<Unwinder<'a>>>>,
    python_maps: Option<PythonMaps<'a>>,
    new_python_stacks: &Rc<RefCell<Vec<u32>>>,
) -> Result<RingBuffer<'a>> {
    let spaces = Rc::clone(spaces);
    let unwinder = unwinder.cloned();
    let new_python_stacks = Rc::clone(new_python_stacks);
    let mut builder = RingBufferBuilder::new();
    builder.add(events, move |raw: &[u8]| {
        if let Some(event) = layouts::read::<address_space_event>(raw) {
            if event.kind == address_space_event_kind::PYTHON_STACK_NEW.0 {
                new_python_stacks
                    .borrow_mut()
                    .push(event.address_space as u32);
                return 0;
            }
            let mut spaces = spaces.borrow_mut();
            let space = spaces.snapshot(event.tgid, event.address_space);
            if let Some(python_maps) = python_maps {
                match spaces.python(event.tgid) {
                    Some(runtime) => register_python(python_maps, event.tgid, runtime),
                    // After an exec into something else.
                    None => {
                        let _ = python_maps.processes.delete(&event.tgid.to_ne_bytes());
                    }
                }
            }
            if let (Some(unwinder), Some(space)) = (&unwinder, space) {
                let mut unwinder = unwinder.borrow_mut();
                unwinder.set_trampolines(event.tgid, spaces.python_trampolines(event.tgid));
                unwinder.add_process(event.tgid, &space);
            }
        }
        0
    })?;
    Ok(builder.build()?)
}

/// Hands a Python process's runtime to BPF (python.h) and bumps the
/// registration generation. A full map leaves the process native-only: the
/// summary counts what was walked.
fn register_python(maps: PythonMaps<'_>, tgid: u32, runtime: &PythonRuntime) {
    let registered = maps.processes.update(
        &tgid.to_ne_bytes(),
        layouts::bytes_of(&runtime.process),
        MapFlags::ANY,
    );
    if registered.is_ok() {
        let key = 0u32.to_ne_bytes();
        let generation = maps
            .present
            .lookup(&key, MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|raw| layouts::read::<u32>(&raw))
            .unwrap_or(0);
        let next = generation.wrapping_add(1).max(1);
        let _ = maps
            .present
            .update(&key, &next.to_ne_bytes(), MapFlags::ANY);
    }
}

/// Renders and writes the profile (atomically to -o, else stdout).
fn write_profile(options: &StackOptions, profile: &Profile, subtitle: &str) -> Result<()> {
    let fold_options = FoldOptions {
        delimiter: options.delimited,
        group_by: options.group_by,
        ..FoldOptions::default()
    };
    let bytes = match options.format {
        ProfileFormat::Folded => folded::render(profile, fold_options).into_bytes(),
        ProfileFormat::Svg => svg::render(profile, fold_options, subtitle)?,
        ProfileFormat::Pprof => pprof::render(profile, options.group_by)?,
        ProfileFormat::Html => {
            heatmap::render(profile, fold_options, "CPU subsecond heatmap", subtitle)?
        }
    };
    output::write_output(options.output.as_deref(), &bytes)
}

/// The report's summary: what was collected, then every kind of loss.
fn summarize(
    report: &mut Report,
    profile: &Profile,
    collected: &str,
    stats: &RunStats,
    spaces: &AddressSpaces,
    output: Option<&PathBuf>,
) {
    let processes: HashSet<u32> = profile.samples.iter().map(|s| s.pid).collect();
    // A heatmap has a sample per stack and time slot: count stacks once.
    let unique_stacks = profile
        .samples
        .iter()
        .map(|s| {
            let addresses = |frames: &[Frame]| frames.iter().map(|f| f.address).collect::<Vec<_>>();
            let waker = s
                .waker
                .as_ref()
                .map(|w| (&w.name, addresses(&w.user), addresses(&w.kernel)));
            (
                s.pid,
                s.tid,
                &s.comm,
                addresses(&s.user),
                addresses(&s.kernel),
                waker,
            )
        })
        .collect::<HashSet<_>>()
        .len();
    let mut line = format!(
        "{collected}, {unique_stacks} unique stacks, {} processes",
        processes.len()
    );
    let namespaced: HashSet<u32> = profile
        .samples
        .iter()
        .filter(|s| {
            s.context
                .as_ref()
                .is_some_and(|c| c.namespace_pid.is_some())
        })
        .map(|s| s.pid)
        .collect();
    if !namespaced.is_empty() {
        line.push_str(&format!(
            " ({} in other PID namespaces; PIDs shown are the host's)",
            namespaced.len()
        ));
    }
    if let Some(path) = output {
        line.push_str(&format!(", written to {}", path.display()));
    }
    report.always(line);
    if let Some(note) = stats.minor_stack_losses() {
        report.detail(note);
    }
    if let Some(hint) = unnamed_jit_hint(profile) {
        report.always(hint);
    }
    let mut losses = stats.losses(&STACK_TOOL_LOSSES);
    if spaces.missed > 0 {
        losses.push(format!(
            "{} processes exited before their mappings could be read ([unknown] frames)",
            spaces.missed
        ));
    }
    if let Some(line) = spaces.debug_stats.summary() {
        report.detail(line);
    }
    if let Some(line) = spaces.perf_map_summary() {
        report.detail(line);
    }
    let dropped = spaces.perf_map_entries_dropped();
    if dropped > 0 {
        losses.push(format!(
            "{dropped} perf-map entries over the bound of {} per process (their JIT frames show [unknown])",
            crate::host::perf_maps::MAX_ENTRIES
        ));
    }
    if let Some(refused) = spaces.refusal_summary() {
        losses.push(format!(
            "object files not read ({refused}; their frames show [unknown])"
        ));
    }
    if !losses.is_empty() {
        report.warning(losses.join("; "));
    }
}

/// For processes whose stacks ran JIT code that no perf map names
/// (`[unknown] (JIT)` frames): the runtime, and how to make it name them.
fn unnamed_jit_hint(profile: &Profile) -> Option<String> {
    let mut processes: BTreeMap<u32, String> = BTreeMap::new();
    for sample in &profile.samples {
        let unnamed = sample.user.iter().any(|frame| {
            frame.kind == FrameKind::Jit
                && frame
                    .functions
                    .first()
                    .is_some_and(|name| name == symbolize::UNNAMED_JIT_FRAME)
        });
        if unnamed {
            processes.entry(sample.pid).or_insert_with(|| {
                // The main thread's name is the program's (java, node).
                std::fs::read_to_string(format!("/proc/{}/comm", sample.pid))
                    .map(|comm| comm.trim().to_string())
                    .unwrap_or_else(|_| sample.comm.clone())
            });
        }
    }
    if processes.is_empty() {
        return None;
    }
    let hints: Vec<String> = processes
        .iter()
        .take(4)
        .map(|(pid, name)| match name.as_str() {
            "node" | "nodejs" => format!(
                "node (PID {pid}): start it with --perf-basic-prof (and --interpreted-frames-native-stack for interpreted code)"
            ),
            "java" => format!(
                "java (PID {pid}): run `jcmd {pid} Compiler.perfmap` during the run, and start it with -XX:+PreserveFramePointer so its callers are walked"
            ),
            _ => format!("{name} (PID {pid}): its runtime can write /tmp/perf-{pid}.map"),
        })
        .collect();
    let more = processes.len().saturating_sub(hints.len());
    Some(format!(
        "{} processes ran JIT code that no perf map names (shown as {}): {}{}",
        processes.len(),
        symbolize::UNNAMED_JIT_FRAME,
        hints.join("; "),
        if more > 0 {
            format!("; {more} more")
        } else {
            String::new()
        }
    ))
}

/// "host" for subtitles.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}
