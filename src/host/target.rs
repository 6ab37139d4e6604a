//! What a run observes: PIDs, TIDs, a cgroup v2 subtree, or a command that
//! bpfscope starts itself. User input is validated here, before any BPF is
//! loaded; `bpf::filters` then writes the selection into the filter maps
//! (see `task_selected()` in src/bpf/task_filter.h).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// What the user asked to observe, as given on the command line.
#[derive(Debug, Default, Clone)]
pub struct TargetSpec {
    pub pids: Vec<u32>,
    pub tids: Vec<u32>,
    pub cgroup: Option<PathBuf>,
    pub command: Vec<String>,
    /// Observe the processes the `pids` fork after the start too (perf -p's way).
    pub pid_children: bool,
}

/// A validated selection, ready to be written into the BPF filter maps.
pub struct Targets {
    pub pids: Vec<u32>,
    pub tids: Vec<u32>,
    pub cgroup: Option<CgroupTarget>,
    pub command: Option<PendingCommand>,
    pub pid_children: bool,
}

/// A cgroup v2 directory to observe. Programs check the current task with
/// the open descriptor (`bpf_current_task_under_cgroup`), and other tasks
/// (runqlat's task being switched in) by their ancestor at the target's depth.
pub struct CgroupTarget {
    pub fd: OwnedFd,
    id: u64,
    /// Depth below the root of the whole hierarchy; unknown inside a cgroup
    /// namespace, whose root is not the hierarchy's.
    level: Option<u32>,
}

/// Which filters the BPF side must apply (the `filter_*` and `target_cgroup_*` rodata).
pub struct FilterFlags {
    pub tgids: bool,
    pub tids: bool,
    pub cgroup: bool,
    pub cgroup_id: u64,
    pub cgroup_level: Option<u32>,
    pub follow_children: bool,
}

impl FilterFlags {
    /// For tools that filter tasks other than the current one by cgroup.
    pub fn check_other_task_cgroup(&self) -> Result<()> {
        if self.cgroup && self.cgroup_level.is_none() {
            bail!("--cgroup with this tool needs the initial cgroup namespace (it is running inside another one)");
        }
        Ok(())
    }
}

impl TargetSpec {
    /// Checks every part of the selection; starts COMMAND (held before exec) if given.
    pub fn resolve(&self) -> Result<Targets> {
        for &pid in &self.pids {
            check_process(pid)?;
        }
        for &tid in &self.tids {
            if !Path::new(&format!("/proc/{tid}")).exists() {
                bail!("no such thread: TID {tid}");
            }
        }
        let cgroup = self.cgroup.as_deref().map(open_cgroup).transpose()?;
        let command = if self.command.is_empty() {
            None
        } else {
            Some(PendingCommand::start(&self.command)?)
        };
        Ok(Targets {
            pids: self.pids.clone(),
            tids: self.tids.clone(),
            cgroup,
            command,
            pid_children: self.pid_children,
        })
    }
}

impl Targets {
    pub fn filter_flags(&self) -> FilterFlags {
        FilterFlags {
            tgids: !self.pids.is_empty() || self.command.is_some(),
            tids: !self.tids.is_empty(),
            cgroup: self.cgroup.is_some(),
            cgroup_id: self.cgroup.as_ref().map_or(0, |cgroup| cgroup.id),
            cgroup_level: self.cgroup.as_ref().and_then(|cgroup| cgroup.level),
            follow_children: self.command.is_some() || (self.pid_children && !self.pids.is_empty()),
        }
    }

    /// Are all processes given with -p gone? (Then a run has nothing left to observe.)
    pub fn all_pids_exited(&self) -> bool {
        !self.pids.is_empty() && self.pids.iter().all(|pid| !process_alive(*pid))
    }
}

/// Running (not gone, not a zombie waiting to be reaped).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesized command name, which may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// A PID given with -p must name a running process (a thread group leader).
fn check_process(pid: u32) -> Result<()> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| anyhow::anyhow!("no such process: PID {pid}"))?;
    let tgid = status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|value| value.trim().parse::<u32>().ok());
    match tgid {
        Some(tgid) if tgid == pid => Ok(()),
        Some(tgid) => {
            bail!("{pid} is a thread of process {tgid}; use -L {pid} for one thread or -p {tgid}")
        }
        None => bail!("no such process: PID {pid}"),
    }
}

/// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup or, on hybrid
/// layouts, /sys/fs/cgroup/unified).
pub fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mounts().into_iter().next()
}

/// Every place the cgroup v2 hierarchy is mounted.
fn cgroup2_mounts() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .collect()
}

