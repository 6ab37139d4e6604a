//! What each tool loads into the kernel: its object carries the maps and
//! programs it uses and no others. Histogram and event tools have no
//! stack-trace map, no address-space ring and no fork follower (each stack
//! map alone is 16 MiB of kernel memory); the stack tools have them, and
//! load the fork follower only when they run a command.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

/// (map type, map name) and program names of the BPF objects `pid` holds.
fn loaded_by(pid: u32) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut maps = BTreeSet::new();
    let mut programs = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_string())
        };
        let show = |kind: &str, id: String| -> serde_json::Value {
            let output = std::process::Command::new("bpftool")
                .args(["-j", kind, "show", "id", &id])
                .output()
                .expect("bpftool is installed");
            serde_json::from_slice(&output.stdout).unwrap_or_default()
        };
        if let Some(id) = field("map_id:") {
            let map = show("map", id);
            maps.insert((
                map["type"].as_str().unwrap_or("").to_string(),
                map["name"].as_str().unwrap_or("").to_string(),
            ));
        } else if let Some(id) = field("prog_id:") {
            let program = show("prog", id);
            programs.insert(program["name"].as_str().unwrap_or("").to_string());
        }
    }
    (maps, programs)
}

/// Starts a tool and waits until it has attached (its object is loaded).
fn start(args: &[&str]) -> Child {
    let child = bpfscope()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let attached = wait_for(Duration::from_secs(15), || {
        !loaded_by(pid).1.is_empty() && !attached_program_names().is_empty()
    });
    assert!(attached, "{args:?} attached nothing");
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn stop(mut child: Child) {
    unsafe { kill(child.id() as i32, 2) };
    child.wait().unwrap();
}

fn is_stack_machinery(map: &(String, String)) -> bool {
    map.0 == "stack_trace"
        || map.1.starts_with("address_space")
        || map.1.starts_with("announced_addr")
        || map.1.starts_with("unwind")
}

#[test]
fn histogram_and_event_objects_carry_no_stack_machinery() {
    let _serial = serial();
    for args in [
        &["runqlat"][..],
        &["biolatency"],
        &["runqlen"],
        &["syscount"],
        &["fslatency"],
        &["funclatency", "c:nanosleep"],
        &["tcpconnlat"],
        &["tcplife"],
        &["tcpretrans"],
    ] {
        let child = start(args);
        let (maps, programs) = loaded_by(child.id());
        stop(child);
        assert!(!maps.is_empty(), "{args:?}: no maps seen");
        let stack_maps: Vec<_> = maps.iter().filter(|m| is_stack_machinery(m)).collect();
        assert!(stack_maps.is_empty(), "{args:?} loads {stack_maps:?}");
        assert!(
            !programs.iter().any(|name| name.starts_with("follow_fork")),
            "{args:?} loads a fork follower: {programs:?}"
        );
    }
}

#[test]
fn stack_tools_load_the_fork_follower_only_for_commands() {
    let _serial = serial();
    let child = start(&["profile"]);
    let (maps, programs) = loaded_by(child.id());
    stop(child);
    assert!(maps.iter().any(|m| m.0 == "stack_trace"), "{maps:?}");
    assert!(
        maps.iter().any(|m| m.1.starts_with("address_space")),
        "{maps:?}"
    );
    assert!(
        !programs.iter().any(|p| p.starts_with("follow_fork")),
        "{programs:?}"
    );

    let child = start(&["offcpu", "--", "sleep", "3"]);
    let (_, programs) = loaded_by(child.id());
    stop(child);
    let followers: Vec<_> = programs
        .iter()
        .filter(|p| p.starts_with("follow_fork"))
        .collect();
    assert_eq!(
        followers.len(),
        1,
        "one flavor of the follower: {programs:?}"
    );
}

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}
