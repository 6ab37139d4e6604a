//! Every error a user can cause in `bpfscope profile` and `bpfscope offcpu`
//! gives one clear line on stderr and a non-zero exit, never a panic.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::*;

/// The stack tools; errors they share are checked for each.
const TOOLS: [&str; 2] = ["profile", "offcpu"];
/// Every tool, for the errors all of them share.
const ALL_TOOLS: [&str; 7] = [
    "profile",
    "offcpu",
    "runqlat",
    "syscount",
    "biolatency",
    "funclatency",
    "fslatency",
];

#[test]
fn funclatency_bad_binary_or_function() {
    assert_user_error(
        &tool("funclatency", &["/no/such/binary:f"]),
        "no such binary: /no/such/binary",
    );
    assert_user_error(
        &tool("funclatency", &["/bin/true:no_such_function_here"]),
        "cannot attach to no_such_function_here in /bin/true",
    );
    assert_user_error(
        &tool("funclatency", &["just_a_function"]),
        "give BINARY:FUNCTION, or one -p PID",
    );
    assert_user_error(
        &tool("funclatency", &["-p", "999999999", "f"]),
        "no such process: PID 999999999",
    );
}

fn assert_user_error(output: &Output, expected: &str) {
    let text = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit status for {expected:?}: {text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {text}");
    assert!(lines[0].starts_with("bpfscope: error: "), "{text}");
    assert!(
        lines[0].contains(expected),
        "expected {expected:?} in {text}"
    );
}

fn tool(name: &str, args: &[&str]) -> Output {
    run(bpfscope().arg(name).args(args))
}

/// `bpfscope` run as root inside a private mount namespace after `setup`.
fn in_mount_namespace(setup: &str, args: &str) -> Output {
    let script = format!("{setup} && exec {} {args}", env!("CARGO_BIN_EXE_bpfscope"));
    run(Command::new("unshare").args(["-m", "sh", "-c", &script]))
}

#[test]
fn not_root() {
    // A copy that the unprivileged user can surely execute.
    let copy = std::env::temp_dir().join(format!("bpfscope-unprivileged-{}", std::process::id()));
    fs::copy(env!("CARGO_BIN_EXE_bpfscope"), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    for name in ALL_TOOLS {
        let output = run(Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&copy)
            .args([name, "1"]));
        assert_user_error(
            &output,
            "needs root, or the capabilities CAP_BPF and CAP_PERFMON",
        );
    }
    fs::remove_file(&copy).ok();
}

#[test]
fn no_kernel_btf() {
    for name in ALL_TOOLS {
        let output =
            in_mount_namespace("mount -t tmpfs none /sys/kernel/btf", &format!("{name} 1"));
        assert_user_error(&output, "exposes no BTF");
    }
}

#[test]
fn stack_tools_need_no_tracefs() {
    let _serial = serial();
    // These tools use perf events and raw/BTF tracepoints only.
    let hide_tracefs =
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
                        ! test -d /sys/kernel/tracing/events";
    for name in TOOLS {
        let output = in_mount_namespace(hide_tracefs, &format!("{name} -- sleep 0.5"));
        assert!(
            output.status.success(),
            "{name} without tracefs: {}",
            stderr(&output)
        );
    }
}

#[test]
fn no_such_pid_or_thread() {
    for name in ALL_TOOLS {
        assert_user_error(
            &tool(name, &["-p", "999999999", "1"]),
            "no such process: PID 999999999",
        );
    }
    assert_user_error(
        &tool("profile", &["-L", "999999999", "1"]),
        "no such thread: TID 999999999",
    );
    assert_user_error(
        &tool("offcpu", &["-t", "999999999", "1"]),
        "no such thread: TID 999999999",
    );
}

#[test]
fn thread_id_given_as_pid() {
    let _serial = serial();
    // A thread of this very test process.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        tx.send(unsafe { libc_gettid() }).unwrap();
        done_rx.recv().ok();
    });
    let tid = rx.recv().unwrap();
    let outputs: Vec<Output> = TOOLS
        .iter()
        .map(|name| tool(name, &["-p", &tid.to_string(), "1"]))
        .collect();
    done_tx.send(()).unwrap();
    thread.join().unwrap();
    for output in &outputs {
        assert_user_error(
            output,
            &format!("{tid} is a thread of process {}", std::process::id()),
        );
    }
}

#[test]
fn no_such_cgroup() {
    for name in ALL_TOOLS {
        assert_user_error(
            &tool(name, &["--cgroup", "no/such/group", "1"]),
            "no such cgroup",
        );
        assert_user_error(
            &tool(name, &["--cgroup", "/tmp", "1"]),
            "is not a cgroup v2 directory",
        );
    }
}

#[test]
fn command_not_found() {
    for name in TOOLS {
        assert_user_error(
            &tool(name, &["--", "no-such-command-bpfscope"]),
            "command not found: no-such-command-bpfscope",
        );
    }
}

#[test]
fn bad_frequency() {
    assert_user_error(&tool("profile", &["-F", "0", "1"]), "bad frequency 0 Hz");
    assert_user_error(
        &tool("profile", &["-F", "100000000", "1"]),
        "bad frequency 100000000 Hz",
    );
}

