//! The Debian package: `scripts/build-deb.sh` packs the static binary and the
//! hardened `bpfscope.service`; `dpkg -i` installs it, `systemd-analyze
//! verify` accepts the unit, and the installed binary runs `serve` the way
//! the unit starts it: as a user that is not root, holding only the unit's
//! ambient capabilities, naming a root-owned process in a profile window.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SERVICE_USER: &str = "bpfscope-service";

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "bpfscope"])
            .stdout(Stdio::null())
            .status();
    }
}

/// The value of `Key=` in the unit file.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

#[test]
fn the_package_installs_and_its_unit_runs_serve_without_root() {
    let _serial = serial();
    let out = tmp_dir().join(format!("deb-{}", std::process::id()));
    let build = run(Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-deb.sh"),
    )
    .arg(env!("CARGO_BIN_EXE_bpfscope"))
    .arg(&out));
    assert!(build.status.success(), "{}", stderr(&build));
    let package = stdout(&build).trim().to_string();
    assert!(package.ends_with(".deb"), "{package}");

    let _installed = Installed;
    let install = run(Command::new("dpkg").args(["-i", &package]));
    assert!(install.status.success(), "{}", stderr(&install));
    let listed = stdout(&run(Command::new("dpkg").args(["-L", "bpfscope"])));
    for file in [
        "/usr/bin/bpfscope",
        "/lib/systemd/system/bpfscope.service",
        "/etc/default/bpfscope",
        "/etc/bpfscope/web.yml",
    ] {
        assert!(
            listed.lines().any(|line| line == file),
            "{file} not in:\n{listed}"
        );
    }
    let version = run(Command::new("/usr/bin/bpfscope").arg("--version"));
    assert!(version.status.success(), "{}", stderr(&version));

    // A man page per command, rendered by man(1) with its own flags.
    for (page, flag) in [
        ("bpfscope", "--memory-budget"),
        ("bpfscope-profile", "--frequency"),
        ("bpfscope-serve", "--web.max-windows"),
    ] {
        let path = format!("/usr/share/man/man1/{page}.1.gz");
        assert!(
            listed.lines().any(|line| line == path),
            "{path} not installed"
        );
        let rendered = run(Command::new("man")
            .args(["-P", "cat", "-l", &path])
            .env("MANWIDTH", "200"));
        let text = stdout(&rendered);
        assert!(
            rendered.status.success() && text.contains(page) && text.contains(flag),
            "{page}: {text}"
        );
    }
    // Completions that each shell loads: bash completes the tools.
    let bash = run(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/bpfscope && complete -p bpfscope && \
         COMP_WORDS=(bpfscope pro) COMP_CWORD=1 COMP_LINE='bpfscope pro' COMP_POINT=12 && \
         _bpfscope bpfscope pro bpfscope && echo \"${COMPREPLY[@]}\"",
    ]));
    assert!(bash.status.success(), "{}", stderr(&bash));
    assert!(
        stdout(&bash).contains("-F _bpfscope bpfscope"),
        "{}",
        stdout(&bash)
    );
    assert!(
        stdout(&bash)
            .lines()
            .last()
            .is_some_and(|line| line.split(' ').any(|w| w == "profile")),
        "{}",
        stdout(&bash)
    );
    for file in [
        "/usr/share/zsh/vendor-completions/_bpfscope",
        "/usr/share/fish/vendor_completions.d/bpfscope.fish",
    ] {
        assert!(
            listed.lines().any(|line| line == file),
            "{file} not installed"
        );
    }

    let verify =
        run(Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/bpfscope.service"]));
    let complaints = stderr(&verify);
    assert!(
        verify.status.success() && !complaints.contains("bpfscope.service:"),
        "systemd-analyze verify: {complaints}"
    );

    // Started as the unit starts it, but as a fixed user (DynamicUser
    // needs a running systemd) in a state directory of its own.
    let unit = std::fs::read_to_string("/lib/systemd/system/bpfscope.service").unwrap();
    let ambient: Vec<String> = unit_value(&unit, "AmbientCapabilities")
        .split_whitespace()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(
        unit_value(&unit, "CapabilityBoundingSet"),
        unit_value(&unit, "AmbientCapabilities")
    );
    let exec_start = unit_value(&unit, "ExecStart");
    assert_eq!(exec_start, "/usr/bin/bpfscope serve $BPFSCOPE_SERVE_ARGS");
    let (uid, gid) = system_user(SERVICE_USER);
    let state = Path::new("/tmp").join(format!("bpfscope-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    let port = free_port();
    let caps = ambient.join(",");
    let serve = Workload(
        with_ambient_caps(uid, gid, &caps)
            .args([
                "/usr/bin/bpfscope",
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("BPFSCOPE_CACHE_DIR", state.join("unwind"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let serving = wait_for(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/").0 == 200
    });
    assert!(
        serving,
        "the installed serve never answered as {SERVICE_USER}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.pid())).unwrap();
    let field = |name: &str| -> u64 {
        let hex = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap()
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    // bpf, perfmon, sys_ptrace, checkpoint_restore, dac_read_search, syslog.
    let six: u64 = [39, 38, 19, 40, 2, 34].iter().map(|bit| 1u64 << bit).sum();
    assert_eq!(field("CapEff:"), six, "{status}");
    assert_eq!(field("CapAmb:"), 0, "{status}");
    assert!(status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.contains(&uid.to_string())));
    // A root-owned process started afterwards is named from its files.
    let burner = Workload::start(&workload("cpu_split"), &["5"]);
    let (code, svg) = get(port, "/flamegraph.svg?seconds=3");
    assert_eq!(code, 200);
    assert!(
        svg.contains("burn_three"),
        "no burn_three as {SERVICE_USER}: {svg:.1500}"
    );
    drop(burner);
    drop(serve);
    assert!(
        state.join("unwind").is_dir(),
        "the unwind cache was not made in the state directory"
    );
    std::fs::remove_dir_all(&state).ok();

    let remove = run(Command::new("dpkg").args(["--purge", "bpfscope"]));
    assert!(remove.status.success(), "{}", stderr(&remove));
    assert!(!Path::new("/usr/bin/bpfscope").exists());
    std::fs::remove_dir_all(&out).ok();
}
