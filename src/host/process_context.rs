//! Reads where a process runs (model::process::ProcessContext): its cgroup
//! v2 path from /proc/PID/cgroup, the container that path names, and its
//! PID inside a nested PID namespace from the `NStgid` line of
//! /proc/PID/status. Everything read here is text the kernel writes, but
//! the cgroup path is named by whoever created the cgroup: it is only
//! matched against the runtimes' patterns, never opened.

use std::fs;

use crate::host::containers::container_of_cgroup;
use crate::model::process::ProcessContext;

/// The cgroup v2 path in /proc/PID/cgroup text (the `0::PATH` line).
fn cgroup_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim_end().to_string())
}

/// The innermost PID of `NStgid` in /proc/PID/status text, when the
/// process is in a PID namespace below ours (more than one PID listed).
fn namespace_pid(status: &str) -> Option<u32> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("NStgid:"))?;
    let pids: Vec<&str> = line.split_whitespace().collect();
    if pids.len() < 2 {
        return None;
    }
    pids.last()?.parse().ok()
}

/// The context of a living process; None once it is gone.
pub fn read(tgid: u32) -> Option<ProcessContext> {
    let status = fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
    let cgroup = fs::read_to_string(format!("/proc/{tgid}/cgroup"))
        .ok()
        .and_then(|text| cgroup_path(&text));
    Some(ProcessContext {
        container: cgroup.as_deref().and_then(container_of_cgroup),
        cgroup,
        namespace_pid: namespace_pid(&status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_v2_path_and_the_innermost_pid() {
        assert_eq!(
            cgroup_path("1:name=systemd:/x\n0::/system.slice/a.service\n").as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(namespace_pid("Name:\tx\nNStgid:\t4242\t7\t1\n"), Some(1));
        assert_eq!(namespace_pid("NStgid:\t4242\n"), None);
        let me = read(std::process::id()).unwrap();
        assert_eq!(
            me.namespace_pid, None,
            "the tests run in the host's namespace"
        );
    }
}
