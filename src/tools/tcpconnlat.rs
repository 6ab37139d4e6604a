//! `bpfscope tcpconnlat`: active TCP connect latency (SYN_SENT to
//! ESTABLISHED) from `tcpconnlat.bpf.c`: one line per connection, or with
//! `--hist` a histogram summed in kernel.

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use crate::bpf::filters::{set_filter_flags, write_target_filters};
use crate::bpf::histogram_maps::read_histograms;
use crate::bpf::loader::{
    load_with_fallback, object_storage, HookFlavor, ObjectStorage, TRACEPOINT_FLAVORS,
};
use crate::bpf::preflight;
use crate::bpf::run_stats::RunStats;
use crate::engine::events;
use crate::engine::run::time_of_day;
use crate::host::signals;
use crate::host::target::Targets;
use crate::layouts::{self, c_string, connect_event, decode_connection};
use crate::model::histogram::{HistogramReport, Scale};
use crate::output::histogram::{render_json, render_text};
use crate::output::write_stdout;
use crate::tools::flags::EventArgs;

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/tcpconnlat.skel.rs"));
}
pub use skel::TcpconnlatSkel;
use skel::TcpconnlatSkelBuilder;

/// Trace TCP connect latency (IPv4 and IPv6).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bpfscope tcpconnlat            one line per connection\n  bpfscope tcpconnlat --hist -d 10  a latency histogram after 10 s"
)]
pub struct TcpconnlatArgs {
    /// Sum a latency histogram (microseconds) in kernel instead of printing each connection.
    #[arg(long = "hist")]
    pub histogram: bool,
    #[command(flatten)]
    pub common: EventArgs,
}

/// One line (text or JSON) for a `struct connect_event`.
fn render_event(raw: &[u8], json: bool) -> Option<String> {
    let event = layouts::read::<connect_event>(raw)?;
    let conn = decode_connection(&event.conn);
    let comm = c_string(&event.comm);
    let (pid, latency_ns) = (event.tgid, event.latency_ns);
    Some(if json {
        let line = serde_json::json!({
            "time": time_of_day(),
            "pid": pid,
            "comm": comm,
            "ip": conn.ip_version().to_digit(10),
            "saddr": conn.local.to_string(),
            "sport": conn.local_port,
            "daddr": conn.remote.to_string(),
            "dport": conn.remote_port,
            "latency_ns": latency_ns,
        });
        format!("{line}\n")
    } else {
        format!(
            "{pid:<6} {comm:<12} {} {:<16} {:<16} {:<5} {:.2}\n",
            conn.ip_version(),
            conn.local,
            conn.remote,
            conn.remote_port,
            latency_ns as f64 / 1e6
        )
    })
}

/// Loads tcpconnlat.bpf.c and attaches it (also used by `serve`).
pub fn attach<'obj>(
    storage: &'obj mut ObjectStorage,
    targets: &Targets,
    histogram_only: bool,
    key_by_cgroup: bool,
) -> Result<(TcpconnlatSkel<'obj>, Link)> {
    let filters = targets.filter_flags();
    let (skel, flavor) = load_with_fallback(storage, TRACEPOINT_FLAVORS, |storage, flavor| {
        let mut open = TcpconnlatSkelBuilder::default()
            .open(storage)
            .context("opening the tcpconnlat BPF object")?;
        let rodata = set_filter_flags!(open, filters);
        rodata.histogram_only = histogram_only;
        rodata.key_by_cgroup = key_by_cgroup;
        open.progs
            .state_btf
            .set_autoload(flavor == HookFlavor::BtfTyped);
        open.progs.state_raw.set_autoload(flavor == HookFlavor::Raw);
        open.load().context("loading the tcpconnlat BPF programs")
    })?;
    write_target_filters!(targets, skel)?;
    let program = if flavor == HookFlavor::Raw {
        &skel.progs.state_raw
    } else {
        &skel.progs.state_btf
    };
    let link = program
        .attach()
        .context("attaching to sock:inet_sock_set_state")?;
    Ok((skel, link))
}

pub fn run(args: TcpconnlatArgs) -> Result<()> {
    let common = &args.common;
    preflight::check_all()?;
    let targets = common.target_spec()?.resolve()?;
    let mut storage = object_storage();
    let (skel, link) = attach(&mut storage, &targets, args.histogram, false)?;

    signals::install();
    eprintln!("bpfscope: tracing TCP connects... Hit Ctrl-C to end.");
    let header = (!common.json && !args.histogram)
        .then_some("PID    COMM         IP SADDR            DADDR            DPORT LAT(ms)");
    events::EventStream {
        tool: "tcpconnlat",
        what: "connections",
        events: &skel.maps.connect_events,
        targets: &targets,
        duration: common.run_duration(),
        header,
    }
    .run(
        |raw| render_event(raw, common.json),
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(link);
    if args.histogram {
        let report = HistogramReport {
            unit: "usecs",
            scale: Scale::Log2,
            key_name: "",
            histograms: read_histograms(&skel.maps.hists, &skel.maps.total_hist, false)?,
        };
        if common.json {
            write_stdout(render_json("tcpconnlat", &report, None).as_bytes())?;
        } else {
            write_stdout(render_text(&report).as_bytes())?;
        }
    }
    Ok(())
}
