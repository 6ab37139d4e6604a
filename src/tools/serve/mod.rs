//! `bpfscope serve`: an always-on agent for fleets. Prometheus scrapes
//! `/metrics`; Parca or Pyroscope scrape the pprof endpoints; people open `/`.
//! - `/metrics`: latency histograms summed in kernel by the selected sources
//!   (run queue, block I/O, file system, TCP connect) and off-CPU seconds,
//!   read at scrape time (`metrics`), plus the agent's own health.
//! - Profile windows of the next N seconds, CPU and off-CPU, as pprof or
//!   flame graphs (`windows`); the live page (`page`).
//!
//! HTTP arrives through a front that holds under hostile clients (`http`),
//! with TLS and basic authentication where configured (`web_config`); this
//! module's loop, which owns the BPF objects, answers what passes it.
//! Listens on loopback unless told otherwise; SIGTERM or Ctrl-C detaches
//! everything and exits 0.

mod auth;
mod history;
mod http;
mod metrics;
mod page;
mod web_config;
mod windows;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use libbpf_rs::skel::Skel;

use crate::bpf::loader::object_storage;
use crate::bpf::{perf_event, preflight, program_stats};
use crate::engine::stack::{hostname, StackCapture, StackObject};
use crate::host::process_maps::AddressSpaces;
use crate::host::target::TargetSpec;
use crate::host::{self, capabilities, cpus, signals};
use crate::symbolize::Symbolizer;
use crate::tools::biolatency::{self, BiolatencyOptions};
use crate::tools::flags::{DebuginfodArgs, UnwindArgs};
use crate::tools::fslatency;
use crate::tools::offcpu::{self, BlockState, OffcpuOptions};
use crate::tools::profile::{self, SamplerOptions};
use crate::tools::runqlat::{self, RunqlatOptions};
use crate::tools::tcpconnlat;
use history::History;
use http::{HttpCounters, LatestMetrics, Limits, Reply, Request, METRICS_CONTENT_TYPE};
use metrics::{HistogramMaps, Metrics, Sources};
use web_config::WebConfig;
use windows::{window_seconds, Profiles, StackSource, Window, ENDPOINTS};

/// What `/metrics` measures, besides the continuous CPU profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricSource {
    /// Run-queue latency (sched_switch, from the scheduler's enqueue times).
    Runqlat,
    /// Block I/O latency per disk and operation (block_rq_issue/complete).
    Biolatency,
    /// File operation latency per filesystem type and operation. Where the
    /// kernel refuses fentry it traces every syscall's entry and exit, which
    /// costs syscall-heavy hosts several percent: off by default.
    Fslatency,
    /// TCP connect latency (sock:inet_sock_set_state).
    Tcp,
    /// Off-CPU seconds, and the off-CPU profile endpoints. Costs about 20 %
    /// of a context-switch storm's throughput (bench/offcpu.py): off by default.
    Offcpu,
}

