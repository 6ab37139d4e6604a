//! Run statistics counted in BPF (the per-CPU `stats` array in common.h):
//! how many events were seen and every way data was lost, so that a loss is
//! always reported and never silent.

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

/// Mirrors `enum run_stat` in src/bpf/common.h.
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
    pub unwind: UnwindStats,
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

    /// "unwound by tables: N walks; M complete, ..." or None when no walk ran.
    pub fn summary(&self) -> Option<String> {
        let walks: u64 = self.by_reason().iter().map(|(_, n)| n).sum();
        if walks == 0 {
            return None;
        }
        let parts: Vec<String> = self
            .by_reason()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| format!("{n} {}", reason.replace('_', " ")))
            .collect();
        Some(format!(
            "user stacks unwound by tables: {walks} walks ended: {}",
            parts.join(", ")
        ))
    }
}

const STAT_COUNT: u32 = 16;

/// offcpu walks a thread's cached stacks again after this many blocks
/// (`revalidate_every` in offcpu.bpf.c).
pub const STACK_REVALIDATE_EVERY: u32 = 16;

impl RunStats {
    /// Sums the per-CPU counters of a loaded object's `stats` map.
    pub fn read(map: &dyn MapCore) -> Result<Self> {
        let mut totals = [0u64; STAT_COUNT as usize];
        for (index, total) in totals.iter_mut().enumerate() {
            let per_cpu = map.lookup_percpu(&(index as u32).to_ne_bytes(), MapFlags::ANY)?;
            *total = per_cpu
                .unwrap_or_default()
                .iter()
                .map(|bytes| u64::from_ne_bytes(bytes[..8].try_into().expect("u64 per-CPU value")))
                .sum();
        }
        let [events, counts_full, stack_map_full, stack_collisions, user_stacks_missing, notifications_lost, followed_children_lost, stacks_reused, stacks_revalidated, stacks_stale, complete, no_table, unsupported_rule, read_fault, depth_limit, unmapped] =
            totals;
        Ok(RunStats {
            events,
            counts_full,
            stack_map_full,
            stack_collisions,
            user_stacks_missing,
            notifications_lost,
            followed_children_lost,
            stacks_reused,
            stacks_revalidated,
            stacks_stale,
            unwind: UnwindStats {
                complete,
                no_table,
                unsupported_rule,
                read_fault,
                depth_limit,
                unmapped,
            },
        })
    }

    /// The end of a tool's summary line: ", none lost" or "; lost: ...".
    pub fn loss_summary(&self) -> String {
        let losses = self.losses();
        if losses.is_empty() {
            ", none lost".to_string()
        } else {
            format!("; lost: {}", losses.join("; "))
        }
    }

    /// One phrase per kind of loss that happened, for the summary line.
    pub fn losses(&self) -> Vec<String> {
        let mut losses = Vec::new();
        let mut note = |count: u64, what: &str| {
            if count > 0 {
                losses.push(format!("{count} {what}"));
            }
        };
        note(
            self.counts_full,
            "events dropped (counts map full; raise --max-stacks)",
        );
        note(
            self.stack_map_full,
            "stacks lost (stack map full; raise --stack-storage-size)",
        );
        note(
            self.stack_collisions,
            "stacks lost to stack-map hash collisions (raise --stack-storage-size)",
        );
        note(self.user_stacks_missing, "user stacks not readable");
        note(
            self.notifications_lost,
            "new-process notifications lost (those may show [unknown] frames)",
        );
        note(
            self.followed_children_lost,
            "child processes not followed (target map full)",
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
        let losses = stats.losses();
        assert_eq!(losses.len(), 1);
        assert!(losses[0].starts_with("2 stacks lost to stack-map hash collisions"));
        assert!(RunStats::default().losses().is_empty());
    }
}
