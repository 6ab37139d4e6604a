//! `bpfscope tcplife`: one line per closed TCP session (process, addresses,
//! bytes sent and received, duration) from `tcplife.bpf.c`.

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use crate::bpf::filters::{set_filter_flags, write_target_filters};
use crate::bpf::loader::{load_with_fallback, object_storage, HookFlavor, TRACEPOINT_FLAVORS};
use crate::bpf::preflight;
use crate::bpf::run_stats::RunStats;
use crate::engine::events;
use crate::engine::run::time_of_day;
use crate::host::signals;
use crate::layouts::{self, c_string, decode_connection, session_event};
use crate::tools::flags::EventArgs;

pub(super) mod skel {
    include!(concat!(env!("OUT_DIR"), "/tcplife.skel.rs"));
}
use skel::TcplifeSkelBuilder;

/// Trace TCP sessions: one line each when it closes (IPv4 and IPv6).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "TX_KB counts bytes the peer acknowledged, RX_KB bytes received, in sequence space as BCC \
and libbpf-tools do: SYN and FIN count one byte each."
)]
pub struct TcplifeArgs {
    #[command(flatten)]
    pub common: EventArgs,
}

/// One line (text or JSON) for a `struct session_event`.
fn render_event(raw: &[u8], json: bool) -> Option<String> {
    let event = layouts::read::<session_event>(raw)?;
    let conn = decode_connection(&event.conn);
    let comm = c_string(&event.comm);
    let (pid, sent, received, duration_ns) = (
        event.tgid,
        event.bytes_sent,
        event.bytes_received,
        event.duration_ns,
    );
    Some(if json {
        let line = serde_json::json!({
            "time": time_of_day(),
            "pid": pid,
            "comm": comm,
            "ip": conn.ip_version().to_digit(10),
            "laddr": conn.local.to_string(),
            "lport": conn.local_port,
            "raddr": conn.remote.to_string(),
            "rport": conn.remote_port,
            "tx_bytes": sent,
            "rx_bytes": received,
            "duration_ns": duration_ns,
        });
        format!("{line}\n")
    } else {
        format!(
            "{pid:<5} {comm:<10.10} {:<15} {:<5} {:<15} {:<5} {:>5} {:>5} {:.2}\n",
            conn.local,
            conn.local_port,
            conn.remote,
            conn.remote_port,
            sent / 1024,
            received / 1024,
            duration_ns as f64 / 1e6
        )
    })
}

pub fn run(args: TcplifeArgs) -> Result<()> {
    let common = &args.common;
    preflight::check_all()?;
    let targets = common.target_spec()?.resolve()?;
    let filters = targets.filter_flags();
    let mut storage = object_storage();
    let (skel, flavor) =
        load_with_fallback(&mut storage, TRACEPOINT_FLAVORS, |storage, flavor| {
            let mut open = TcplifeSkelBuilder::default()
                .open(storage)
                .context("opening the tcplife BPF object")?;
            set_filter_flags!(open, filters);
            open.progs
                .state_btf
                .set_autoload(flavor == HookFlavor::BtfTyped);
            open.progs.state_raw.set_autoload(flavor == HookFlavor::Raw);
            open.load().context("loading the tcplife BPF programs")
        })?;
    write_target_filters!(&targets, skel)?;
    let program = if flavor == HookFlavor::Raw {
        &skel.progs.state_raw
    } else {
        &skel.progs.state_btf
    };
    let link = program
        .attach()
        .context("attaching to sock:inet_sock_set_state")?;

    signals::install();
    eprintln!("bpfscope: tracing TCP sessions... Hit Ctrl-C to end.");
    let header = (!common.json)
        .then_some("PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS");
    events::EventStream {
        tool: "tcplife",
        what: "sessions",
        events: &skel.maps.session_events,
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
