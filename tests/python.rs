//! CPython frames read in BPF (python.h), for every pyenv CPython 3.8 to
//! 3.13 on the machine (a missing one fails the test): the CPU split of
//! two Python functions, callers above callees and the native frames below
//! the interpreter kept; off-CPU time of a sleep and a socket read; each
//! thread's own functions; a C extension under its Python caller; a Python
//! without offsets left native-only with a summary line; `--no-python`;
//! pprof functions with file and line.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

/// The bound: each split within ±3 points.
const SPLIT_TOLERANCE: f64 = 0.03;
const MINORS: [u8; 6] = [8, 9, 10, 11, 12, 13];

/// pyenv's CPython 3.`minor` (its newest patch release).
fn python(minor: u8) -> PathBuf {
    let root = Command::new("pyenv")
        .arg("root")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .ok()
        .filter(|root| !root.is_empty())
        .unwrap_or_else(|| format!("{}/.pyenv", std::env::var("HOME").unwrap()));
    let prefix = format!("3.{minor}.");
    let mut versions: Vec<String> = std::fs::read_dir(format!("{root}/versions"))
        .unwrap_or_else(|e| panic!("pyenv versions under {root}: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    versions.sort_by_key(|v| v[prefix.len()..].parse::<u32>().unwrap_or(0));
    let version = versions.last().unwrap_or_else(|| {
        panic!("pyenv has no CPython 3.{minor} (scripts/install-deps.sh installs it)")
    });
    let binary = PathBuf::from(format!("{root}/versions/{version}/bin/python3.{minor}"));
    assert!(binary.is_file(), "{}", binary.display());
    binary
}

fn script(name: &str) -> String {
    format!("{}/tests/workloads/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Python `workload` running under `python` for `seconds`.
fn start_python(python: &PathBuf, workload: &str, seconds: &str) -> Workload {
    let child = Command::new(python)
        .args([script(workload).as_str(), seconds])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    std::thread::sleep(std::time::Duration::from_millis(500));
    Workload(child)
}

/// Whether `frames` hold `names` in this order (not necessarily adjacent:
/// up to 3.10 native frames sit between Python frames).
fn in_order(frames: &[String], names: &[&str]) -> bool {
    let mut wanted = names.iter();
    let mut next = wanted.next();
    for frame in frames {
        if next.is_some_and(|name| frame == name) {
            next = wanted.next();
        }
    }
    next.is_none()
}

fn count(stacks: &[Stack], keep: impl Fn(&Stack) -> bool) -> u64 {
    stacks.iter().filter(|s| keep(s)).map(|s| s.count).sum()
}

#[test]
fn every_version_gives_the_split_with_callers_and_native_frames() {
    let _serial = serial();
    for minor in MINORS {
        let python = python(minor);
        let workload = start_python(&python, "split.py", "8");
        let (stacks, summary) = profile_pid(workload.pid(), "3", &[]);
        let version = format!("3.{minor}");
        assert!(
            summary.contains("python: 1 processes with Python frames read"),
            "{version}: {summary}"
        );
        let all = total(&stacks);
        assert!(all >= 2000, "{version}: {all} samples");
        let under = |leaf: &str| {
            count(&stacks, |s| {
                in_order(
                    &s.frames,
                    &[
                        "split.py:<module>",
                        "split.py:driver",
                        leaf,
                        "split.py:spin",
                    ],
                )
            })
        };
        let (three, one) = (under("split.py:burn_three"), under("split.py:burn_one"));
        let share = three as f64 / (three + one) as f64;
        assert!(
            (share - 0.75).abs() <= SPLIT_TOLERANCE,
            "{version}: burn_three share {share:.3} ({three} and {one} of {all})"
        );
        // Caller above callee: the samples in spin under the whole chain.
        let in_spin = count(&stacks, |s| s.frames.iter().any(|f| f == "split.py:spin"));
        assert!(
            (three + one) as f64 >= 0.95 * in_spin as f64,
            "{version}: {} of {in_spin} samples in spin show <module>, driver and burn_* above it",
            three + one
        );
        assert!(
            in_spin as f64 >= 0.90 * all as f64,
            "{version}: only {in_spin} of {all} samples named spin"
        );
        let native_below = count(&stacks, |s| {
            let first_python = s.frames.iter().position(|f| f.starts_with("split.py:"));
            let run_main = s.frames.iter().position(|f| f == "Py_RunMain");
            matches!((run_main, first_python), (Some(r), Some(p)) if r < p)
        });
        assert!(
            native_below as f64 >= 0.95 * all as f64,
            "{version}: {native_below} of {all} samples keep Py_RunMain below the Python frames"
        );
        assert!(
            !stacks
                .iter()
                .any(|s| s.frames.iter().any(|f| f == "_PyEval_EvalFrameDefault")
                    && s.frames.iter().any(|f| f == "split.py:spin")
                    && s.frames
                        .last()
                        .is_some_and(|f| f == "_PyEval_EvalFrameDefault")),
            "{version}: an interpreter frame left where Python frames were"
        );
    }
}

#[test]
fn offcpu_attributes_a_sleep_and_a_socket_read_to_their_functions() {
    let _serial = serial();
    for minor in [8, 11, 13] {
        let python = python(minor);
        let workload = start_python(&python, "py_blocking.py", "8");
        let output = run(bpfscope().args(["offcpu", "-p", &workload.pid().to_string(), "4"]));
        assert!(output.status.success(), "{}", stderr(&output));
        let stacks = parse_folded(&stdout(&output));
        let under = |name: &str| {
            count(&stacks, |s| {
                in_order(&s.frames, &["py_blocking.py:driver", name])
            })
        };
        let (sleeping, reading) = (
            under("py_blocking.py:waiter"),
            under("py_blocking.py:reader"),
        );
        let share = sleeping as f64 / (sleeping + reading) as f64;
        assert!(
            (share - 0.75).abs() <= SPLIT_TOLERANCE,
            "3.{minor}: time.sleep share {share:.3} ({sleeping} and {reading} us)"
        );
        // The blocking native frames stay above their Python callers.
        assert!(
            stacks
                .iter()
                .any(|s| in_order(&s.frames, &["py_blocking.py:reader", "sock_recv"])),
            "3.{minor}: no socket read under reader"
        );
    }
}

#[test]
fn each_thread_shows_its_own_functions() {
    let _serial = serial();
    for minor in [8, 12, 13] {
        let python = python(minor);
        let mut workload = start_python(&python, "py_threads.py", "8");
        let mut lines = BufReader::new(workload.0.stdout.take().unwrap()).lines();
        let mut tids = std::collections::HashMap::new();
        for _ in 0..2 {
            let line = lines.next().unwrap().unwrap();
            let (name, tid) = line.split_once(' ').unwrap();
            tids.insert(name.to_string(), tid.to_string());
        }
        for (thread, own, other) in [
            ("a", "burn_in_a", "burn_in_b"),
            ("b", "burn_in_b", "burn_in_a"),
        ] {
            let (stacks, _) = profile_pid(workload.pid(), "2", &["-L", &tids[thread]]);
            let own_frame = format!("py_threads.py:{own}");
            let other_frame = format!("py_threads.py:{other}");
            let all = total(&stacks);
            let mine = count(&stacks, |s| {
                in_order(&s.frames, &["py_threads.py:run", &own_frame])
            });
            let theirs = count(&stacks, |s| s.frames.contains(&other_frame));
            assert!(all >= 500, "3.{minor} thread {thread}: {all} samples");
            assert_eq!(theirs, 0, "3.{minor}: thread {thread} shows {other}");
            assert!(
                mine as f64 >= 0.95 * all as f64,
                "3.{minor}: {mine} of thread {thread}'s {all} samples in {own}"
            );
        }
    }
}

#[test]
fn a_c_extension_sits_under_its_python_caller() {
    let _serial = serial();
    for minor in [9, 12] {
        let python = python(minor);
        let workload = start_python(&python, "py_zlib.py", "8");
        std::thread::sleep(std::time::Duration::from_secs(2)); // past building the buffer
        let (stacks, _) = profile_pid(workload.pid(), "2", &[]);
        let in_zlib = count(&stacks, |s| s.frames.iter().any(|f| f == "zlib_compress"));
        let under_caller = count(&stacks, |s| {
            in_order(&s.frames, &["py_zlib.py:compress_loop", "zlib_compress"])
        });
        assert!(
            in_zlib >= 500,
            "3.{minor}: {in_zlib} samples in zlib_compress"
        );
        assert!(
            under_caller as f64 >= 0.95 * in_zlib as f64,
            "3.{minor}: {under_caller} of {in_zlib} zlib samples under compress_loop"
        );
    }
}

#[test]
fn a_python_without_offsets_stays_native_with_a_summary_line() {
    let _serial = serial();
    let python = {
        let python_3_8 = python(8);
        let versions = python_3_8
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap();
        let old = std::fs::read_dir(versions)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|name| name.starts_with("3.7."))
            .expect("pyenv has CPython 3.7 (a version without offsets)");
        versions.join(old).join("bin/python3.7")
    };
    let workload = start_python(&python, "split.py", "6");
    let (stacks, summary) = profile_pid(workload.pid(), "2", &[]);
    assert!(
        summary.contains("not read: Python 3.7 (no offsets for it), native frames only"),
        "{summary}"
    );
    assert!(!stacks
        .iter()
        .any(|s| s.frames.iter().any(|f| f.contains(".py:"))));
    let interpreter = count(&stacks, |s| {
        s.frames.iter().any(|f| f == "_PyEval_EvalFrameDefault")
    });
    assert!(interpreter as f64 >= 0.9 * total(&stacks) as f64);

    // --no-python: a supported version, native frames only.
    let workload = start_python(&self::python(12), "split.py", "6");
    let (stacks, summary) = profile_pid(workload.pid(), "2", &["--no-python"]);
    assert!(!stacks
        .iter()
        .any(|s| s.frames.iter().any(|f| f.contains(".py:"))));
    assert!(!summary.contains("python:"), "{summary}");
}

#[test]
fn pprof_gives_python_functions_with_file_and_line() {
    let _serial = serial();
    let workload = start_python(&python(11), "split.py", "6");
    let path = tmp_dir().join("python.pb.gz");
    let output = run(bpfscope()
        .args([
            "profile",
            "-F",
            "499",
            "-p",
            &workload.pid().to_string(),
            "-o",
        ])
        .arg(&path)
        .arg("2"));
    assert!(output.status.success(), "{}", stderr(&output));
    let traces = Command::new("go")
        .args(["tool", "pprof", "-traces", "-lines"])
        .arg(&path)
        .env("HOME", tmp_dir())
        .output()
        .expect("go (golang-go) is installed by the test command");
    let text = String::from_utf8_lossy(&traces.stdout);
    assert!(
        traces.status.success(),
        "{}",
        String::from_utf8_lossy(&traces.stderr)
    );
    // spin's loop: `for i in range(units * 2000)` and `total += i`.
    let spin_file = script("split.py");
    let source = std::fs::read_to_string(&spin_file).unwrap();
    let line_of = |code: &str| {
        1 + source
            .lines()
            .position(|line| line.trim() == code)
            .unwrap_or_else(|| panic!("no `{code}` in split.py"))
    };
    let loop_lines = [
        line_of("for i in range(units * 2000):"),
        line_of("total += i"),
    ];
    assert!(
        loop_lines
            .iter()
            .any(|line| text.contains(&format!("split.py:spin {spin_file}:{line}"))),
        "no sample on spin's lines {loop_lines:?}: {}",
        &text[..text.len().min(3000)]
    );
}

#[test]
fn a_process_running_subinterpreters_stays_native_and_is_counted() {
    let _serial = serial();
    for minor in MINORS {
        let workload = start_python(&python(minor), "py_subinterpreter.py", "5");
        let (stacks, summary) = profile_pid(workload.pid(), "2", &[]);
        let version = format!("3.{minor}");
        let all = total(&stacks);
        assert!(all >= 1000, "{version}: {all} samples");
        let burning = count(&stacks, |s| {
            s.frames.iter().any(|f| f == "_PyEval_EvalFrameDefault")
        });
        assert!(
            burning as f64 >= 0.8 * all as f64,
            "{version}: {burning} of {all} samples in the interpreter"
        );
        let python_frame = |f: &String| {
            f.ends_with(":main_burn") || f.ends_with(":sub_burn") || f.ends_with(":<module>")
        };
        assert!(
            !stacks.iter().any(|s| s.frames.iter().any(python_frame)),
            "{version}: a Python frame beside a subinterpreter: {:?}",
            stacks.iter().find(|s| s.frames.iter().any(python_frame))
        );
        assert!(
            summary.contains("samples of processes running subinterpreters not walked"),
            "{version}: {summary}"
        );
    }
}

#[test]
fn threads_waiting_for_the_gil_show_as_such() {
    let _serial = serial();
    // Two threads that only compute: each waits for the GIL while the other runs.
    let workload = start_python(&python(12), "py_threads.py", "8");
    let output = run(bpfscope().args(["offcpu", "-p", &workload.pid().to_string(), "3"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stacks = parse_folded(&stdout(&output));
    let burning = |s: &Stack| {
        s.frames
            .iter()
            .any(|f| f == "py_threads.py:burn_in_a" || f == "py_threads.py:burn_in_b")
    };
    let blocked = count(&stacks, burning);
    let waiting = count(&stacks, |s| {
        burning(s) && s.frames.iter().any(|f| f == "[waiting for the GIL]")
    });
    assert!(blocked > 0, "{stacks:?}");
    assert!(
        waiting as f64 >= 0.8 * blocked as f64,
        "{waiting} of {blocked} us blocked in burn_in_* waited for the GIL"
    );
}

#[test]
fn a_python_in_its_own_mount_and_pid_namespace_is_named() {
    let _serial = serial();
    // The interpreter at /mnt in a private mount namespace, its pyenv
    // directory hidden there, and a PID namespace of its own.
    let home = python(12).parent().unwrap().parent().unwrap().to_path_buf();
    let pyenv_versions = home.parent().unwrap().to_path_buf();
    let inner = format!(
        "mount --make-rprivate / && mount --bind {home} /mnt && mount -t tmpfs none {versions} \
         && LD_LIBRARY_PATH=/mnt/lib exec /mnt/bin/python3.12 {script} 8",
        home = home.display(),
        versions = pyenv_versions.display(),
        script = script("split.py"),
    );
    let container = Workload(
        Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "sh",
                "-c",
                &inner,
            ])
            .spawn()
            .expect("unshare (util-linux)"),
    );
    let mut python_pid = None;
    assert!(
        wait_for(std::time::Duration::from_secs(5), || {
            let children = format!("/proc/{0}/task/{0}/children", container.pid());
            python_pid = std::fs::read_to_string(children)
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok());
            python_pid.is_some()
        }),
        "the namespaced python did not start"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let python_pid = python_pid.unwrap();
    let (stacks, summary) = profile_pid(python_pid, "2", &[]);
    assert!(
        summary.contains("python: 1 processes with Python frames read"),
        "{summary}"
    );
    let all = total(&stacks);
    let named = count(&stacks, |s| {
        in_order(&s.frames, &["split.py:driver", "split.py:spin"])
    });
    assert!(
        named as f64 >= 0.9 * all as f64,
        "{named} of {all} samples named in the namespaced python"
    );
}

#[test]
fn serve_windows_name_python_functions() {
    let _serial = serial();
    let (serve, port) = start_serve();
    let workload = start_python(&python(13), "split.py", "8");
    let (status, svg) = get(port, "/flamegraph.svg?seconds=3");
    assert_eq!(status, 200);
    for name in ["split.py:burn_three", "split.py:burn_one", "split.py:spin"] {
        assert!(svg.contains(name), "no {name} in the window: {svg:.1500}");
    }
    drop(workload);
    stop_serve(serve);
}

#[test]
fn code_run_by_an_import_is_named_though_freed_when_it_ends() {
    let _serial = serial();
    // 40 imports of 50 ms each, 1 s after the start; code objects compiled
    // after each import take the memory of the one it freed.
    let output = run(bpfscope()
        .args(["profile", "-F", "499", "--"])
        .arg(python(11))
        .args([script("py_imports.py").as_str(), "1"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let importing: Vec<Stack> = parse_folded(&stdout(&output))
        .into_iter()
        .filter(|s| s.frames.iter().any(|f| f == "py_imports.py:import_all"))
        .collect();
    let all = total(&importing);
    let named = |prefix: &str| {
        count(&importing, |s| {
            s.frames
                .iter()
                .any(|f| f.starts_with(prefix) && f.ends_with(".py:<module>"))
        })
    };
    let (in_bodies, misnamed) = (named("hot_module_"), named("reuse_"));
    let unnamed = count(&importing, |s| {
        s.frames.iter().any(|f| f == "[unknown python]")
    });
    // 2 s of module bodies at 499 Hz: about 1000 samples. Read late, 80 %
    // of them were named after the code objects that took their memory.
    assert_eq!(misnamed, 0, "samples named after later code objects");
    assert!(
        in_bodies >= 900 && unnamed * 100 <= all,
        "{in_bodies} of {all} samples named in a module body, {unnamed} [unknown python]: {}",
        stderr(&output)
    );
}
