//! End-to-end tests of JIT-compiled code: Node 20 with `--perf-basic-prof`
//! and Java 17 with `-XX:+PreserveFramePointer` and `jcmd PID
//! Compiler.perfmap`. Each runs a ground-truth workload (driver ->
//! burnThree/burnOne -> spin, 3:1) whose frames must be named from the
//! runtime's perf map, in the known split, with the driver below them and
//! the runtime's native entry at the root: the walk goes through JIT code
//! by frame pointers and back to tables in the runtime's own binary.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SPLIT_TOLERANCE: f64 = 0.05;

fn workload_source(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(name)
}

/// The split between the hot functions (frames containing `three` and
/// `one`) and the share of their samples whose stack also holds `driver`
/// and `entry`.
fn assert_jit_split(stacks: &[Stack], three: &str, one: &str, driver: &str, entry: &str) {
    let hot: Vec<&Stack> = stacks
        .iter()
        .filter(|s| {
            s.frames
                .iter()
                .any(|f| f.contains(three) || f.contains(one))
        })
        .collect();
    let all: u64 = hot.iter().map(|s| s.count).sum();
    assert!(all >= 1000, "too few samples in {three}/{one}: {all}");
    let in_three: u64 = hot
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.contains(three)))
        .map(|s| s.count)
        .sum();
    let share = in_three as f64 / all as f64;
    assert!(
        (share - 0.75).abs() <= SPLIT_TOLERANCE,
        "{three} share {share:.3}, expected 0.75 ± {SPLIT_TOLERANCE}"
    );
    let chained: u64 = hot
        .iter()
        .filter(|s| {
            s.frames.iter().any(|f| f.contains(driver))
                && s.frames.iter().any(|f| f.contains(entry))
        })
        .map(|s| s.count)
        .sum();
    eprintln!(
        "{three}/{one}: share {share:.3} of {all}, {:.1}% with {driver} and {entry}",
        100.0 * chained as f64 / all as f64
    );
    assert!(
        chained as f64 >= 0.9 * all as f64,
        "only {chained} of {all} hot samples show {driver} and reach {entry}: {:?}",
        hot.iter().take(5).collect::<Vec<_>>()
    );
}

/// Node running a workload for 12 s with its perf map (and `flags`),
/// given 1.5 s to compile it.
fn start_node(script: &str, flags: &[&str]) -> Workload {
    let mut all_flags = vec!["--perf-basic-prof", "--interpreted-frames-native-stack"];
    all_flags.extend_from_slice(flags);
    start_node_with_flags(script, &all_flags)
}

/// Node running a workload for 12 s with only `flags`, given 1.5 s to compile it.
fn start_node_with_flags(script: &str, flags: &[&str]) -> Workload {
    let node = Command::new("node")
        .args(flags)
        .arg(workload_source(script))
        .arg("12")
        .current_dir(tmp_dir()) // V8 may write logs in its working directory
        .spawn()
        .expect("node is installed by the test command");
    std::thread::sleep(Duration::from_millis(1500));
    Workload(node)
}

#[test]
fn node_frames_are_named_from_its_perf_map_down_to_node_start() {
    let _serial = serial();
    let node = start_node("split.js", &["--no-turbo-inlining"]);
    let output = run(bpfscope().args(["profile", "-F", "999", "-p", &node.pid().to_string(), "4"]));
    let summary = stderr(&output);
    assert!(output.status.success(), "{summary}");
    assert!(summary.contains("went through JIT code"), "{summary}");
    let stacks = parse_folded(&stdout(&output));
    // Names as V8 writes them: "JS:*burnThree /path/split.js:4:19".
    assert!(
        stacks.iter().any(|s| s
            .frames
            .iter()
            .any(|f| f.starts_with("JS:") && f.contains("burnThree /"))),
        "{stacks:?}"
    );
    assert_jit_split(&stacks, "burnThree", "burnOne", "driver", "node::Start");
    std::fs::remove_file(format!("/tmp/perf-{}.map", node.pid())).ok();
}

/// Split.java, compiled, running for `seconds` under the JVM `flags`.
fn start_split_java(flags: &[&str], seconds: &str) -> Workload {
    let java = Command::new("java")
        .args(flags)
        .arg("-cp")
        .arg(compiled_split_java())
        .args(["Split", seconds])
        .stdout(Stdio::null())
        .spawn()
        .expect("java is installed by the test command");
    Workload(java)
}

