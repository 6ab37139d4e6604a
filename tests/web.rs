//! End-to-end tests of `serve`'s HTTP front under hostile clients (10,000
//! half-open connections, a 256 MB header, a slow-header client, 200
//! concurrent profile windows) and of TLS with basic authentication, scraped
//! by a real Prometheus with the scrape configuration node_exporter uses.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

/// A `/proc/PID/status` field in its unit (threads, kB).
fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap()
}

/// The sum of the samples of lines starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GETs a path; the status, or None when the connection fails or is reset
/// (as connections over the limit are).
fn try_get(port: u16, path: &str) -> Option<u16> {
    read_status(send_get(port, path).ok()?)
}

fn send_get(port: u16, path: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    Ok(stream)
}

/// The status of the response that `stream` reads to its end.
fn read_status(mut stream: TcpStream) -> Option<u16> {
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    head.split_whitespace().nth(1)?.parse().ok()
}

fn raise_own_descriptor_limit() {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=20000:20000",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "raising the test's descriptor limit");
}

#[test]
fn half_open_connections_huge_headers_and_slow_clients_are_bounded() {
    let _serial = serial();
    raise_own_descriptor_limit();
    let (serve, port) =
        start_serve_with(&["--web.max-connections", "64", "--web.read-timeout", "3"]);
    let pid = serve.pid();
    let rss_before = status_field(pid, "VmRSS:");

    // 10,000 connections that send one byte of a request and nothing more.
    let mut half_open = Vec::new();
    for _ in 0..10_000 {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.write_all(b"G");
            half_open.push(stream);
        }
    }
    assert!(
        half_open.len() >= 9_000,
        "only {} connected",
        half_open.len()
    );
    let threads = status_field(pid, "Threads:");
    let rss_held = status_field(pid, "VmRSS:");
    assert!(
        threads <= 8,
        "{threads} threads with 10,000 connections open"
    );
    assert!(
        rss_held < rss_before + 20 * 1024,
        "RSS {rss_before} kB before, {rss_held} kB with 10,000 connections open"
    );
    // Still answering while they are open: a client that sends a request
    // takes the place of the oldest connection that has not.
    let started = Instant::now();
    assert_eq!(
        try_get(port, "/metrics"),
        Some(200),
        "no answer with 10,000 half-open"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
    let metrics = get(port, "/metrics").1;
    let turned_away = sample(
        &metrics,
        "bpfscope_http_connections_rejected_total{reason=\"limit\"}",
    ) + sample(
        &metrics,
        "bpfscope_http_connections_rejected_total{reason=\"evicted_before_request\"}",
    );
    assert!(
        turned_away >= 9_000.0,
        "turned away {turned_away}:\n{metrics}"
    );
    let open = sample(&metrics, "bpfscope_http_connections_open");
    assert!(open <= 64.0, "{open} connections open");
    eprintln!(
        "10,000 half-open: {} connected, {threads} threads, RSS {rss_before} -> {rss_held} kB, {turned_away} turned away, /metrics in {took:?}",
        half_open.len()
    );
    drop(half_open);

    // A 256 MB header line: answered 431 and cut off after 16 KiB.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ")
        .unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    while sent < 256 << 20 {
        match stream.write(&chunk) {
            Ok(written) => sent += written,
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 << 20,
        "the agent took {} MB of one header",
        sent >> 20
    );
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 431"),
        "{response}"
    );
    let rss_after = status_field(pid, "VmRSS:");
    eprintln!(
        "256 MB header: the agent took {} KiB, RSS after {rss_after} kB",
        sent >> 10
    );
    assert!(
        rss_after < rss_before + 20 * 1024,
        "RSS {rss_before} kB before, {rss_after} kB after a 256 MB header"
    );

    // A client sending its header one byte a second is dropped at 3 s.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: yyyyyyyyyyyyyyyyy"
        .iter()
        .cycle()
        .take(12)
    {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buffer = [0u8; 256];
        let still_open = matches!(
            slow.read(&mut buffer),
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        if !still_open {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slow-header client kept its connection 12 s");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    // An overlong request target, and a method other than GET/HEAD.
    let long = format!("/metrics?{}", "a".repeat(5000));
    assert_eq!(get(port, &long).0, 414);
    let mut post = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(post, "DELETE / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    post.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 405"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("allow: get, head"),
        "{response}"
    );
    assert_eq!(get(port, "/metrics").0, 200);
    stop_serve(serve);
}

#[test]
fn out_of_descriptors_it_keeps_answering() {
    let _serial = serial();
    raise_own_descriptor_limit();
    let port = free_port();
    let mut serve = Workload(
        Command::new("prlimit")
            .args(["--nofile=200:200", "--"])
            .arg(env!("CARGO_BIN_EXE_bpfscope"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let serving = wait_for(Duration::from_secs(10), || try_get(port, "/") == Some(200));
    assert!(serving, "serve never answered");
    // More half-open connections than it has descriptors left.
    let held: Vec<TcpStream> = (0..400)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.write_all(b"G").ok()?;
            Some(stream)
        })
        .collect();
    let answered = wait_for(Duration::from_secs(5), || {
        try_get(port, "/metrics") == Some(200)
    });
    assert!(answered, "no answer once out of descriptors");
    assert!(serve.0.try_wait().unwrap().is_none(), "serve ended");
    let metrics = get(port, "/metrics").1;
    let failed = sample(
        &metrics,
        "bpfscope_http_connections_rejected_total{reason=\"accept_failed\"}",
    );
    assert!(
        failed >= 1.0,
        "the descriptor limit was never reached:\n{metrics}"
    );
    drop(held);
    stop_serve(serve);
}

/// GETs a path; (status, seconds it took).
fn timed_status(port: u16, path: &str) -> (u16, f64) {
    let started = Instant::now();
    let status = try_get(port, path).unwrap_or(0);
    (status, started.elapsed().as_secs_f64())
}

/// Like `timed_status`, waiting at `sent` once the request is written.
fn timed_status_after_sending(port: u16, path: &str, sent: &Barrier) -> (u16, f64) {
    let started = Instant::now();
    let stream = send_get(port, path);
    sent.wait();
    let status = stream.ok().and_then(read_status);
    (status.unwrap_or(0), started.elapsed().as_secs_f64())
}

#[test]
fn two_hundred_windows_share_renderings_and_scrapes_never_wait() {
    let _serial = serial();
    let burner = Workload::start(&workload("cpu_split"), &["20"]);
    let (serve, port) = start_serve_with(&["--web.max-windows", "8"]);
    let pid = serve.pid();
    let started = Instant::now();
    // 200 requests for 3-s windows at once: they share a few windows.
    let sent = Arc::new(Barrier::new(201));
    let windows: Vec<_> = (0..200)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/debug/pprof/profile?seconds=3"
            } else {
                "/flamegraph.svg?seconds=3"
            };
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || timed_status_after_sending(port, path, &sent))
        })
        .collect();
    // Only once all 200 are sent (on 2 busy cores, spawning them can take
    // longer than the 300 ms below): else a late one finds the cap full.
    sent.wait();
    std::thread::sleep(Duration::from_millis(300));
    // Distinct lengths each need a window of their own: past 8, a 429.
    let distinct: Vec<_> = (4..24)
        .map(|seconds| {
            std::thread::spawn(move || {
                timed_status(port, &format!("/flamegraph.svg?seconds={seconds}"))
            })
        })
        .collect();
    let mut slowest_scrape = 0f64;
    let mut peak_rss = 0;
    let mut peak_threads = 0;
    // Scrape through every rendering (the windows end 3 to 11 s in).
    while started.elapsed() < Duration::from_secs(12) {
        let (status, took) = timed_status(port, "/metrics");
        assert_eq!(status, 200);
        slowest_scrape = slowest_scrape.max(took);
        peak_rss = peak_rss.max(status_field(pid, "VmRSS:"));
        peak_threads = peak_threads.max(status_field(pid, "Threads:"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut answered = 0;
    let mut slowest_window = 0f64;
    for window in windows {
        let (status, took) = window.join().unwrap();
        assert_eq!(status, 200);
        answered += 1;
        slowest_window = slowest_window.max(took);
    }
    assert_eq!(answered, 200);
    assert!(
        slowest_window < 8.0,
        "a 3-s window took {slowest_window:.1} s"
    );
    // Requests for distinct windows that the cap refuses get 429 at once.
    let mut statuses: Vec<u16> = Vec::new();
    for request in distinct {
        let (status, took) = request.join().unwrap();
        if status == 429 {
            assert!(took < 1.0, "a 429 took {took:.1} s");
        }
        statuses.push(status);
    }
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!(refused >= 12, "{statuses:?}");
    // A rendering takes about a second in the debug build the suite runs
    // (0.06 s in release): a scrape that waited behind one would fail this.
    assert!(
        slowest_scrape < 0.5,
        "a scrape waited {slowest_scrape:.2} s behind windows"
    );
    assert!(peak_threads <= 8, "{peak_threads} threads");
    assert!(peak_rss < 200 * 1024, "peak RSS {peak_rss} kB");
    eprintln!(
        "200 windows: slowest {slowest_window:.1} s, slowest scrape {slowest_scrape:.2} s, peak RSS {} MB, {peak_threads} threads",
        peak_rss / 1024
    );
    stop_serve(serve);
    drop(burner);
}

/// Password of the test's scrape user; its bcrypt hash is in the web config.
const PASSWORD: &str = "scrape-secret";
const PASSWORD_HASH: &str = "$2b$10$HuHTSk0YEBTw6CmwvACjseANm8rtNvKDcjHKL8odTXTAh0tJk4loy";

/// curl's status for an HTTPS GET with these extra arguments ("000": no HTTP answer).
fn curl_status(dir: &std::path::Path, url: &str, extra: &[&str]) -> String {
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(dir.join("ca.crt"))
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed by the test command");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn prometheus_query(port: u16, query: &str) -> String {
    let mut body = String::new();
    if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = write!(
            stream,
            "GET /api/v1/query?query={query} HTTP/1.0\r\nHost: localhost\r\n\r\n"
        );
        let _ = stream.read_to_string(&mut body);
    }
    body
}

#[test]
fn tls_and_basic_auth_with_a_real_prometheus() {
    let _serial = serial();
    let dir = tmp_dir().join(format!("web-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let serve = Workload(
        bpfscope()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--web.config.file",
            ])
            .arg(dir.join("web.yml"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}/metrics");
    let credentials = format!("prometheus:{PASSWORD}");
    let serving = wait_for(Duration::from_secs(15), || {
        curl_status(&dir, &url, &["-u", &credentials]) == "200"
    });
    assert!(serving, "serve never answered over TLS");
    assert_eq!(curl_status(&dir, &url, &[]), "401", "no credentials");
    assert_eq!(curl_status(&dir, &url, &["-u", "prometheus:wrong"]), "401");
    assert_eq!(
        curl_status(&dir, &url, &["-u", "nobody:scrape-secret"]),
        "401"
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");

    // Prometheus, configured as for node_exporter over TLS with basic auth;
    // a second job with a wrong password must be down.
    let prometheus_port = free_port();
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: {password}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            dir.join("ca.crt").display()
        )
    };
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("bpfscope", PASSWORD),
            job("intruder", "guess")
        ),
    )
    .unwrap();
    let prometheus = start_prometheus(
        &dir.join("prometheus.yml"),
        &dir.join("data"),
        prometheus_port,
    );
    let mut last = String::new();
    let scraped = wait_for(Duration::from_secs(30), || {
        last = prometheus_query(
            prometheus_port,
            "bpfscope_resident_memory_bytes%7Bjob%3D%22bpfscope%22%7D",
        );
        last.contains("\"result\":[{")
    });
    assert!(
        scraped,
        "Prometheus never scraped over TLS with basic auth: {last}"
    );
    let mut intruder = String::new();
    let intruder_scraped = wait_for(Duration::from_secs(10), || {
        intruder = prometheus_query(prometheus_port, "up%7Bjob%3D%22intruder%22%7D");
        intruder.contains("\"result\":[{")
    });
    assert!(intruder_scraped, "{intruder}");
    assert!(
        intruder.contains(",\"0\"]"),
        "the wrong password was let in: {intruder}"
    );
    let allowed = prometheus_query(prometheus_port, "up%7Bjob%3D%22bpfscope%22%7D");
    assert!(allowed.contains(",\"1\"]"), "{allowed}");
    drop(prometheus);
    let metrics = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args(["-u", &credentials, &url])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        sample(
            &metrics,
            "bpfscope_http_connections_rejected_total{reason=\"unauthorized\"}"
        ) >= 4.0,
        "{metrics}"
    );
    stop_serve(serve);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn exposed_without_tls_or_auth_warns_and_bad_web_configs_are_one_line_errors() {
    let _serial = serial();
    let port = free_port();
    let mut serve = bpfscope()
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_pipe = serve.stderr.take().unwrap();
    let serving = wait_for(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/").0 == 200
    });
    assert!(serving);
    stop_serve(Workload(serve));
    let mut text = String::new();
    stderr_pipe.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("warning: listening on 0.0.0.0")
            && text.contains("without TLS or authentication"),
        "{text}"
    );

    let dir = tmp_dir().join(format!("web-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "plain password",
            "basic_auth_users:\n  alice: hunter2\n",
            "not a bcrypt hash",
        ),
        (
            "missing key",
            "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n",
            "none.crt",
        ),
        (
            "unsupported field",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n",
            "cipher_suites",
        ),
        ("not YAML", "{{{{", "bad web config"),
        (
            "cost 31",
            "basic_auth_users:\n  alice: $2b$31$HuHTSk0YEBTw6CmwvACjseANm8rtNvKDcjHKL8odTXTAh0tJk4loy\n",
            "has cost 31, over the most served (14)",
        ),
    ];
    for (what, text, expected) in cases {
        let path = dir.join("web.yml");
        std::fs::write(&path, text).unwrap();
        let output = run(bpfscope()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--web.config.file",
            ])
            .arg(&path));
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{what}: {message}");
        assert!(message.contains(expected), "{what}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "{what}: {message}");
        assert!(!message.contains("panicked"), "{what}: {message}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A connection to 127.0.0.1:`port` from `source` (another loopback
/// address: another client, as far as the agent can tell).
fn connect_from(source: std::net::Ipv4Addr, port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let address = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, bound and connected with valid sockaddr_in values.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let from = address(source, 0);
        assert_eq!(
            libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), length),
            0
        );
        let to = address(std::net::Ipv4Addr::LOCALHOST, port);
        assert_eq!(
            libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), length),
            0
        );
        TcpStream::from_raw_fd(fd)
    }
}

