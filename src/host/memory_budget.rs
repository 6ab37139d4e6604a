//! One memory budget for everything that processes and files other users
//! control can make bpfscope hold: Python code objects, perf maps, sealed
//! private copies of objects, symbol tables, and `diff`'s input. Each item
//! (one process's code objects, one process's perf map, one copy, one
//! object's symbol table, one diff input) has a limit of its own kind, and
//! all of them together share one total: many hostile processes can still
//! fill it, and then the next items of every kind are dropped (counted, and
//! named in the summary), but bpfscope's memory stays bounded. Bytes are reserved before they are held and
//! given back when the holder is dropped (`Reservation`), so `serve`
//! forgetting an exited process frees its share.
//!
//! A refused reservation never stops a run: the caller drops the item (a
//! frame then shows `[unknown]`, a perf-map line is skipped), and the
//! drops are counted by kind for the run's summary and `serve`'s metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// What a reservation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One process's Python code objects: names and line tables.
    PythonCode,
    /// One process's perf map.
    PerfMap,
    /// One sealed private copy of an object file another user can change.
    PrivateCopy,
    /// One object's symbol table, as the symbolizer holds it (estimated
    /// from its symbol, string and DWARF sections).
    SymbolTable,
    /// One input of `diff`: its distinct stacks.
    DiffInput,
}

const KINDS: [Kind; 5] = [
    Kind::PythonCode,
    Kind::PerfMap,
    Kind::PrivateCopy,
    Kind::SymbolTable,
    Kind::DiffInput,
];

const MIB: u64 = 1 << 20;

/// The default total: what a system-wide run on a busy host needs with
/// room to spare, far below what a hostile user could otherwise cost.
pub const DEFAULT_TOTAL: u64 = 512 * MIB;

impl Kind {
    fn index(self) -> usize {
        self as usize
    }

    /// The default limit of one item.
    pub fn default_item_limit(self) -> u64 {
        match self {
            Kind::PythonCode => 64 * MIB,
            Kind::PerfMap => 128 * MIB,
            Kind::PrivateCopy => 256 * MIB,
            Kind::SymbolTable => 256 * MIB,
            Kind::DiffInput => 256 * MIB,
        }
    }

    /// The name used in flags, summaries and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PythonCode => "python-code",
            Kind::PerfMap => "perf-map",
            Kind::PrivateCopy => "private-copy",
            Kind::SymbolTable => "symbol-table",
            Kind::DiffInput => "diff-input",
        }
    }

    /// What a dropped item of this kind means for the output.
    fn consequence(self) -> &'static str {
        match self {
            Kind::PythonCode => "their later Python frames [unknown python]",
            Kind::PerfMap => "perf-map lines skipped, their JIT frames [unknown]",
            Kind::PrivateCopy => "objects not copied, their frames [unknown]",
            Kind::SymbolTable => "objects not symbolized, their frames [unknown]",
            Kind::DiffInput => "diff input refused",
        }
    }
}

/// Parses a size: bytes, or a number with K, M or G (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{text:?}: not a size (e.g. 512M, 2G)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(scale))
        .ok_or_else(|| format!("{text:?}: not a size (e.g. 512M, 2G)"))
}

/// `KIND=SIZE`, for `--memory-limit`.
pub fn parse_item_limit(text: &str) -> Result<(Kind, u64), String> {
    let (kind, size) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected KIND=SIZE, e.g. perf-map=64M"))?;
    let kind = KINDS
        .into_iter()
        .find(|k| k.name() == kind)
        .ok_or_else(|| {
            let names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
            format!("{kind:?}: not a kind of item ({})", names.join(", "))
        })?;
    Ok((kind, parse_size(size)?))
}

#[derive(Debug)]
pub struct Budget {
    total: u64,
    item_limits: [u64; KINDS.len()],
    used: AtomicU64,
    used_by_kind: [AtomicU64; KINDS.len()],
    /// Items refused room, by kind.
    dropped: [AtomicU64; KINDS.len()],
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// Sets the budget for this run (once, at start; later calls are ignored).
pub fn configure(total: u64, item_limits: &[(Kind, u64)]) {
    let mut limits = KINDS.map(Kind::default_item_limit);
    for &(kind, limit) in item_limits {
        limits[kind.index()] = limit;
    }
    BUDGET.get_or_init(|| Budget::new(total, limits));
}

/// The run's budget (the defaults unless `configure` came first).
pub fn budget() -> &'static Budget {
    BUDGET.get_or_init(|| Budget::new(DEFAULT_TOTAL, KINDS.map(Kind::default_item_limit)))
}

/// Bytes held under the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: &'static Budget,
    kind: Kind,
    bytes: u64,
}

