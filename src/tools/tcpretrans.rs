//! `bpfscope tcpretrans`: one line per TCP retransmission, with the
//! connection and its state, from `tcpretrans.bpf.c`.

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use crate::core::event_stream::{self, EventArgs};
use crate::core::histograms::time_of_day;
use crate::core::loader::{load_with_fallback, object_storage, HookFlavor, TRACEPOINT_FLAVORS};
use crate::core::net::{tcp_state_name, Connection, CONNECTION_SIZE};
use crate::core::stats::RunStats;
use crate::core::{preflight, signals};
use crate::output::histogram::json_string;

mod skel {
    include!(concat!(env!("OUT_DIR"), "/tcpretrans.skel.rs"));
}
use skel::TcpretransSkelBuilder;

/// Trace TCP retransmissions (IPv4 and IPv6).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Retransmits run from timers and softirqs, so PID is whatever task was running (often 0), \
as in BCC; -p and --cgroup are therefore not offered."
)]
pub struct TcpretransArgs {
    #[command(flatten)]
    pub common: EventArgs,
}

/// `struct retransmit_event` in tcpretrans.bpf.c.
fn render_event(raw: &[u8], json: bool) -> Option<String> {
    if raw.len() < CONNECTION_SIZE + 8 {
        return None;
    }
    let conn = Connection::parse(raw)?;
    let state = tcp_state_name(u32::from_ne_bytes(raw[40..44].try_into().ok()?));
    let pid = u32::from_ne_bytes(raw[44..48].try_into().ok()?);
    Some(if json {
        format!(
            "{{\"time\":{},\"pid\":{pid},\"ip\":{},\"laddr\":\"{}\",\"lport\":{},\"raddr\":\"{}\",\"rport\":{},\"state\":\"{state}\"}}\n",
            json_string(&time_of_day()),
            conn.ip_version(),
            conn.local,
            conn.local_port,
            conn.remote,
            conn.remote_port
        )
    } else {
        format!(
            "{:<8} {pid:<6} {:<2} {:<22} R> {:<22} {state}\n",
            time_of_day(),
            conn.ip_version(),
            format!("{}:{}", conn.local, conn.local_port),
            format!("{}:{}", conn.remote, conn.remote_port)
        )
    })
}

pub fn run(args: TcpretransArgs) -> Result<()> {
    let common = &args.common;
    if !common.pids.is_empty() || common.cgroup.is_some() {
        bail!("tcpretrans cannot filter by process: retransmits run from timers and softirqs");
    }
    preflight::check_all()?;
    let targets = common.resolve_targets()?;
    let mut storage = object_storage();
    let (skel, flavor) =
        load_with_fallback(&mut storage, TRACEPOINT_FLAVORS, |storage, flavor| {
            let mut open = TcpretransSkelBuilder::default()
                .open(storage)
                .context("opening the tcpretrans BPF object")?;
            open.progs
                .retransmit_btf
                .set_autoload(flavor == HookFlavor::BtfTyped);
            open.progs
                .retransmit_raw
                .set_autoload(flavor == HookFlavor::Raw);
            open.load().context("loading the tcpretrans BPF programs")
        })?;
    let program = if flavor == HookFlavor::Raw {
        &skel.progs.retransmit_raw
    } else {
        &skel.progs.retransmit_btf
    };
    let link = program
        .attach()
        .context("attaching to tcp:tcp_retransmit_skb")?;

    signals::install();
    eprintln!("bpfscope: tracing TCP retransmits... Hit Ctrl-C to end.");
    let header = (!common.json)
        .then_some("TIME     PID    IP LADDR:LPORT              RADDR:RPORT            STATE");
    event_stream::EventStream {
        tool: "tcpretrans",
        what: "retransmits",
        events: &skel.maps.retransmit_events,
        targets: &targets,
        duration: common.duration,
        header,
    }
    .run(
        |raw| render_event(raw, common.json),
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(link);
    Ok(())
}
