//! End-to-end tests of stacks in container settings, with real mount and
//! PID namespaces, private roots, cgroups and a real debuginfod server made
//! by each test: binaries that exist only in a namespace, host files that
//! a container's file shadows, stripped binaries named from debug files
//! (build-ID directories, .gnu_debuglink, debuginfod), container identity
//! as the root frame and as labels, and symlinks that try to leave a root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The container tests hold the split to ±2 points.
const SPLIT_TOLERANCE: f64 = 0.02;
const FRAME_POINTERS: [&str; 2] = ["-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"];

/// cpu_split's functions under other names: a different file that a
/// container's file shadows at the same path.
fn host_variant_flags(extra: &[&'static str]) -> Vec<&'static str> {
    let mut flags = FRAME_POINTERS.to_vec();
    flags.extend([
        "-Dburn_three=host_three",
        "-Dburn_one=host_one",
        "-Drun_workload=host_workload",
    ]);
    flags.extend(extra);
    flags
}

/// cpu_split's ground truth, within this file's tolerance.
fn assert_cpu_split(stacks: &[Stack]) {
    assert_three_to_one_under(
        stacks,
        "cpu_split",
        &["main", "run_workload"],
        SPLIT_TOLERANCE,
    );
}

/// `go tool pprof -raw` of a profile: samples with their labels.
fn pprof_raw(path: &Path) -> String {
    let raw = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(path)
        .env("HOME", tmp_dir())
        .output()
        .expect("go (golang-go) is installed by the test command");
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    String::from_utf8_lossy(&raw.stdout).into_owned()
}

fn frames_named_like(stacks: &[Stack], prefix: &str) -> u64 {
    stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.starts_with(prefix)))
        .map(|s| s.count)
        .sum()
}

/// A scratch directory for one test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = tmp_dir().join(format!("containers-{name}-{}", std::process::id()));
    fs::remove_dir_all(&dir).ok();
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

fn succeed(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A stripped copy of `binary` and its debug file (objcopy --only-keep-debug).
fn stripped_with_debug_file(binary: &Path, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let stripped = dir.join(name);
    let debug = dir.join(format!("{name}.debug"));
    succeed(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(binary)
            .arg(&debug),
    );
    succeed(
        Command::new("strip")
            .arg("-s")
            .arg("-o")
            .arg(&stripped)
            .arg(binary),
    );
    (stripped, debug)
}

fn build_id(binary: &Path) -> String {
    let output = Command::new("readelf")
        .arg("-n")
        .arg(binary)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("Build ID: "))
        .expect("a build ID")
        .trim()
        .to_string()
}

/// Runs `script` in a new mount namespace (private propagation); the
/// script ends by exec'ing the workload, so the child's PID is the workload's.
fn in_mount_namespace(script: &str) -> Workload {
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    Workload(child)
}

#[test]
fn a_binary_that_exists_only_in_a_mount_namespace_is_named() {
    let _serial = serial();
    let dir = scratch("only-inside");
    let mount_point = dir.join("app");
    fs::create_dir_all(&mount_point).unwrap();
    let script = format!(
        "mount -t tmpfs none {m} && cp {bin} {m}/cpu_split && exec {m}/cpu_split 8",
        m = mount_point.display(),
        bin = workload("cpu_split").display()
    );
    let burner = in_mount_namespace(&script);
    assert!(
        !mount_point.join("cpu_split").exists(),
        "the binary must not exist on the host"
    );
    let (stacks, _) = profile_pid(burner.pid(), "4", &[]);
    assert_cpu_split(&stacks);
}

#[test]
fn a_container_file_that_shadows_a_host_file_is_named_from_its_own_contents() {
    let _serial = serial();
    let dir = scratch("shadow");
    let mount_point = dir.join("app");
    fs::create_dir_all(&mount_point).unwrap();
    // The host's file at the same path: same code, other names.
    let host_file = workload_variant("cpu_split", "_host", &host_variant_flags(&[]));
    copy(&host_file, &mount_point.join("cpu_split"));
    let script = format!(
        "mount -t tmpfs none {m} && cp {bin} {m}/cpu_split && exec {m}/cpu_split 8",
        m = mount_point.display(),
        bin = workload("cpu_split").display()
    );
    let burner = in_mount_namespace(&script);
    let (stacks, _) = profile_pid(burner.pid(), "4", &[]);
    assert_eq!(
        frames_named_like(&stacks, "host_"),
        0,
        "frames named from the host's file: {stacks:?}"
    );
    assert_cpu_split(&stacks);
}