/// GET /metrics with Basic credentials on `stream`: the status code and the whole answer.
fn get_with_credentials(mut stream: TcpStream, user: &str, password: &str) -> (u16, String) {
    use base64::Engine as _;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
fn a_password_storm_from_one_client_does_not_delay_another_clients_login() {
    let _serial = serial();
    let dir = tmp_dir().join(format!("web-auth-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Cost 13: about half a second a check.
    let hash = bcrypt::hash(PASSWORD, 13).unwrap();
    let config = dir.join("web.yml");
    std::fs::write(
        &config,
        format!("basic_auth_users:\n  prometheus: {hash}\n"),
    )
    .unwrap();
    let (serve, port) = start_serve_with(&["--web.config.file", config.to_str().unwrap()]);

    let attacker = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let storm: Vec<_> = (0..210)
        .map(|i| {
            std::thread::spawn(move || {
                let user = if i < 60 { "prometheus" } else { "nobody" };
                let started = Instant::now();
                let (status, _) = get_with_credentials(connect_from(attacker, port), user, "wrong");
                (status, started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let local = || connect_from(std::net::Ipv4Addr::LOCALHOST, port);
    let (status, _) = get_with_credentials(local(), "prometheus", PASSWORD);
    let first_login = started.elapsed();
    let started = Instant::now();
    let (again, _) = get_with_credentials(local(), "prometheus", PASSWORD);
    let second_login = started.elapsed();
    let answers: Vec<(u16, Duration)> = storm.into_iter().map(|t| t.join().unwrap()).collect();
    let limited = answers.iter().filter(|(status, _)| *status == 429).count();
    let slowest_limited = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    let (_, metrics) = get_with_credentials(local(), "prometheus", PASSWORD);
    stop_serve(serve);
    assert_eq!((status, again), (200, 200));
    // Before: 30.5 s behind 60 wrong passwords, 9.1 s behind 150 unknown users.
    assert!(
        first_login < Duration::from_secs(3),
        "the first login took {first_login:?} during the storm"
    );
    assert!(
        second_login < Duration::from_millis(200),
        "cached: {second_login:?}"
    );
    assert!(
        limited >= 200,
        "only {limited} of 210 wrong attempts were turned away without a check: {answers:?}"
    );
    assert!(
        slowest_limited < Duration::from_secs(3),
        "a 429 took {slowest_limited:?}"
    );
    assert!(
        metrics.contains("bpfscope_http_connections_rejected_total{reason=\"auth_rate_limited\"}"),
        "{metrics}"
    );
}
