//! Process limits: the soft limit on open descriptors raised to the hard one
//! at start, so that a long-running agent holding object files, BPF objects
//! and client connections does not run out at the default 1024.

/// Raises RLIMIT_NOFILE's soft limit to its hard limit (best effort).
pub fn raise_open_files() {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
