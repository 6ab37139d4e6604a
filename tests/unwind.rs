//! End-to-end tests of table-driven unwinding (`--unwind`, src/bpf/unwind.h)
//! on what users really run: a workload built without frame pointers, and
//! blocking through Debian's libc, which has none. Each test also checks
//! that frame-pointer unwinding gets the same thing wrong, so the ground
//! truth really needs the tables.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Points the split may be off by.
const SPLIT_TOLERANCE: f64 = 0.05;

/// cpu_split built the way distributions build: no frame pointers.
fn cpu_split_without_frame_pointers() -> std::path::PathBuf {
    workload_variant("cpu_split", "_nofp", &["-fomit-frame-pointer"])
}

/// (fraction of samples with the full chain from main, burn_three's share).
fn chain_and_split(stacks: &[Stack], comm: &str) -> (f64, f64) {
    let workload = for_comm(stacks, comm);
    let all = total(&workload);
    assert!(all >= 200, "too few samples of {comm}: {all}");
    let chain = |leaf| count_with_chain(&workload, &["main", "run_workload", leaf]);
    let (three, one) = (chain("burn_three"), chain("burn_one"));
    let share = if three + one > 0 {
        three as f64 / (three + one) as f64
    } else {
        0.0
    };
    ((three + one) as f64 / all as f64, share)
}

fn assert_full_chains_and_split(stacks: &[Stack], comm: &str) {
    let (full, share) = chain_and_split(stacks, comm);
    assert!(
        full >= 0.95,
        "only {:.1}% of samples show main;run_workload;burn_*",
        full * 100.0
    );
    assert!(
        (share - 0.75).abs() <= SPLIT_TOLERANCE,
        "burn_three share {share:.3}, expected 0.75 ± {SPLIT_TOLERANCE}"
    );
}

#[test]
fn tables_give_full_chains_without_frame_pointers() {
    let _serial = serial();
    let burner = Workload::start(&cpu_split_without_frame_pointers(), &["10"]);
    let pid = burner.pid().to_string();
    for mode in ["dwarf", "auto"] {
        let output =
            run(bpfscope().args(["profile", "-F", "499", "--unwind", mode, "-p", &pid, "3"]));
        assert!(output.status.success(), "{}", stderr(&output));
        assert_full_chains_and_split(&parse_folded(&stdout(&output)), "cpu_split_nofp");
        assert!(
            stderr(&output).contains("walks ended"),
            "unwind summary: {}",
            stderr(&output)
        );
    }
    // What frame pointers make of the same binary: the callers are lost.
    let output = run(bpfscope().args(["profile", "-F", "499", "--unwind", "fp", "-p", &pid, "2"]));
    let (full, _) = chain_and_split(&parse_folded(&stdout(&output)), "cpu_split_nofp");
    assert!(
        full < 0.5,
        "frame pointers unexpectedly found {full:.2} full chains"
    );
}

