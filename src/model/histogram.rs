//! Histograms as the histogram tools report them: one per key (or one in
//! total), in the unit the user asked for.

/// How slots map to values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Slot 0 holds values 0 and 1, slot i values in [2^i, 2^(i+1) - 1]
    /// (the layout BCC and libbpf-tools print).
    Log2,
    /// Slot n holds the value n.
    Linear,
}

impl Scale {
    /// The value range of slot `index`, inclusive.
    pub fn slot_range(self, index: usize) -> (u64, u64) {
        match self {
            Scale::Linear => (index as u64, index as u64),
            Scale::Log2 if index == 0 => (0, 1),
            Scale::Log2 => (1u64 << index, (1u64 << (index + 1)) - 1),
        }
    }
}

/// Counts per slot, with the number and sum of the values counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub slots: Vec<u64>,
    pub count: u64,
    pub sum: u64,
}

impl Histogram {
    /// Adds another histogram's counts (e.g. per-CPU copies) into this one.
    pub fn merge(&mut self, other: &Histogram) {
        if self.slots.len() < other.slots.len() {
            self.slots.resize(other.slots.len(), 0);
        }
        for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    pub fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// What a histogram is of: nothing (one total histogram) or a key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HistogramKey {
    Total,
    /// A numeric id (pid, tid, syscall...) and a name (comm, syscall name...).
    Keyed {
        id: u64,
        name: String,
    },
    /// A name alone (a disk, a set of I/O flags).
    Named(String),
}

/// All histograms of one interval.
#[derive(Debug, Clone)]
pub struct HistogramReport {
    /// "usecs", "msecs", "runqlen"...
    pub unit: &'static str,
    pub scale: Scale,
    /// How keys are introduced in text ("pid", "tid", "disk"...).
    pub key_name: &'static str,
    pub histograms: Vec<(HistogramKey, Histogram)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_match_bcc_layout() {
        assert_eq!(Scale::Log2.slot_range(0), (0, 1));
        assert_eq!(Scale::Log2.slot_range(1), (2, 3));
        assert_eq!(Scale::Log2.slot_range(9), (512, 1023));
        assert_eq!(Scale::Log2.slot_range(10), (1024, 2047));
        assert_eq!(Scale::Linear.slot_range(3), (3, 3));
    }

    #[test]
    fn merge_adds_counts_and_grows() {
        let mut a = Histogram {
            slots: vec![1, 2],
            count: 3,
            sum: 5,
        };
        a.merge(&Histogram {
            slots: vec![0, 1, 4],
            count: 5,
            sum: 30,
        });
        assert_eq!(
            a,
            Histogram {
                slots: vec![1, 3, 4],
                count: 8,
                sum: 35
            }
        );
        assert!((a.average() - 35.0 / 8.0).abs() < 1e-9);
    }
}
