//! bpfscope is one file to copy: built as `scripts/test.sh` and
//! `scripts/build-static.sh` build it, it has no program interpreter and
//! needs no shared library, and `profile` runs in an empty root that holds
//! only the binary, /proc and /sys, naming a host process's functions.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `readelf` output for the binary.
fn readelf(flag: &str, binary: &Path) -> String {
    let output = Command::new("readelf")
        .arg(flag)
        .arg(binary)
        .output()
        .expect("readelf (binutils) is installed by the test command");
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

#[test]
fn profile_runs_in_an_empty_root_and_names_a_host_process() {
    let _serial = serial();
    let binary = Path::new(env!("CARGO_BIN_EXE_bpfscope"));
    let headers = readelf("--program-headers", binary);
    assert!(
        !headers.contains("INTERP"),
        "the binary asks for a program interpreter: build the suite with scripts/test.sh (static)\n{headers}"
    );
    let dynamic = readelf("--dynamic", binary);
    assert!(
        !dynamic.contains("(NEEDED)"),
        "shared libraries needed:\n{dynamic}"
    );

    let root = tmp_dir().join(format!("empty-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for dir in ["bin", "proc", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(binary, root.join("bin/bpfscope")).unwrap();
    let burner = Workload::start(&workload("cpu_split"), &["6"]);
    // A private mount namespace: /proc and /sys appear in the root only, and
    // vanish with the namespace.
    let script = format!(
        "set -e; cd {root}; mount -t proc proc proc; mount --rbind /sys sys; \
         exec chroot . /bin/bpfscope profile -p {pid} -o /tmp/out.folded 3",
        root = root.display(),
        pid = burner.pid()
    );
    let output = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(&script));
    assert!(output.status.success(), "{}", stderr(&output));
    let folded = std::fs::read_to_string(root.join("tmp/out.folded")).unwrap();
    let stacks = parse_folded(&folded);
    let all = total(&stacks);
    let named = count_with_chain(&stacks, &["burn_three"]);
    assert!(all > 100, "{all} samples:\n{folded}");
    assert!(
        named as f64 >= 0.5 * all as f64,
        "burn_three in {named} of {all} samples:\n{folded}"
    );
    drop(burner);
    std::fs::remove_dir_all(&root).ok();
}