#[test]
fn stacks_unwind_through_the_vdso() {
    let _serial = serial();
    let binary = workload_variant("vdso_clock", "_nofp", &["-fomit-frame-pointer"]);
    let clock = Workload::start(&binary, &["8"]);
    let pid = clock.pid().to_string();
    let output =
        run(bpfscope().args(["profile", "-F", "499", "--unwind", "dwarf", "-p", &pid, "3"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = for_comm(&parse_folded(&stdout(&output)), "vdso_clock_nofp");
    let all = total(&stacks);
    assert!(all >= 500, "too few samples: {all}");
    // Most samples end in the vDSO, named from its own symbols (under
    // libc's wrapper); their callers must be there.
    let in_vdso = count_with_chain(&stacks, &["__GI___clock_gettime", "clock_gettime"]);
    assert!(
        in_vdso * 2 >= all,
        "only {in_vdso} of {all} samples in the vDSO's clock_gettime"
    );
    let unnamed: u64 = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f == "[unknown] ([vdso])"))
        .map(|s| s.count)
        .sum();
    assert_eq!(unnamed, 0, "unnamed vDSO frames");
    let chained = count_with_chain(&stacks, &["main", "read_clock"]);
    assert!(
        chained as f64 >= 0.95 * all as f64,
        "only {chained} of {all} samples show main;read_clock: {}",
        stdout(&output)
    );
}

/// "function milliseconds" lines the workload printed, and the folded rest.
fn split_output(text: &str) -> (Vec<(String, f64)>, String) {
    let mut measured = Vec::new();
    let mut folded = String::new();
    for line in text.lines() {
        match line.split_once(' ') {
            Some((name, value)) if !name.contains(';') && value.parse::<f64>().is_ok() => {
                measured.push((name.to_string(), value.parse().unwrap()));
            }
            _ => {
                folded.push_str(line);
                folded.push('\n');
            }
        }
    }
    (measured, folded)
}

/// Each blocking function's share of the blocker's off-CPU time, as measured
/// by offcpu with `--unwind MODE`, next to the workload's own measurement.
fn libc_block_shares(mode: &str) -> Vec<(String, f64, f64)> {
    let output = run(bpfscope()
        .args(["offcpu", "--unwind", mode, "--"])
        .arg(workload("libc_blocks"))
        .arg("3"));
    assert!(output.status.success(), "{}", stderr(&output));
    let (measured, folded) = split_output(&stdout(&output));
    assert_eq!(measured.len(), 3, "{}", stdout(&output));
    let blocker = for_comm(&parse_folded(&folded), "blocker");
    let all = total(&blocker) as f64;
    let measured_total: f64 = measured.iter().map(|(_, ms)| ms).sum();
    measured
        .into_iter()
        .map(|(function, ms)| {
            let traced = blocker
                .iter()
                .filter(|s| s.frames.contains(&function))
                .map(|s| s.count)
                .sum::<u64>() as f64;
            (function, traced / all, ms / measured_total)
        })
        .collect()
}

#[test]
fn offcpu_attributes_blocking_in_libc_to_its_callers() {
    let _serial = serial();
    for (function, traced, measured) in libc_block_shares("auto") {
        assert!(
            (traced - measured).abs() <= SPLIT_TOLERANCE,
            "{function}: {traced:.3} of off-CPU time, measured {measured:.3} ± {SPLIT_TOLERANCE}"
        );
    }
    // Frame pointers skip the callers of libc's wrappers.
    let attributed: f64 = libc_block_shares("fp").iter().map(|(_, t, _)| t).sum();
    assert!(
        attributed < 0.5,
        "frame pointers attributed {attributed:.2}"
    );
}

#[test]
fn a_process_started_after_the_profiler_is_unwound() {
    let _serial = serial();
    // The profiler watches an empty cgroup; the workload enters it later.
    let cgroup = TestCgroup::new("late");
    let mut profiler = bpfscope()
        .args(["profile", "-F", "499", "--unwind", "dwarf", "--cgroup"])
        .arg(&cgroup.dir)
        .arg("4")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(profiler.stderr.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("sampling"), "{first}");
    std::thread::sleep(Duration::from_millis(300));
    let status = cgroup
        .command(&cpu_split_without_frame_pointers(), &["2"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let output = profiler.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    // Its first samples can precede its tables (loaded when BPF first sees
    // it, on a builder thread): allow a few more partial stacks than the
    // pid-mode test does.
    let (full, share) = chain_and_split(&stacks, "cpu_split_nofp");
    assert!(
        full >= 0.90,
        "only {:.1}% full chains: {}",
        full * 100.0,
        stderr(&output)
    );
    assert!((share - 0.75).abs() <= SPLIT_TOLERANCE, "share {share:.3}");
}

#[test]
fn deep_stacks_are_walked_to_2048_frames_and_cut_ones_say_so() {
    let _serial = serial();
    let binary = workload("deep_stack");
    let count_frames = |stacks: &[Stack], name: &str| -> Vec<usize> {
        stacks
            .iter()
            .filter(|s| s.frames.last().is_some_and(|f| f == "burn"))
            .map(|s| s.frames.iter().filter(|f| *f == name).count())
            .collect()
    };
    // 400 frames of descend: whole, down to main.
    let deep = Workload::start(&binary, &["400", "6"]);
    let output = run(bpfscope().args(["profile", "-F", "499", "-p", &deep.pid().to_string(), "2"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    let depths = count_frames(&stacks, "descend");
    assert!(!depths.is_empty(), "{stacks:?}");
    let whole = stacks
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f == "burn"))
        .filter(|s| s.frames.iter().filter(|f| *f == "descend").count() == 400)
        .filter(|s| s.frames.iter().any(|f| f == "main"))
        .map(|s| s.count)
        .sum::<u64>();
    let all: u64 = stacks
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f == "burn"))
        .map(|s| s.count)
        .sum();
    assert!(
        whole as f64 >= 0.9 * all as f64,
        "{whole} of {all} samples in burn show 400 descend frames and main"
    );
    drop(deep);

    // 3000 frames: cut at 2048, marked, counted.
    let deeper = Workload::start(&binary, &["3000", "6"]);
    let output =
        run(bpfscope().args(["profile", "-F", "499", "-p", &deeper.pid().to_string(), "2"]));
    let summary = stderr(&output);
    assert!(output.status.success(), "{summary}");
    let stacks = parse_folded(&stdout(&output));
    let in_burn: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f == "burn"))
        .collect();
    assert!(!in_burn.is_empty());
    assert!(
        in_burn
            .iter()
            .all(|s| s.frames[1] == "[truncated]" && !s.frames.contains(&"main".to_string())),
        "cut stacks start with [truncated]: {:?}",
        in_burn.iter().map(|s| &s.frames[..3]).collect::<Vec<_>>()
    );
    // The first samples can come before the tables are in BPF (the sampler
    // is attached first): those are walked by frame pointers, cut at the
    // kernel's 127 frames, marked and counted. The rest keep 2048 frames.
    let by_tables: u64 = in_burn
        .iter()
        .filter(|s| s.frames.iter().filter(|f| *f == "descend").count() >= 2040)
        .map(|s| s.count)
        .sum();
    let all: u64 = in_burn.iter().map(|s| s.count).sum();
    assert!(
        by_tables as f64 >= 0.95 * all as f64,
        "{by_tables} of {all} cut stacks keep their 2048 frames: {:?}",
        count_frames(&stacks, "descend")
    );
    if by_tables < all {
        assert!(
            summary.contains("before their process's tables were loaded"),
            "{summary}"
        );
    }
    assert!(summary.contains("depth limit"), "{summary}");
}

