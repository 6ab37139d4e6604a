//! Where a process runs, as flame graphs root it and pprof and Prometheus
//! label it: its cgroup, the container that cgroup belongs to (if any),
//! and its PID inside its own PID namespace when that differs from the
//! host's. Captured when the process is first seen, so processes that exit
//! mid-run keep it.

/// A container (or systemd service) a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Container {
    /// "docker", "containerd", "cri-o", "podman" or "systemd".
    pub runtime: &'static str,
    /// The runtime's container ID (64 hex digits), or the systemd unit name.
    pub id: String,
    /// The Kubernetes pod UID, with dashes, where the path names one.
    pub pod_uid: Option<String>,
}

impl Container {
    /// "docker:0123456789ab" (IDs shortened to 12 digits, as `docker ps`
    /// shows them), "systemd:nginx.service".
    pub fn short_name(&self) -> String {
        let id = if self.runtime == "systemd" {
            &self.id[..]
        } else {
            &self.id[..self.id.len().min(12)]
        };
        format!("{}:{id}", self.runtime)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProcessContext {
    /// The cgroup v2 path, from the cgroup2 mount ("/system.slice/x.service").
    pub cgroup: Option<String>,
    pub container: Option<Container>,
    /// The PID in the process's own PID namespace, when that namespace is
    /// not bpfscope's.
    pub namespace_pid: Option<u32>,
}

/// What the root frame of each stack says (`--group-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GroupBy {
    /// The process name only (the usual flame graph).
    #[default]
    Process,
    /// The cgroup path, then the process name.
    Cgroup,
    /// The container (or systemd service, or "[host]"), then the process name.
    Container,
}

impl GroupBy {
    /// The frame put below the process name, if any.
    pub fn root_frame(self, context: Option<&ProcessContext>) -> Option<String> {
        match self {
            GroupBy::Process => None,
            GroupBy::Cgroup => Some(
                context
                    .and_then(|c| c.cgroup.clone())
                    .unwrap_or_else(|| "[no cgroup]".to_string()),
            ),
            GroupBy::Container => Some(
                context
                    .and_then(|c| c.container.as_ref())
                    .map(Container::short_name)
                    .unwrap_or_else(|| "[host]".to_string()),
            ),
        }
    }
}
