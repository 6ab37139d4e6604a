//! End-to-end tests of `bpfscope offcpu` against ground-truth blocking
//! workloads, with real BPF programs (run as root).

mod common;

use std::collections::HashMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Off-CPU total within this fraction of the thread's wall time.
const TOTAL_TOLERANCE: f64 = 0.05;
/// Each function's share within this many points of the workload's own measurement.
const SHARE_TOLERANCE: f64 = 0.03;

/// "function milliseconds" lines the workload prints about itself.
fn workload_report(stdout: &[u8]) -> HashMap<String, f64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| {
            let (name, ms) = line.split_once(' ')?;
            Some((name.to_string(), ms.parse().ok()?))
        })
        .collect()
}

/// Runs `bpfscope offcpu ARGS -- offcpu_blocks MODE..`; returns the folded
/// stacks and the workload's own report.
fn offcpu_command(
    args: &[&str],
    workload_args: &[&str],
    env: &[(&str, &str)],
) -> (Vec<Stack>, HashMap<String, f64>) {
    let path = tmp_dir().join(format!(
        "offcpu-{}.folded",
        workload_args.join("-").replace('/', "_")
    ));
    let output = run(bpfscope()
        .arg("offcpu")
        .args(args)
        .arg("-o")
        .arg(&path)
        .arg("--")
        .arg(workload("offcpu_blocks"))
        .args(workload_args)
        .envs(env.iter().copied()));
    assert!(output.status.success(), "{}", stderr(&output));
    let report = workload_report(&output.stdout);
    assert!(
        !report.is_empty(),
        "workload printed no report: {}",
        stderr(&output)
    );
    (parse_folded(&fs::read_to_string(&path).unwrap()), report)
}

/// Microseconds attributed to stacks through `function` (called from main).
fn time_in(stacks: &[Stack], function: &str) -> f64 {
    count_with_chain(stacks, &["main", function]) as f64
}

fn assert_split_matches(stacks: &[Stack], report: &HashMap<String, f64>) {
    let blocker = for_comm(stacks, "blocker");
    let functions = ["sleep_part", "pipe_part", "futex_part"];
    let wall_ms: f64 = functions.iter().map(|f| report[*f]).sum();
    let measured_us = total(&blocker) as f64;
    assert!(
        (measured_us / 1000.0 - wall_ms).abs() <= TOTAL_TOLERANCE * wall_ms,
        "off-CPU total {:.1} ms vs wall {wall_ms:.1} ms",
        measured_us / 1000.0
    );
    let attributed: f64 = functions.iter().map(|f| time_in(&blocker, f)).sum();
    for function in functions {
        let expected = report[function] / wall_ms;
        let share = time_in(&blocker, function) / attributed;
        assert!(
            (share - expected).abs() <= SHARE_TOLERANCE,
            "{function}: share {share:.3}, workload measured {expected:.3} (± {SHARE_TOLERANCE})"
        );
    }
    assert!(
        attributed >= 0.97 * measured_us,
        "only {attributed} of {measured_us} us under the three functions"
    );
}

#[test]
fn blocked_time_splits_as_the_workload_measured_it() {
    let _serial = serial();
    let (stacks, report) = offcpu_command(&[], &["split", "3"], &[]);
    assert_split_matches(&stacks, &report);
    // Kernel frames name the blocking paths; the tracing machinery is not shown.
    let sleep = stacks
        .iter()
        .find(|s| s.frames.iter().any(|f| f == "sleep_part"))
        .unwrap();
    assert!(
        sleep.frames.iter().any(|f| f == "do_nanosleep_[k]"),
        "{sleep:?}"
    );
    assert!(
        stacks
            .iter()
            .all(|s| !s.frames.last().unwrap().starts_with("bpf_")),
        "tracing frames leaked"
    );
}

#[test]
fn raw_tracepoint_fallback_is_as_accurate() {
    let _serial = serial();
    let (stacks, report) = offcpu_command(
        &[],
        &["split", "2"],
        &[("BPFSCOPE_FORCE_RAW_TRACEPOINTS", "1")],
    );
    assert_split_matches(&stacks, &report);
}

