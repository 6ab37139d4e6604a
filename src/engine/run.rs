//! The collection loop shared by every tool: services the ring buffer, shows
//! progress on a terminal, and decides when to stop (duration over, Ctrl-C or
//! SIGTERM, the command exited, or every target process is gone).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use libbpf_rs::RingBuffer;

use crate::host::signals;
use crate::host::target::{RunningCommand, Targets};

/// The wall-clock time of day, "HH:MM:SS" (local time), for -T and event lines.
pub fn time_of_day() -> String {
    // SAFETY: time and localtime_r only fill the structures they are given.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut parts: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut parts);
        format!(
            "{:02}:{:02}:{:02}",
            parts.tm_hour, parts.tm_min, parts.tm_sec
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    DurationElapsed,
    Interrupted,
    CommandExited(i32),
    TargetsExited,
}

impl StopReason {
    /// Said on stderr when the reason is not the obvious one.
    pub fn describe(self) -> Option<String> {
        match self {
            StopReason::DurationElapsed => None,
            StopReason::Interrupted => Some("interrupted; writing what was collected".to_string()),
            StopReason::CommandExited(status) => {
                Some(format!("command exited with status {status}"))
            }
            StopReason::TargetsExited => {
                Some("every target process has exited; stopping".to_string())
            }
        }
    }
}

pub struct Collection<'a> {
    pub duration: Option<Duration>,
    pub command: Option<&'a RunningCommand>,
    pub targets: &'a Targets,
    pub ring: Option<&'a RingBuffer<'a>>,
    /// Shown in the progress line, e.g. "profiling".
    pub activity: &'a str,
    /// Called after every poll of the ring buffer (at least every 100 ms).
    pub after_poll: Option<&'a dyn Fn()>,
}

const TICK: Duration = Duration::from_millis(100);
/// How long a command may take to exit after a stop signal passed on to it.
const COMMAND_GRACE: Duration = Duration::from_secs(10);

impl Collection<'_> {
    pub fn run(&self) -> StopReason {
        self.run_with_ticks(None, &mut || {})
    }

    /// Runs like `run`, calling `on_tick` at every multiple of `every` that
    /// falls before the end of the run (the caller handles the end itself).
    pub fn run_with_ticks(&self, every: Option<Duration>, on_tick: &mut dyn FnMut()) -> StopReason {
        let start = Instant::now();
        let mut next_tick = every.map(|every| start + every);
        let show_progress = std::io::stderr().is_terminal();
        let mut last_shown = None;
        let mut forwarded: Option<Instant> = None;
        let reason = loop {
            match self.ring {
                // Interrupted polls (EINTR) are expected on Ctrl-C; the checks below handle them.
                Some(ring) => {
                    ring.poll_raw(TICK);
                }
                None => std::thread::sleep(TICK),
            }
            if let Some(after_poll) = self.after_poll {
                after_poll();
            }
            // A stop signal is passed on to the command, as perf does, and
            // the run ends when it exits (killed if it has not within
            // COMMAND_GRACE), with its status.
            if let Some(signal) = signals::stop_signal() {
                let Some(command) = self.command else {
                    break StopReason::Interrupted;
                };
                match forwarded {
                    None => {
                        command.signal(signal);
                        forwarded = Some(Instant::now());
                    }
                    Some(at) if at.elapsed() > COMMAND_GRACE => command.signal(libc::SIGKILL),
                    Some(_) => {}
                }
            }
            if let Some(status) = self.command.and_then(|command| command.try_wait()) {
                break StopReason::CommandExited(status);
            }
            if self.targets.all_pids_exited() {
                break StopReason::TargetsExited;
            }
            let elapsed = start.elapsed();
            if self.duration.is_some_and(|limit| elapsed >= limit) {
                break StopReason::DurationElapsed;
            }
            if let (Some(tick), Some(every)) = (next_tick, every) {
                if Instant::now() >= tick {
                    if show_progress {
                        eprint!("\r\x1b[K");
                    }
                    on_tick();
                    next_tick = Some(tick + every);
                }
            }
            if show_progress && last_shown != Some(elapsed.as_secs()) {
                last_shown = Some(elapsed.as_secs());
                let progress = match self.duration {
                    Some(limit) => format!("{}s left", limit.saturating_sub(elapsed).as_secs() + 1),
                    None => format!("{}s", elapsed.as_secs()),
                };
                eprint!("\r\x1b[K{}... {progress} (Ctrl-C to stop)", self.activity);
                std::io::stderr().flush().ok();
            }
        };
        if let Some(ring) = self.ring {
            ring.consume_raw();
        }
        if show_progress {
            eprint!("\r\x1b[K");
        }
        reason
    }
}
