//! The event stream the per-event tools (tcpconnlat, tcplife, tcpretrans,
//! fsslower) run on: a ring buffer of events rendered one line each (text or
//! JSON) as they arrive, until Ctrl-C, the duration, or the -p processes
//! exiting; then the loss summary.

use std::cell::RefCell;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, RingBufferBuilder};

use crate::bpf::run_stats::{LossWords, RunStats};
use crate::engine::run::Collection;
use crate::host::target::Targets;
use crate::output::write_stdout;

/// A stream of events to print until the run ends.
pub struct EventStream<'a> {
    /// The tool, for the progress and summary lines.
    pub tool: &'a str,
    /// What the events are, in the summary line ("retransmits").
    pub what: &'a str,
    /// The ring buffer the BPF program writes events to.
    pub events: &'a dyn MapCore,
    pub targets: &'a Targets,
    pub duration: Option<Duration>,
    /// Printed first in text mode.
    pub header: Option<&'a str>,
}

impl EventStream<'_> {
    /// `render` turns one raw event into its output (None: malformed, skipped).
    pub fn run(
        self,
        render: impl Fn(&[u8]) -> Option<String>,
        stats: impl Fn() -> Result<RunStats>,
    ) -> Result<()> {
        let EventStream {
            tool,
            what,
            events,
            targets,
            duration,
            header,
        } = self;
        let write_error = RefCell::new(None);
        let mut builder = RingBufferBuilder::new();
        builder.add(events, |raw: &[u8]| {
            let Some(line) = render(raw) else {
                return 0;
            };
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(line.as_bytes())
                .and_then(|_| stdout.flush())
            {
                Ok(()) => 0,
                Err(error) => {
                    write_error.borrow_mut().get_or_insert(error);
                    -1
                }
            }
        })?;
        let ring = builder.build()?;
        if let Some(header) = header {
            write_stdout(format!("{header}\n").as_bytes())?;
        }
        let stop = Collection {
            duration,
            command: None,
            targets,
            ring: Some(&ring),
            activity: tool,
            after_poll: None,
        }
        .run();
        ring.consume_raw();
        drop(ring);
        if let Some(error) = write_error.into_inner() {
            return Err(error).context("writing to stdout");
        }
        if let Some(message) = stop.describe() {
            eprintln!("bpfscope: {message}");
        }
        let stats = stats()?;
        eprintln!(
            "bpfscope: {tool}: {} {what}{}",
            stats.events,
            stats.loss_summary(&LossWords::NO_SIZE_FLAGS)
        );
        Ok(())
    }
}