#[test]
fn min_block_time_drops_short_blocks() {
    let _serial = serial();
    let (all, report) = offcpu_command(&[], &["mix", "2"], &[]);
    let (long_only, _) = offcpu_command(&["-m", "10000"], &["mix", "2"], &[]);
    let short_us = time_in(&for_comm(&all, "blocker"), "short_sleep");
    assert!(
        short_us >= 0.9 * report["short_sleep"] * 1000.0,
        "without -m, 1 ms sleeps are counted: {short_us} us vs {} ms",
        report["short_sleep"]
    );
    let long_blocker = for_comm(&long_only, "blocker");
    assert_eq!(
        time_in(&long_blocker, "short_sleep"),
        0.0,
        "-m 10000 kept 1 ms blocks"
    );
    assert!(
        time_in(&long_blocker, "long_sleep") > 1_000_000.0,
        "-m 10000 lost the 50 ms blocks"
    );
}

#[test]
fn max_block_time_drops_long_blocks() {
    let _serial = serial();
    let (stacks, _) = offcpu_command(&["-M", "10000"], &["mix", "1"], &[]);
    let blocker = for_comm(&stacks, "blocker");
    assert_eq!(
        time_in(&blocker, "long_sleep"),
        0.0,
        "-M 10000 kept 50 ms blocks"
    );
    assert!(time_in(&blocker, "short_sleep") > 0.0);
}

#[test]
fn pid_filter_isolates_one_process() {
    let _serial = serial();
    let binary = workload("offcpu_blocks");
    let start = |name: &str| {
        let child = Command::new(&binary)
            .args(["mix", "4"])
            .env("BLOCKER_NAME", name)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Workload(child)
    };
    let target = start("blocker_a");
    let _other = start("blocker_b");
    std::thread::sleep(Duration::from_millis(200));
    let output = run(bpfscope().args(["offcpu", "-p", &target.pid().to_string(), "2"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    assert!(
        total(&for_comm(&stacks, "blocker_a")) > 1_500_000,
        "{}",
        stdout(&output)
    );
    let foreign: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.frames[0] != "blocker_a")
        .collect();
    assert!(foreign.is_empty(), "other processes: {foreign:?}");
}

#[test]
fn state_disk_sees_uninterruptible_io_only() {
    let _serial = serial();
    let dir = tmp_dir().join("offcpu-io");
    fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    let (disk, report) = offcpu_command(&["--state", "disk"], &["io", "2", dir], &[]);
    let blocker = for_comm(&disk, "blocker");
    assert!(
        report["disk_write"] > 50.0,
        "the workload spent too little time writing: {report:?}"
    );
    assert!(
        time_in(&blocker, "disk_write") > 0.0,
        "no disk waits seen: {disk:?}"
    );
    assert_eq!(
        time_in(&blocker, "sleep_part"),
        0.0,
        "--state disk kept interruptible sleeps"
    );
    let (sleeping, _) = offcpu_command(&["--state", "sleeping"], &["io", "1", dir], &[]);
    let blocker = for_comm(&sleeping, "blocker");
    assert_eq!(
        time_in(&blocker, "disk_write"),
        0.0,
        "--state sleeping kept disk waits"
    );
    assert!(time_in(&blocker, "sleep_part") > 0.0);
}

#[test]
fn svg_uses_off_cpu_title_and_units() {
    let _serial = serial();
    let path = tmp_dir().join("offcpu.svg");
    let output = run(bpfscope()
        .args(["offcpu", "-o"])
        .arg(&path)
        .arg("--")
        .arg(workload("offcpu_blocks"))
        .args(["split", "1"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let svg = fs::read_to_string(&path).unwrap();
    assert!(
        svg.contains("Off-CPU Time Flame Graph")
            && svg.contains(" us")
            && svg.contains("pipe_part")
    );
    assert!(
        stderr(&output).contains("s off-CPU in"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn ctrl_c_writes_output_and_detaches() {
    let _serial = serial();
    let blocker = Workload::start(&workload("offcpu_blocks"), &["mix", "5"]);
    let path = tmp_dir().join("offcpu-interrupted.folded");
    let _ = fs::remove_file(&path);
    let child = bpfscope()
        .args(["offcpu", "-p", &blocker.pid().to_string(), "-o"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || attached_program_names(
    )
    .iter()
    .any(|n| n == "switch_btf")));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(unsafe { libc_kill(child.id() as i32, 2) }, 0);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&fs::read_to_string(&path).unwrap());
    assert!(time_in(&stacks, "long_sleep") > 0.0, "{stacks:?}");
    let names = attached_program_names();
    assert!(
        !names
            .iter()
            .any(|n| n == "switch_btf" || n == "exit_btf" || n == "flush_all"),
        "links outlived the run: {names:?}"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
