//! Ctrl-C, SIGTERM and SIGHUP (a closed terminal or ssh session) end a
//! collection gracefully: the handler only records the signal, and the run
//! loop stops (after passing it on to a command it runs) and still writes
//! what was collected.

use std::sync::atomic::{AtomicI32, Ordering};

/// The last stop signal received, or 0.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn request_stop(signal: libc::c_int) {
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Has the user asked to stop?
pub fn stop_requested() -> bool {
    stop_signal().is_some()
}

/// The signal that asked to stop, if any.
pub fn stop_signal() -> Option<libc::c_int> {
    Some(STOP_SIGNAL.load(Ordering::SeqCst)).filter(|&signal| signal != 0)
}