/// Serve Prometheus metrics, pprof profiles and a live page.
#[derive(Debug, clap::Args)]
#[command(after_help = "Endpoints:
  /                            live page: CPU flame graph and latency histograms
  /metrics                     Prometheus text exposition
  /debug/pprof/profile?seconds=N  gzipped pprof CPU profile of the next N seconds (default 30)
  /debug/pprof/offcpu?seconds=N   the same for off-CPU time (with --metrics ...,offcpu)
  /flamegraph.svg?seconds=N    CPU flame graph (default 10)
  /flamegraph.svg?diff_base=S[&seconds=N]  differential flame graph: the last N s against the N s ending S s earlier
  /heatmap.html?seconds=N      subsecond heatmap of the last N s of CPU samples (default and most 300)
  /offcpu.svg?seconds=N        off-CPU flame graph (with --metrics ...,offcpu)")]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; give 0.0.0.0:PORT to expose it).
    #[arg(long, default_value = "127.0.0.1:9435", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Continuous CPU sampling frequency, per CPU, in Hz.
    #[arg(long, default_value_t = 19, value_name = "HZ")]
    pub hz: u64,
    /// Metric sources to attach (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values = ["runqlat", "biolatency", "tcp"],
        value_name = "SOURCE,.."
    )]
    pub metrics: Vec<MetricSource>,
    /// Label series with the cgroup (v2 path) of the task measured: run-queue,
    /// file system and TCP connect latency, and off-CPU seconds. Block I/O
    /// completes in interrupt context and stays per disk only.
    #[arg(long)]
    pub cgroup_labels: bool,
    /// At most this many series per metric; the rest are summed into one
    /// series labelled "other" and counted in bpfscope_series_folded.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_series: usize,
    /// Have the kernel count the agent's BPF program run time (two clock
    /// reads more per program run) for bpfscope_bpf_program_run_seconds_total.
    /// Reported anyway where sysctl kernel.bpf_stats_enabled is 1.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Capabilities to keep once started (comma-separated; `all` drops
    /// none); every other one is dropped before the programs are loaded,
    /// bounding set included. The default is what serve uses: bpf, perfmon
    /// (programs, perf events, maps, iterators), sys_ptrace (other users'
    /// /proc/PID/maps, mem, root), checkpoint_restore (/proc/PID/map_files),
    /// dac_read_search (other users' perf maps and files), syslog (kernel
    /// symbol addresses). Add net_bind_service to listen on a port below 1024.
    #[arg(
        long = "capabilities.keep",
        value_delimiter = ',',
        default_values = capabilities::KEEP_BY_DEFAULT,
        value_name = "CAPS"
    )]
    pub capabilities_keep: Vec<String>,
    /// TLS and basic authentication, in the exporter toolkit's YAML format
    /// (tls_server_config: cert_file, key_file, client_auth_type,
    /// client_ca_file, min_version, max_version; basic_auth_users: bcrypt
    /// hashes), so a Prometheus scrape_config for node_exporter works.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Connections served at once; more are answered 503 and closed. Each
    /// costs a task and at most 24 KiB of buffers, never a thread.
    #[arg(long = "web.max-connections", default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// Profile windows open at once; requests for another get a 429.
    /// Requests for the same profile within a second share one window.
    #[arg(long = "web.max-windows", default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_windows: u32,
    /// Seconds a connection has to send a request's headers, and to start
    /// the next one on a kept-alive connection (nginx's header timeout; a
    /// scraper every 15 or 30 s keeps its connection and TLS session). Idle
    /// sockets cannot lock clients out meanwhile: a full front closes the
    /// oldest of them.
    #[arg(long = "web.read-timeout", default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout: u64,
    #[command(flatten)]
    pub unwind: UnwindArgs,
    #[command(flatten)]
    pub debug_info: DebuginfodArgs,
}

/// A client that reads none of a response for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Request line and headers (a browser's are 1-2 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The agent's stack maps: its CPU history drains the counts about every
/// second and empties the stack maps once half of STACK_STORAGE ids were
/// read, so they need far less room than a one-off profile's (which keeps
/// every stack until its end). Kernel memory: README, "Design".
const STACK_STORAGE: u32 = 8192;
const MAX_STACKS: u32 = 16384;