impl Reservation {
    /// Adds `bytes` to this item; false (and counted) when its limit or the
    /// total would be passed.
    pub fn grow(&mut self, bytes: u64) -> bool {
        if self.budget.take(self.kind, self.bytes, bytes) {
            self.bytes += bytes;
            true
        } else {
            false
        }
    }

    /// Gives back `bytes` of this item's (an entry replaced by a smaller one).
    pub fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.budget.used.fetch_sub(bytes, Ordering::Relaxed);
        self.budget.used_by_kind[self.kind.index()].fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        self.budget.used_by_kind[self.kind.index()].fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Usage of one kind, for metrics.
pub struct KindUsage {
    pub kind: Kind,
    pub bytes: u64,
    pub refused: u64,
}

impl Budget {
    fn new(total: u64, item_limits: [u64; KINDS.len()]) -> Self {
        Budget {
            total,
            item_limits,
            used: AtomicU64::new(0),
            used_by_kind: Default::default(),
            dropped: Default::default(),
        }
    }

    pub fn item_limit(&self, kind: Kind) -> u64 {
        self.item_limits[kind.index()]
    }

    /// Reserves `bytes` for a new item of `kind`; None (counted) when over
    /// the item's limit or the total.
    pub fn reserve(&'static self, kind: Kind, bytes: u64) -> Option<Reservation> {
        // Built only once taken: dropping a Reservation gives its bytes back.
        self.take(kind, 0, bytes).then(|| Reservation {
            budget: self,
            kind,
            bytes,
        })
    }

    /// Takes `bytes` more for an item of `kind` that holds `held` already.
    fn take(&self, kind: Kind, held: u64, bytes: u64) -> bool {
        let fits_item = held
            .checked_add(bytes)
            .is_some_and(|item| item <= self.item_limit(kind));
        let fits_total = fits_item
            && self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                    used.checked_add(bytes).filter(|&after| after <= self.total)
                })
                .is_ok();
        if fits_total {
            self.used_by_kind[kind.index()].fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.dropped[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
        fits_total
    }

    pub fn usage(&self) -> Vec<KindUsage> {
        KINDS
            .into_iter()
            .map(|kind| KindUsage {
                kind,
                bytes: self.used_by_kind[kind.index()].load(Ordering::Relaxed),
                refused: self.dropped[kind.index()].load(Ordering::Relaxed),
            })
            .collect()
    }

    /// One line on what the budget refused, or None when it refused nothing.
    pub fn summary(&self) -> Option<String> {
        let parts: Vec<String> = KINDS
            .into_iter()
            .filter_map(|kind| {
                let dropped = self.dropped[kind.index()].load(Ordering::Relaxed);
                (dropped > 0).then(|| {
                    format!(
                        "{dropped} {} over {} MiB each or the total ({})",
                        kind.name(),
                        self.item_limit(kind).div_ceil(MIB),
                        kind.consequence()
                    )
                })
            })
            .collect();
        (!parts.is_empty()).then(|| {
            format!(
                "memory budget ({} MiB in all) refused room: {}; raise it with --memory-budget or --memory-limit KIND=SIZE",
                self.total / MIB,
                parts.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked(total: u64, limits: &[(Kind, u64)]) -> &'static Budget {
        let mut item_limits = KINDS.map(Kind::default_item_limit);
        for &(kind, limit) in limits {
            item_limits[kind.index()] = limit;
        }
        Box::leak(Box::new(Budget::new(total, item_limits)))
    }

    #[test]
    fn items_and_the_total_are_capped_and_given_back() {
        let budget = leaked(100, &[(Kind::PerfMap, 60)]);
        assert!(budget.reserve(Kind::PerfMap, 61).is_none(), "over the item");
        let mut map = budget.reserve(Kind::PerfMap, 50).unwrap();
        assert!(map.grow(10));
        assert!(!map.grow(1), "the item is full");
        map.shrink(5);
        assert!(map.grow(5));
        let copy = budget.reserve(Kind::PrivateCopy, 40).unwrap();
        assert!(
            budget.reserve(Kind::PythonCode, 1).is_none(),
            "the total is full"
        );
        drop(map);
        assert!(budget.reserve(Kind::PythonCode, 60).is_some());
        drop(copy);
        let summary = budget.summary().unwrap();
        assert!(summary.contains("1 python-code"), "{summary}");
        assert!(summary.contains("2 perf-map"), "{summary}");
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sizes_and_item_limits_parse() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999G").is_err());
        assert_eq!(
            parse_item_limit("perf-map=64M"),
            Ok((Kind::PerfMap, 64 << 20))
        );
        assert!(parse_item_limit("heap=1G")
            .unwrap_err()
            .contains("perf-map"));
    }
}
