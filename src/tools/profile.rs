//! `bpfscope profile`: CPU flame graphs. A cpu-clock perf event on each CPU
//! runs `profile.bpf.c`, which counts (process, user stack, kernel stack) in
//! kernel; at the end the counts are symbolized and rendered.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, RingBufferBuilder};

use crate::core::loader::{load_with_fallback, HookFlavor};
use crate::core::process_maps::AddressSpaces;
use crate::core::run::Collection;
use crate::core::stats::RunStats;
use crate::core::target::TargetSpec;
use crate::core::{cpus, perf_event, preflight, signals, stacks, symbolize};
use crate::model::profile::{Profile, ProfileKind};
use crate::output::folded::FoldOptions;
use crate::output::{self, ProfileFormat};

mod skel {
    include!(concat!(env!("OUT_DIR"), "/profile.skel.rs"));
}
use skel::ProfileSkelBuilder;

/// Sample on-CPU stacks and write a CPU flame graph (folded, SVG or pprof).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bpfscope profile -o cpu.svg 10         system-wide for 10 s, flame graph\n  bpfscope profile -p 1234 -F 999 5      one process at 999 Hz, folded on stdout\n  bpfscope profile -o run.pb.gz -- make  profile a command and its children (pprof)"
)]
pub struct ProfileArgs {
    /// Profile these processes only (comma-separated PIDs).
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,
    /// Profile these threads only (comma-separated TIDs); keys stacks per thread.
    #[arg(short = 'L', long = "tid", value_delimiter = ',', value_name = "TID")]
    pub tids: Vec<u32>,
    /// Profile tasks in this cgroup v2 directory (and below it); absolute or relative to the cgroup2 mount.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Sample this CPU only.
    #[arg(short = 'C', long = "cpu", value_name = "CPU")]
    pub cpu: Option<u32>,
    /// Sampling frequency, per CPU, in Hz.
    #[arg(
        short = 'F',
        long = "frequency",
        default_value_t = 99,
        value_name = "HZ"
    )]
    pub frequency: u64,
    /// User stacks only.
    #[arg(short = 'U', long = "user-stacks-only", conflicts_with = "kernel_only")]
    pub user_only: bool,
    /// Kernel stacks only.
    #[arg(short = 'K', long = "kernel-stacks-only")]
    pub kernel_only: bool,
    /// Insert a "-" frame between user and kernel stacks.
    #[arg(short = 'd', long = "delimited")]
    pub delimited: bool,
    /// Include the idle task (PID 0).
    #[arg(long)]
    pub include_idle: bool,
    /// Write to this file (format from its extension: .svg, .folded/.txt, .pb.gz/.pprof) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: from -o's extension, else folded).
    #[arg(short = 'f', long = "format", value_enum)]
    pub format: Option<ProfileFormat>,
    /// Number of distinct stacks the stack-trace map can hold.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub stack_storage_size: u32,
    /// Number of distinct (process, stack) counters.
    #[arg(long, default_value_t = 40960, value_name = "N")]
    pub max_stacks: u32,
    /// Seconds to profile (default: until Ctrl-C, or until COMMAND exits).
    #[arg(value_name = "DURATION")]
    pub duration: Option<u64>,
    /// Run this command and profile it and its children until it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl ProfileArgs {
    fn validate(&self) -> Result<ProfileFormat> {
        let max = perf_event::max_sample_rate();
        if self.frequency == 0 || self.frequency > max {
            bail!(
                "bad frequency {} Hz: must be between 1 and {max} (kernel.perf_event_max_sample_rate)",
                self.frequency
            );
        }
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

    fn cpus(&self) -> Result<Vec<u32>> {
        let online = cpus::online_cpus()?;
        match self.cpu {
            Some(cpu) if online.contains(&cpu) => Ok(vec![cpu]),
            Some(cpu) => bail!("no such CPU: {cpu} (online: {online:?})"),
            None => Ok(online),
        }
    }
}

