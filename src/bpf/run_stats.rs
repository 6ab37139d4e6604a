//! Run statistics counted in BPF (the per-CPU `stats` array of every object):
//! how many events were seen and every way data was lost, so that a loss is
//! always reported and never silent.

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use crate::layouts::{self, run_stat};

/// The counters of `enum run_stat` (layouts.h), summed over CPUs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    pub events: u64,
    pub counts_full: u64,
    pub stack_map_full: u64,
    pub stack_collisions: u64,
    pub user_stacks_missing: u64,
    pub notifications_lost: u64,
    pub followed_children_lost: u64,
    pub stacks_reused: u64,
    pub stacks_revalidated: u64,
    pub stacks_stale: u64,
    pub threads_untracked: u64,
    pub wakeups_unseen: u64,
    /// Threads' unflushed off-CPU sums dropped because serve emptied the
    /// stack maps their stack ids pointed into.
    pub pending_cleared: u64,
    pub unwind: UnwindStats,
    pub python: PythonWalkStats,
}

/// How Python-frame walks ended (python.h), one count per walk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PythonWalkStats {
    pub complete: u64,
    pub depth_limit: u64,
    pub read_fault: u64,
    pub not_code: u64,
    /// Samples of threads of a Python process with no thread state.
    pub no_thread_state: u64,
    /// Stacks not interned (map full or slot taken).
    pub lost: u64,
    /// Samples of processes running subinterpreters, not walked.
    pub subinterpreters: u64,
}

impl PythonWalkStats {
    /// "python walks: …", with the frames that could not be named and the
    /// stacks that found no interpreter frame; None when nothing was walked.
    pub fn summary(&self, unnamed: u64, unmerged: u64) -> Option<String> {
        let walks = self.complete + self.depth_limit + self.read_fault + self.not_code;
        if walks + self.no_thread_state + self.subinterpreters == 0 {
            return None;
        }
        let mut line = format!(
            "python walks: {walks} ({} complete, {} cut at {} frames, {} memory unreadable, {} stopped at a non-code frame); {} samples of threads without a Python thread state",
            self.complete,
            self.depth_limit,
            crate::layouts::MAX_PYTHON_FRAMES,
            self.read_fault,
            self.not_code,
            self.no_thread_state
        );
        if self.lost > 0 {
            line.push_str(&format!("; {} stacks lost (map full)", self.lost));
        }
        if self.subinterpreters > 0 {
            line.push_str(&format!(
                "; {} samples of processes running subinterpreters not walked (unsupported: native frames only)",
                self.subinterpreters
            ));
        }
        if unnamed > 0 {
            line.push_str(&format!(
                "; {unnamed} frames [unknown python] (code object gone or changed, or its process over its memory budget)"
            ));
        }
        if unmerged > 0 {
            line.push_str(&format!(
                "; {unmerged} stacks' native walks stopped before the interpreter (Python frames put above them; mostly walks that met a library loaded after the process's mappings were read, such as an extension module an import had just loaded: the unwind line's 'unmapped code')"
            ));
        }
        Some(line)
    }
}

/// How table-driven user-stack walks ended (unwind.h), one count per walk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnwindStats {
    /// Reached the outermost frame.
    pub complete: u64,
    pub no_table: u64,
    pub unsupported_rule: u64,
    pub read_fault: u64,
    pub depth_limit: u64,
    /// Reached code in no file mapping (JIT, anonymous memory).
    pub unmapped: u64,
    /// The walks that went through code in no file mapping (JIT code) by
    /// frame pointers, by how they ended (in `by_reason`'s order).
    pub through_jit: [u64; 6],
    /// Stacks walked by frame pointers instead (auto mode) because their
    /// process's tables were not loaded yet: its first samples.
    pub before_tables: u64,
}

impl UnwindStats {
    /// Adds another object's counts (serve sums its samplers).
    pub fn add(&mut self, other: &UnwindStats) {
        self.complete += other.complete;
        self.no_table += other.no_table;
        self.unsupported_rule += other.unsupported_rule;
        self.read_fault += other.read_fault;
        self.depth_limit += other.depth_limit;
        self.unmapped += other.unmapped;
        for (mine, theirs) in self.through_jit.iter_mut().zip(other.through_jit) {
            *mine += theirs;
        }
        self.before_tables += other.before_tables;
    }

