//! End-to-end tests of the TCP tools against a loopback workload whose
//! connections, ports and byte counts are known (IPv4 and IPv6).

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// Runs tcp_sessions (optionally in a network namespace); returns its port and PID.
fn sessions(args: &[&str], netns: Option<&str>) -> (u16, u32) {
    let binary = workload("tcp_sessions");
    let mut command = match netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(&binary);
            command
        }
        None => Command::new(&binary),
    };
    let child = command.args(args).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "tcp_sessions {args:?} failed");
    let port = String::from_utf8_lossy(&output.stdout)
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect("tcp_sessions prints its port");
    (port, pid)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn tcpconnlat_reports_each_connection_for_ipv4_and_ipv6() {
    let _serial = serial();
    let tracer = start_tracer(&["tcpconnlat", "--json"]);
    let (port4, pid4) = sessions(&["5", "1000", "4"], None);
    let (port6, pid6) = sessions(&["4", "1000", "6"], None);
    let events = json_lines(&stop_tracer(tracer));
    for (port, pid, ip, count) in [(port4, pid4, 4, 5), (port6, pid6, 6, 4)] {
        let mine: Vec<&Value> = events.iter().filter(|e| e["dport"] == port).collect();
        assert_eq!(mine.len(), count, "IPv{ip}: {events:?}");
        assert!(mine
            .iter()
            .all(|e| e["ip"] == ip && e["pid"] == pid && e["comm"] == "tcp_sessions"));
        assert!(mine.iter().all(|e| e["latency_ns"].as_u64().unwrap() > 0));
    }
}

#[test]
fn tcpconnlat_histogram_counts_connections() {
    let _serial = serial();
    let tracer = start_tracer(&["tcpconnlat", "--hist", "--json"]);
    sessions(&["7", "100", "4"], None);
    let report: Value = serde_json::from_str(stop_tracer(tracer).trim()).unwrap();
    let count = report["histograms"][0]["count"].as_u64().unwrap();
    assert!(count >= 7, "{report}");
}

#[test]
fn tcplife_reports_both_ends_of_each_session_with_bytes() {
    let _serial = serial();
    let bytes = 10_000u64;
    let tracer = start_tracer(&["tcplife", "--json"]);
    let (port4, pid4) = sessions(&["3", "10000", "4"], None);
    let (port6, _) = sessions(&["2", "10000", "6"], None);
    let events = json_lines(&stop_tracer(tracer));
    for (port, count) in [(port4, 3), (port6, 2)] {
        let clients: Vec<&Value> = events.iter().filter(|e| e["rport"] == port).collect();
        let servers: Vec<&Value> = events.iter().filter(|e| e["lport"] == port).collect();
        assert_eq!(clients.len(), count, "{events:?}");
        assert_eq!(servers.len(), count, "{events:?}");
        // Sequence space: SYN and FIN count one byte each.
        for client in &clients {
            let sent = client["tx_bytes"].as_u64().unwrap();
            assert!(
                (bytes..=bytes + 2).contains(&sent),
                "client sent {sent}: {client}"
            );
        }
        for server in &servers {
            let received = server["rx_bytes"].as_u64().unwrap();
            assert!(
                (bytes..=bytes + 1).contains(&received),
                "server received {received}: {server}"
            );
        }
    }
    assert!(events
        .iter()
        .filter(|e| e["rport"] == port4)
        .all(|e| e["pid"] == pid4 && e["ip"] == 4));
}

#[test]
fn tcplife_cgroup_filter_applies_to_the_sessions_owner() {
    let _serial = serial();
    let cgroup = TestCgroup::new("tcplife");
    let relative = cgroup.label.trim_start_matches('/').to_string();
    let tracer = start_tracer(&["tcplife", "--json", "--cgroup", &relative]);
    let inside = cgroup
        .command(&workload("tcp_sessions"), &["3", "1000", "4"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let inside_port: u16 = String::from_utf8_lossy(&inside.stdout)
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect("tcp_sessions prints its port");
    let (outside_port, _) = sessions(&["2", "1000", "4"], None);
    let events = json_lines(&stop_tracer(tracer));
    // Sessions close in softirq context, whatever task is current there:
    // the filter applies to the process that owned them.
    let ports = |port: u16| {
        events
            .iter()
            .filter(|e| e["rport"] == port || e["lport"] == port)
            .count()
    };
    assert_eq!(ports(inside_port), 6, "{events:?}");
    assert_eq!(ports(outside_port), 0, "{events:?}");
}

#[test]
fn tcplife_pid_filter() {
    let _serial = serial();
    // A session of another process must not appear when -p names a sleeping process.
    let sleeper = Workload(Command::new("sleep").arg("5").spawn().unwrap());
    let tracer = start_tracer(&["tcplife", "--json", "-p", &sleeper.pid().to_string()]);
    sessions(&["2", "100", "4"], None);
    assert_eq!(
        stop_tracer(tracer).trim(),
        "",
        "sessions of other processes were reported"
    );
}

#[test]
fn tcpretrans_sees_retransmits_while_loopback_is_down() {
    let _serial = serial();
    let ns = format!("bpfscope-test-{}", std::process::id());
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    assert!(Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
        .status()
        .unwrap()
        .success());
    let tracer = start_tracer(&["tcpretrans", "--json"]);
    let (port, _) = sessions(&["1", "1000", "4", "stall"], Some(&ns));
    let events = json_lines(&stop_tracer(tracer));
    Command::new("ip")
        .args(["netns", "del", &ns])
        .status()
        .unwrap();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["rport"] == port || e["lport"] == port)
        .collect();
    assert!(!mine.is_empty(), "no retransmits seen: {events:?}");
    assert!(mine.iter().all(|e| e["ip"] == 4 && e["state"].is_string()));
    assert!(mine.iter().any(|e| e["state"] == "ESTABLISHED"), "{mine:?}");
}
