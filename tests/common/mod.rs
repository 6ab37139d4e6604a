//! Helpers shared by the end-to-end tests: building the ground-truth C
//! workloads, running bpfscope, parsing folded output, and serializing tests
//! so that concurrent BPF runs and CPU burners do not disturb each other.
#![allow(dead_code)]

pub mod browser;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Tests that measure run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The binary, with `-v`: tests read the whole run report (the default,
/// shorter report is tested in tests/profile.rs).
pub fn bpfscope() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bpfscope"));
    command.arg("-v");
    command
}

pub fn tmp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Compiles tests/workloads/NAME.c once (with frame pointers everywhere,
/// leaf functions included, and no sibling calls) and returns the binary.
pub fn workload(name: &str) -> PathBuf {
    workload_variant(
        name,
        "",
        &["-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"],
    )
}

/// `tests/workloads/NAME.c` built with clang -O2 -g and `flags` (plus
/// -fno-optimize-sibling-calls -pthread), as NAME + `suffix`, once per run.
pub fn workload_variant(name: &str, suffix: &str, flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    let binary_name = format!("{name}{suffix}");
    if let Some(path) = built.get(&binary_name) {
        return path.clone();
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/workloads/{name}.c"));
    let binary = tmp_dir().join(&binary_name);
    let status = Command::new("clang")
        .args(["-O2", "-g"])
        .args(flags)
        .args(["-fno-optimize-sibling-calls", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("clang is installed (the test command installs it)");
    assert!(status.success(), "compiling {}", source.display());
    built.insert(binary_name, binary.clone());
    binary
}

/// A child process killed when dropped, so a failing test leaves no burner behind.
pub struct Workload(pub Child);

impl Workload {
    pub fn start(binary: &Path, args: &[&str]) -> Self {
        let child = Command::new(binary)
            .args(args)
            .spawn()
            .expect("start workload");
        std::thread::sleep(Duration::from_millis(200));
        Workload(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

pub fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run bpfscope")
}

/// `bpfscope profile -F 999 -p PID [EXTRA] SECONDS`, which must succeed:
/// its folded stacks and its stderr summary.
pub fn profile_pid(pid: u32, seconds: &str, extra: &[&str]) -> (Vec<Stack>, String) {
    let output = run(bpfscope()
        .args(["profile", "-F", "999", "-p", &pid.to_string()])
        .args(extra)
        .arg(seconds));
    assert!(output.status.success(), "{}", stderr(&output));
    (parse_folded(&stdout(&output)), stderr(&output))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One folded line: frames (comm first) and count.
#[derive(Debug, Clone)]
pub struct Stack {
    pub frames: Vec<String>,
    pub count: u64,
}

/// Parses folded text, failing on any malformed line.
pub fn parse_folded(text: &str) -> Vec<Stack> {
    text.lines()
        .map(|line| {
            let (stack, count) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no count in folded line {line:?}"));
            let count = count
                .parse()
                .unwrap_or_else(|_| panic!("bad count in folded line {line:?}"));
            let frames: Vec<String> = stack.split(';').map(str::to_string).collect();
            assert!(
                frames.iter().all(|f| !f.is_empty()),
                "empty frame in {line:?}"
            );
            Stack { frames, count }
        })
        .collect()
}

pub fn total(stacks: &[Stack]) -> u64 {
    stacks.iter().map(|s| s.count).sum()
}

/// Samples whose frames contain `chain` as consecutive frames.
pub fn count_with_chain(stacks: &[Stack], chain: &[&str]) -> u64 {
    stacks
        .iter()
        .filter(|s| {
            s.frames
                .windows(chain.len())
                .any(|w| w.iter().zip(chain).all(|(a, b)| a == b))
        })
        .map(|s| s.count)
        .sum()
}

/// cpu_split's 3:1 split between burn_three and burn_one under
/// `callers` (outermost first), measured from the stacks of `comm`:
/// ≥ 95 % of samples show the full chain, the share within `tolerance`.
pub fn assert_three_to_one_under(stacks: &[Stack], comm: &str, callers: &[&str], tolerance: f64) {
    let workload = for_comm(stacks, comm);
    let all = total(&workload);
    assert!(all >= 1000, "too few samples of {comm}: {all}");
    let chain = |leaf: &'static str| {
        let mut chain = callers.to_vec();
        chain.push(leaf);
        count_with_chain(&workload, &chain)
    };
    let (three, one) = (chain("burn_three"), chain("burn_one"));
    let full_chain = (three + one) as f64 / all as f64;
    assert!(
        full_chain >= 0.95,
        "only {:.1}% of {comm}'s samples show {callers:?};burn_*",
        full_chain * 100.0
    );
    let share = three as f64 / (three + one) as f64;
    assert!(
        (share - 0.75).abs() <= tolerance,
        "burn_three share {share:.3}, expected 0.75 ± {tolerance}"
    );
}

pub fn for_comm(stacks: &[Stack], comm: &str) -> Vec<Stack> {
    stacks
        .iter()
        .filter(|s| s.frames[0] == comm)
        .cloned()
        .collect()
}

/// Names of BPF programs currently attached through links (bpftool).
pub fn attached_program_names() -> Vec<String> {
    let output = Command::new("bpftool")
        .args(["-j", "link", "list"])
        .output()
        .expect("bpftool is installed");
    let links = String::from_utf8_lossy(&output.stdout).into_owned();
    let programs = Command::new("bpftool")
        .args(["-j", "prog", "list"])
        .output()
        .expect("bpftool");
    let programs = String::from_utf8_lossy(&programs.stdout).into_owned();
    // Map prog ids of links to names with a tiny scan of the JSON text.
    let ids: Vec<String> = links
        .split("\"prog_id\":")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_digit()).collect())
        .collect();
    ids.iter()
        .filter_map(|id| {
            let marker = format!("\"id\":{id},");
            let at = programs.find(&marker)?;
            let name_at = programs[at..].find("\"name\":\"")? + at + 8;
            let end = programs[name_at..].find('"')? + name_at;
            Some(programs[name_at..end].to_string())
        })
        .collect()
}

/// Waits until `condition` holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// Starts `bpfscope ARGS` with piped output and waits until it says it is tracing.
pub fn start_tracer(args: &[&str]) -> std::process::Child {
    let mut tracer = bpfscope()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tracer.stderr.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("tracing"), "{first}");
    tracer
}

/// Interrupts a tracer and returns its stdout.
pub fn stop_tracer(tracer: std::process::Child) -> String {
    assert_eq!(unsafe { kill(tracer.id() as i32, 2) }, 0);
    let output = tracer.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

/// A cgroup v2 directory of its own, removed when dropped (its processes
/// must have exited by then).
pub struct TestCgroup {
    pub dir: std::path::PathBuf,
    /// Its path relative to the cgroup2 mount: the `cgroup` label.
    pub label: String,
    /// Directories this guard created, outermost first.
    created: Vec<std::path::PathBuf>,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        TestCgroup::at(&format!("/bpfscope-{name}-{}", std::process::id()))
    }

    /// A cgroup at `label` (a path from the cgroup2 mount, each of whose
    /// components is created if missing and removed again when dropped).
    pub fn at(label: &str) -> Self {
        let mount = std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .expect("a cgroup2 mount (the test command mounts one)");
        let mut dir = std::path::PathBuf::from(&mount);
        let mut created = Vec::new();
        for component in label.split('/').filter(|c| !c.is_empty()) {
            dir.push(component);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                created.push(dir.clone());
            }
        }
        TestCgroup {
            dir,
            label: label.to_string(),
            created,
        }
    }

    /// A command that enters this cgroup, then runs `program ARGS`.
    pub fn command(&self, program: &std::path::Path, args: &[&str]) -> Command {
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\""])
            .arg(&self.dir)
            .arg(program)
            .args(args);
        command
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Exited tasks leave the cgroup asynchronously: rmdir may be busy briefly.
        for dir in self.created.iter().rev() {
            wait_for(Duration::from_secs(5), || {
                std::fs::remove_dir(dir).is_ok() || !dir.exists()
            });
        }
    }
}

