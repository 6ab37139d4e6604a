//! Container identity from cgroup v2 paths. Runtimes name the cgroup of
//! each container after its ID, in one form for the cgroupfs driver and
//! another for the systemd driver:
//! - Docker: `/docker/ID`, `/system.slice/docker-ID.scope`;
//! - containerd (CRI): `/kubepods/QOS/podUID/ID`,
//!   `/kubepods.slice/…/kubepods-QOS-podUID.slice/cri-containerd-ID.scope`;
//! - CRI-O: `/kubepods/QOS/podUID/crio-ID`, `…/crio-ID.scope`;
//! - Podman: `/libpod_parent/libpod-ID`, `/machine.slice/libpod-ID.scope`
//!   (and a `container` child cgroup below it);
//! - systemd services: `/system.slice/NAME.service`.
//!
//! The innermost component that names a container wins; a pod UID is
//! taken from any component above it (`podUID`, with `_` for `-` under
//! systemd). IDs are checked to be 64 hex digits, so a user who names a
//! cgroup `docker-evil.scope` gets no container identity.

use crate::model::process::Container;

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container ID a single path component names, with its runtime.
fn component_container(component: &str, parent: Option<&str>) -> Option<(&'static str, String)> {
    let unit = component.strip_suffix(".scope").unwrap_or(component);
    const PREFIXES: [(&str, &str); 5] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
        ("containerd-", "containerd"),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = unit.strip_prefix(prefix) {
            if is_container_id(id) {
                return Some((runtime, id.to_ascii_lowercase()));
            }
        }
    }
    if is_container_id(component) {
        // cgroupfs drivers: a bare ID under its runtime's or pod's directory.
        let runtime = match parent {
            Some("docker") => "docker",
            Some(parent) if parent.starts_with("pod") => "containerd",
            _ => return None,
        };
        return Some((runtime, component.to_ascii_lowercase()));
    }
    None
}

/// The pod UID a component names: `podUID` (cgroupfs) or
/// `kubepods-QOS-podUID.slice` (systemd, dashes written as underscores).
fn component_pod_uid(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let uid = match name.strip_prefix("pod") {
        Some(uid) => uid,
        None => &name[name.rfind("-pod")? + 4..],
    };
    let uid = uid.replace('_', "-");
    let shape_ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    shape_ok.then_some(uid)
}

/// The container (or systemd service) a cgroup v2 path belongs to.
pub fn container_of_cgroup(path: &str) -> Option<Container> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (index, component) in components.iter().enumerate().rev() {
        let parent = index.checked_sub(1).map(|i| components[i]);
        if let Some((runtime, id)) = component_container(component, parent) {
            let pod_uid = components[..index]
                .iter()
                .rev()
                .find_map(|c| component_pod_uid(c));
            return Some(Container {
                runtime,
                id,
                pod_uid,
            });
        }
    }
    components
        .iter()
        .rev()
        .find(|c| c.ends_with(".service"))
        .map(|service| Container {
            runtime: "systemd",
            id: service.to_string(),
            pod_uid: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99001122334455667788990011223344556677889900aabbccdd";
    const POD: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    fn identity(path: &str) -> Option<(&'static str, String, Option<String>)> {
        container_of_cgroup(path).map(|c| (c.runtime, c.id, c.pod_uid))
    }

    #[test]
    fn names_each_runtime_in_both_driver_forms() {
        let pod_systemd = POD.replace('-', "_");
        let cases = [
            (format!("/docker/{ID}"), "docker", false),
            (format!("/system.slice/docker-{ID}.scope"), "docker", false),
            (format!("/kubepods/burstable/pod{POD}/{ID}"), "containerd", true),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_systemd}.slice/cri-containerd-{ID}.scope"),
                "containerd",
                true,
            ),
            (format!("/kubepods/besteffort/pod{POD}/crio-{ID}"), "cri-o", true),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_systemd}.slice/crio-{ID}.scope"),
                "cri-o",
                true,
            ),
            (format!("/libpod_parent/libpod-{ID}"), "podman", false),
            (format!("/machine.slice/libpod-{ID}.scope/container"), "podman", false),
        ];
        for (path, runtime, has_pod) in cases {
            let expected_pod = has_pod.then(|| POD.to_string());
            assert_eq!(
                identity(&path),
                Some((runtime, ID.to_string(), expected_pod)),
                "{path}"
            );
        }
        assert_eq!(
            identity("/system.slice/nginx.service"),
            Some(("systemd", "nginx.service".to_string(), None))
        );
    }

    #[test]
    fn other_paths_name_no_container() {
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/docker-evil.scope",
            &format!("/somewhere/{ID}"),
        ] {
            assert_eq!(identity(path), None, "{path}");
        }
    }
}
