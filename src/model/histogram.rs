//! Log2 histograms as the histogram tools report them: one per key (or one
//! in total), in the unit the user asked for.

/// Counts per log2 slot: slot 0 holds values 0 and 1, slot i values in
/// [2^i, 2^(i+1) - 1] (the layout BCC and libbpf-tools print).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log2Histogram {
    pub slots: Vec<u64>,
    pub count: u64,
    pub sum: u64,
}

impl Log2Histogram {
    /// The value range of slot `index`, inclusive.
    pub fn slot_range(index: usize) -> (u64, u64) {
        if index == 0 {
            (0, 1)
        } else {
            (1u64 << index, (1u64 << (index + 1)) - 1)
        }
    }

    /// Adds another histogram's counts (e.g. per-CPU copies) into this one.
    pub fn merge(&mut self, other: &Log2Histogram) {
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
    /// "usecs" or "msecs".
    pub unit: &'static str,
    /// How keys are introduced in text ("pid", "tid", "disk"...).
    pub key_name: &'static str,
    pub histograms: Vec<(HistogramKey, Log2Histogram)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_match_bcc_layout() {
        assert_eq!(Log2Histogram::slot_range(0), (0, 1));
        assert_eq!(Log2Histogram::slot_range(1), (2, 3));
        assert_eq!(Log2Histogram::slot_range(9), (512, 1023));
        assert_eq!(Log2Histogram::slot_range(10), (1024, 2047));
    }

    #[test]
    fn merge_adds_counts_and_grows() {
        let mut a = Log2Histogram {
            slots: vec![1, 2],
            count: 3,
            sum: 5,
        };
        a.merge(&Log2Histogram {
            slots: vec![0, 1, 4],
            count: 5,
            sum: 30,
        });
        assert_eq!(
            a,
            Log2Histogram {
                slots: vec![1, 3, 4],
                count: 8,
                sum: 35
            }
        );
        assert!((a.average() - 35.0 / 8.0).abs() < 1e-9);
    }
}
