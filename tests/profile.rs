//! End-to-end tests of `bpfscope profile` against ground-truth workloads,
//! with real BPF programs (run as root).

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;

const SPLIT_TOLERANCE: f64 = 0.05;

/// The 3:1 split of cpu_split, measured from its folded stacks.
fn assert_three_to_one(stacks: &[Stack]) {
    assert_three_to_one_under(
        stacks,
        "cpu_split",
        &["main", "run_workload"],
        SPLIT_TOLERANCE,
    );
}

#[test]
fn pid_mode_measures_the_known_split_with_full_chains() {
    let _serial = serial();
    let burner = Workload::start(&workload("cpu_split"), &["6"]);
    let output =
        run(bpfscope().args(["profile", "-F", "999", "-p", &burner.pid().to_string(), "3"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_three_to_one(&parse_folded(&stdout(&output)));
    assert!(
        stderr(&output).contains("samples"),
        "summary line: {}",
        stderr(&output)
    );
}

#[test]
fn command_mode_profiles_the_command_until_it_exits() {
    let _serial = serial();
    let binary = workload("cpu_split");
    let output = run(bpfscope()
        .args(["profile", "-F", "999", "--"])
        .arg(&binary)
        .arg("3"));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    assert_three_to_one(&stacks);
    assert!(
        stderr(&output).contains("command exited with status 0"),
        "{}",
        stderr(&output)
    );
    // Only the command is profiled: every sample belongs to it (or to its exec).
    let others: u64 = stacks
        .iter()
        .filter(|s| s.frames[0] != "cpu_split")
        .map(|s| s.count)
        .sum();
    assert!(
        others * 100 <= total(&stacks),
        "{others} samples from other processes"
    );
}

#[test]
fn command_mode_follows_child_processes() {
    let _serial = serial();
    let binary = workload("cpu_split");
    let script = format!("{0} 1.5; {0} 1.5", binary.display());
    let output = run(bpfscope().args(["profile", "-F", "999", "--", "sh", "-c", &script]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_three_to_one(&parse_folded(&stdout(&output)));
}

#[test]
fn pid_filter_excludes_other_processes() {
    let _serial = serial();
    let other_binary = tmp_dir().join("other_burner");
    fs::copy(workload("cpu_split"), &other_binary).unwrap();
    let target = Workload::start(&workload("cpu_split"), &["5"]);
    let _other = Workload::start(&other_binary, &["5"]);
    let output =
        run(bpfscope().args(["profile", "-F", "499", "-p", &target.pid().to_string(), "2"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    assert!(total(&for_comm(&stacks, "cpu_split")) > 500);
    let foreign: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.frames[0] != "cpu_split")
        .collect();
    assert!(
        foreign.is_empty(),
        "samples from other processes: {foreign:?}"
    );
}

#[test]
fn kernel_only_shows_the_syscall_path() {
    let _serial = serial();
    let reader = Workload::start(&workload("read_zero"), &["5"]);
    let output = run(bpfscope().args([
        "profile",
        "-K",
        "-F",
        "499",
        "-p",
        &reader.pid().to_string(),
        "2",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    let all = total(&stacks);
    assert!(all > 300, "too few samples: {all}");
    let in_read = count_with_chain(&stacks, &["ksys_read_[k]", "vfs_read_[k]"]);
    assert!(
        in_read * 100 >= all * 90,
        "{in_read} of {all} samples in ksys_read;vfs_read"
    );
    let user_frames: Vec<&String> = stacks
        .iter()
        .flat_map(|s| &s.frames[1..])
        .filter(|f| !f.ends_with("_[k]"))
        .collect();
    assert!(
        user_frames.is_empty(),
        "-K printed user frames: {user_frames:?}"
    );
}

#[test]
fn user_only_and_delimiter() {
    let _serial = serial();
    let reader = Workload::start(&workload("read_zero"), &["4"]);
    let pid = reader.pid().to_string();
    let output = run(bpfscope().args(["profile", "-U", "-F", "299", "-p", &pid, "1"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    assert!(total(&stacks) > 100);
    assert!(
        stacks
            .iter()
            .all(|s| s.frames.iter().all(|f| !f.ends_with("_[k]"))),
        "-U printed kernel frames"
    );
    let output = run(bpfscope().args(["profile", "-d", "-F", "299", "-p", &pid, "1"]));
    let stacks = parse_folded(&stdout(&output));
    let delimited = stacks
        .iter()
        .filter(|s| s.frames.contains(&"-".to_string()))
        .map(|s| s.count)
        .sum::<u64>();
    assert!(
        delimited * 10 >= total(&stacks) * 9,
        "-d should separate user and kernel frames"
    );
    for stack in &stacks {
        if let Some(at) = stack.frames.iter().position(|f| f == "-") {
            assert!(
                stack.frames[at + 1..].iter().all(|f| f.ends_with("_[k]")),
                "{stack:?}"
            );
        }
    }
}

#[test]
fn short_lived_processes_keep_their_symbols() {
    let _serial = serial();
    let binary = workload("short_burn");
    let script = format!("for i in $(seq 25); do {} 50; done", binary.display());
    let output = run(bpfscope().args(["profile", "-F", "999", "--", "sh", "-c", &script]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = for_comm(&parse_folded(&stdout(&output)), "short_burn");
    let all = total(&stacks);
    assert!(
        all >= 500,
        "expected ~1250 samples of 25 x 50 ms, got {all}"
    );
    // Frames in the workload's own binary must all be named even though each
    // process exited long before symbolization. Samples outside
    // short_burn_spin are legitimate only in exec, ld.so and exit (about 1.5 %
    // of a 50 ms process here); libc's frame-pointer-less clock_gettime is
    // unwound by tables, so its samples keep their caller.
    let count_where = |pred: &dyn Fn(&str) -> bool| {
        stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| pred(f)))
            .map(|s| s.count)
            .sum::<u64>()
    };
    let unnamed = count_where(&|f| f.starts_with("[unknown]") && f.contains("short_burn"));
    assert!(
        unnamed as f64 <= 0.01 * all as f64,
        "{unnamed} of {all} samples have unnamed frames in short_burn"
    );
    let named = count_where(&|f| f == "short_burn_spin");
    assert!(
        named as f64 >= 0.95 * all as f64,
        "only {named} of {all} samples carry short_burn_spin"
    );
}

#[test]
fn cgroup_filter_keeps_only_the_cgroups_tasks() {
    let _serial = serial();
    let cgroup = TestCgroup::new("profile");
    let inside = Workload::start(&workload("cpu_split"), &["5"]);
    let other_binary = tmp_dir().join("outside_cg");
    fs::copy(workload("cpu_split"), &other_binary).unwrap();
    let _outside = Workload::start(&other_binary, &["5"]);
    fs::write(cgroup.dir.join("cgroup.procs"), inside.pid().to_string()).unwrap();

    // Relative to the cgroup2 mount, as users usually give it.
    let relative = cgroup.label.trim_start_matches('/');
    let output = run(bpfscope().args(["profile", "-F", "499", "--cgroup", relative, "2"]));
    drop(inside);
    drop(cgroup);
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    assert!(
        total(&for_comm(&stacks, "cpu_split")) > 500,
        "{}",
        stdout(&output)
    );
    let foreign: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.frames[0] != "cpu_split")
        .collect();
    assert!(
        foreign.is_empty(),
        "samples outside the cgroup: {foreign:?}"
    );
}

#[test]
fn svg_and_pprof_outputs_name_the_workload_functions() {
    let _serial = serial();
    let burner = Workload::start(&workload("cpu_split"), &["6"]);
    let pid = burner.pid().to_string();
    let svg_path = tmp_dir().join("profile-test.svg");
    let output = run(bpfscope()
        .args(["profile", "-F", "499", "-p", &pid, "-o"])
        .arg(&svg_path)
        .arg("1"));
    assert!(output.status.success(), "{}", stderr(&output));
    let svg = fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("<svg") && svg.contains("burn_three") && svg.contains("burn_one"));
    assert!(svg.contains("CPU Flame Graph") && svg.contains("499 Hz"));

    let pprof_path = tmp_dir().join("profile-test.pb.gz");
    let output = run(bpfscope()
        .args(["profile", "-F", "499", "-p", &pid, "-o"])
        .arg(&pprof_path)
        .arg("1"));
    assert!(output.status.success(), "{}", stderr(&output));
    let top = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&pprof_path)
        .env("HOME", tmp_dir())
        .output()
        .expect("go (golang-go) is installed by the test command");
    let top_text = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&top.stderr)
    );
    assert!(
        top_text.contains("burn_three") && top_text.contains("burn_one"),
        "{top_text}"
    );
}

#[test]
fn ctrl_c_still_writes_the_output_and_nothing_stays_attached() {
    let _serial = serial();
    let burner = Workload::start(&workload("cpu_split"), &["6"]);
    let path = tmp_dir().join("interrupted.folded");
    let _ = fs::remove_file(&path);
    let child = bpfscope()
        .args(["profile", "-p", &burner.pid().to_string(), "-o"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || attached_program_names(
    )
    .iter()
    .any(|n| n == "sample_stack")));
    std::thread::sleep(Duration::from_millis(1000));
    unsafe { libc_kill(child.id() as i32, 2) };
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&fs::read_to_string(&path).unwrap());
    assert!(count_with_chain(&stacks, &["run_workload", "burn_three"]) > 0);
    assert!(stderr(&output).contains("interrupted"));
    assert!(
        !attached_program_names().iter().any(|n| n == "sample_stack"),
        "links outlived the run"
    );
}

#[test]
fn sigkill_leaves_nothing_attached() {
    let _serial = serial();
    let mut child = bpfscope()
        .args(["profile", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || attached_program_names(
    )
    .iter()
    .any(|n| n == "sample_stack")));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_for(Duration::from_secs(3), || !attached_program_names()
            .iter()
            .any(|n| n == "sample_stack")),
        "links outlived a killed run"
    );
}

#[test]
fn target_exiting_mid_run_ends_the_run_with_output() {
    let _serial = serial();
    let burner = Workload::start(&workload("cpu_split"), &["1.5"]);
    let output = run(bpfscope().args([
        "profile",
        "-F",
        "499",
        "-p",
        &burner.pid().to_string(),
        "30",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("every target process has exited"),
        "{}",
        stderr(&output)
    );
    assert!(
        count_with_chain(
            &parse_folded(&stdout(&output)),
            &["run_workload", "burn_one"]
        ) > 0
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn thread_filter_and_cpu_filter() {
    let _serial = serial();
    // cpu_split is single-threaded: its TID is its PID.
    // It outlives the three runs (two symbolize the whole host: seconds
    // each on a busy machine), and is killed when dropped.
    let burner = Command::new("taskset")
        .args(["-c", "1"])
        .arg(workload("cpu_split"))
        .arg("60")
        .spawn()
        .unwrap();
    let burner = Workload(burner);
    std::thread::sleep(Duration::from_millis(300));
    let tid = burner.pid().to_string();
    let output = run(bpfscope().args(["profile", "-F", "499", "-L", &tid, "1"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    assert!(total(&stacks) > 200);
    assert!(
        stacks.iter().all(|s| s.frames[0] == "cpu_split"),
        "{stacks:?}"
    );

    // Pinned to CPU 1, the burner is never sampled on CPU 0.
    let output = run(bpfscope().args(["profile", "-F", "499", "-C", "0", "1"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let on_cpu0 = parse_folded(&stdout(&output));
    assert_eq!(
        total(&for_comm(&on_cpu0, "cpu_split")),
        0,
        "cpu_split sampled on CPU 0"
    );
    let output = run(bpfscope().args(["profile", "-F", "499", "-C", "1", "1"]));
    let on_cpu1 = total(&for_comm(&parse_folded(&stdout(&output)), "cpu_split"));
    assert!(on_cpu1 > 200, "{on_cpu1} samples of cpu_split on CPU 1");
    drop(burner);
}

#[test]
fn idle_is_excluded_unless_asked_for() {
    let _serial = serial();
    let output = run(bpfscope().args(["profile", "-K", "-F", "199", "1"]));
    let stacks = parse_folded(&stdout(&output));
    assert!(
        !stacks
            .iter()
            .any(|s| s.frames[0] == "swapper/0" || s.frames[0] == "swapper/1"),
        "idle was counted"
    );
    let output = run(bpfscope().args(["profile", "-K", "--include-idle", "-F", "199", "1"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let idle = parse_folded(&stdout(&output))
        .iter()
        .filter(|s| s.frames[0].starts_with("swapper/"))
        .map(|s| s.count)
        .sum::<u64>();
    assert!(idle > 0, "--include-idle showed no idle samples");
}

#[test]
fn dash_p_follows_children_forked_after_the_start_unless_told_not_to() {
    let _serial = serial();
    for (flags, expect_child) in [(&[][..], true), (&["--no-children"][..], false)] {
        // The child is forked 1.5 s in, after the profiler has attached.
        let parent = Workload::start(&workload("fork_later"), &["1.5", "2"]);
        let output = run(bpfscope()
            .args(["profile", "-F", "999", "-p", &parent.pid().to_string()])
            .args(flags)
            .arg("4"));
        let text = stderr(&output);
        assert!(output.status.success(), "{text}");
        let stacks = parse_folded(&stdout(&output));
        let in_child = count_with_chain(&stacks, &["main", "child_burn"]);
        if expect_child {
            // About 2,000 samples: 2 s on one CPU at 999 Hz.
            assert!(in_child >= 1500, "{in_child} samples in the child\n{text}");
        } else {
            assert_eq!(in_child, 0, "--no-children sampled the child\n{text}");
        }
    }
}

#[test]
fn by_default_the_report_is_the_start_and_the_result_and_v_adds_the_rest() {
    let _serial = serial();
    let burner = Workload::start(&workload("cpu_split"), &["20"]);
    let out = tempfile_path("report").with_extension("svg");
    let pid = burner.pid().to_string();
    let args = [
        "profile",
        "-F",
        "99",
        "-p",
        &pid,
        "-o",
        out.to_str().unwrap(),
        "2",
    ];
    // As the quickstart runs it: no -v (bpfscope() passes it).
    let quiet = run(Command::new(env!("CARGO_BIN_EXE_bpfscope")).args(args));
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    let lines: Vec<String> = stderr(&quiet).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("bpfscope: sampling"), "{lines:#?}");
    assert!(
        lines[1].ends_with(&format!("written to {}", out.display())),
        "{lines:#?}"
    );
    // -v: how unwinding and symbolization fared too.
    let verbose = run(bpfscope().args(args));
    let report = stderr(&verbose);
    assert!(
        report.contains("walks ended") && report.contains("symbolized in"),
        "{report}"
    );
    std::fs::remove_file(&out).ok();
}
