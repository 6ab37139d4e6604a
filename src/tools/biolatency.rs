//! `bpfscope biolatency`: block I/O latency histograms, issue (or queue,
//! `-Q`) to completion, summed in kernel by `biolatency.bpf.c`; in total,
//! per disk (`-D`) and/or per I/O flags (`-F`).

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use crate::bpf::decode::describe_block_flags;
use crate::bpf::filters::{set_filter_flags, write_target_filters};
use crate::bpf::histogram_maps;
use crate::bpf::loader::{
    load_with_fallback, object_storage, HookFlavor, ObjectStorage, TRACEPOINT_FLAVORS,
};
use crate::bpf::preflight;
use crate::bpf::run_stats::RunStats;
use crate::engine::histogram;
use crate::host::signals;
use crate::host::target::Targets;
use crate::model::histogram::HistogramKey;
use crate::tools::flags::HistogramArgs;

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/biolatency.skel.rs"));
}
use skel::{BiolatencySkel, BiolatencySkelBuilder};

/// Summarize block device I/O latency as histograms.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bpfscope biolatency -D 5 1     one 5 s report per disk\n  bpfscope biolatency -QF        from queueing, per I/O flags, until Ctrl-C\n\n-p/--cgroup select the task that issued (or queued) a request."
)]
pub struct BiolatencyArgs {
    /// Measure from when a request is queued, not issued to the device.
    #[arg(short = 'Q', long = "queued")]
    pub queued: bool,
    /// A histogram per disk.
    #[arg(short = 'D', long = "disks")]
    pub per_disk: bool,
    /// A histogram per set of I/O flags (Read, Write, Sync-Write...).
    #[arg(short = 'F', long = "flags")]
    pub per_flags: bool,
    #[command(flatten)]
    pub common: HistogramArgs,
}

/// Turns the BPF key (device and/or flags) into what users read.
fn label(args: &BiolatencyArgs, key: HistogramKey) -> HistogramKey {
    let HistogramKey::Keyed { id, name } = key else {
        return key;
    };
    match (args.per_disk, args.per_flags) {
        (true, true) => {
            HistogramKey::Named(format!("{name} {}", describe_block_flags(id & 0xffff)))
        }
        (true, false) => HistogramKey::Named(name),
        _ => HistogramKey::Named(describe_block_flags(id)),
    }
}

/// How biolatency.bpf.c measures and keys its histograms.
pub struct BiolatencyOptions {
    pub unit_ns: u64,
    pub queued: bool,
    pub per_disk: bool,
    pub per_flags: bool,
}

/// Loads and attaches biolatency.bpf.c (also used by `serve`).
pub fn attach<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    options: &BiolatencyOptions,
) -> Result<(BiolatencySkel<'obj>, Vec<Link>)> {
    let filters = targets.filter_flags();
    let (skel, flavor) = load_with_fallback(storage, TRACEPOINT_FLAVORS, |storage, flavor| {
        let mut open = BiolatencySkelBuilder::default()
            .open(storage)
            .context("opening the biolatency BPF object")?;
        let rodata = set_filter_flags!(open, filters);
        rodata.unit_ns = options.unit_ns;
        rodata.from_queue = options.queued;
        rodata.per_disk = options.per_disk;
        rodata.per_flags = options.per_flags;
        let btf = flavor == HookFlavor::BtfTyped;
        open.progs.insert_btf.set_autoload(btf && options.queued);
        open.progs.issue_btf.set_autoload(btf);
        open.progs.complete_btf.set_autoload(btf);
        open.progs.insert_raw.set_autoload(!btf && options.queued);
        open.progs.issue_raw.set_autoload(!btf);
        open.progs.complete_raw.set_autoload(!btf);
        open.load().context("loading the biolatency BPF programs")
    })?;
    write_target_filters!(targets, skel)?;
    let (insert, issue, complete) = if flavor == HookFlavor::Raw {
        (
            &skel.progs.insert_raw,
            &skel.progs.issue_raw,
            &skel.progs.complete_raw,
        )
    } else {
        (
            &skel.progs.insert_btf,
            &skel.progs.issue_btf,
            &skel.progs.complete_btf,
        )
    };
    let mut links: Vec<Link> = Vec::new();
    if options.queued {
        links.push(insert.attach().context("attaching to block_rq_insert")?);
    }
    links.push(issue.attach().context("attaching to block_rq_issue")?);
    links.push(
        complete
            .attach()
            .context("attaching to block_rq_complete")?,
    );
    Ok((skel, links))
}

pub fn run(args: BiolatencyArgs) -> Result<()> {
    let common = &args.common;
    let report = common.report_options()?;
    preflight::check_all()?;
    let targets = common.target_spec(&[]).resolve()?;
    let mut storage = object_storage();
    let options = BiolatencyOptions {
        unit_ns: common.unit_ns(),
        queued: args.queued,
        per_disk: args.per_disk,
        per_flags: args.per_flags,
    };
    let (skel, links) = attach(&mut storage, &targets, &options)?;

    signals::install();
    eprintln!("bpfscope: tracing block device I/O... Hit Ctrl-C to end.");
    let key_name = if args.per_disk { "disk" } else { "flags" };
    histogram::report_until_stopped(
        "biolatency",
        &report,
        &targets,
        |clear, time| {
            let histograms =
                histogram_maps::read_histograms(&skel.maps.hists, &skel.maps.total_hist, clear)?
                    .into_iter()
                    .map(|(key, hist)| (label(&args, key), hist))
                    .collect();
            Ok(histogram::render_histograms(
                "biolatency",
                &report,
                key_name,
                common.latency_unit(),
                histograms,
                time,
            ))
        },
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(links);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_like_bcc() {
        assert_eq!(describe_block_flags(0), "Read");
        assert_eq!(describe_block_flags(1 | 1 << 8), "Sync-Write");
        assert_eq!(
            describe_block_flags(1 | 1 << 8 | 1 << 10),
            "Sync-ForcedUnitAccess-Write"
        );
        assert_eq!(describe_block_flags(2 | 1 << 11), "PreFlush-Flush");
    }
}
