//! Nothing a run attaches may outlive it: every tool, ended by Ctrl-C or
//! killed outright, leaves the system's BPF links as it found them; a
//! stop signal reaches the command a run started, whose status it returns.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Every tool, with arguments that keep it running until stopped.
const INVOCATIONS: &[&[&str]] = &[
    &["profile"],
    &["offcpu"],
    &["runqlat"],
    &["runqlen"],
    &["biolatency", "-Q"],
    &["syscount", "-L"],
    &["fslatency"],
    &["fsslower"],
    &["funclatency", "c:nanosleep"],
    &["tcpconnlat"],
    &["tcplife"],
    &["tcpretrans"],
    &["serve", "--listen", "127.0.0.1:0"],
];

fn link_ids() -> Vec<String> {
    let output = Command::new("bpftool")
        .args(["-j", "link", "list"])
        .output()
        .expect("bpftool");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split("{\"id\":")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_digit()).collect())
        .collect()
}

fn check(signal: i32) {
    let before = link_ids();
    for args in INVOCATIONS {
        let child = bpfscope()
            .args(*args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let attached = wait_for(Duration::from_secs(10), || link_ids().len() > before.len());
        assert!(attached, "{args:?} attached nothing");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(unsafe { kill(child.id() as i32, signal) }, 0);
        let status = child.wait_with_output().unwrap().status;
        if signal == 2 {
            assert!(status.success(), "{args:?} after Ctrl-C: {status}");
        }
        let released = wait_for(Duration::from_secs(5), || link_ids() == before);
        assert!(
            released,
            "{args:?} left links behind: {:?} (before: {before:?})",
            link_ids()
        );
    }
}

#[test]
fn ctrl_c_detaches_every_tool() {
    let _serial = serial();
    check(2);
}

#[test]
fn sigkill_detaches_every_tool() {
    let _serial = serial();
    check(9);
}

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

/// The command `bpfscope PID` runs (its only child), once it has started.
fn only_child(pid: u32) -> u32 {
    let mut child = None;
    wait_for(Duration::from_secs(10), || {
        child = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok());
        child.is_some()
    });
    child.expect("bpfscope started no command")
}

#[test]
fn a_stop_signal_is_passed_to_the_command_and_its_status_returned() {
    let _serial = serial();
    for signal in [2, 15, 1] {
        let output = tmp_dir().join(format!("forwarded-{signal}.folded"));
        let child = bpfscope()
            .args(["profile", "-F", "99", "-o"])
            .arg(&output)
            .arg("--")
            .arg(workload("cpu_split"))
            .arg("60")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let command = only_child(child.id());
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(unsafe { kill(child.id() as i32, signal) }, 0);
        let started = std::time::Instant::now();
        let result = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&result.stderr).into_owned();
        assert!(started.elapsed() < Duration::from_secs(8), "{text}");
        assert_eq!(
            result.status.code(),
            Some(128 + signal),
            "signal {signal}: exit status is the command's: {text}"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{command}")).exists(),
            "signal {signal}: the command was left running: {text}"
        );
        assert!(std::fs::metadata(&output).unwrap().len() > 0, "{text}");
    }
}