#[test]
fn a_go_program_walked_by_frame_pointers_is_reported_complete() {
    let _serial = serial();
    let binary = tmp_dir().join("go_burn");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/go_burn.go"))
        .env("GOCACHE", tmp_dir().join("go-cache"))
        .status()
        .expect("go (golang-go) is installed by the test command");
    assert!(status.success(), "go build");
    let burner = Workload::start(&binary, &["8"]);
    let output =
        run(bpfscope().args(["profile", "-F", "499", "-p", &burner.pid().to_string(), "3"]));
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    let stacks = for_comm(&parse_folded(&stdout(&output)), "go_burn");
    let all = total(&stacks);
    let chained = count_with_chain(&stacks, &["main.main", "main.goBurn"]);
    assert!(
        chained as f64 >= 0.9 * all as f64,
        "{chained} of {all} reach main.main\n{text}"
    );
    // Go has no .eh_frame: every walk goes by frame pointers to the root,
    // and the summary must say complete, not "no table".
    let line = text
        .lines()
        .find(|line| line.contains("walks ended"))
        .unwrap_or_else(|| panic!("no unwind summary\n{text}"));
    assert!(!line.contains("no table"), "{line}");
}

/// Of the samples (or off-CPU time) of `comm` in `leaf`: how many, and the
/// share whose stack runs from `main` through `[signal]`, `handler`, `leaf`.
fn through_signal_frame(stacks: &[Stack], comm: &str, handler: &str, leaf: &str) -> (u64, f64) {
    let in_leaf: Vec<Stack> = for_comm(stacks, comm)
        .into_iter()
        .filter(|s| s.frames.iter().any(|f| f == leaf))
        .collect();
    let all = total(&in_leaf);
    let whole = in_leaf
        .iter()
        .filter(|s| {
            let main = s.frames.iter().position(|f| f == "main");
            let signal = s.frames.iter().position(|f| f == "[signal]");
            main.zip(signal).is_some_and(|(main, signal)| {
                main < signal && s.frames[signal + 1..].starts_with(&[handler.into(), leaf.into()])
            })
        })
        .map(|s| s.count)
        .sum::<u64>();
    (all, whole as f64 / all.max(1) as f64)
}

