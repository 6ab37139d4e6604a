//! Thread and process storms while tracing system-wide: 2,000 short threads
//! then 5,000 fork+execs (`storm.c`) during `profile -F 999` and `offcpu`.
//! Both tools must finish with exit 0, keep what they counted, name the
//! storm's functions, report what they lost and stay within a memory bound.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
    fn wait4(pid: i32, status: *mut i32, options: i32, usage: *mut i64) -> i32;
}

/// Waits for `pid`; (exit code, or None when killed; peak RSS in kB).
fn wait_with_peak_rss(pid: u32) -> (Option<i32>, u64) {
    let mut status = 0i32;
    // struct rusage: two timevals, then ru_maxrss (kB) and 13 more longs.
    let mut usage = [0i64; 18];
    // SAFETY: wait4 writes one int and one struct rusage (18 longs on 64-bit Linux).
    let reaped = unsafe { wait4(pid as i32, &mut status, 0, usage.as_mut_ptr()) };
    assert_eq!(reaped, pid as i32, "wait4");
    let code = (status & 0x7f == 0).then_some((status >> 8) & 0xff);
    (code, usage[4] as u64)
}

/// Runs `bpfscope ARGS -o OUT 60` system-wide while the storm runs, stops
/// it with SIGINT after the storm; returns (folded output, stderr, peak RSS kB).
fn trace_a_storm(args: &[&str]) -> (String, String, u64) {
    let out = tmp_dir().join(format!("storm-{}-{}.folded", args[0], std::process::id()));
    let tracer = bpfscope()
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg("60")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let storm = Command::new(workload("storm"))
        .args(["2000", "5000"])
        .output()
        .unwrap();
    assert!(
        storm.status.success(),
        "the storm failed: {}",
        stderr(&storm)
    );
    assert_eq!(stdout(&storm).trim(), "2000 threads, 5000 execs");
    let mut tracer = tracer;
    assert_eq!(unsafe { kill(tracer.id() as i32, 2) }, 0);
    let mut messages = String::new();
    std::io::Read::read_to_string(&mut tracer.stderr.take().unwrap(), &mut messages).unwrap();
    let (code, peak) = wait_with_peak_rss(tracer.id());
    assert_eq!(code, Some(0), "{args:?}: {messages}");
    assert!(!messages.contains("panicked"), "{messages}");
    let folded = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).ok();
    (folded, messages, peak)
}

#[test]
fn thread_and_exec_storms_during_profile_and_offcpu() {
    let _serial = serial();
    let (folded, messages, peak) = trace_a_storm(&["profile", "-F", "999"]);
    let stacks = parse_folded(&folded);
    let threads = count_with_chain(&stacks, &["storm_thread_work"]);
    let execs = count_with_chain(&stacks, &["storm_exec_work"]);
    // 2,000 ms of thread work and 5,000 ms of exec work at 999 Hz: at
    // least half of each must be sampled and named.
    assert!(
        threads >= 1000,
        "storm_thread_work in {threads} samples\n{messages}"
    );
    assert!(
        execs >= 2500,
        "storm_exec_work in {execs} samples\n{messages}"
    );
    assert!(peak < 300 * 1024, "profile peaked at {peak} kB");
    eprintln!("profile -F 999: {threads} thread samples, {execs} exec samples, peak RSS {} MB\n{messages}", peak / 1024);

    let (folded, messages, peak) = trace_a_storm(&["offcpu"]);
    let stacks = parse_folded(&folded);
    // The storm's parent blocks in pthread_join and waitpid under main for
    // most of the storm's 7 s or more.
    let waiting: u64 = for_comm(&stacks, "storm")
        .iter()
        .filter(|stack| stack.frames.iter().any(|frame| frame == "main"))
        .map(|stack| stack.count)
        .sum();
    let storm_total: u64 = for_comm(&stacks, "storm")
        .iter()
        .map(|stack| stack.count)
        .sum();
    assert!(
        waiting >= 3_000_000,
        "{waiting} us blocked under storm's main\n{messages}"
    );
    assert!(peak < 300 * 1024, "offcpu peaked at {peak} kB");
    eprintln!("offcpu: {storm_total} us blocked in storm ({waiting} under main), peak RSS {} MB\n{messages}", peak / 1024);
}