pub fn run(args: ProfileArgs) -> Result<()> {
    let format = args.validate()?;
    let cpus = args.cpus()?;
    preflight::check_all()?;
    let started = Instant::now();
    let spec = TargetSpec {
        pids: args.pids.clone(),
        tids: args.tids.clone(),
        cgroup: args.cgroup.clone(),
        command: args.command.clone(),
    };
    let mut targets = spec.resolve()?;
    let filters = targets.filter_flags();

    let mut primary = MaybeUninit::uninit();
    let mut fallback = MaybeUninit::uninit();
    let (skel, _flavor) = load_with_fallback(&mut primary, &mut fallback, |storage, flavor| {
        let mut open = ProfileSkelBuilder::default()
            .open(storage)
            .context("opening the profile BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("profile object has no .rodata")?;
        rodata.filter_tgids = filters.tgids;
        rodata.filter_tids = filters.tids;
        rodata.filter_cgroup = filters.cgroup;
        rodata.follow_children = filters.follow_children;
        rodata.capture_user = !args.kernel_only;
        rodata.capture_kernel = !args.user_only;
        rodata.include_idle = args.include_idle;
        rodata.per_thread = !args.tids.is_empty();
        open.maps.stacks.set_max_entries(args.stack_storage_size)?;
        open.maps.counts.set_max_entries(args.max_stacks)?;
        open.progs
            .follow_fork_btf
            .set_autoload(filters.follow_children && flavor == HookFlavor::BtfTyped);
        open.progs
            .follow_fork_raw
            .set_autoload(filters.follow_children && flavor == HookFlavor::Raw);
        open.load().context("loading the profile BPF programs")
    })?;
    targets.write_filters(
        &skel.maps.target_tgids,
        &skel.maps.target_tids,
        &skel.maps.target_cgroup,
    )?;

    let mut links: Vec<Link> = Vec::new();
    if filters.follow_children {
        let follower = if skel.progs.follow_fork_btf.autoload() {
            &skel.progs.follow_fork_btf
        } else {
            &skel.progs.follow_fork_raw
        };
        links.push(follower.attach().context("attaching the fork follower")?);
    }
    for &cpu in &cpus {
        let event = perf_event::open_cpu_clock(cpu, args.frequency)?;
        links.push(
            perf_event::attach(&skel.progs.sample_stack, event)
                .with_context(|| format!("attaching the sampler to CPU {cpu}"))?,
        );
    }

    let spaces = RefCell::new(AddressSpaces::default());
    let mut ring_builder = RingBufferBuilder::new();
    ring_builder.add(&skel.maps.address_space_events, |event: &[u8]| {
        if event.len() >= 16 {
            let tgid = u32::from_ne_bytes(event[0..4].try_into().expect("4 bytes"));
            let address_space = u64::from_ne_bytes(event[8..16].try_into().expect("8 bytes"));
            spaces.borrow_mut().snapshot(tgid, address_space);
        }
        0
    })?;
    let ring = ring_builder.build()?;

    signals::install();
    let command = targets
        .command
        .take()
        .map(|pending| pending.release())
        .transpose()?;
    eprintln!(
        "bpfscope: sampling {} CPU(s) at {} Hz{} (attached in {} ms)",
        cpus.len(),
        args.frequency,
        describe_scope(&args),
        started.elapsed().as_millis()
    );
    let collection_start = Instant::now();
    let stop = Collection {
        duration: args.duration.map(Duration::from_secs),
        command: command.as_ref(),
        targets: &targets,
        ring: Some(&ring),
        activity: "profiling",
    }
    .run();
    let duration = collection_start.elapsed();
    // Stop sampling before reading, so the counts are a consistent snapshot.
    drop(links);
    ring.consume_raw();
    drop(ring);
    if let Some(message) = stop.describe() {
        eprintln!("bpfscope: {message}");
    }

    let stats = RunStats::read(&skel.maps.stats)?;
    let counts = stacks::read_counts(&skel.maps.counts)?;
    let stack_ids = counts
        .iter()
        .flat_map(|(key, _)| [key.user_stack_id, key.kernel_stack_id]);
    let stack_table = stacks::read_stacks(&skel.maps.stacks, stack_ids)?;
    let mut spaces = spaces.into_inner();
    spaces.refresh_living();
    drop(skel);

    let profile = Profile {
        kind: ProfileKind::Cpu { hz: args.frequency },
        duration,
        samples: symbolize::symbolize_counts(counts, &stack_table, &spaces),
    };
    let fold_options = FoldOptions {
        delimiter: args.delimited,
    };
    let bytes = match format {
        ProfileFormat::Folded => crate::output::folded::render(&profile, fold_options).into_bytes(),
        ProfileFormat::Svg => {
            crate::output::svg::render(&profile, fold_options, &subtitle(&args, duration))?
        }
        ProfileFormat::Pprof => crate::output::pprof::render(&profile)?,
    };
    output::write_output(args.output.as_deref(), &bytes)?;
    print_summary(&profile, &stats, &spaces, args.output.as_deref());
    Ok(())
}

fn subtitle(args: &ProfileArgs, duration: Duration) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{:.1} s at {} Hz on {}{}",
        duration.as_secs_f64(),
        args.frequency,
        host.trim(),
        describe_scope(args)
    )
}

fn print_summary(
    profile: &Profile,
    stats: &RunStats,
    spaces: &AddressSpaces,
    output: Option<&std::path::Path>,
) {
    let processes: std::collections::HashSet<u32> = profile.samples.iter().map(|s| s.pid).collect();
    let mut line = format!(
        "bpfscope: {} samples, {} unique stacks, {} processes",
        profile.total(),
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

fn describe_scope(args: &ProfileArgs) -> String {
    if !args.command.is_empty() {
        format!(", command {:?} and its children", args.command.join(" "))
    } else if !args.pids.is_empty() {
        format!(", PID {:?}", args.pids)
    } else {
        String::new()
    }
}
