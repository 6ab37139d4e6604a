//! `bpfscope tcpretrans`: one line per TCP retransmission, with the
//! connection and its state, from `tcpretrans.bpf.c`.

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use crate::bpf::loader::{load_with_fallback, object_storage, HookFlavor, TRACEPOINT_FLAVORS};
use crate::bpf::preflight;
use crate::bpf::run_stats::RunStats;
use crate::engine::events;
use crate::engine::run::time_of_day;
use crate::host::signals;
use crate::layouts::{self, decode_connection, retransmit_event};
use crate::model::connection::tcp_state_name;
use crate::tools::flags::EventArgs;

pub(super) mod skel {
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

/// One line (text or JSON) for a `struct retransmit_event`.
fn render_event(raw: &[u8], json: bool) -> Option<String> {
    let event = layouts::read::<retransmit_event>(raw)?;
    let conn = decode_connection(&event.conn);
    let state = tcp_state_name(event.state);
    let pid = event.tgid;
    Some(if json {
        let line = serde_json::json!({
            "time": time_of_day(),
            "pid": pid,
            "ip": conn.ip_version().to_digit(10),
            "laddr": conn.local.to_string(),
            "lport": conn.local_port,
            "raddr": conn.remote.to_string(),
            "rport": conn.remote_port,
            "state": state,
        });
        format!("{line}\n")
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
    let targets = common.target_spec()?.resolve()?;
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
    events::EventStream {
        tool: "tcpretrans",
        what: "retransmits",
        events: &skel.maps.retransmit_events,
        targets: &targets,
        duration: common.run_duration(),
        header,
    }
    .run(
        |raw| render_event(raw, common.json),
        || RunStats::read(&skel.maps.stats),
    )?;
    drop(link);
    Ok(())
}