/// Split.java compiled into a directory of classes.
fn compiled_split_java() -> std::path::PathBuf {
    let classes = tmp_dir().join(format!("jit-java-{}", std::process::id()));
    std::fs::create_dir_all(&classes).unwrap();
    let status = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(workload_source("Split.java"))
        .status()
        .expect("javac (openjdk-17-jdk-headless) is installed by the test command");
    assert!(status.success());
    classes
}

#[test]
fn java_frames_are_named_from_its_perf_map_down_to_java_main() {
    let _serial = serial();
    // Compiled by C2 at first call (the driver never returns, so the code it
    // runs must be its only version), without inlining: each method is its
    // own frame.
    let java = start_split_java(
        &[
            "-XX:+PreserveFramePointer",
            "-XX:-Inline",
            "-Xcomp",
            "-XX:-TieredCompilation",
        ],
        "17",
    );
    // Until the driver's compiled code runs: on a busy machine 3 s left
    // 10 % of the samples under the interpreter's frames.
    std::thread::sleep(Duration::from_secs(6));
    let profiler = bpfscope()
        .args(["profile", "-F", "999", "-p", &java.pid().to_string(), "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The map is written when asked for, with the code compiled by then:
    // late in the run, after any recompilation; bpfscope reads it at the end.
    std::thread::sleep(Duration::from_secs(3));
    let status = Command::new("jcmd")
        .arg(java.pid().to_string())
        .arg("Compiler.perfmap")
        .stdout(Stdio::null())
        .status()
        .expect("jcmd is installed by the test command");
    assert!(status.success());
    let output = profiler.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f == "void Split.burnThree(int)")),
        "names as the JVM writes them: {stacks:?}"
    );
    assert_jit_split(
        &stacks,
        "Split.burnThree",
        "Split.burnOne",
        "Split.driver",
        "JavaMain",
    );
    std::fs::remove_file(format!("/tmp/perf-{}.map", java.pid())).ok();
}

/// pyenv's build of CPython `minor` (e.g. "3.12"), the newest patch release.
fn pyenv_python(minor: &str) -> std::path::PathBuf {
    let root = Command::new("pyenv")
        .arg("root")
        .output()
        .expect("pyenv is on this machine's image (see README)");
    let root = String::from_utf8_lossy(&root.stdout).trim().to_string();
    let mut builds: Vec<std::path::PathBuf> = std::fs::read_dir(Path::new(&root).join("versions"))
        .expect("pyenv's versions directory")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&format!("{minor}.")))
        })
        .collect();
    builds.sort();
    let build = builds
        .pop()
        .unwrap_or_else(|| panic!("pyenv has no CPython {minor} build"));
    build.join("bin").join(format!("python{minor}"))
}

/// CPython 3.12 with `-X perf` running a workload, given 1.5 s to start.
fn start_python_with_perf_map(script: &str, args: &[&str]) -> Workload {
    let python = Command::new(pyenv_python("3.12"))
        .args(["-X", "perf"])
        .arg(workload_source(script))
        .args(args)
        .spawn()
        .expect("start CPython 3.12");
    std::thread::sleep(Duration::from_millis(1500));
    Workload(python)
}

#[test]
fn python_perf_trampoline_frames_are_named_down_to_py_runmain() {
    let _serial = serial();
    let python = start_python_with_perf_map("split.py", &["16"]);
    // The perf map alone (Python frames not read).
    let (stacks, _) = profile_pid(python.pid(), "4", &["--no-python"]);
    // Names as CPython writes them: "py::burn_three:/path/split.py".
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f.starts_with("py::burn_three:/"))),
        "{stacks:?}"
    );
    assert_jit_split(
        &stacks,
        "py::burn_three:",
        "py::burn_one:",
        "py::driver:",
        "Py_RunMain",
    );
    // With Python frames read, each trampoline gives way to the frame it
    // runs (one left stands for an interpreter frame the Python walk did
    // not see, as when that frame is returning).
    let (stacks, _) = profile_pid(python.pid(), "3", &[]);
    let named: u64 = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f == "split.py:burn_three"))
        .map(|s| s.count)
        .sum();
    assert!(named >= 1000, "{named} samples in split.py:burn_three");
    let doubled = |s: &&Stack| {
        s.frames
            .windows(2)
            .any(|pair| pair[0].starts_with("py::") && pair[1].starts_with("split.py:"))
    };
    assert!(
        !stacks.iter().any(|s| doubled(&s)),
        "a trampoline beside the Python frame it runs: {:?}",
        stacks.iter().find(doubled)
    );
    std::fs::remove_file(format!("/tmp/perf-{}.map", python.pid())).ok();
}