#[test]
fn bad_duration_cpu_and_bounds() {
    for name in TOOLS {
        assert_user_error(&tool(name, &["0"]), "bad duration 0");
        assert_user_error(
            &tool(name, &["1", "--", "true"]),
            "either DURATION or -- COMMAND",
        );
    }
    assert_user_error(&tool("profile", &["-C", "4096", "1"]), "no such CPU: 4096");
    assert_user_error(
        &tool("offcpu", &["-m", "100", "-M", "10", "1"]),
        "-M 10 is below -m 100",
    );
    assert_user_error(&tool("runqlat", &["0"]), "bad interval 0");
    assert_user_error(&tool("runqlat", &["1", "0"]), "bad count 0");
    assert_user_error(
        &tool("fslatency", &["-t", "a-very-long-fstype"]),
        "bad filesystem type",
    );
    assert_user_error(&tool("fsslower", &["nan"]), "bad MIN_MS");
    assert_user_error(
        &tool("fsslower", &["-p", "999999999"]),
        "no such process: PID 999999999",
    );
    assert_user_error(
        &tool("tcpretrans", &["-p", "1"]),
        "tcpretrans cannot filter by process",
    );
    assert_user_error(&tool("tcplife", &["-d", "0"]), "bad duration 0");
    assert_user_error(
        &tool("tcpconnlat", &["-p", "999999999"]),
        "no such process: PID 999999999",
    );
    assert_user_error(
        &tool("runqlen", &["-p", "1"]),
        "-p and --cgroup do not apply",
    );
    assert_user_error(&tool("runqlen", &["-m"]), "-m does not apply");
    assert_user_error(&tool("runqlen", &["-F", "0"]), "bad frequency 0 Hz");
    assert_user_error(&tool("syscount", &["--top", "0"]), "bad --top 0");
}

#[test]
fn output_not_writable() {
    for name in TOOLS {
        assert_user_error(
            &tool(name, &["-o", "/no/such/dir/out.svg", "1"]),
            "cannot write output /no/such/dir/out.svg",
        );
        assert_user_error(
            &tool(name, &["-o", "/tmp", "-f", "svg", "1"]),
            "cannot write output /tmp: it is a directory",
        );
        assert_user_error(
            &tool(name, &["-o", "out.png", "1"]),
            "cannot tell the output format",
        );
    }
}

#[test]
fn usage_errors_exit_non_zero() {
    for name in TOOLS {
        let output = tool(name, &["-U", "-K", "1"]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains("cannot be used with"));
    }
    assert_eq!(tool("profile", &["-F", "fast"]).status.code(), Some(2));
    assert_eq!(
        tool("offcpu", &["--state", "zombie", "1"]).status.code(),
        Some(2)
    );
    assert_eq!(tool("offcpu", &["-u", "-k", "1"]).status.code(), Some(2));
    assert_eq!(tool("runqlat", &["-P", "-L"]).status.code(), Some(2));
    assert_eq!(tool("runqlat", &["soon"]).status.code(), Some(2));
    assert_eq!(tool("syscount", &["-P", "--hist"]).status.code(), Some(2));
}

/// Every numeric argument of every tool, with `{}` where the value goes;
/// arguments around it keep a correct run short.
const NUMERIC_ARGUMENTS: &[&[&str]] = &[
    &["profile", "{}"],
    &["profile", "-F", "{}", "1"],
    &["profile", "-C", "{}", "1"],
    &["profile", "--stack-storage-size", "{}", "1"],
    &["profile", "--max-stacks", "{}", "1"],
    &["profile", "--unwind-rows", "{}", "1"],
    &["offcpu", "{}"],
    &["offcpu", "-m", "{}", "1"],
    &["offcpu", "-M", "{}", "1"],
    &["runqlat", "{}", "1"],
    &["runqlat", "1", "{}"],
    &["runqlen", "-F", "{}", "1", "1"],
    &["syscount", "--top", "{}", "1", "1"],
    &["biolatency", "{}", "1"],
    &["fslatency", "{}", "1"],
    &["fsslower", "{}"],
    &["funclatency", "c:nanosleep", "{}", "1"],
    &["tcpconnlat", "-d", "{}"],
    &["tcplife", "-d", "{}"],
    &["tcpretrans", "-d", "{}"],
    &["serve", "--listen", "127.0.0.1:0", "--hz", "{}"],
    &["serve", "--listen", "127.0.0.1:0", "--max-series", "{}"],
];

/// Runs bpfscope with `args` for at most a few seconds (then Ctrl-C): a
/// value that asks for a long run is a correct run.
fn run_briefly(args: &[String]) -> Output {
    let child = bpfscope()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let exited = wait_for(std::time::Duration::from_secs(4), || {
        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| stat.contains(") Z"))
    });
    if !exited {
        unsafe { kill(pid, 2) };
    }
    child.wait_with_output().unwrap()
}

#[test]
fn extreme_numbers_never_panic() {
    let _serial = serial();
    let values = ["0", "1", "4294967296", "18446744073709551615", "-1", "abc"];
    for template in NUMERIC_ARGUMENTS {
        for value in values {
            let args: Vec<String> = template
                .iter()
                .map(|arg| arg.replace("{}", value))
                .collect();
            let output = run_briefly(&args);
            let text = stderr(&output);
            assert!(!text.contains("panicked"), "{args:?}: {text}");
            if output.status.success() {
                continue; // a correct run
            }
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?}: one error line, got: {text}");
            assert!(
                lines[0].starts_with("bpfscope: error: "),
                "{args:?}: {text}"
            );
            assert!(
                matches!(output.status.code(), Some(1) | Some(2)),
                "{args:?}: {:?}",
                output.status
            );
        }
    }
}

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
    #[link_name = "gettid"]
    fn libc_gettid() -> i32;
}

#[test]
fn closed_stdout_is_an_error_not_a_panic() {
    for args in [&["tcplife", "-d", "1"][..], &["runqlat", "1", "1"][..]] {
        let mut child = bpfscope()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away, as with `| head -0`
        let output = child.wait_with_output().unwrap();
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");
        assert!(
            text.contains("bpfscope: error: writing to stdout"),
            "{text}"
        );
    }
}