    /// (reason label, count) of the walks through JIT code.
    pub fn through_jit_by_reason(&self) -> [(&'static str, u64); 6] {
        let mut reasons = self.by_reason();
        for (reason, count) in reasons.iter_mut().zip(self.through_jit) {
            reason.1 = count;
        }
        reasons
    }

    /// (reason label, count) for metrics and summaries.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("complete", self.complete),
            ("no_table", self.no_table),
            ("unsupported_rule", self.unsupported_rule),
            ("read_fault", self.read_fault),
            ("depth_limit", self.depth_limit),
            ("unmapped_code", self.unmapped),
        ]
    }

    /// "unwound by tables: N walks; M complete, ..." or None when no walk
    /// ran and none was due.
    pub fn summary(&self) -> Option<String> {
        let walks: u64 = self.by_reason().iter().map(|(_, n)| n).sum();
        if walks == 0 && self.before_tables == 0 {
            return None;
        }
        let mut line = format!("user stacks unwound by tables: {walks} walks");
        if walks > 0 {
            line.push_str(&format!(" ended: {}", describe_ends(&self.by_reason())));
        }
        let jit_walks: u64 = self.through_jit.iter().sum();
        if jit_walks > 0 {
            line.push_str(&format!(
                "; {jit_walks} went through JIT code by frame pointers ({})",
                describe_ends(&self.through_jit_by_reason())
            ));
        }
        if self.before_tables > 0 {
            line.push_str(&format!(
                "; {} walked by frame pointers before their process's tables were loaded",
                self.before_tables
            ));
        }
        Some(line)
    }
}