/// Stacks in py::burn of a deep_recursion.py profile, with the number of
/// py::descend frames each shows and whether it reaches `entry`.
fn python_recursion_samples(depth: u32, entry: &str) -> (Vec<(usize, bool, u64)>, String) {
    let python = start_python_with_perf_map("deep_recursion.py", &[&depth.to_string(), "8"]);
    // Native frames only: the depth is counted in trampolines.
    let output = run(bpfscope().args([
        "profile",
        "-F",
        "199",
        "--no-python",
        "-p",
        &python.pid().to_string(),
        "3",
    ]));
    let summary = stderr(&output);
    assert!(output.status.success(), "{summary}");
    std::fs::remove_file(format!("/tmp/perf-{}.map", python.pid())).ok();
    let samples = parse_folded(&stdout(&output))
        .iter()
        .filter(|s| {
            // The innermost Python frame; native ones of the interpreter lie above it.
            s.frames
                .iter()
                .rev()
                .find(|f| f.starts_with("py::"))
                .is_some_and(|f| f.starts_with("py::burn:"))
        })
        .map(|s| {
            let descends = s
                .frames
                .iter()
                .filter(|f| f.starts_with("py::descend:"))
                .count();
            (descends, s.frames.iter().any(|f| f == entry), s.count)
        })
        .collect();
    (samples, summary)
}

#[test]
fn a_python_recursion_400_deep_keeps_its_depth_and_700_deep_is_cut_and_counted() {
    let _serial = serial();
    // 400 Python frames are about 1,600 native ones: whole, down to Py_RunMain.
    let (samples, summary) = python_recursion_samples(400, "Py_RunMain");
    let all: u64 = samples.iter().map(|(_, _, count)| count).sum();
    let whole: u64 = samples
        .iter()
        .filter(|(descends, reaches_entry, _)| *descends == 400 && *reaches_entry)
        .map(|(_, _, count)| count)
        .sum();
    eprintln!("400 deep: {whole} of {all} samples in burn whole");
    assert!(all >= 100, "{all} samples in burn: {summary}");
    assert!(
        whole as f64 >= 0.9 * all as f64,
        "{whole} of {all} samples show 400 descend frames and Py_RunMain: {summary}"
    );
    // 700 Python frames pass the 2,048-frame walk: cut, marked, counted.
    // (CPython 3.12 refuses much deeper recursion through its trampolines.)
    let (samples, summary) = python_recursion_samples(700, "[truncated]");
    let all: u64 = samples.iter().map(|(_, _, count)| count).sum();
    let cut: u64 = samples
        .iter()
        .filter(|(descends, marked, _)| *marked && *descends < 700)
        .map(|(_, _, count)| count)
        .sum();
    assert!(all >= 100, "{all} samples in burn: {summary}");
    assert!(
        cut as f64 >= 0.9 * all as f64,
        "{cut} of {all} samples cut and marked: {summary}"
    );
    assert!(summary.contains("depth limit"), "{summary}");
}

