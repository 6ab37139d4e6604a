//! End-to-end tests of `bpfscope serve`: its metrics are valid Prometheus
//! text (promtool), show what a workload did, and a real Prometheus server
//! scrapes them.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The value of the first sample line starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn metrics_are_valid_and_show_the_workload() {
    let _serial = serial();
    let (serve, port) = start_serve();
    let dir = tmp_dir();
    let status = Command::new(workload("direct_writes"))
        .arg("200")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    assert_promtool_valid(&metrics);
    let writes = metrics
        .lines()
        .filter(|l| {
            l.starts_with("bpfscope_block_io_latency_seconds_count{")
                && l.contains("operation=\"write\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(writes >= 200.0, "{metrics}");
    assert!(
        sample(&metrics, "bpfscope_runqueue_latency_seconds_count").unwrap() > 0.0,
        "{metrics}"
    );
    assert!(metrics.contains("bpfscope_runqueue_latency_seconds_bucket{le=\"+Inf\"}"));
    assert!(sample(&metrics, "bpfscope_resident_memory_bytes").unwrap() > 0.0);
    assert_eq!(get(port, "/nope").0, 404);
    stop_serve(serve);
}

#[test]
fn a_real_prometheus_scrapes_it() {
    let _serial = serial();
    let (serve, port) = start_serve();
    let prometheus_port = free_port();
    let dir = tmp_dir().join(format!("prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bpfscope\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prometheus = start_prometheus(&config, &dir.join("data"), prometheus_port);
    let status = Command::new(workload("direct_writes"))
        .arg("100")
        .arg(tmp_dir())
        .status()
        .unwrap();
    assert!(status.success());
    let query = "/api/v1/query?query=sum(bpfscope_block_io_latency_seconds_count)%20and%20sum(bpfscope_runqueue_latency_seconds_count)";
    let mut last = String::new();
    let found = wait_for(Duration::from_secs(30), || {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", prometheus_port)) {
            let _ = write!(stream, "GET {query} HTTP/1.0\r\nHost: localhost\r\n\r\n");
            last.clear();
            let _ = stream.read_to_string(&mut last);
        }
        last.contains("\"result\":[{")
    });
    drop(prometheus);
    stop_serve(serve);
    std::fs::remove_dir_all(&dir).ok();
    assert!(found, "Prometheus never had both histograms: {last}");
    let value: f64 = last
        .rsplit("\"value\":[")
        .next()
        .and_then(|rest| rest.split('"').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(value >= 100.0, "block I/O count {value}: {last}");
}

/// The status of GET /metrics, or None while nothing answers.
fn get_status(port: u16) -> Option<u16> {
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(get(port, "/metrics").0)
}

#[test]
fn other_methods_get_405_and_descriptors_are_raised() {
    let _serial = serial();
    // Started with a soft limit of 256 open files, below the hard one.
    let port = free_port();
    let serve = Workload(
        Command::new("prlimit")
            .args(["--nofile=256:", "--"])
            .arg(env!("CARGO_BIN_EXE_bpfscope"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listening = wait_for(Duration::from_secs(10), || get_status(port) == Some(200));
    assert!(listening, "serve never answered on {port}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /metrics HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 405") || response.starts_with("HTTP/1.1 405"),
        "{response}"
    );
    assert!(
        response.to_ascii_lowercase().contains("allow: get, head"),
        "{response}"
    );
    assert_eq!(get(port, "/metrics").0, 200, "GET still served");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", serve.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "soft limit raised to the hard one: {limits}"
    );
    stop_serve(serve);
}

#[test]
fn busy_port_and_bad_address_are_clear_errors() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = run(bpfscope().args(["serve", "--listen", &address]));
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with(&format!("bpfscope: error: cannot listen on {address}")),
        "{text}"
    );
    assert!(!text.contains("panicked"));
    let output = run(bpfscope().args(["serve", "--listen", "not-an-address"]));
    assert_eq!(output.status.code(), Some(2));
}

/// What `go tool pprof -top` says of a profile (kept as `name` in the test directory).
fn pprof_top(profile: &[u8], name: &str) -> String {
    let path = tmp_dir().join(name);
    std::fs::write(&path, profile).unwrap();
    let top = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&path)
        .env("HOME", tmp_dir())
        .output()
        .expect("go (golang-go) is installed by the test command");
    String::from_utf8_lossy(&top.stdout).into_owned()
}

/// GETs raw bytes (for binary bodies) after the headers.
fn get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response[split + 4..].to_vec())
}