/// The launcher and library of the private-root tests: main ->
/// split_main (in libsplit.so) -> run_workload -> burn_*.
struct SplitLibrary {
    launcher: PathBuf,
    library: PathBuf,
}

/// Builds cpu_split.c as libsplit.so (with `flags`) and a launcher whose
/// library path is `library_dir`.
fn build_split_library(
    dir: &Path,
    suffix: &str,
    library_dir: &str,
    flags: &[&str],
) -> SplitLibrary {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/cpu_split.c");
    let library = dir.join(format!("libsplit{suffix}.so"));
    succeed(
        Command::new("clang")
            .args([
                "-O2",
                "-g",
                "-shared",
                "-fPIC",
                "-fno-optimize-sibling-calls",
                "-Dmain=split_main",
            ])
            .args(flags)
            .arg("-o")
            .arg(&library)
            .arg(&source),
    );
    let launcher_source = dir.join("launcher.c");
    fs::write(
        &launcher_source,
        "int split_main(int, char **);\nint main(int argc, char **argv) { return split_main(argc, argv); }\n",
    )
    .unwrap();
    let launcher = dir.join(format!("launcher{suffix}"));
    succeed(
        Command::new("clang")
            .args(["-O2", "-g", "-fno-optimize-sibling-calls"])
            .args(FRAME_POINTERS)
            .arg("-o")
            .arg(&launcher)
            .arg(&launcher_source)
            .arg(format!("-L{}", dir.display()))
            .arg(format!("-lsplit{suffix}"))
            .arg(format!("-Wl,-rpath,{library_dir}")),
    );
    SplitLibrary { launcher, library }
}

/// A private root holding the dynamic loader, libc, `app` and
/// `library_dir/libsplit.so`; the host gets `host_library` at the same
/// library path (removed when dropped).
struct PrivateRoot {
    root: PathBuf,
    host_library_dir: PathBuf,
}

impl PrivateRoot {
    fn new(
        name: &str,
        library_dir: &str,
        app: &SplitLibrary,
        library: &Path,
        host_library: &Path,
    ) -> Self {
        let root = scratch(name);
        for (from, to) in [
            ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
            (
                "/lib/x86_64-linux-gnu/libc.so.6",
                "lib/x86_64-linux-gnu/libc.so.6",
            ),
        ] {
            let target = root.join(to);
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            copy(&fs::canonicalize(from).unwrap(), &target);
        }
        let inside = root.join(&library_dir[1..]);
        fs::create_dir_all(&inside).unwrap();
        copy(library, &inside.join("libsplit.so"));
        copy(&app.launcher, &root.join("app"));
        let host_library_dir = PathBuf::from(library_dir);
        fs::create_dir_all(&host_library_dir).unwrap();
        copy(host_library, &host_library_dir.join("libsplit.so"));
        PrivateRoot {
            root,
            host_library_dir,
        }
    }

    fn start(&self, seconds: &str) -> Workload {
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(format!("--root={}", self.root.display()))
            .args(["/app", seconds])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        Workload(child)
    }
}

impl Drop for PrivateRoot {
    fn drop(&mut self) {
        fs::remove_dir_all(&self.host_library_dir).ok();
    }
}

