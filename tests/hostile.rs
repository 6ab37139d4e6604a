//! An unprivileged user on the host must not be able to crash, hang or
//! misdirect the root-run tool through files, paths and processes they
//! control. Each case runs the user's side as a user the test creates.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const USER: &str = "bpfscope-hostile";

/// The test's unprivileged user (created once): (uid, gid).
fn hostile_user() -> (u32, u32) {
    system_user(USER)
}

/// A directory the hostile user owns.
fn user_dir(name: &str) -> PathBuf {
    let (uid, gid) = hostile_user();
    let dir = PathBuf::from(format!(
        "/tmp/bpfscope-hostile-{name}-{}",
        std::process::id()
    ));
    fs::remove_dir_all(&dir).ok();
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    dir
}

/// `program ARGS` as the hostile user.
fn as_user(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", USER, "--"]).arg(program).args(args);
    command
}

/// Copies `source` into the user's directory, owned by the user.
fn give_user(source: &Path, dir: &Path, name: &str) -> PathBuf {
    let (uid, gid) = hostile_user();
    let copy = dir.join(name);
    fs::copy(source, &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_file_truncated_while_it_is_read_costs_nothing() {
    let _serial = serial();
    let dir = user_dir("truncate");
    let library = give_user(
        Path::new("/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1"),
        &dir,
        "big.so",
    );
    let workload = give_user(&workload("truncating_map"), &dir, "truncating_map");
    let cache = tmp_dir().join("hostile-truncate-cache");
    fs::remove_dir_all(&cache).ok();
    for tool in ["profile", "offcpu"] {
        let mut user = Workload(
            as_user(&workload, &[library.to_str().unwrap(), "6"])
                .spawn()
                .unwrap(),
        );
        let args: &[&str] = if tool == "profile" {
            &["profile", "-F", "999", "4"]
        } else {
            &["offcpu", "4"]
        };
        let output = run(bpfscope().env("BPFSCOPE_CACHE_DIR", &cache).args(args));
        user.0.kill().ok();
        let text = stderr(&output);
        assert!(
            output.status.success(),
            "{tool} died: {:?} {text}",
            output.status
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn paths_swapped_after_exit_neither_hang_nor_misname() {
    let _serial = serial();
    let dir = user_dir("swap");
    // The user's program, and a root-only program built from the same
    // source with other names: the same offsets would name other functions.
    let theirs = give_user(&workload("short_burn"), &dir, "prog");
    let secret = workload_variant(
        "short_burn",
        "-secret",
        &[
            "-fno-omit-frame-pointer",
            "-Dshort_burn_spin=root_only_secret_function",
        ],
    );
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    for replacement in ["fifo", "symlink"] {
        let profiler = bpfscope()
            .args(["profile", "-F", "999", "6"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let status = as_user(&theirs, &["1000"]).status().unwrap();
        assert!(status.success());
        // Gone: its path now leads to a FIFO, or to the root-only binary.
        fs::remove_file(&theirs).unwrap();
        if replacement == "fifo" {
            mkfifo(&theirs);
        } else {
            std::os::unix::fs::symlink(&secret, &theirs).unwrap();
        }
        let started = Instant::now();
        let output = profiler.wait_with_output().unwrap();
        let (text, folded) = (stderr(&output), stdout(&output));
        assert!(output.status.success(), "{replacement}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{replacement}: profile took {:?} to end",
            started.elapsed()
        );
        assert!(
            folded.contains("short_burn_spin"),
            "{replacement}: the exited program is named from its own file"
        );
        assert!(
            !folded.contains("root_only_secret_function"),
            "{replacement}: a name from the root-only binary"
        );
        fs::remove_file(&theirs).unwrap();
        fs::copy(workload("short_burn"), &theirs).unwrap();
        let (uid, gid) = hostile_user();
        std::os::unix::fs::chown(&theirs, Some(uid), Some(gid)).unwrap();
    }
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn planted_temporary_names_cannot_redirect_output() {
    let _serial = serial();
    let (uid, gid) = hostile_user();
    let (shared, victim) = shared_dir_and_root_file("shared");
    // The user plants symlinks under every name a predictable scheme would
    // use for the next few hundred PIDs (the old `<out>.<pid>.tmp`).
    let next_pid: u32 = fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for pid in next_pid..next_pid + 400 {
        let link = shared.join(format!("out.folded.{pid}.tmp"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(uid), Some(gid)).unwrap();
    }
    let output = run(bpfscope().args([
        "profile",
        "-o",
        shared.join("out.folded").to_str().unwrap(),
        "1",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(fs::read(&victim).unwrap(), b"root's data");
    assert!(fs::metadata(shared.join("out.folded")).unwrap().is_file());
    fs::remove_dir_all(&shared).ok();
}

#[test]
fn output_onto_a_device_is_written_in_place() {
    let _serial = serial();
    let dir = tmp_dir().join("devices");
    fs::remove_dir_all(&dir).ok();
    fs::create_dir_all(&dir).unwrap();
    let (null, full) = (dir.join("null"), dir.join("full"));
    for (node, minor) in [(&null, "3"), (&full, "7")] {
        let status = Command::new("mknod")
            .arg(node)
            .args(["c", "1", minor])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let burner = workload("cpu_split");
    let profile_into = |path: &Path| {
        run(bpfscope()
            .args(["profile", "-F", "999", "-f", "folded", "-o"])
            .arg(path)
            .arg("--")
            .arg(&burner)
            .arg("0.5"))
    };
    let output = profile_into(&null);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(fs::metadata(&null).unwrap().file_type().is_char_device());

    let output = profile_into(&full);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(fs::metadata(&full).unwrap().file_type().is_char_device());
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_full_file_system_leaves_no_partial_output() {
    let _serial = serial();
    let dir = tmp_dir().join("tiny-tmpfs");
    fs::create_dir_all(&dir).unwrap();
    Command::new("umount")
        .arg(&dir)
        .stderr(Stdio::null())
        .status()
        .ok();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k", "tiny"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tiny tmpfs");
    let output = run(bpfscope()
        .args(["profile", "-F", "999", "-o"])
        .arg(dir.join("out.svg"))
        .arg("--")
        .arg(workload("cpu_split"))
        .arg("0.5"));
    let text = stderr(&output);
    let left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    Command::new("umount").arg(&dir).status().unwrap();
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("error")).count(),
        1,
        "{text}"
    );
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

/// `unwind-table FILE` with the cache in `cache`: its summary line.
fn unwind_table(cache: &Path, args: &[&str]) -> String {
    let output = run(bpfscope()
        .env("BPFSCOPE_CACHE_DIR", cache)
        .arg("unwind-table")
        .args(args));
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

/// "N rows ... rules: ..." without the timing.
fn table_shape(summary: &str) -> String {
    let rows = summary
        .split(": ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    format!("{rows} {}", summary.lines().nth(1).unwrap())
}

#[test]
fn a_forged_build_id_cannot_poison_the_cache() {
    let _serial = serial();
    let forged = "-Wl,--build-id=0x00112233445566778899aabbccddeeff00112233";
    let victim = workload_variant("cpu_split", "-forged-a", &[forged]);
    let attacker = workload_variant("offcpu_blocks", "-forged-b", &[forged]);
    let cache = tmp_dir().join("hostile-cache");
    fs::remove_dir_all(&cache).ok();
    let victim_own = unwind_table(&cache, &["--no-cache", victim.to_str().unwrap()]);
    // The attacker's table goes into the cache first, under the same build ID.
    let stored = unwind_table(&cache, &[attacker.to_str().unwrap()]);
    assert!(stored.contains("built"), "{stored}");
    let victim_now = unwind_table(&cache, &[victim.to_str().unwrap()]);
    assert!(
        victim_now.contains("built"),
        "not served the attacker's table: {victim_now}"
    );
    assert_eq!(table_shape(&victim_now), table_shape(&victim_own));
    assert_eq!(fs::metadata(&cache).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn a_crafted_oversized_executable_is_refused_quickly() {
    let _serial = serial();
    let dir = tmp_dir().join("crafted");
    fs::remove_dir_all(&dir).ok();
    fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk");
    fs::write(&junk, vec![0x5au8; 120 << 20]).unwrap();
    let crafted = dir.join("crafted");
    let status = Command::new("objcopy")
        .arg("--update-section")
        .arg(format!(".eh_frame={}", junk.display()))
        .arg(workload("cpu_split"))
        .arg(&crafted)
        .status()
        .unwrap();
    assert!(status.success());
    let cache = dir.join("cache");
    let started = Instant::now();
    let output = run(bpfscope()
        .env("BPFSCOPE_CACHE_DIR", &cache)
        .args(["unwind-table", crafted.to_str().unwrap()]));
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("over the"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let cached: u64 = fs::read_dir(&cache)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.metadata().unwrap().size())
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(cached, 0, "nothing cached for it");
    // A FIFO where an object is expected is an error, not a hang.
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let output = run(bpfscope().args(["unwind-table", fifo.to_str().unwrap()]));
    assert!(
        stderr(&output).contains("not a regular file"),
        "{}",
        stderr(&output)
    );
    fs::remove_dir_all(&dir).ok();
}

/// A sticky, world-writable directory like /tmp, and a root-only file.
fn shared_dir_and_root_file(name: &str) -> (PathBuf, PathBuf) {
    let shared = PathBuf::from(format!("/tmp/bpfscope-{name}-{}", std::process::id()));
    fs::remove_dir_all(&shared).ok();
    fs::create_dir_all(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = tmp_dir().join(format!("{name}-root-only"));
    fs::write(&victim, b"root's data").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    (shared, victim)
}

#[test]
fn a_symlink_planted_at_the_output_name_is_not_followed() {
    let _serial = serial();
    let (shared, victim) = shared_dir_and_root_file("planted-link");
    // A root-only device too: root must not open it for writing.
    let device = tmp_dir().join("planted-link-full");
    fs::remove_file(&device).ok();
    let status = Command::new("mknod")
        .arg(&device)
        .args(["-m", "600", "c", "1", "7"])
        .status()
        .unwrap();
    assert!(status.success());
    for (target, name) in [(&victim, "victim.folded"), (&device, "device.folded")] {
        let planted = shared.join(name);
        let status = as_user(Path::new("/bin/ln"), &["-s"])
            .arg(target)
            .arg(&planted)
            .status()
            .unwrap();
        assert!(status.success());
        let output = run(bpfscope()
            .args(["profile", "-F", "99", "-o"])
            .arg(&planted)
            .arg("1"));
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(
            text.contains("is a symlink owned by uid") && text.contains(name),
            "{text}"
        );
        assert!(
            !text.contains("No space left"),
            "the device was opened: {text}"
        );
    }
    assert_eq!(fs::read(&victim).unwrap(), b"root's data");
    assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o600);
    assert!(fs::metadata(&device).unwrap().file_type().is_char_device());
    // A regular file the user left there is replaced, keeping its owner and mode.
    let theirs = shared.join("theirs.folded");
    let status = as_user(Path::new("/bin/sh"), &["-c"])
        .arg(format!("umask 077; echo old > {}", theirs.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let output = run(bpfscope()
        .args(["profile", "-F", "99", "-o"])
        .arg(&theirs)
        .arg("1"));
    assert!(output.status.success(), "{}", stderr(&output));
    let metadata = fs::metadata(&theirs).unwrap();
    assert_eq!(
        (metadata.uid(), metadata.mode() & 0o777),
        (hostile_user().0, 0o600)
    );
    assert_ne!(fs::read(&theirs).unwrap(), b"old\n");
    fs::remove_dir_all(&shared).ok();
    fs::remove_file(&device).ok();
}

#[test]
fn a_fake_python_runtime_cannot_size_what_root_reads() {
    let _serial = serial();
    for mode in ["far", "lying"] {
        let dir = user_dir(&format!("fake-python-{mode}"));
        let flags: &[&str] = if mode == "far" {
            &["-rdynamic", "-DFAR"]
        } else {
            &["-rdynamic"]
        };
        let built = workload_variant("fake_python", &format!("-{mode}"), flags);
        let fake = give_user(&built, &dir, "python3.13");
        let user = AsUser::start(as_user(&fake, &["4"]));
        std::thread::sleep(Duration::from_millis(300));
        let pid = user.pid;
        let started = Instant::now();
        let (output, peak_kib) =
            run_measured(bpfscope().args(["profile", "-F", "999", "-p", &pid.to_string(), "2"]));
        let text = stderr(&output);
        assert!(
            output.status.success(),
            "{mode}: {:?} {text}",
            output.status
        );
        assert!(peak_kib < 200 * 1024, "{mode}: peak RSS {peak_kib} KiB");
        assert!(started.elapsed() < Duration::from_secs(10), "{mode}");
        let folded = stdout(&output);
        if mode == "far" {
            assert!(
                text.contains("Python 3.13 (an offset out of range)"),
                "{text}"
            );
            assert!(!folded.contains("hostile_fn"), "{folded}");
        } else {
            // Read, with its claimed lengths cut to the caps, and the
            // NULs past its text shown as '?'.
            assert!(
                folded.contains(";hostile.py?") && folded.contains("?:hostile_fn?"),
                "{folded}\n{text}"
            );
            assert!(!folded.contains('\0'));
        }
        drop(user);
        fs::remove_dir_all(&dir).ok();
    }
}

/// `bpfscope [BUDGET..] profile -F 999 -p PIDS 3` as root: its output and
/// peak RSS (KiB); it must succeed.
fn profile_measured(budget: &[&str], pids: &[u32]) -> (Output, u64) {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let (output, peak) = run_measured(bpfscope().args(budget).args([
        "profile",
        "-F",
        "999",
        "-p",
        &pids.join(","),
        "3",
    ]));
    assert!(
        output.status.success(),
        "{:?} {}",
        output.status,
        stderr(&output)
    );
    (output, peak)
}

/// A program the hostile user runs (through `runuser`), killed when dropped.
struct AsUser {
    runner: Workload,
    /// The user's process itself (runuser's only child).
    pid: u32,
}

impl AsUser {
    fn start(mut command: Command) -> AsUser {
        let runner = Workload(command.spawn().unwrap());
        let mut pid = None;
        wait_for(Duration::from_secs(10), || {
            pid = fs::read_to_string(format!("/proc/{0}/task/{0}/children", runner.pid()))
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse().ok());
            pid.is_some()
        });
        let pid = pid.expect("runuser started nothing");
        AsUser { runner, pid }
    }
}

/// A process of the user's (forked by one of their programs), killed when dropped.
struct ChildOfUser(u32);

impl Drop for ChildOfUser {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        self.runner.0.kill().ok();
    }
}

const MIB_IN_KIB: u64 = 1024;

#[test]
fn code_objects_of_a_hostile_python_stay_within_their_budget() {
    let _serial = serial();
    let dir = user_dir("code-bomb");
    let script = dir.join("bomb.py");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/code_object_bomb.py"),
        &script,
    )
    .unwrap();
    let python = Path::new("/usr/bin/python3.11");
    // What a profile of a Python process costs without the bomb.
    let quiet = AsUser::start(as_user(
        python,
        &["-c", "import time\nwhile True: time.sleep(0.001)"],
    ));
    let (_, baseline) = profile_measured(&["--memory-limit", "python-code=16M"], &[quiet.pid]);
    drop(quiet);
    let bomb = AsUser::start(as_user(python, &[script.to_str().unwrap(), "8"]));
    let pid = bomb.pid;
    std::thread::sleep(Duration::from_millis(500));
    let (output, peak) = profile_measured(&["--memory-limit", "python-code=16M"], &[pid]);
    let text = stderr(&output);
    // Without a budget, this bomb drove a 3 s profile past 2 GB.
    assert!(
        peak < baseline + 16 * MIB_IN_KIB + 48 * MIB_IN_KIB,
        "peak RSS {peak} KiB against {baseline} KiB without the bomb\n{text}"
    );
    assert!(
        text.contains("refused room: 1 python-code over 16 MiB"),
        "{text}"
    );
    // exec'd code: its file is "<string>".
    assert!(
        stdout(&output).contains("<string>:bomb"),
        "some code objects are named"
    );
    drop(bomb);
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn perf_maps_linked_to_one_huge_file_stay_within_their_budget() {
    let _serial = serial();
    let dir = user_dir("perf-map-bomb");
    let bomb = give_user(&workload("perf_map_bomb"), &dir, "perf_map_bomb");
    let quiet = AsUser::start(as_user(&workload_copy(&dir, "short_burn"), &["100000"]));
    let (_, baseline) = profile_measured(&["--memory-limit", "perf-map=16M"], &[quiet.pid]);
    drop(quiet);
    let mut command = as_user(&bomb, &["300", "12"]);
    command.stdout(Stdio::piped());
    let mut runner = AsUser::start(command);
    let parent = runner.pid;
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(runner.runner.0.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let child: u32 = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let _child = ChildOfUser(child);
    let (output, peak) = profile_measured(&["--memory-limit", "perf-map=16M"], &[parent, child]);
    let text = stderr(&output);
    // Two processes whose maps link to one 300 MB file: 16 MiB each.
    assert!(
        peak < baseline + 2 * 16 * MIB_IN_KIB + 48 * MIB_IN_KIB,
        "peak RSS {peak} KiB against {baseline} KiB without the maps\n{text}"
    );
    assert!(
        text.contains("refused room: 2 perf-map over 16 MiB"),
        "{text}"
    );
    assert!(text.contains("of 2 maps not read"), "{text}");
    drop(runner);
    fs::remove_dir_all(&dir).ok();
}

/// A copy of workload NAME in `dir`, owned by the hostile user.
fn workload_copy(dir: &Path, name: &str) -> PathBuf {
    give_user(&workload(name), dir, name)
}

#[test]
fn executables_padded_with_holes_are_copied_without_them() {
    let _serial = serial();
    let dir = user_dir("sparse");
    let mut runners = Vec::new();
    for copy in ["padded-a", "padded-b"] {
        let binary = give_user(&workload("cpu_split"), &dir, copy);
        // 1023 MiB of hole after the program: the old copy was all of it.
        fs::OpenOptions::new()
            .write(true)
            .open(&binary)
            .unwrap()
            .set_len(1023 << 20)
            .unwrap();
        runners.push(AsUser::start(as_user(&binary, &["20"])));
    }
    let pids: Vec<u32> = runners.iter().map(|runner| runner.pid).collect();
    let started = Instant::now();
    let (output, peak) = profile_measured(&[], &pids);
    let elapsed = started.elapsed();
    let text = stderr(&output);
    assert!(peak < 200 * MIB_IN_KIB, "peak RSS {peak} KiB\n{text}");
    assert!(
        elapsed < Duration::from_secs(12),
        "took {elapsed:?}\n{text}"
    );
    // Named through the copies, which hold the symbol tables.
    let stacks = parse_folded(&stdout(&output));
    for comm in ["padded-a", "padded-b"] {
        let named = count_with_chain(&for_comm(&stacks, comm), &["burn_three", "spin"]);
        assert!(
            named > 500,
            "{comm}: {named} samples in burn_three;spin\n{text}"
        );
    }
    drop(runners);
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn diff_inputs_are_bounded_while_read() {
    let _serial = serial();
    let dir = tmp_dir().join("diff-bombs");
    fs::remove_dir_all(&dir).ok();
    fs::create_dir_all(&dir).unwrap();
    // Two million distinct stacks, about 50 MB of text.
    let many = dir.join("many.folded");
    let mut text = String::with_capacity(60 << 20);
    for i in 0..2_000_000u32 {
        text.push_str(&format!("main;f{i};g{} 1\n", i ^ 0x5555));
    }
    fs::write(&many, text).unwrap();
    // A gzip bomb: 2 GiB of zeros in about 2 MB.
    let bomb = dir.join("bomb.pb.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 2G /dev/zero | gzip -1 > {}",
            bomb.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    for (input, expected) in [
        (
            &many,
            "its stacks need more than the memory budget allows (64 MiB",
        ),
        (&bomb, "decompresses to more than 16 MiB"),
    ] {
        let started = Instant::now();
        let (output, peak) = run_measured(
            bpfscope()
                .args(["--memory-limit", "diff-input=64M", "diff"])
                .arg(input)
                .arg(input),
        );
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(text.contains(expected), "{text}");
        assert_eq!(text.trim().lines().count(), 1, "{text}");
        assert!(peak < (64 + 48) * MIB_IN_KIB, "peak RSS {peak} KiB: {text}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
    fs::remove_dir_all(&dir).ok();
}