/// "12 complete, 3 no table": the reasons that happened.
fn describe_ends(by_reason: &[(&'static str, u64)]) -> String {
    by_reason
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| format!("{n} {}", reason.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// offcpu walks a thread's cached stacks again after this many blocks
/// (`revalidate_every` in offcpu.bpf.c).
pub const STACK_REVALIDATE_EVERY: u32 = 16;

impl RunStats {
    /// Sums the per-CPU counters of a loaded object's `stats` map.
    pub fn read(map: &dyn MapCore) -> Result<Self> {
        let total = |stat: run_stat| -> Result<u64> {
            let per_cpu = map.lookup_percpu(&stat.0.to_ne_bytes(), MapFlags::ANY)?;
            Ok(per_cpu
                .unwrap_or_default()
                .iter()
                .filter_map(|bytes| layouts::read::<u64>(bytes))
                .sum())
        };
        Ok(RunStats {
            events: total(run_stat::STAT_EVENTS)?,
            counts_full: total(run_stat::STAT_COUNTS_FULL)?,
            stack_map_full: total(run_stat::STAT_STACK_MAP_FULL)?,
            stack_collisions: total(run_stat::STAT_STACK_COLLISION)?,
            user_stacks_missing: total(run_stat::STAT_USER_STACK_MISSING)?,
            notifications_lost: total(run_stat::STAT_NOTIFY_LOST)?,
            followed_children_lost: total(run_stat::STAT_TARGETS_FULL)?,
            stacks_reused: total(run_stat::STAT_STACK_REUSED)?,
            stacks_revalidated: total(run_stat::STAT_STACK_REVALIDATED)?,
            stacks_stale: total(run_stat::STAT_STACK_STALE)?,
            threads_untracked: total(run_stat::STAT_THREADS_UNTRACKED)?,
            wakeups_unseen: total(run_stat::STAT_WAKEUP_UNSEEN)?,
            pending_cleared: total(run_stat::STAT_PENDING_CLEARED)?,
            unwind: UnwindStats {
                complete: total(run_stat::STAT_UNWIND_COMPLETE)?,
                no_table: total(run_stat::STAT_UNWIND_NO_TABLE)?,
                unsupported_rule: total(run_stat::STAT_UNWIND_UNSUPPORTED)?,
                read_fault: total(run_stat::STAT_UNWIND_READ_FAULT)?,
                depth_limit: total(run_stat::STAT_UNWIND_DEPTH)?,
                unmapped: total(run_stat::STAT_UNWIND_UNMAPPED)?,
                through_jit: [
                    total(run_stat::STAT_JIT_UNWIND_COMPLETE)?,
                    total(run_stat::STAT_JIT_UNWIND_NO_TABLE)?,
                    total(run_stat::STAT_JIT_UNWIND_UNSUPPORTED)?,
                    total(run_stat::STAT_JIT_UNWIND_READ_FAULT)?,
                    total(run_stat::STAT_JIT_UNWIND_DEPTH)?,
                    total(run_stat::STAT_JIT_UNWIND_UNMAPPED)?,
                ],
                before_tables: total(run_stat::STAT_UNWIND_NOT_LOADED)?,
            },
            python: PythonWalkStats {
                complete: total(run_stat::STAT_PY_COMPLETE)?,
                depth_limit: total(run_stat::STAT_PY_DEPTH)?,
                read_fault: total(run_stat::STAT_PY_READ_FAULT)?,
                not_code: total(run_stat::STAT_PY_NOT_CODE)?,
                no_thread_state: total(run_stat::STAT_PY_NO_THREAD_STATE)?,
                lost: total(run_stat::STAT_PY_STACKS_FULL)?,
                subinterpreters: total(run_stat::STAT_PY_SUBINTERPRETERS)?,
            },
        })
    }

    /// The end of a tool's summary line: ", none lost" or "; lost: ...".
    pub fn loss_summary(&self, words: &LossWords) -> String {
        let losses = self.losses(words);
        if losses.is_empty() {
            ", none lost".to_string()
        } else {
            format!("; lost: {}", losses.join("; "))
        }
    }

    /// A note, not a warning, for stacks lost to a full stack map or hash
    /// collisions when they are under 1 % of the events: too few to change
    /// how a graph reads. None when there are none, or more.
    pub fn minor_stack_losses(&self) -> Option<String> {
        let lost = self.stack_map_full + self.stack_collisions;
        (lost > 0 && lost * 100 < self.events).then(|| {
            format!(
                "{lost} of {} stacks lost to a full stack map or hash collisions (shown as [missed user stack] or [missed kernel stack]; under 1 %, too few to change the graph)",
                self.events
            )
        })
    }

    /// One phrase per kind of loss that happened, for the summary line
    /// (stack losses only when they are 1 % of the events or more).
    pub fn losses(&self, words: &LossWords) -> Vec<String> {
        let mut losses = Vec::new();
        let mut note = |count: u64, what: String| {
            if count > 0 {
                losses.push(format!("{count} {what}"));
            }
        };
        let remedy = |flag: Option<&str>| {
            flag.map(|flag| format!("; raise {flag}"))
                .unwrap_or_default()
        };
        note(
            self.counts_full,
            format!("events dropped (map full{})", remedy(words.counts_flag)),
        );
        if self.minor_stack_losses().is_none() {
            note(
                self.stack_map_full,
                format!("stacks lost (stack map full{})", remedy(words.stack_flag)),
            );
            note(
                self.stack_collisions,
                format!(
                    "stacks lost to stack-map hash collisions{}",
                    words
                        .stack_flag
                        .map(|flag| format!(" (raise {flag})"))
                        .unwrap_or_default()
                ),
            );
        }
        note(self.user_stacks_missing, "user stacks not readable".into());
        note(self.notifications_lost, words.ring_record.into());
        note(
            self.followed_children_lost,
            "child processes not followed (target map full)".into(),
        );
        note(
            self.threads_untracked,
            "threads not timed (per-thread state map full)".into(),
        );
        note(
            self.wakeups_unseen,
            "blocks dropped because their wakeup was not seen (a wakeup inside another BPF program)"
                .into(),
        );
        note(
            self.pending_cleared,
            "threads' off-CPU sums dropped (the stack maps were emptied before they were counted)"
                .into(),
        );
        if self.stacks_stale > 0 {
            losses.push(format!(
                "{} of {} re-walked cached stacks had changed (up to {} blocks each may sit under the previous stack)",
                self.stacks_stale, self.stacks_revalidated, STACK_REVALIDATE_EVERY
            ));
        }
        losses
    }
}

/// How a tool words its losses: which of its flags makes each map larger
/// (None where it has no such flag), and what a record lost to a full ring
/// buffer was.
pub struct LossWords {
    pub counts_flag: Option<&'static str>,
    pub stack_flag: Option<&'static str>,
    pub ring_record: &'static str,
}

impl LossWords {
    /// Histogram and event tools: no flag sizes their maps; events go
    /// through a ring buffer where they are not summed in kernel.
    pub const NO_SIZE_FLAGS: LossWords = LossWords {
        counts_flag: None,
        stack_flag: None,
        ring_record: "events lost (ring buffer full)",
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_name_only_what_happened() {
        let stats = RunStats {
            events: 10,
            stack_collisions: 2,
            ..Default::default()
        };
        let words = LossWords {
            counts_flag: Some("--max-stacks"),
            stack_flag: Some("--stack-storage-size"),
            ring_record: "notifications lost",
        };
        let losses = stats.losses(&words);
        assert_eq!(
            losses,
            ["2 stacks lost to stack-map hash collisions (raise --stack-storage-size)"]
        );
        assert!(RunStats::default().losses(&words).is_empty());
        // One stack in 2,085 samples is a note, not a warning with a remedy.
        let one = RunStats {
            events: 2085,
            stack_collisions: 1,
            ..Default::default()
        };
        assert!(one.losses(&words).is_empty());
        assert!(one
            .minor_stack_losses()
            .unwrap()
            .starts_with("1 of 2085 stacks lost"));
        assert!(stats.minor_stack_losses().is_none());
        let full = RunStats {
            counts_full: 3,
            ..Default::default()
        };
        assert_eq!(
            full.losses(&LossWords::NO_SIZE_FLAGS),
            ["3 events dropped (map full)"],
            "a tool without a flag for it names none"
        );
    }
}