/// The launcher and the container's libsplit.so (built with `own_flags`),
/// and the host's different libsplit.so (built with `host_flags`).
fn launcher_and_libraries(
    dir: &Path,
    library_dir: &str,
    own_flags: &[&'static str],
    host_flags: &[&'static str],
) -> (SplitLibrary, PathBuf, PathBuf) {
    let own = build_split_library(dir, "", library_dir, own_flags);
    let host = build_split_library(dir, "_host", library_dir, host_flags);
    let own_library = own.library.clone();
    (own, own_library, host.library)
}

#[test]
fn a_private_root_with_its_own_library_is_named_from_that_library() {
    let _serial = serial();
    let library_dir = format!("/opt/bpfscope-root-{}", std::process::id());
    let dir = scratch("root-build");
    let (app, own, host) = launcher_and_libraries(
        &dir,
        &library_dir,
        &FRAME_POINTERS,
        &host_variant_flags(&[]),
    );
    let root = PrivateRoot::new("root", &library_dir, &app, &own, &host);
    let burner = root.start("8");
    let (stacks, _) = profile_pid(burner.pid(), "4", &[]);
    assert_eq!(
        frames_named_like(&stacks, "host_"),
        0,
        "frames named from the host's library: {stacks:?}"
    );
    assert_three_to_one_under(
        &stacks,
        "app",
        &["main", "split_main", "run_workload"],
        SPLIT_TOLERANCE,
    );
}

#[test]
fn a_symlink_inside_a_root_is_not_followed_to_the_host() {
    let _serial = serial();
    const BUILD_ID: &str = "0xb0f5c0de00112233445566778899aabbccddeeff";
    let library_dir = format!("/opt/bpfscope-escape-{}", std::process::id());
    let dir = scratch("escape-build");
    let id_flag: &'static str = Box::leak(format!("-Wl,--build-id={BUILD_ID}").into_boxed_str());
    // Only split_main is exported: a stripped copy has no names for the rest.
    let exports = dir.join("exports.map");
    fs::write(&exports, "{ global: split_main; local: *; };\n").unwrap();
    let exports_flag: &'static str =
        Box::leak(format!("-Wl,--version-script={}", exports.display()).into_boxed_str());
    let mut own_flags = FRAME_POINTERS.to_vec();
    own_flags.extend([id_flag, exports_flag]);
    let (app, own, host) = launcher_and_libraries(
        &dir,
        &library_dir,
        &own_flags,
        &host_variant_flags(&[id_flag, exports_flag]),
    );
    // The container's library is stripped; the host holds a debug file
    // with the same build ID (and the host's names) at an absolute path
    // that a symlink in the container's build-ID directory points to.
    let (stripped, _) = stripped_with_debug_file(&own, &dir, "libsplit-stripped.so");
    let (_, wrong_debug) = stripped_with_debug_file(&host, &dir, "libsplit-host.so");
    let host_target = PathBuf::from(format!("/tmp/bpfscope-escape-{}.debug", std::process::id()));
    copy(&wrong_debug, &host_target);
    let root = PrivateRoot::new("escape", &library_dir, &app, &stripped, &host);
    let id = build_id(&stripped);
    assert_eq!(id, BUILD_ID[2..]);
    let link_dir = root.root.join("usr/lib/debug/.build-id").join(&id[..2]);
    fs::create_dir_all(&link_dir).unwrap();
    std::os::unix::fs::symlink(&host_target, link_dir.join(format!("{}.debug", &id[2..]))).unwrap();

    let burner = root.start("6");
    let (stacks, summary) = profile_pid(burner.pid(), "3", &[]);
    fs::remove_file(&host_target).ok();
    assert!(total(&for_comm(&stacks, "app")) > 500, "{summary}");
    assert_eq!(
        frames_named_like(&stacks, "host_"),
        0,
        "the symlink was followed to the host's file: {stacks:?}"
    );
    assert_eq!(
        count_with_chain(&stacks, &["burn_three"]),
        0,
        "a stripped library without a reachable debug file cannot name its functions"
    );
}

#[test]
fn a_target_in_a_pid_namespace_is_profiled_by_its_host_pid() {
    let _serial = serial();
    let binary = workload("cpu_split");
    let namespace = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(&binary)
        .arg("8")
        .spawn()
        .unwrap();
    let namespace = Workload(namespace);
    std::thread::sleep(Duration::from_millis(400));
    let children =
        fs::read_to_string(format!("/proc/{0}/task/{0}/children", namespace.pid())).unwrap();
    let host_pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let pprof = tmp_dir().join(format!("pidns-{}.pb.gz", std::process::id()));
    let output = run(bpfscope()
        .args(["profile", "-F", "999", "-p", &host_pid.to_string(), "-o"])
        .arg(&pprof)
        .arg("3"));
    let summary = stderr(&output);
    assert!(output.status.success(), "{summary}");
    assert!(
        summary.contains("1 in other PID namespaces"),
        "the summary says the target is in another PID namespace: {summary}"
    );
    let raw = pprof_raw(&pprof);
    assert!(
        raw.contains("namespace_pid:[1]"),
        "pprof samples carry the in-namespace PID: {raw}"
    );
    assert!(raw.contains(&format!("pid:[{host_pid}]")), "{raw}");
    let (stacks, _) = profile_pid(host_pid, "3", &[]);
    assert_cpu_split(&stacks);
}

#[test]
fn a_process_that_exits_inside_a_mount_namespace_keeps_its_names() {
    let _serial = serial();
    let dir = scratch("exits");
    let mount_point = dir.join("app");
    fs::create_dir_all(&mount_point).unwrap();
    let script = format!(
        "mount -t tmpfs none {m} && cp {bin} {m}/short_burn && {m}/short_burn 700 && sleep 1",
        m = mount_point.display(),
        bin = workload("short_burn").display()
    );
    let output = run(bpfscope()
        .args([
            "profile",
            "-F",
            "999",
            "--",
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(&script));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = for_comm(&parse_folded(&stdout(&output)), "short_burn");
    let all = total(&stacks);
    assert!(all >= 400, "expected ~700 samples, got {all}");
    let named = count_with_chain(&stacks, &["short_burn_spin"]);
    assert!(
        named as f64 >= 0.95 * all as f64,
        "only {named} of {all} samples name short_burn_spin"
    );
}

#[test]
fn a_stripped_binary_is_named_through_the_build_id_directory_of_its_root() {
    let _serial = serial();
    let dir = scratch("build-id");
    let (stripped, debug) = stripped_with_debug_file(&workload("cpu_split"), &dir, "cpu_split");
    let id = build_id(&stripped);
    fs::create_dir_all("/usr/lib/debug").unwrap();
    // Only the process's mount namespace has the debug file.
    let script = format!(
        "mount -t tmpfs none /usr/lib/debug && mkdir -p /usr/lib/debug/.build-id/{d} && cp {debug} /usr/lib/debug/.build-id/{d}/{rest}.debug && exec {bin} 8",
        d = &id[..2],
        rest = &id[2..],
        debug = debug.display(),
        bin = stripped.display()
    );
    let burner = in_mount_namespace(&script);
    assert!(!Path::new(&format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ))
    .exists());
    let (stacks, summary) = profile_pid(burner.pid(), "4", &[]);
    assert!(summary.contains("through build-ID directory"), "{summary}");
    assert_cpu_split(&stacks);
}

#[test]
fn a_stripped_binary_is_named_through_its_debug_link() {
    let _serial = serial();
    let dir = scratch("debuglink");
    let (stripped, debug) = stripped_with_debug_file(&workload("cpu_split"), &dir, "cpu_split");
    succeed(
        Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&stripped),
    );
    // gdb's places: next to the binary, in .debug/ beside it, under /usr/lib/debug.
    let dot_debug = dir.join(".debug");
    fs::create_dir_all(&dot_debug).unwrap();
    fs::rename(&debug, dot_debug.join("cpu_split.debug")).unwrap();
    let burner = Workload::start(&stripped, &["8"]);
    let (stacks, summary) = profile_pid(burner.pid(), "4", &[]);
    assert!(summary.contains("through .gnu_debuglink"), "{summary}");
    assert_cpu_split(&stacks);

    // A debug file whose contents differ (CRC-32 and build ID) is ignored and counted.
    let other = workload_variant("cpu_split", "_host", &host_variant_flags(&[]));
    let (_, wrong) = stripped_with_debug_file(&other, &dir, "other");
    fs::rename(&wrong, dot_debug.join("cpu_split.debug")).unwrap();
    let burner = Workload::start(&stripped, &["6"]);
    let (stacks, summary) = profile_pid(burner.pid(), "2", &[]);
    assert!(summary.contains("candidates ignored"), "{summary}");
    assert_eq!(frames_named_like(&stacks, "host_"), 0, "{stacks:?}");
}

/// Debian's debuginfod serving `dir`, listening only inside a network
/// namespace of its own (its loopback is the only interface), where the
/// profiler runs too; killed and removed when dropped.
struct DebuginfodServer {
    namespace: String,
    server: Workload,
    port: u16,
}

impl DebuginfodServer {
    fn start(dir: &Path, build_id: &str) -> Self {
        let namespace = format!("bpfscope-dbg-{}", std::process::id());
        // A namespace left by an interrupted run; usually there is none.
        Command::new("ip")
            .args(["netns", "del", &namespace])
            .stderr(Stdio::null())
            .status()
            .ok();
        succeed(Command::new("ip").args(["netns", "add", &namespace]));
        succeed(
            Command::new("ip").args(["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"]),
        );
        let port = 8002;
        let database = dir.join("debuginfod.sqlite");
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &namespace,
                "debuginfod",
                "-F",
                "-p",
                &port.to_string(),
                "-t",
                "0",
                "-g",
                "0",
                "-d",
            ])
            .arg(&database)
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("debuginfod is installed by the test command");
        let server = DebuginfodServer {
            namespace,
            server: Workload(server),
            port,
        };
        let url = format!("http://127.0.0.1:{port}/buildid/{build_id}/debuginfo");
        let indexed = wait_for(Duration::from_secs(30), || {
            server
                .exec(&["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .stdout
                .starts_with(b"200")
        });
        assert!(indexed, "debuginfod never served {url}");
        server
    }

    fn exec(&self, command: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .args(command)
            .output()
            .unwrap()
    }
}

impl Drop for DebuginfodServer {
    fn drop(&mut self) {
        self.server.0.kill().ok();
        self.server.0.wait().ok();
        Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status()
            .ok();
    }
}

/// A stripped cpu_split whose debug file only a debuginfod server (started
/// in `dir`) has: (scratch dir, the binary, its build ID, the server).
fn stripped_binary_and_its_server(name: &str) -> (PathBuf, PathBuf, String, DebuginfodServer) {
    let dir = scratch(name);
    let served = dir.join("served");
    fs::create_dir_all(&served).unwrap();
    let (stripped, debug) = stripped_with_debug_file(&workload("cpu_split"), &dir, "cpu_split");
    fs::rename(&debug, served.join("cpu_split.debug")).unwrap();
    let id = build_id(&stripped);
    let server = DebuginfodServer::start(&served, &id);
    (dir, stripped, id, server)
}

#[test]
fn a_stripped_binary_is_named_through_debuginfod() {
    let _serial = serial();
    let (dir, stripped, id, server) = stripped_binary_and_its_server("debuginfod");
    let cache = dir.join("cache");

    let burner = Workload::start(&stripped, &["20"]);
    let url = format!("http://127.0.0.1:{}", server.port);
    let profile = |cache: &Path| {
        let output = Command::new("ip")
            .args(["netns", "exec", &server.namespace])
            .arg(env!("CARGO_BIN_EXE_bpfscope"))
            .arg("-v")
            .args([
                "profile",
                "-F",
                "999",
                "-p",
                &burner.pid().to_string(),
                "--debuginfod",
                &url,
                "6", // about 6000 samples: ±2 points is 3.6 standard deviations
            ])
            .env("DEBUGINFOD_CACHE_PATH", cache)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        (parse_folded(&stdout(&output)), stderr(&output))
    };
    let (stacks, summary) = profile(&cache);
    assert!(summary.contains("1 downloaded"), "{summary}");
    assert_cpu_split(&stacks);
    assert!(
        cache.join(&id).join("debuginfo").is_file(),
        "kept in elfutils' cache layout"
    );
    // A second run reads the cache.
    let (stacks, summary) = profile(&cache);
    assert!(summary.contains("1 from cache"), "{summary}");
    assert_cpu_split(&stacks);
}

/// nginx in the debuginfod server's namespace: TLS on 8443 with a
/// certificate for 127.0.0.1 from the test's own CA (`dir/ca.crt`), proxied
/// to the server; stopped when dropped.
struct TlsProxy {
    _nginx: Workload,
}

impl TlsProxy {
    const PORT: u16 = 8443;

    fn start(server: &DebuginfodServer, dir: &Path, build_id: &str) -> Self {
        make_certificates(dir);
        let config = dir.join("nginx.conf");
        let lines = [
            "daemon off;".to_string(),
            "master_process off;".to_string(), // one process: killing it stops it all
            "user root;".to_string(),
            format!("pid {}/nginx.pid;", dir.display()),
            format!("error_log {}/nginx.log;", dir.display()),
            "events {}".to_string(),
            "http {".to_string(),
            "access_log off;".to_string(),
            format!("client_body_temp_path {};", dir.display()),
            format!("proxy_temp_path {}/proxy;", dir.display()),
            format!("server {{ listen 127.0.0.1:{} ssl;", Self::PORT),
            format!("ssl_certificate {}/server.crt;", dir.display()),
            format!("ssl_certificate_key {}/server.key;", dir.display()),
            format!(
                "location / {{ proxy_pass http://127.0.0.1:{}; }} }}",
                server.port
            ),
            "}".to_string(),
        ];
        fs::write(&config, lines.join("\n")).unwrap();
        let nginx = Command::new("ip")
            .args(["netns", "exec", &server.namespace, "nginx", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed by the test command");
        let proxy = TlsProxy {
            _nginx: Workload(nginx),
        };
        let url = format!(
            "https://127.0.0.1:{}/buildid/{build_id}/debuginfo",
            Self::PORT
        );
        let ca = dir.join("ca.crt");
        let serving = wait_for(Duration::from_secs(10), || {
            server
                .exec(&[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--cacert",
                    ca.to_str().unwrap(),
                    &url,
                ])
                .stdout
                .starts_with(b"200")
        });
        assert!(serving, "nginx never served {url}");
        proxy
    }
}

#[test]
fn a_stripped_binary_is_named_through_https_debuginfod_and_an_unknown_ca_is_refused() {
    let _serial = serial();
    let (dir, stripped, id, server) = stripped_binary_and_its_server("debuginfod-https");
    let _proxy = TlsProxy::start(&server, &dir, &id);
    let burner = Workload::start(&stripped, &["30"]);
    let url = format!("https://127.0.0.1:{}", TlsProxy::PORT);
    // DEBUGINFOD_URLS, as Debian's libdebuginfod-common sets it.
    let profile = |cache: &str, ca: Option<PathBuf>| {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &server.namespace])
            .arg(env!("CARGO_BIN_EXE_bpfscope"))
            .arg("-v")
            .args(["profile", "-F", "999", "-p", &burner.pid().to_string()])
            .args(["--debuginfod-timeout", "5", "4"])
            .env("DEBUGINFOD_URLS", &url)
            .env("DEBUGINFOD_CACHE_PATH", dir.join(cache))
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null());
        if let Some(ca) = ca {
            command.env("SSL_CERT_FILE", ca);
        }
        let started = Instant::now();
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        (
            parse_folded(&stdout(&output)),
            stderr(&output),
            started.elapsed(),
        )
    };
    // The test's CA through SSL_CERT_FILE: named.
    let (stacks, summary, _) = profile("cache", Some(dir.join("ca.crt")));
    assert!(summary.contains("1 downloaded"), "{summary}");
    assert_cpu_split(&stacks);
    // The system's CAs do not know the test's: refused, counted, and the
    // profile is written without waiting past the bound.
    let (stacks, summary, took) = profile("cache-unknown-ca", None);
    assert!(
        summary.contains("1 failed") && summary.contains("certificate"),
        "{summary}"
    );
    assert!(total(&stacks) > 1000, "the profile is written");
    assert!(took < Duration::from_secs(4 + 5 + 3), "took {took:?}");
    assert_eq!(
        frames_named_like(&stacks, "burn_"),
        0,
        "named without its debug file"
    );
}

#[test]
fn an_unreachable_debuginfod_costs_a_summary_line_not_the_profile() {
    let _serial = serial();
    let dir = scratch("debuginfod-down");
    let (stripped, _) = stripped_with_debug_file(&workload("cpu_split"), &dir, "cpu_split");
    let burner = Workload::start(&stripped, &["8"]);
    // Nothing listening, and a server that never answers.
    let silent = HostileDebuginfod::start(HostileAnswer::Nothing);
    for url in [
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", silent.port),
    ] {
        let started = Instant::now();
        let output = run(bpfscope()
            .args([
                "profile",
                "-F",
                "99",
                "-p",
                &burner.pid().to_string(),
                "--debuginfod",
                &url,
            ])
            .args(["--debuginfod-timeout", "2", "2"])
            .env("DEBUGINFOD_CACHE_PATH", dir.join("cache")));
        let elapsed = started.elapsed();
        let summary = stderr(&output);
        assert!(output.status.success(), "{summary}");
        assert!(
            summary.contains("debuginfod: 1 requested") && summary.contains("1 failed"),
            "{summary}"
        );
        assert!(
            total(&parse_folded(&stdout(&output))) > 50,
            "the profile is written"
        );
        assert!(
            elapsed < Duration::from_secs(2 + 2 + 3),
            "output waited {elapsed:?}, more than the 2 s run plus the 2 s debuginfod bound"
        );
    }
}

const CONTAINER_ID: &str = "c0ffee0000000000000000000000000000000000000000000000000000000001";
const POD_UID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

/// Cgroups named the way Docker, containerd (systemd driver, in a pod) and
/// CRI-O name theirs: (cgroup, the process name to run there, the root
/// frame expected), under a parent removed after them.
struct RuntimeCgroups {
    members: Vec<(TestCgroup, &'static str, String)>,
    _parent: TestCgroup,
}

fn runtime_cgroups() -> RuntimeCgroups {
    let test = format!("bpfscope-test-{}.slice", std::process::id());
    let parent = TestCgroup::at(&format!("/{test}"));
    let id = |last: char| format!("{}{last}", &CONTAINER_ID[..63]);
    let pod = POD_UID.replace('-', "_");
    let members = vec![
        (
            TestCgroup::at(&format!("/{test}/docker-{}.scope", id('1'))),
            "app_docker",
            format!("docker:{}", &id('1')[..12]),
        ),
        (
            TestCgroup::at(&format!(
                "/{test}/kubepods-burstable-pod{pod}.slice/cri-containerd-{}.scope",
                id('2')
            )),
            "app_containerd",
            format!("containerd:{}", &id('2')[..12]),
        ),
        (
            TestCgroup::at(&format!("/{test}/crio-{}.scope", id('3'))),
            "app_crio",
            format!("cri-o:{}", &id('3')[..12]),
        ),
    ];
    RuntimeCgroups {
        members,
        _parent: parent,
    }
}

#[test]
fn group_by_container_roots_each_runtimes_containers() {
    let _serial = serial();
    let dir = scratch("group-by");
    let cgroups = runtime_cgroups();
    let mut burners = Vec::new();
    for (cgroup, name, _) in &cgroups.members {
        let binary = dir.join(name);
        copy(&workload("cpu_split"), &binary);
        burners.push(Workload(cgroup.command(&binary, &["9"]).spawn().unwrap()));
    }
    std::thread::sleep(Duration::from_millis(400));
    let pids: Vec<String> = burners.iter().map(|b| b.pid().to_string()).collect();
    let pprof = dir.join("grouped.pb.gz");
    let output = run(bpfscope()
        .args(["profile", "-F", "99", "--group-by", "container", "-p"])
        .arg(pids.join(","))
        .arg("-o")
        .arg(&pprof)
        .arg("2"));
    assert!(output.status.success(), "{}", stderr(&output));
    // pprof: the container is the root frame and a label.
    let raw = pprof_raw(&pprof);
    for (index, (_, _, root)) in cgroups.members.iter().enumerate() {
        let id = format!("{}{}", &CONTAINER_ID[..63], index + 1);
        assert!(raw.contains(&format!("container_id:[{id}]")), "{raw}");
        assert!(raw.contains(root.as_str()), "root frame {root}: {raw}");
    }
    assert!(raw.contains(&format!("pod_uid:[{POD_UID}]")), "{raw}");
    let output = run(bpfscope().args([
        "profile",
        "-F",
        "99",
        "--group-by",
        "container",
        "-p",
        &pids.join(","),
        "3",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    for (_, name, root) in &cgroups.members {
        let mine: Vec<&Stack> = stacks
            .iter()
            .filter(|s| s.frames.get(1) == Some(&name.to_string()))
            .collect();
        assert!(
            total(&mine.iter().map(|s| (*s).clone()).collect::<Vec<_>>()) > 50,
            "{name}: {stacks:?}"
        );
        assert!(
            mine.iter().all(|s| &s.frames[0] == root),
            "{name} must be rooted at {root}: {mine:?}"
        );
    }
    drop(burners);
}

#[test]
fn serve_labels_container_ids_and_pods() {
    let _serial = serial();
    let cgroups = runtime_cgroups();
    let (serve, port) = start_serve_with(&["--metrics", "runqlat", "--cgroup-labels"]);
    // Two burners per cgroup on two CPUs wait on run queues.
    let mut burners = Vec::new();
    for (cgroup, _, _) in &cgroups.members {
        for _ in 0..2 {
            burners.push(Workload(
                cgroup
                    .command(&workload("cpu_split"), &["3"])
                    .spawn()
                    .unwrap(),
            ));
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let (code, metrics) = get(port, "/metrics");
    drop(burners);
    drop(serve);
    assert_eq!(code, 200);
    assert_promtool_valid(&metrics);
    for (index, (cgroup, _, _)) in cgroups.members.iter().enumerate() {
        let id = format!("{}{}", &CONTAINER_ID[..63], index + 1);
        let series = metrics
            .lines()
            .find(|l| l.contains(&format!("cgroup=\"{}\"", cgroup.label)))
            .unwrap_or_else(|| panic!("no series for {}: {metrics}", cgroup.label));
        assert!(
            series.contains(&format!("container_id=\"{id}\"")),
            "{series}"
        );
        assert_eq!(
            series.contains(&format!("pod_uid=\"{POD_UID}\"")),
            index == 1,
            "only the containerd cgroup is in a pod: {series}"
        );
    }
}

#[test]
fn a_binary_deleted_and_replaced_while_it_runs_is_named_from_the_running_file() {
    let _serial = serial();
    let dir = scratch("upgrade");
    let path = dir.join("cpu_split");
    copy(&workload("cpu_split"), &path);
    let burner = Workload::start(&path, &["8"]);
    // An "upgrade": the file is removed and another one takes its path.
    fs::remove_file(&path).unwrap();
    copy(
        &workload_variant("cpu_split", "_host", &host_variant_flags(&[])),
        &path,
    );
    let maps = fs::read_to_string(format!("/proc/{}/maps", burner.pid())).unwrap();
    assert!(maps.contains("cpu_split (deleted)"), "{maps}");
    let (stacks, _) = profile_pid(burner.pid(), "4", &[]);
    assert_eq!(frames_named_like(&stacks, "host_"), 0, "{stacks:?}");
    assert_cpu_split(&stacks);
}

/// What a misbehaving debuginfod server answers every request with.
#[derive(Clone, Copy, PartialEq)]
enum HostileAnswer {
    /// Nothing at all: the connection stays open.
    Nothing,
    /// Another ELF file, with symbols but another build ID.
    WrongFile,
    /// A 10 MB answer of which only the first 64 KiB ever come.
    Stall,
}

/// A debuginfod server on loopback that answers wrongly (no real server
/// does; the client must not keep what it sends).
struct HostileDebuginfod {
    port: u16,
}

impl HostileDebuginfod {
    fn start(answer: HostileAnswer) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let wrong = fs::read(workload("offcpu_blocks")).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(16) {
                let Ok(mut stream) = stream else { continue };
                let wrong = wrong.clone();
                std::thread::spawn(move || {
                    let mut request = [0u8; 4096];
                    let _request = stream.read(&mut request);
                    match answer {
                        HostileAnswer::Nothing => {}
                        HostileAnswer::WrongFile => {
                            write!(
                                stream,
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                                wrong.len()
                            )
                            .ok();
                            stream.write_all(&wrong).ok();
                        }
                        HostileAnswer::Stall => {
                            stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
                                .ok();
                            stream.write_all(&wrong[..wrong.len().min(64 << 10)]).ok();
                        }
                    }
                    std::thread::sleep(Duration::from_secs(20));
                });
            }
        });
        HostileDebuginfod { port }
    }
}

#[test]
fn a_debuginfod_that_sends_the_wrong_file_or_stalls_leaves_nothing_in_the_cache() {
    let _serial = serial();
    let dir = scratch("debuginfod-hostile");
    let (stripped, _) = stripped_with_debug_file(&workload("cpu_split"), &dir, "cpu_split");
    let id = build_id(&stripped);
    let burner = Workload::start(&stripped, &["8"]);
    let cache = dir.join("cache").join("debuginfod_client");
    for answer in [HostileAnswer::WrongFile, HostileAnswer::Stall] {
        let server = HostileDebuginfod::start(answer);
        let output = run(bpfscope()
            .args(["profile", "-F", "99", "-p", &burner.pid().to_string()])
            .arg("--debuginfod")
            .arg(format!("http://127.0.0.1:{}", server.port))
            .args(["--debuginfod-timeout", "2", "2"])
            .env("DEBUGINFOD_CACHE_PATH", &cache));
        let summary = stderr(&output);
        assert!(output.status.success(), "{summary}");
        if answer == HostileAnswer::WrongFile {
            assert!(summary.contains("not the debug file of"), "{summary}");
        } else {
            assert!(
                summary.contains("abandoned") || summary.contains("failed"),
                "{summary}"
            );
        }
        let left: Vec<_> = fs::read_dir(cache.join(&id))
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        assert!(left.is_empty(), "left in the cache: {left:?}\n{summary}");
    }
    for made in [dir.join("cache"), cache.clone(), cache.join(&id)] {
        assert_eq!(
            std::os::unix::fs::MetadataExt::mode(&fs::metadata(&made).unwrap()) & 0o777,
            0o700,
            "{}",
            made.display()
        );
    }
}