#[test]
fn node_blocking_is_attributed_to_its_js_functions_off_cpu() {
    let _serial = serial();
    let node = start_node("blocking_split.js", &[]);
    let output = run(bpfscope().args(["offcpu", "-p", &node.pid().to_string(), "4"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    assert_jit_split(&stacks, "waitThree", "waitOne", "driver", "node::Start");
    std::fs::remove_file(format!("/tmp/perf-{}.map", node.pid())).ok();
}

#[test]
fn a_perf_map_in_a_containers_own_tmp_is_read_under_its_namespace_pid() {
    let _serial = serial();
    // Node as PID 1 of its own PID namespace, with a /tmp of its own: its
    // map is /tmp/perf-1.map inside, invisible on the host. The script is
    // opened before the tmpfs hides /tmp (where a clone may live) and fed to
    // node on standard input.
    let script = format!(
        "exec 3< '{}' && mount -t tmpfs none /tmp && exec node --perf-basic-prof --interpreted-frames-native-stack --no-turbo-inlining - 12 <&3 3<&-",
        workload_source("split.js").display()
    );
    let namespace = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "-p",
            "-f",
            "--mount-proc",
            "sh",
            "-c",
            &script,
        ])
        .current_dir(tmp_dir())
        .spawn()
        .unwrap();
    let namespace = Workload(namespace);
    let mut host_pid = 0u32;
    let node_started = wait_for(Duration::from_secs(10), || {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", namespace.pid()))
                .unwrap_or_default();
        host_pid = children
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .unwrap_or(0);
        host_pid != 0
            && std::fs::read_to_string(format!("/proc/{host_pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "node")
    });
    assert!(node_started, "node did not start in its namespace");
    // Past start-up, so the driver's functions are compiled and mapped.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !Path::new(&format!("/tmp/perf-{host_pid}.map")).exists()
            && !Path::new("/tmp/perf-1.map").exists(),
        "the map must exist only inside"
    );
    let (stacks, _) = profile_pid(host_pid, "3", &[]);
    assert_jit_split(&stacks, "burnThree", "burnOne", "driver", "node::Start");
}

#[test]
fn functions_compiled_until_the_exit_are_named() {
    let _serial = serial();
    let output = run(bpfscope()
        .args(["profile", "-F", "999", "--", "node"])
        .args(["--perf-basic-prof", "--interpreted-frames-native-stack"])
        .arg(workload_source("late_functions.js"))
        .arg("3")
        .current_dir(tmp_dir()));
    let summary = stderr(&output);
    assert!(output.status.success(), "{summary}");
    let stacks = for_comm(&parse_folded(&stdout(&output)), "node");
    let all = total(&stacks);
    let late: u64 = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.contains("lateFunction")))
        .map(|s| s.count)
        .sum();
    assert!(
        late as f64 >= 0.8 * all as f64,
        "{late} of {all} in the functions\n{summary}"
    );
    // Lines node appended after the last read while it ran name their
    // code only if the map is read to its end after node exits: before,
    // 1.4 to 2.9 % of the samples ended in an unnamed JIT frame.
    let unnamed_leaf: u64 = stacks
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f == "[unknown]"))
        .map(|s| s.count)
        .sum();
    assert!(
        unnamed_leaf * 200 <= all,
        "{unnamed_leaf} of {all} samples end in an unnamed frame\n{summary}"
    );
}

/// `profile -p PID 3` of a JIT runtime started without the flags that name
/// its code: the share of samples with an `[unknown] (JIT)` frame, and stderr.
fn profile_unflagged(pid: u32) -> (f64, String) {
    let output = run(bpfscope().args(["profile", "-F", "999", "-p", &pid.to_string(), "3"]));
    let summary = stderr(&output);
    assert!(output.status.success(), "{summary}");
    let stacks = parse_folded(&stdout(&output));
    let labelled: u64 = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f == "[unknown] (JIT)"))
        .map(|s| s.count)
        .sum();
    (labelled as f64 / total(&stacks).max(1) as f64, summary)
}

#[test]
fn jit_code_without_a_perf_map_is_labelled_and_the_flag_named() {
    let _serial = serial();
    let node = start_node_with_flags("split.js", &[]);
    let (share, summary) = profile_unflagged(node.pid());
    // Nearly all of split.js's time is in its JIT code.
    assert!(share >= 0.8, "{share:.2} of samples labelled\n{summary}");
    assert!(
        summary.contains(&format!(
            "node (PID {}): start it with --perf-basic-prof",
            node.pid()
        )),
        "{summary}"
    );
    drop(node);

    let java = start_split_java(&[], "14");
    std::thread::sleep(Duration::from_secs(3));
    let (share, summary) = profile_unflagged(java.pid());
    assert!(share >= 0.5, "{share:.2} of samples labelled\n{summary}");
    assert!(
        summary.contains(&format!("jcmd {} Compiler.perfmap", java.pid())),
        "{summary}"
    );
}