#[test]
fn pprof_and_flame_graph_windows_show_the_hot_function() {
    let _serial = serial();
    let burner = Workload::start(&workload("cpu_split"), &["8"]);
    let (serve, port) = start_serve();
    // Both windows are open at once; /metrics must still answer meanwhile.
    let pprof = std::thread::spawn(move || get_bytes(port, "/debug/pprof/profile?seconds=3"));
    let svg = std::thread::spawn(move || get_bytes(port, "/flamegraph.svg?seconds=2"));
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    assert_eq!(get(port, "/metrics").0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/metrics waited for a profile window"
    );
    let (code, profile) = pprof.join().unwrap();
    assert_eq!(code, 200);
    let top_text = pprof_top(&profile, "serve-window.pb.gz");
    assert!(top_text.contains("burn_three"), "{top_text}");
    let (code, svg) = svg.join().unwrap();
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&svg).contains("burn_three"));
    assert_eq!(get(port, "/flamegraph.svg?seconds=0").0, 400);
    stop_serve(serve);
    drop(burner);
}

/// The sum of the samples of lines starting with `prefix` and containing all of `parts`.
fn sum_where(metrics: &str, prefix: &str, parts: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn every_source_labelled_by_cgroup_with_an_offcpu_window() {
    let _serial = serial();
    let cgroup = TestCgroup::new("serve");
    // The blocker alone in its own, so its off-CPU time is known.
    let blocker_cgroup = TestCgroup::new("blocker");
    let (serve, port) = start_serve_with(&[
        "--metrics",
        "runqlat,biolatency,fslatency,tcp,offcpu",
        "--cgroup-labels",
        "--bpf-stats",
    ]);
    let (reads, fsyncs, connections, block_seconds) = (40, 7, 12, 3.0);
    let mut blocker = blocker_cgroup
        .command(&workload("offcpu_blocks"), &["mix", "3"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let offcpu = std::thread::spawn(move || get_bytes(port, "/debug/pprof/offcpu?seconds=2"));
    let dir = tmp_dir().join(format!("serve-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = cgroup
        .command(
            &workload("file_ops"),
            &[
                dir.to_str().unwrap(),
                &reads.to_string(),
                &fsyncs.to_string(),
            ],
        )
        .status()
        .unwrap();
    assert!(status.success());
    let status = cgroup
        .command(
            &workload("tcp_sessions"),
            &[&connections.to_string(), "1000"],
        )
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(blocker.wait().unwrap().success());

    // Off-CPU window: the blocker's 50 ms sleeps dominate it.
    let (code, profile) = offcpu.join().unwrap();
    assert_eq!(code, 200);
    let top_text = pprof_top(&profile, "serve-offcpu.pb.gz");
    assert!(top_text.contains("long_sleep"), "{top_text}");

    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    assert_promtool_valid(&metrics);
    let ours = format!("cgroup=\"{}\"", cgroup.label);
    let fs = "bpfscope_filesystem_latency_seconds_count{";
    assert_eq!(
        sum_where(&metrics, fs, &[&ours, "operation=\"fsync\""]),
        fsyncs as f64,
        "{metrics}"
    );
    // The loader's reads of shared libraries count too.
    assert!(sum_where(&metrics, fs, &[&ours, "operation=\"read\""]) >= reads as f64);
    assert_eq!(
        sum_where(
            &metrics,
            "bpfscope_tcp_connect_latency_seconds_count{",
            &[&ours]
        ),
        connections as f64,
        "{metrics}"
    );
    assert!(
        sum_where(
            &metrics,
            "bpfscope_runqueue_latency_seconds_count{",
            &[&ours]
        ) > 0.0
    );
    // Blocked nearly all of its 3 s; tolerance 10 % below, 5 % above.
    let blocker_label = format!("cgroup=\"{}\"", blocker_cgroup.label);
    let offcpu_seconds = sum_where(
        &metrics,
        "bpfscope_offcpu_seconds_total{",
        &[&blocker_label],
    );
    assert!(
        (0.9 * block_seconds..=1.05 * block_seconds).contains(&offcpu_seconds),
        "off-CPU {offcpu_seconds} s for a workload blocked ~{block_seconds} s"
    );
    assert!(
        sum_where(
            &metrics,
            "bpfscope_bpf_program_run_seconds_total{",
            &["tool=\"runqlat\"", "program=\"switch_btf\""]
        ) > 0.0,
        "{metrics}"
    );
    assert!(metrics.contains("bpfscope_block_io_latency_seconds_count{disk="));

    // A removed cgroup's series go away (and its kernel map entries with them).
    let removed = [cgroup.dir.clone(), blocker_cgroup.dir.clone()];
    drop((cgroup, blocker_cgroup));
    assert!(
        removed.iter().all(|dir| !dir.exists()),
        "cgroups not removed"
    );
    let (_, metrics) = get(port, "/metrics");
    assert!(!metrics.contains(&ours), "{metrics}");
    stop_serve(serve);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn max_series_folds_the_quietest_into_other() {
    let _serial = serial();
    let (serve, port) = start_serve_with(&[
        "--metrics",
        "runqlat",
        "--cgroup-labels",
        "--max-series",
        "2",
    ]);
    let cgroups: Vec<TestCgroup> = (0..3)
        .map(|i| TestCgroup::new(&format!("series{i}")))
        .collect();
    for cgroup in &cgroups {
        let status = cgroup
            .command(&workload("short_burn"), &["20"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (_, metrics) = get(port, "/metrics");
    assert_promtool_valid(&metrics);
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("bpfscope_runqueue_latency_seconds_count{"))
        .collect();
    assert_eq!(series.len(), 2, "{metrics}");
    assert!(
        series.iter().any(|l| l.contains("cgroup=\"other\"")),
        "{metrics}"
    );
    // The root cgroup and three of ours: at least two folded.
    let folded = sample(
        &metrics,
        "bpfscope_series_folded{metric=\"bpfscope_runqueue_latency_seconds\"}",
    )
    .unwrap();
    assert!(folded >= 2.0, "{metrics}");
    drop(cgroups);
    stop_serve(serve);
}

/// The capability sets of one thread, from its status file.
fn capability_sets(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter(|line| line.starts_with("Cap"))
        .filter_map(|line| {
            let (name, hex) = line.split_once(':')?;
            Some((name.to_string(), u64::from_str_radix(hex.trim(), 16).ok()?))
        })
        .collect()
}

#[test]
fn capabilities_are_dropped_in_every_thread_and_windows_still_name_new_processes() {
    let _serial = serial();
    let (serve, port) = start_serve();
    // bpf, perfmon, sys_ptrace, checkpoint_restore, dac_read_search, syslog.
    let kept: u64 = [39, 38, 19, 40, 2, 34].iter().map(|bit| 1u64 << bit).sum();
    let tasks = std::fs::read_dir(format!("/proc/{}/task", serve.pid())).unwrap();
    let mut threads = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        for (set, mask) in capability_sets(&status) {
            let expected = if set == "CapInh" || set == "CapAmb" {
                0
            } else {
                kept
            };
            assert_eq!(
                mask,
                expected,
                "{set} of thread {:?}: {mask:#x}",
                task.file_name()
            );
        }
        threads += 1;
    }
    assert!(threads >= 2, "only {threads} threads checked");
    // Started after the drop: its mappings, files and symbols are still read.
    let burner = Workload::start(&workload("cpu_split"), &["5"]);
    let (status, svg) = get(port, "/flamegraph.svg?seconds=3");
    assert_eq!(status, 200);
    assert!(
        svg.contains("burn_three"),
        "no burn_three in the window: {svg:.1500}"
    );
    drop(burner);
    drop(serve);

    let output = run(bpfscope().args(["serve", "--capabilities.keep", "bpf,fly"]));
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("unknown capability") && message.lines().count() == 1,
        "{message}"
    );
}