#[test]
fn stacks_continue_through_signal_frames_to_main() {
    let _serial = serial();
    let binary = workload_variant("signal_work", "_nofp", &["-fomit-frame-pointer"]);
    let worker = Workload::start(&binary, &["30"]);
    std::thread::sleep(Duration::from_millis(300));
    // The parent and the child it forked from its handler, with their
    // tables loaded before the first sample.
    let child =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", worker.pid())).unwrap();
    let pids = format!("{},{}", worker.pid(), child.trim());
    for mode in ["auto", "dwarf"] {
        let profile =
            run(bpfscope().args(["profile", "-F", "499", "--unwind", mode, "-p", &pids, "3"]));
        assert!(profile.status.success(), "{}", stderr(&profile));
        let offcpu = run(bpfscope().args(["offcpu", "--unwind", mode, "-p", &pids, "3"]));
        assert!(offcpu.status.success(), "{}", stderr(&offcpu));
        let (on_cpu, off_cpu) = (
            parse_folded(&stdout(&profile)),
            parse_folded(&stdout(&offcpu)),
        );
        for (stacks, comm, handler, leaf, least) in [
            (&on_cpu, "sigwork", "on_alarm", "burn_in_handler", 100),
            (&on_cpu, "sigchild", "on_usr1", "child_work", 300),
            (&off_cpu, "sigwork", "on_alarm", "block_in_handler", 100_000),
            (&off_cpu, "sigchild", "on_usr1", "child_work", 300_000),
        ] {
            let (all, whole) = through_signal_frame(stacks, comm, handler, leaf);
            assert!(all >= least, "{mode}: {comm} {leaf}: only {all}");
            assert!(
                whole >= 0.95,
                "{mode}: {comm}: {:.1}% of {leaf} reaches main through [signal];{handler}",
                whole * 100.0
            );
        }
    }
    drop(worker);
}

#[test]
fn no_blocked_time_stays_under_a_stack_walked_before_the_tables() {
    let _serial = serial();
    // Under load, with no cached tables: the blocker's tables are built
    // after its first block is seen, and its first walk has none.
    let cache = tempfile_path("empty-unwind-cache");
    let burners: Vec<Workload> = (0..2)
        .map(|_| Workload::start(&workload("cpu_split"), &["30"]))
        .collect();
    let blocker = Workload::start(
        &workload_variant("slow_blocks", "_nofp", &["-fomit-frame-pointer"]),
        &["30"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let output = run(bpfscope()
        .env("BPFSCOPE_CACHE_DIR", &cache)
        .args(["offcpu", "--unwind", "auto", "10"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let blocked = for_comm(&parse_folded(&stdout(&output)), "slowblock");
    let all = total(&blocked);
    // 10 s in 200-ms blocks, in microseconds.
    assert!(all >= 8_000_000, "only {all} us blocked");
    let whole = count_with_chain(
        &blocked,
        &[
            "main",
            "level_one",
            "level_two",
            "level_three",
            "block_slowly",
        ],
    );
    // Only blocks walked before the tables arrived (one or two, of 50) may
    // be cut; a cached cut stack was reused for 16 blocks (3.2 s, 32 %).
    let cut = 1.0 - whole as f64 / all as f64;
    assert!(
        cut <= 0.08,
        "{:.1}% of the blocked time is under a cut stack: {}",
        cut * 100.0,
        stderr(&output)
    );
    drop((burners, blocker));
    std::fs::remove_dir_all(&cache).ok();
}
