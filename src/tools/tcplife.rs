//! `bpfscope tcplife`: one line per closed TCP session (process, addresses,
//! bytes sent and received, duration) from `tcplife.bpf.c`.

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use crate::core::c_string;
use crate::core::event_stream::{self, EventArgs};
use crate::core::histograms::time_of_day;
use crate::core::loader::{load_with_fallback, object_storage, HookFlavor, TRACEPOINT_FLAVORS};
use crate::core::net::{Connection, CONNECTION_SIZE};
use crate::core::stats::RunStats;
use crate::core::target::{set_filter_flags, write_target_filters};
use crate::core::{preflight, signals};
use crate::output::histogram::json_string;

mod skel {
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

/// `struct session_event` in tcplife.bpf.c.
fn render_event(raw: &[u8], json: bool) -> Option<String> {
    if raw.len() < CONNECTION_SIZE + 48 {
        return None;
    }
    let conn = Connection::parse(raw)?;
    let u64_at = |at: usize| u64::from_ne_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    let (duration_ns, sent, received) = (u64_at(40), u64_at(48), u64_at(56));
    let pid = u32::from_ne_bytes(raw[64..68].try_into().ok()?);
    let comm = c_string(&raw[72..88]);
    Some(if json {
        format!(
            "{{\"time\":{},\"pid\":{pid},\"comm\":{},\"ip\":{},\"laddr\":\"{}\",\"lport\":{},\"raddr\":\"{}\",\"rport\":{},\"tx_bytes\":{sent},\"rx_bytes\":{received},\"duration_ns\":{duration_ns}}}\n",
            json_string(&time_of_day()),
            json_string(&comm),
            conn.ip_version(),
            conn.local,
            conn.local_port,
            conn.remote,
            conn.remote_port
        )
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
    let targets = common.resolve_targets()?;
    let filters = targets.filter_flags();
    let mut storage = object_storage();
    let (skel, flavor) =
        load_with_fallback(&mut storage, TRACEPOINT_FLAVORS, |storage, flavor| {
            let mut open = TcplifeSkelBuilder::default()
                .open(storage)
                .context("opening the tcplife BPF object")?;
            let rodata = open
                .maps
                .rodata_data
                .as_deref_mut()
                .context("tcplife object has no .rodata")?;
            set_filter_flags!(&mut *rodata, filters);
            open.progs
                .state_btf
                .set_autoload(flavor == HookFlavor::BtfTyped);
            open.progs.state_raw.set_autoload(flavor == HookFlavor::Raw);
            open.load().context("loading the tcplife BPF programs")
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

    signals::install();
    eprintln!("bpfscope: tracing TCP sessions... Hit Ctrl-C to end.");
    let header = (!common.json)
        .then_some("PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS");
    event_stream::EventStream {
        tool: "tcplife",
        what: "sessions",
        events: &skel.maps.session_events,
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
