//! Every error a user can cause in `bpfscope profile` gives one clear line on
//! stderr and a non-zero exit, never a panic.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::*;

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

fn profile(args: &[&str]) -> Output {
    run(bpfscope().arg("profile").args(args))
}

#[test]
fn not_root() {
    // A copy that the unprivileged user can surely execute.
    let copy = std::env::temp_dir().join(format!("bpfscope-unprivileged-{}", std::process::id()));
    fs::copy(env!("CARGO_BIN_EXE_bpfscope"), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    let output = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&copy)
        .args(["profile", "1"]));
    fs::remove_file(&copy).ok();
    assert_user_error(
        &output,
        "needs root, or the capabilities CAP_BPF and CAP_PERFMON",
    );
}

#[test]
fn no_kernel_btf() {
    // Hide the kernel's BTF in a private mount namespace.
    let script = format!(
        "mount -t tmpfs none /sys/kernel/btf && exec {} profile 1",
        env!("CARGO_BIN_EXE_bpfscope")
    );
    let output = run(Command::new("unshare").args(["-m", "sh", "-c", &script]));
    assert_user_error(&output, "exposes no BTF");
}

#[test]
fn profile_needs_no_tracefs() {
    let _serial = serial();
    // tracefs unmounted in a private mount namespace: profile uses perf events
    // and raw/BTF tracepoints only, so it must still work.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         test -d /sys/kernel/tracing/events && exit 99; exec {} profile -F 49 -- sleep 0.5",
        env!("CARGO_BIN_EXE_bpfscope")
    );
    let output = run(Command::new("unshare").args(["-m", "sh", "-c", &script]));
    assert_ne!(output.status.code(), Some(99), "could not hide tracefs");
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn no_such_pid() {
    assert_user_error(
        &profile(&["-p", "999999999", "1"]),
        "no such process: PID 999999999",
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
    let output = profile(&["-p", &tid.to_string(), "1"]);
    done_tx.send(()).unwrap();
    thread.join().unwrap();
    assert_user_error(
        &output,
        &format!("{tid} is a thread of process {}", std::process::id()),
    );
}

#[test]
fn no_such_thread() {
    assert_user_error(
        &profile(&["-L", "999999999", "1"]),
        "no such thread: TID 999999999",
    );
}

#[test]
fn no_such_cgroup() {
    assert_user_error(
        &profile(&["--cgroup", "no/such/group", "1"]),
        "no such cgroup",
    );
    assert_user_error(
        &profile(&["--cgroup", "/tmp", "1"]),
        "is not a cgroup v2 directory",
    );
}

#[test]
fn command_not_found() {
    assert_user_error(
        &profile(&["--", "no-such-command-bpfscope"]),
        "command not found: no-such-command-bpfscope",
    );
}

#[test]
fn bad_frequency() {
    assert_user_error(&profile(&["-F", "0", "1"]), "bad frequency 0 Hz");
    assert_user_error(
        &profile(&["-F", "100000000", "1"]),
        "bad frequency 100000000 Hz",
    );
}

#[test]
fn bad_duration_and_cpu() {
    assert_user_error(&profile(&["0"]), "bad duration 0");
    assert_user_error(&profile(&["-C", "4096", "1"]), "no such CPU: 4096");
    assert_user_error(
        &profile(&["1", "--", "true"]),
        "either DURATION or -- COMMAND",
    );
}

#[test]
fn output_not_writable() {
    assert_user_error(
        &profile(&["-o", "/no/such/dir/out.svg", "1"]),
        "cannot write output /no/such/dir/out.svg",
    );
    assert_user_error(
        &profile(&["-o", "/tmp", "-f", "svg", "1"]),
        "cannot write output /tmp: it is a directory",
    );
    assert_user_error(
        &profile(&["-o", "out.png", "1"]),
        "cannot tell the output format",
    );
}

#[test]
fn usage_errors_exit_non_zero() {
    let output = profile(&["-U", "-K", "1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot be used with"));
    let output = profile(&["-F", "fast"]);
    assert_eq!(output.status.code(), Some(2));
}

extern "C" {
    #[link_name = "gettid"]
    fn libc_gettid() -> i32;
}
