//! What the stack tools (profile, offcpu) share around their BPF programs:
//! the common flags, the ring buffer that snapshots new processes' mappings,
//! reading the in-kernel summary back as a symbolized profile, and writing
//! it out with a summary line.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use libbpf_rs::{MapCore, RingBuffer, RingBufferBuilder};

use crate::core::process_maps::{AddressSpace, AddressSpaces};
use crate::core::run::{Collection, StopReason};
use crate::core::stacks::{self, StackKey, StackMaps};
use crate::core::stats::RunStats;
use crate::core::symbolize::{self, Symbolizer};
use crate::core::target::{RunningCommand, TargetSpec, Targets};
use crate::core::unwinder::{UnwindArgs, UnwindMode, Unwinder};
use crate::model::profile::{Profile, ProfileKind};
use crate::output::folded::{self, FoldOptions};
use crate::output::{self, pprof, svg, ProfileFormat};

/// Flags every stack tool takes.
#[derive(Debug, clap::Args)]
pub struct StackToolArgs {
    /// Only these processes (comma-separated PIDs).
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only tasks in this cgroup v2 directory (and below it); absolute or relative to the cgroup2 mount.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// User stacks only.
    #[arg(
        short = 'U',
        long = "user-stacks-only",
        conflicts_with = "kernel_stacks_only"
    )]
    pub user_stacks_only: bool,
    /// Kernel stacks only.
    #[arg(short = 'K', long = "kernel-stacks-only")]
    pub kernel_stacks_only: bool,
    /// Insert a "-" frame between user and kernel stacks.
    #[arg(short = 'd', long = "delimited")]
    pub delimited: bool,
    /// Write to this file (format from its extension: .svg, .folded/.txt, .pb.gz/.pprof) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: from -o's extension, else folded).
    #[arg(short = 'f', long = "format", value_enum)]
    pub format: Option<ProfileFormat>,
    #[command(flatten)]
    pub unwind: UnwindArgs,
    /// Number of distinct stacks the stack-trace map can hold.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub stack_storage_size: u32,
    /// Number of distinct (process, stack) counters.
    #[arg(long, default_value_t = 40960, value_name = "N")]
    pub max_stacks: u32,
    /// Seconds to run (default: until Ctrl-C, or until COMMAND exits).
    #[arg(value_name = "DURATION")]
    pub duration: Option<u64>,
    /// Run this command and observe it and its children until it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl StackToolArgs {
    /// Checks the shared flags; returns the output format.
    pub fn validate(&self) -> Result<ProfileFormat> {
        if self.duration == Some(0) {
            bail!("bad duration 0: give a number of seconds greater than 0");
        }
        if self.duration.is_some() && !self.command.is_empty() {
            bail!("give either DURATION or -- COMMAND, not both");
        }
        if self.stack_storage_size == 0 || self.max_stacks == 0 {
            bail!("--stack-storage-size and --max-stacks must be greater than 0");
        }
        let format = ProfileFormat::choose(self.format, self.output.as_deref())?;
        if let Some(path) = &self.output {
            output::check_writable(path)?;
        }
        Ok(format)
    }

    pub fn target_spec(&self, tids: &[u32]) -> TargetSpec {
        TargetSpec {
            pids: self.pids.clone(),
            tids: tids.to_vec(),
            cgroup: self.cgroup.clone(),
            command: self.command.clone(),
        }
    }

    pub fn run_duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs)
    }

    /// ", command ..." / ", PID [..]" for progress and subtitles.
    pub fn describe_scope(&self) -> String {
        if !self.command.is_empty() {
            format!(", command {:?} and its children", self.command.join(" "))
        } else if !self.pids.is_empty() {
            format!(", PID {:?}", self.pids)
        } else if let Some(cgroup) = &self.cgroup {
            format!(", cgroup {}", cgroup.display())
        } else {
            String::new()
        }
    }
}

/// Snapshots a process's mappings as soon as BPF announces its address space
/// (the `address_space_events` ring buffer of common.h), and loads its
/// unwind tables where a table unwinder runs. The table unwinder announces
/// an image again when a walk meets code outside its known mappings.
pub fn address_space_ring<'a, 'maps: 'a>(
    events: &'a dyn MapCore,
    spaces: &'a RefCell<AddressSpaces>,
    unwinder: Option<&'a RefCell<Unwinder<'maps>>>,
) -> Result<RingBuffer<'a>> {
    let mut builder = RingBufferBuilder::new();
    builder.add(events, move |event: &[u8]| {
        if event.len() >= 16 {
            let tgid = u32::from_ne_bytes(event[0..4].try_into().expect("4 bytes"));
            let address_space = u64::from_ne_bytes(event[8..16].try_into().expect("8 bytes"));
            let space = spaces.borrow_mut().snapshot(tgid, address_space);
            if let (Some(unwinder), Some(space)) = (unwinder, space) {
                unwinder.borrow_mut().add_process(tgid, &space);
            }
        }
        0
    })?;
    Ok(builder.build()?)
}

/// Runs a stack tool's collection until it should stop; returns how it
/// stopped and how long it collected. The table unwinder, where there is
/// one, takes the tables its builder finished after every poll.
pub fn collect(
    args: &StackToolArgs,
    command: Option<&RunningCommand>,
    targets: &Targets,
    ring: &RingBuffer<'_>,
    unwinder: Option<&RefCell<Unwinder>>,
    activity: &str,
) -> (StopReason, Duration) {
    let started = Instant::now();
    let poll_unwinder = || {
        if let Some(unwinder) = unwinder {
            unwinder.borrow_mut().poll();
        }
    };
    let stop = Collection {
        duration: args.run_duration(),
        command,
        targets,
        ring: Some(ring),
        activity,
        after_poll: Some(&poll_unwinder),
    }
    .run();
    (stop, started.elapsed())
}

