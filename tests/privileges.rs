//! The capabilities each tool needs, as the README's "Privileges" table
//! lists them: every tool runs as a user that is not root holding only those
//! (as ambient capabilities), and funclatency without CAP_SYS_ADMIN says
//! that it needs it.

mod common;

use std::process::Output;

use common::*;

const USER: &str = "bpfscope-caps";

/// `bpfscope ARGS` as the test user with only `caps` (e.g. "bpf,perfmon"),
/// in a directory the user owns.
fn run_with_caps(caps: &str, args: &[&str]) -> Output {
    let (uid, gid) = system_user(USER);
    let dir = tmp_dir().join(format!("caps-{}-{}", args[0], std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    let caps: Vec<String> = caps.split(',').map(|cap| format!("+{cap}")).collect();
    let caps = caps.join(",");
    let output = run(with_ambient_caps(uid, gid, &caps)
        .arg(env!("CARGO_BIN_EXE_bpfscope"))
        .args(args)
        .current_dir(&dir)
        .env("BPFSCOPE_CACHE_DIR", dir.join("cache")));
    std::fs::remove_dir_all(&dir).ok();
    output
}

#[test]
fn each_tool_runs_with_the_capabilities_the_readme_lists() {
    let _serial = serial();
    let minimum = "bpf,perfmon";
    let tools: [&[&str]; 13] = [
        &["profile", "-o", "out.folded", "1"],
        &["offcpu", "-o", "out.folded", "1"],
        &["offwaketime", "-o", "out.folded", "1"],
        &["wakeuptime", "-o", "out.folded", "1"],
        &["runqlat", "1", "1"],
        &["runqlen", "1", "1"],
        &["syscount", "1", "1"],
        &["biolatency", "1", "1"],
        &["fslatency", "1", "1"],
        &["tcpconnlat", "-d", "1"],
        &["tcplife", "-d", "1"],
        &["tcpretrans", "-d", "1"],
        &["funclatency", "c:malloc", "1", "1"],
    ];
    for args in tools {
        let caps = if args[0] == "funclatency" {
            "bpf,perfmon,sys_admin"
        } else {
            minimum
        };
        let output = run_with_caps(caps, args);
        assert!(
            output.status.success(),
            "{args:?} with {caps}: {}",
            stderr(&output)
        );
    }
    let output = run_with_caps(minimum, &["funclatency", "c:malloc", "1", "1"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("CAP_SYS_ADMIN"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");
}