/// A system user without a login, created once (useradd); (uid, gid).
pub fn system_user(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .expect("useradd (passwd) is installed");
        assert!(status.success() || id("-u").is_some(), "creating {name}");
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// `setpriv` ready to run a program as uid:gid with only `caps` (as
/// setpriv spells them: "+bpf,+perfmon"), inheritable and ambient, and no
/// new privileges; append the program and its arguments.
pub fn with_ambient_caps(uid: u32, gid: u32, caps: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        "--no-new-privs",
    ]);
    command
}

/// A real Prometheus server on 127.0.0.1:`port` with `config`, its data in
/// `data`; stopped when the guard drops.
pub fn start_prometheus(config: &Path, data: &Path, port: u16) -> Workload {
    Workload(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed by the test command"),
    )
}

/// Stops `serve` with SIGTERM; it must exit 0.
pub fn stop_serve(mut serve: Workload) {
    assert_eq!(unsafe { kill(serve.pid() as i32, 15) }, 0);
    let status = serve.0.wait().unwrap();
    assert!(status.success(), "SIGTERM should exit 0: {status}");
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs a path from 127.0.0.1:port; returns (status, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// Starts `serve` on a free loopback port and waits until it serves; the
/// guard kills it if a test fails before stopping it.
pub fn start_serve() -> (Workload, u16) {
    start_serve_with(&[])
}

/// `start_serve` with more flags. serve binds port 0 and the port comes
/// from its "serving on" line, so that line must give the port bound.
pub fn start_serve_with(flags: &[&str]) -> (Workload, u16) {
    use std::io::BufRead;
    let mut child = bpfscope()
        .args(["serve", "--hz", "99", "--listen", "127.0.0.1:0"])
        .args(flags)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let serve = Workload(child);
    let (port_sender, port_receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split_once("serving on ").map(|(_, rest)| rest) {
                let address = rest.split_whitespace().next().unwrap_or("");
                let port = address
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
                port_sender.send(port).ok();
            }
        }
    });
    let port = port_receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("serve never said where it serves")
        .expect("no port in serve's \"serving on\" line");
    assert_ne!(port, 0, "serve printed port 0, not the port it bound");
    // The port is bound before the probes are attached; requests are answered after
    // (with a web config, as unauthorized).
    let answering = if flags.contains(&"--web.config.file") {
        401
    } else {
        200
    };
    assert_eq!(get(port, "/").0, answering, "serve is not answering");
    (serve, port)
}

/// `promtool check metrics` accepts the exposition.
pub fn assert_promtool_valid(metrics: &str) {
    use std::io::Write as _;
    let check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .as_ref()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let verdict = check.wait_with_output().unwrap();
    assert!(
        verdict.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&verdict.stdout),
        String::from_utf8_lossy(&verdict.stderr)
    );
}

/// Runs `command` under GNU time: its output and its peak RSS in KiB.
pub fn run_measured(command: &mut Command) -> (Output, u64) {
    let report = tempfile_path("peak-rss");
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    let output = run(&mut timed);
    let peak = std::fs::read_to_string(&report)
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {}", stderr(&output)));
    std::fs::remove_file(&report).ok();
    (output, peak)
}

/// A fresh path under the test target's temporary directory.
pub fn tempfile_path(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_dir().join(format!("{name}-{}-{n}", std::process::id()))
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed by the test command");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            stderr(&output)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=bpfscope test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}