/// Reads a stack tool's summary out of the kernel and symbolizes it.
pub fn read_profile(
    counts: &dyn MapCore,
    stack_maps: &StackMaps,
    spaces: &mut AddressSpaces,
    kind: ProfileKind,
    duration: Duration,
) -> Result<Profile> {
    let counted = stacks::read_counts(counts)?;
    profile_from_counts(
        &mut Symbolizer::new(),
        counted,
        stack_maps,
        spaces,
        kind,
        duration,
    )
}

/// Symbolizes counted stacks whose ids point into `stack_maps`; a
/// symbolizer kept across calls keeps its caches.
pub fn profile_from_counts(
    symbolizer: &mut Symbolizer,
    counted: Vec<(StackKey, u64)>,
    stack_maps: &StackMaps,
    spaces: &mut AddressSpaces,
    kind: ProfileKind,
    duration: Duration,
) -> Result<Profile> {
    let stack_ids = counted
        .iter()
        .flat_map(|(key, _)| [key.user_stack_id, key.kernel_stack_id]);
    let stack_table = stacks::read_stacks(stack_maps, stack_ids)?;
    spaces.refresh_living();
    Ok(Profile {
        kind,
        duration,
        samples: symbolize::symbolize_counts(symbolizer, counted, &stack_table, spaces),
    })
}

/// Renders and writes the profile (atomically to -o, else stdout).
pub fn write_profile(
    args: &StackToolArgs,
    format: ProfileFormat,
    profile: &Profile,
    subtitle: &str,
) -> Result<()> {
    let fold_options = FoldOptions {
        delimiter: args.delimited,
    };
    let bytes = match format {
        ProfileFormat::Folded => folded::render(profile, fold_options).into_bytes(),
        ProfileFormat::Svg => svg::render(profile, fold_options, subtitle)?,
        ProfileFormat::Pprof => pprof::render(profile)?,
    };
    output::write_output(args.output.as_deref(), &bytes)
}

/// The stderr summary: what was collected, then every kind of loss.
pub fn print_summary(
    profile: &Profile,
    collected: &str,
    stats: &RunStats,
    spaces: &AddressSpaces,
    output: Option<&Path>,
) {
    let processes: HashSet<u32> = profile.samples.iter().map(|s| s.pid).collect();
    let mut line = format!(
        "bpfscope: {collected}, {} unique stacks, {} processes",
        profile.samples.len(),
        processes.len()
    );
    if let Some(path) = output {
        line.push_str(&format!(", written to {}", path.display()));
    }
    eprintln!("{line}");
    let mut losses = stats.losses();
    if spaces.missed > 0 {
        losses.push(format!(
            "{} processes exited before their mappings could be read ([unknown] frames)",
            spaces.missed
        ));
    }
    if !losses.is_empty() {
        eprintln!("bpfscope: warning: {}", losses.join("; "));
    }
}

/// Sets a stack tool's unwinding mode and sizes its stack maps (the
/// kernel's stack-trace map, the unwinder's interned stacks and row array)
/// in an opened skeleton; a macro because every skeleton has its own types.
macro_rules! size_stack_maps {
    ($open:expr, $unwind:expr, $stack_storage_size:expr) => {{
        let open = &mut $open;
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.unwind_mode = $unwind.unwind.bpf_value();
        }
        open.maps.stacks.set_max_entries($stack_storage_size)?;
        open.maps
            .unwound_stacks
            .set_max_entries($stack_storage_size)?;
        open.maps
            .unwind_rows
            .set_max_entries($unwind.array_entries())?;
    }};
}
pub(crate) use size_stack_maps;

/// The table unwinder for `--unwind auto|dwarf` (None for `fp`), with the
/// target processes' tables loaded before sampling starts.
pub fn table_unwinder<'a>(
    unwind: UnwindArgs,
    rows: &'a dyn MapCore,
    processes: &'a dyn MapCore,
    targets: &Targets,
) -> Result<Option<RefCell<Unwinder<'a>>>> {
    if unwind.unwind == UnwindMode::Fp {
        return Ok(None);
    }
    let mut unwinder = Unwinder::new(rows, unwind.unwind_rows, processes)?;
    for &pid in &targets.pids {
        if let Some(space) = AddressSpace::read(pid) {
            unwinder.add_process(pid, &space);
        }
    }
    // The targets' first samples deserve tables too.
    unwinder.wait_for_tables(Duration::from_secs(10));
    Ok(Some(RefCell::new(unwinder)))
}

/// How the table unwinder fared, for the stderr summary.
pub fn print_unwind_summary(stats: &RunStats, unwinder: Option<&RefCell<Unwinder>>) {
    let Some(unwinder) = unwinder else {
        return;
    };
    let tables = &unwinder.borrow().stats;
    eprintln!(
        "bpfscope: unwind tables: {} processes, {} objects ({} built in {:.0} ms, {} from cache, {} without .eh_frame), {} rows",
        tables.processes,
        tables.objects_built + tables.objects_from_cache,
        tables.objects_built,
        tables.build_time.as_secs_f64() * 1e3,
        tables.objects_from_cache,
        tables.objects_without_table,
        tables.rows_loaded
    );
    if let Some(line) = stats.unwind.summary() {
        eprintln!("bpfscope: {line}");
    }
    if tables.table_space_full + tables.mappings_dropped + tables.processes_dropped > 0 {
        eprintln!(
            "bpfscope: warning: unwind tables left out: {} objects (table array full), {} mappings (over 256 per process), {} processes (process map full); frame pointers were used there",
            tables.table_space_full, tables.mappings_dropped, tables.processes_dropped
        );
    }
}

/// "host" for subtitles.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}
