//! Loading BPF objects with fallbacks. Hooks are tried best first: the
//! BTF-typed flavor (`tp_btf/`, and fentry on kernels that allow it) and, when
//! the kernel refuses it, the raw tracepoint flavor, which loads everywhere
//! bpfscope runs. Which one was used is said on stderr.

use std::mem::MaybeUninit;

use anyhow::Result;
use libbpf_rs::OpenObject;

/// How a tool's tracepoint hooks are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookFlavor {
    /// `tp_btf/`: typed arguments, no probe reads.
    BtfTyped,
    /// `raw_tp/`: arguments read with CO-RE probe reads.
    Raw,
}

/// Set to 1 to skip the BTF-typed attempt, so the fallback path can be
/// exercised on kernels where BTF-typed hooks load.
const FORCE_RAW_ENV: &str = "BPFSCOPE_FORCE_RAW_TRACEPOINTS";

/// Opens and loads an object with BTF-typed hooks, retrying with raw hooks if
/// that load fails. `open_and_load` enables the programs of the given flavor.
pub fn load_with_fallback<'obj, S>(
    primary: &'obj mut MaybeUninit<OpenObject>,
    fallback: &'obj mut MaybeUninit<OpenObject>,
    mut open_and_load: impl FnMut(&'obj mut MaybeUninit<OpenObject>, HookFlavor) -> Result<S>,
) -> Result<(S, HookFlavor)> {
    if std::env::var_os(FORCE_RAW_ENV).is_some_and(|value| value == "1") {
        eprintln!("bpfscope: note: {FORCE_RAW_ENV}=1: using raw tracepoints");
        return Ok((open_and_load(primary, HookFlavor::Raw)?, HookFlavor::Raw));
    }
    match open_and_load(primary, HookFlavor::BtfTyped) {
        Ok(loaded) => Ok((loaded, HookFlavor::BtfTyped)),
        Err(btf_error) => match open_and_load(fallback, HookFlavor::Raw) {
            Ok(loaded) => {
                eprintln!(
                    "bpfscope: note: BTF-typed tracepoints were refused ({btf_error:#}); using raw tracepoints"
                );
                Ok((loaded, HookFlavor::Raw))
            }
            Err(raw_error) => Err(raw_error.context(format!(
                "loading BPF programs failed (BTF-typed attempt: {btf_error:#})"
            ))),
        },
    }
}