/// Opens a cgroup v2 directory given absolutely or relative to the cgroup2 mount.
fn open_cgroup(path: &Path) -> Result<CgroupTarget> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let mount = cgroup2_mount().context("no cgroup v2 hierarchy is mounted")?;
        mount.join(path)
    };
    let c_path = CString::new(full.as_os_str().as_bytes()).context("cgroup path contains NUL")?;
    // SAFETY: c_path is a valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "no such cgroup: {} ({})",
            full.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: open just returned this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: statfs is plain data and fd is open.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut stat) } != 0
        || stat.f_type as i64 != CGROUP2_SUPER_MAGIC
    {
        bail!("{} is not a cgroup v2 directory", full.display());
    }
    // The cgroup id is the directory's inode number, read from the opened
    // directory itself rather than by looking the path up again.
    let directory = fs::File::from(fd);
    let id = directory
        .metadata()
        .with_context(|| format!("reading {}", full.display()))?
        .ino();
    let fd = OwnedFd::from(directory);
    Ok(CgroupTarget {
        fd,
        id,
        level: cgroup_level(&full),
    })
}

/// The initial cgroup namespace's inode number (PROC_CGROUP_INIT_INO).
const INITIAL_CGROUP_NAMESPACE: &str = "cgroup:[4026531835]";

/// Depth of a cgroup v2 directory below the hierarchy's root (0 for the
/// root), where this process sees the whole hierarchy.
fn cgroup_level(directory: &Path) -> Option<u32> {
    let namespace = fs::read_link("/proc/self/ns/cgroup").ok()?;
    if namespace.as_os_str() != INITIAL_CGROUP_NAMESPACE {
        return None;
    }
    let directory = fs::canonicalize(directory).ok()?;
    let mount = cgroup2_mounts()
        .into_iter()
        .filter_map(|mount| fs::canonicalize(mount).ok())
        .find(|mount| directory.starts_with(mount))?;
    Some(directory.strip_prefix(&mount).ok()?.components().count() as u32)
}

/// A command forked but held before exec, so its PID can be put into the
/// filter before it runs a single instruction of its own.
pub struct PendingCommand {
    pub pid: u32,
    gate: OwnedFd,
    exec_error: OwnedFd,
    released: bool,
}

/// A command running under observation.
pub struct RunningCommand {
    pub pid: u32,
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let is_executable = |path: &Path| {
        CString::new(path.as_os_str().as_bytes())
            .map(|c| path.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl PendingCommand {
    fn start(argv: &[String]) -> Result<Self> {
        let program =
            find_in_path(&argv[0]).with_context(|| format!("command not found: {}", argv[0]))?;
        let c_program =
            CString::new(program.as_os_str().as_bytes()).context("command contains NUL")?;
        let c_args = argv
            .iter()
            .map(|arg| CString::new(arg.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .context("argument contains NUL")?;
        let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        c_argv.push(std::ptr::null());
        let (gate_read, gate_write) = pipe()?;
        let (error_read, error_write) = pipe()?;

        // SAFETY: the child only calls async-signal-safe functions (read,
        // execv, write, _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            unsafe {
                let mut byte = 0u8;
                libc::read(gate_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                libc::execv(c_program.as_ptr(), c_argv.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(error_write.as_raw_fd(), (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        drop(gate_read);
        drop(error_write);
        Ok(PendingCommand {
            pid: pid as u32,
            gate: gate_write,
            exec_error: error_read,
            released: false,
        })
    }

    /// Lets the command exec; fails if exec itself failed.
    pub fn release(mut self) -> Result<RunningCommand> {
        self.released = true;
        // SAFETY: both descriptors are open and owned by self.
        unsafe {
            libc::write(self.gate.as_raw_fd(), [1u8].as_ptr().cast(), 1);
            let mut errno = 0i32;
            let n = libc::read(
                self.exec_error.as_raw_fd(),
                (&mut errno as *mut i32).cast(),
                4,
            );
            if n == 4 {
                libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0);
                bail!(
                    "cannot run command: {}",
                    std::io::Error::from_raw_os_error(errno)
                );
            }
        }
        Ok(RunningCommand { pid: self.pid })
    }
}

impl Drop for PendingCommand {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Never released (an error came first): do not leave the child waiting.
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGKILL);
            libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0);
        }
    }
}

impl RunningCommand {
    /// Sends `signal` to the command.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child, which is not reaped until try_wait sees it exit.
        unsafe { libc::kill(self.pid as i32, signal) };
    }

    /// The exit status once the command has exited (non-blocking).
    pub fn try_wait(&self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waiting for our own child with WNOHANG.
        let rc = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        if rc != self.pid as i32 {
            return None;
        }
        Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }
}