/// A reply from what a handler produced, or a 500 saying what failed.
fn reply_from(
    result: Result<impl Into<hyper::body::Bytes>>,
    content_type: &'static str,
    failed: &str,
) -> Reply {
    match result {
        Ok(body) => Reply::bytes(200, content_type, body),
        Err(error) => Reply::text(500, format!("{failed} failed: {error:#}\n")),
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    perf_event::check_frequency(args.hz)?;
    // A long-running agent: large transient buffers (symbolization, SVG)
    // come from mmap and go back to the system when freed, instead of
    // raising glibc's dynamic threshold and fragmenting the heap; the
    // table builder thread shares the main arena.
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    if args.max_series == 0 {
        bail!("bad --max-series 0: give 1 or more");
    }
    // Every client, object file and BPF object takes a descriptor: use all the host allows.
    host::limits::raise_open_files();
    preflight::check_all()?;
    let keep = if args.capabilities_keep.iter().any(|name| name == "all") {
        None
    } else {
        Some(capabilities::parse(&args.capabilities_keep)?)
    };
    let web = match &args.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    if !args.listen.ip().is_loopback() && web.tls.is_none() && web.users.is_empty() {
        eprintln!(
            "bpfscope: warning: listening on {} without TLS or authentication: anyone who reaches the port reads every process's stacks and names (see --web.config.file)",
            args.listen
        );
    }
    let access = web.describe();
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.listen))?;
    // The port bound, when the flag asked for any (port 0).
    let listening = listener.local_addr().unwrap_or(args.listen);
    // Enabling statistics needs CAP_SYS_ADMIN: before the capabilities go.
    let stats_enabled = args.bpf_stats.then(program_stats::enable).transpose()?;
    // Capabilities are per thread: drop them before the first thread starts
    // (the HTTP server's, the unwind-table builder's), keeping what loading
    // and running the programs needs.
    if let Some(keep) = keep {
        let (kept, bounding_cut) = capabilities::keep_only(keep)?;
        let bounding = if bounding_cut {
            "bounding set included"
        } else {
            "the bounding set left as is: cutting it needs CAP_SETPCAP"
        };
        eprintln!(
            "bpfscope: capabilities kept: {} (the rest dropped, {bounding})",
            capabilities::describe(kept)
        );
    }
    let limits = Limits {
        max_connections: args.max_connections as usize,
        header_timeout: Duration::from_secs(args.read_timeout),
        write_timeout: WRITE_TIMEOUT,
        max_header_bytes: MAX_HEADER_BYTES,
    };
    let http_counters = Arc::new(HttpCounters::default());
    let latest_metrics = Arc::new(LatestMetrics::default());
    let incoming = http::start(
        listener,
        limits,
        web,
        Arc::clone(&http_counters),
        Arc::clone(&latest_metrics),
    )?;
    let targets = TargetSpec::default().resolve()?;
    let enabled = |source| args.metrics.contains(&source);
    let mut storages = [(); 6].map(|_| object_storage());
    let [runqueue_storage, block_storage, fs_storage, tcp_storage, offcpu_storage, sampler_storage] =
        &mut storages;

    let runqueue = enabled(MetricSource::Runqlat)
        .then(|| {
            let options = RunqlatOptions {
                unit_ns: 1000,
                per_process: false,
                per_thread: false,
                key_by_cgroup: args.cgroup_labels,
            };
            runqlat::attach(runqueue_storage, &targets, &options)
        })
        .transpose()?;
    let block = enabled(MetricSource::Biolatency)
        .then(|| {
            let options = BiolatencyOptions {
                unit_ns: 1000,
                queued: false,
                per_disk: true,
                per_flags: true,
            };
            biolatency::attach(block_storage, &targets, &options)
        })
        .transpose()?;
    let filesystem = enabled(MetricSource::Fslatency)
        .then(|| {
            let setup = fslatency::Setup {
                unit_ns: 1000,
                slow_ns: None,
                fstype: None,
                key_by_cgroup: args.cgroup_labels,
            };
            fslatency::load(fs_storage, &targets, &setup)
        })
        .transpose()?;
    let connect = enabled(MetricSource::Tcp)
        .then(|| tcpconnlat::attach(tcp_storage, &targets, true, args.cgroup_labels))
        .transpose()?;
    let capture = StackCapture {
        user: true,
        kernel: true,
        unwind: args.unwind.options(),
        stack_storage_size: STACK_STORAGE,
        max_stacks: MAX_STACKS,
    };
    let offcpu = enabled(MetricSource::Offcpu)
        .then(|| {
            let options = OffcpuOptions {
                user_threads_only: false,
                kernel_threads_only: false,
                state: BlockState::All,
                min_block_ns: 1000,
                max_block_ns: u64::MAX,
                total_by_cgroup: true,
            };
            offcpu::attach(offcpu_storage, &targets, &capture, &options)
        })
        .transpose()?;
    let sampler_options = SamplerOptions {
        frequency: args.hz,
        cpus: cpus::online_cpus()?,
        include_idle: false,
        per_thread: false,
        heatmap: true,
    };
    let sampler = profile::attach(sampler_storage, &targets, &capture, &sampler_options)?;

    let metrics = RefCell::new(Metrics::new(
        args.cgroup_labels,
        args.max_series,
        stats_enabled.is_some() || program_stats::enabled_by_sysctl(),
    ));
    // One set of snapshots serves both profiles.
    let spaces = Rc::new(RefCell::new(AddressSpaces::default()));
    let debuginfod = args.debug_info.client();
    let profiles = Profiles {
        symbolizer: RefCell::new((Symbolizer::new(debuginfod.clone()), Instant::now())),
        debuginfod: debuginfod.clone(),
        spaces: Rc::clone(&spaces),
        cpu: StackSource::new(
            &sampler,
            &targets,
            capture.unwind,
            &spaces,
            MAX_STACKS,
            debuginfod.clone(),
        )?,
        offcpu: offcpu
            .as_ref()
            .map(|tracer| {
                StackSource::new(
                    tracer,
                    &targets,
                    capture.unwind,
                    &spaces,
                    MAX_STACKS,
                    debuginfod.clone(),
                )
            })
            .transpose()?,
        history: RefCell::new(History::new(sampler.start_ns, STACK_STORAGE)),
        hz: args.hz,
    };
    let mut sources = Sources::default();
    let mut add_programs = |tool: &'static str, object: &libbpf_rs::Object| -> Result<()> {
        for (name, fd) in program_stats::loaded_programs(object)? {
            sources.programs.push((tool, name, fd));
        }
        Ok(())
    };
    add_programs("profile", sampler.skel.object())?;
    if let Some((skel, _)) = &runqueue {
        add_programs("runqlat", skel.object())?;
    }
    if let Some((skel, _)) = &block {
        add_programs("biolatency", skel.object())?;
    }
    if let Some((skel, _)) = &filesystem {
        add_programs("fslatency", skel.object())?;
    }
    if let Some((skel, _)) = &connect {
        add_programs("tcpconnlat", skel.object())?;
    }
    if let Some(tracer) = &offcpu {
        add_programs("offcpu", tracer.skel.object())?;
    }
    sources.stats.push(&sampler.skel.maps.stats);
    // Every histogram tool's object has the same `hists`, `total_hist` and `stats` maps.
    macro_rules! histogram_source {
        ($attached:expr, $field:ident) => {
            if let Some((skel, _)) = &$attached {
                sources.$field = Some(HistogramMaps {
                    hists: &skel.maps.hists,
                    total: &skel.maps.total_hist,
                });
                sources.stats.push(&skel.maps.stats);
            }
        };
    }
    histogram_source!(runqueue, runqueue);
    histogram_source!(block, block);
    histogram_source!(filesystem, filesystem);
    histogram_source!(connect, connect);
    if let Some(tracer) = &offcpu {
        sources.offcpu_by_cgroup = Some(&tracer.skel.maps.cgroup_totals);
        sources.stats.push(&tracer.skel.maps.stats);
    }

    signals::install();
    let scheme = if access.starts_with("TLS") {
        "https"
    } else {
        "http"
    };
    eprintln!(
        "bpfscope: serving on {scheme}://{listening} ({access}; /, /metrics, /debug/pprof/profile, /flamegraph.svg)"
    );
    let host = hostname();
    let mut windows: Vec<Window> = Vec::new();
    // A /metrics answer, kept as the latest for scrapes that come while
    // the loop renders.
    let scrape = || {
        let body = metrics
            .borrow_mut()
            .scrape(
                &sources,
                profiles
                    .sources()
                    .map(|source| source.collector.unwind_rows_in_use())
                    .sum(),
                &http_counters,
            )
            .map(hyper::body::Bytes::from);
        if let Ok(body) = &body {
            latest_metrics.store(body.clone());
        }
        body
    };
    let answer = |request: Request, windows: &mut Vec<Window>| -> Result<()> {
        let url = request.url.clone();
        let path = url.split('?').next().unwrap_or("");
        let from_history = match path {
            "/flamegraph.svg" if url.contains("diff_base=") => {
                Some((profiles.diff_svg(&url), "image/svg+xml"))
            }
            "/heatmap.html" => Some((profiles.heatmap_page(&url), "text/html; charset=utf-8")),
            _ => None,
        };
        if let Some((page, content_type)) = from_history {
            request.respond(match page {
                Ok(Ok(bytes)) => Reply::bytes(200, content_type, bytes),
                Ok(Err(message)) => Reply::text(400, message),
                Err(error) => reply_from(
                    Err::<Vec<u8>, _>(error),
                    content_type,
                    "reading the CPU history",
                ),
            });
            return Ok(());
        }
        if let Some(&(_, kind, format, default_seconds)) = ENDPOINTS.iter().find(|e| e.0 == path) {
            let seconds = match window_seconds(&url, default_seconds) {
                Ok(seconds) => seconds,
                Err(message) => {
                    request.respond(Reply::text(400, message));
                    return Ok(());
                }
            };
            let wanted = (kind, format, seconds);
            if let Some(window) = windows.iter_mut().find(|window| window.joins(wanted)) {
                window.requests.push(request);
                return Ok(());
            }
            if windows.len() >= args.max_windows as usize {
                let message = format!(
                    "{} profile windows are open (--web.max-windows); try again when one ends\n",
                    windows.len()
                );
                request.respond(Reply::text(429, message).with_header("Retry-After", "10"));
                return Ok(());
            }
            match profiles.open(wanted)? {
                Ok(mut window) => {
                    window.requests.push(request);
                    windows.push(window);
                }
                Err((status, message)) => request.respond(Reply::text(status, message)),
            }
            return Ok(());
        }
        request.respond(match path {
            "/metrics" => reply_from(scrape(), METRICS_CONTENT_TYPE, "reading the kernel maps"),
            "/histograms" => reply_from(
                metrics
                    .borrow_mut()
                    .histogram_text(&sources)
                    .map(String::into_bytes),
                "text/plain; charset=utf-8",
                "reading the kernel maps",
            ),
            "/" => reply_from(
                metrics
                    .borrow_mut()
                    .histogram_text(&sources)
                    .map(|text| page::render(&host, &text, offcpu.is_some()).into_bytes()),
                "text/html; charset=utf-8",
                "reading the kernel maps",
            ),
            _ => Reply::text(404, "not found\n"),
        });
        Ok(())
    };
    let mut last_reset_check = Instant::now();
    while !signals::stop_requested() {
        for source in profiles.sources() {
            source.collector.consume();
            source.collector.after_poll();
        }
        profiles.tick()?;
        // Answer the windows that have ended; requests that came meanwhile
        // (a scrape) are answered between renderings, never after all of them.
        let (done, waiting): (Vec<Window>, Vec<Window>) =
            windows.into_iter().partition(Window::ended);
        windows = waiting;
        if !done.is_empty() && latest_metrics.wanted() {
            // Scrapes that come while these render get this.
            let _ = scrape();
        }
        for mut window in done {
            let content_type = Profiles::content_type(&window);
            let rendered = profiles.render(&window).map(hyper::body::Bytes::from);
            for request in window.requests.drain(..) {
                request.respond(match &rendered {
                    Ok(body) => Reply::bytes(200, content_type, body.clone()),
                    Err(error) => {
                        Reply::text(500, format!("building the profile failed: {error:#}\n"))
                    }
                });
            }
            drop(rendered);
            // Symbolizing allocates a lot briefly: give it back, so memory stays flat.
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe { libc::malloc_trim(0) };
            while let Ok(request) = incoming.try_recv() {
                answer(request, &mut windows)?;
            }
        }
        if windows.is_empty() && last_reset_check.elapsed() >= Duration::from_secs(10) {
            // No window is open, so no snapshot of an exited process can still be needed.
            profiles.tidy()?;
            last_reset_check = Instant::now();
        }
        match incoming.recv_timeout(Duration::from_millis(100)) {
            Ok(request) => answer(request, &mut windows)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the HTTP server stopped"),
        }
    }
    // Detach everything before saying so; what borrows the objects goes first.
    drop((profiles, sources));
    sampler.stop()?;
    if let Some(tracer) = &offcpu {
        tracer.stop()?;
    }
    drop(runqueue.map(|(_, links)| links));
    drop(block.map(|(_, links)| links));
    drop(filesystem.map(|(_, links)| links));
    drop(connect.map(|(_, link)| link));
    eprintln!("bpfscope: stopping");
    Ok(())
}
