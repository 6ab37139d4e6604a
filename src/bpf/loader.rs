//! Loading BPF objects with fallbacks. A tool lists the flavors of its hooks
//! best first: fentry/fexit on kernel functions (where the kernel allows
//! them), BTF-typed tracepoints (`tp_btf/`), and raw tracepoints, which load
//! everywhere bpfscope runs. When a flavor is refused the next is tried, and
//! stderr says so.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use anyhow::{bail, Context, Result};
use libbpf_rs::{Link, OpenObject};

/// How a tool's hooks are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookFlavor {
    /// fentry/fexit on kernel functions: typed arguments, return values.
    Fentry,
    /// `tp_btf/`: typed tracepoint arguments, no probe reads.
    BtfTyped,
    /// `raw_tp/`: arguments read with CO-RE probe reads.
    Raw,
}

impl HookFlavor {
    fn describe(self) -> &'static str {
        match self {
            HookFlavor::Fentry => "fentry/fexit",
            HookFlavor::BtfTyped => "BTF-typed tracepoints",
            HookFlavor::Raw => "raw tracepoints",
        }
    }
}

/// The flavors tracepoint-based tools try.
pub const TRACEPOINT_FLAVORS: &[HookFlavor] = &[HookFlavor::BtfTyped, HookFlavor::Raw];

/// Room for one open object per flavor tried.
pub type ObjectStorage = [MaybeUninit<OpenObject>; 3];

pub fn object_storage() -> ObjectStorage {
    [const { MaybeUninit::uninit() }; 3]
}

/// Set to 1 to skip straight to raw tracepoints, so the fallback path can be
/// exercised on kernels where the better flavors load.
const FORCE_RAW_ENV: &str = "BPFSCOPE_FORCE_RAW_TRACEPOINTS";

/// Opens and loads an object with the first of `flavors` the kernel accepts.
/// `open_and_load` enables the programs of the given flavor.
pub fn load_with_fallback<'obj, S>(
    storage: &'obj mut ObjectStorage,
    flavors: &[HookFlavor],
    mut open_and_load: impl FnMut(&'obj mut MaybeUninit<OpenObject>, HookFlavor) -> Result<S>,
) -> Result<(S, HookFlavor)> {
    let force_raw = std::env::var_os(FORCE_RAW_ENV).is_some_and(|value| value == "1");
    if force_raw {
        eprintln!("bpfscope: note: {FORCE_RAW_ENV}=1: using raw tracepoints");
    }
    let mut refusals: Vec<String> = Vec::new();
    let candidates = flavors
        .iter()
        .filter(|flavor| !force_raw || **flavor == HookFlavor::Raw);
    for (slot, &flavor) in storage.iter_mut().zip(candidates) {
        match open_and_load(slot, flavor) {
            Ok(loaded) => {
                if !refusals.is_empty() {
                    eprintln!(
                        "bpfscope: note: {}; using {}",
                        refusals.join("; "),
                        flavor.describe()
                    );
                }
                return Ok((loaded, flavor));
            }
            Err(error) => refusals.push(format!("{} refused ({error:#})", flavor.describe())),
        }
    }
    bail!("loading BPF programs failed: {}", refusals.join("; "))
}

/// The links of a sched_switch tool whose threads accumulate time in task
/// storage (offcpu, offwaketime, wakeuptime: BTF flavor), which a task
/// iterator adds to the counts map: the exit hook stays attached until the
/// last flush, so no exiting thread's time is lost.
pub struct AccumulatingLinks {
    links: RefCell<Vec<Link>>,
    exit_hook: RefCell<Option<Link>>,
    /// False for the raw-tracepoint flavor, which adds every block at once.
    accumulates: bool,
}

impl AccumulatingLinks {
    pub fn new(links: Vec<Link>, exit_hook: Option<Link>, accumulates: bool) -> Self {
        AccumulatingLinks {
            links: RefCell::new(links),
            exit_hook: RefCell::new(exit_hook),
            accumulates,
        }
    }

    /// Runs `iterator` once over every task, where threads accumulate.
    pub fn flush(&self, iterator: &libbpf_rs::ProgramMut<'_>) -> Result<()> {
        if !self.accumulates {
            return Ok(());
        }
        let link = iterator
            .attach_iter_with_opts(libbpf_rs::IterOpts::None)
            .context("attaching the flush iterator")?;
        let mut iter = libbpf_rs::Iter::new(&link).context("creating the flush iterator")?;
        std::io::copy(&mut iter, &mut std::io::sink()).context("running the flush iterator")?;
        Ok(())
    }

    /// Detaches, flushing before the exit hook goes.
    pub fn stop(&self, iterator: &libbpf_rs::ProgramMut<'_>) -> Result<()> {
        self.links.borrow_mut().clear();
        let flushed = self.flush(iterator);
        self.exit_hook.borrow_mut().take();
        flushed
    }
}

/// Now on the clock BPF programs read with bpf_ktime_get_ns() (CLOCK_MONOTONIC).
pub fn bpf_clock_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
