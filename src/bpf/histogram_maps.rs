//! Reading (and, between intervals, emptying) the histograms the histogram
//! tools sum in kernel: the keyed `hists` hash and the per-CPU `total_hist`
//! of HISTOGRAM_MAPS, as `struct hist` / `struct hist_key` (layouts.h).

use std::collections::HashSet;

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use crate::layouts::{self, c_string, hist, hist_key};
use crate::model::histogram::{Histogram, HistogramKey};

fn histogram(raw: &hist) -> Histogram {
    Histogram {
        slots: raw.slots.to_vec(),
        count: raw.count,
        sum: raw.sum,
    }
}

/// A `struct hist_key` as the model keys histograms: an id and a name.
pub fn histogram_key(key: &hist_key) -> HistogramKey {
    HistogramKey::Keyed {
        id: key.id,
        name: c_string(&key.name),
    }
}

/// Reads the keyed histograms (`hists`) and the per-CPU total
/// (`total_hist`), emptying them when `clear` (interval mode).
pub fn read_histograms(
    hists: &dyn MapCore,
    total: &dyn MapCore,
    clear: bool,
) -> Result<Vec<(HistogramKey, Histogram)>> {
    Ok(read_histograms_by_cgroup(hists, total, clear)?
        .into_iter()
        .map(|(_, key, histogram)| (key, histogram))
        .collect())
}

/// As `read_histograms`, with each histogram's cgroup id (0 for the total
/// and for programs not keyed by cgroup).
pub fn read_histograms_by_cgroup(
    hists: &dyn MapCore,
    total: &dyn MapCore,
    clear: bool,
) -> Result<Vec<(u64, HistogramKey, Histogram)>> {
    let mut histograms = Vec::new();
    for key in hists.keys().collect::<Vec<_>>() {
        let value = if clear {
            hists.lookup_and_delete(&key)?
        } else {
            hists.lookup(&key, MapFlags::ANY)?
        };
        if let (Some(raw_key), Some(raw)) = (
            layouts::read::<hist_key>(&key),
            value.and_then(|value| layouts::read::<hist>(&value)),
        ) {
            histograms.push((raw_key.cgroup, histogram_key(&raw_key), histogram(&raw)));
        }
    }
    let zero = 0u32.to_ne_bytes();
    if let Some(per_cpu) = total.lookup_percpu(&zero, MapFlags::ANY)? {
        let mut sum = Histogram::default();
        for raw in per_cpu
            .iter()
            .filter_map(|bytes| layouts::read::<hist>(bytes))
        {
            sum.merge(&histogram(&raw));
        }
        if clear {
            let zeros = vec![layouts::bytes_of(&hist::default()).to_vec(); per_cpu.len()];
            total.update_percpu(&zero, &zeros, MapFlags::ANY)?;
        }
        if sum.count > 0 {
            histograms.push((0, HistogramKey::Total, sum));
        }
    }
    Ok(histograms)
}

/// Deletes the entries of `map` whose key's cgroup id, as `cgroup_of` reads
/// it from the raw key, is in `gone` (histograms and totals of removed cgroups).
pub fn delete_cgroup_keys(
    map: &dyn MapCore,
    cgroup_of: impl Fn(&[u8]) -> Option<u64>,
    gone: &HashSet<u64>,
) {
    for key in map.keys().collect::<Vec<_>>() {
        if cgroup_of(&key).is_some_and(|id| gone.contains(&id)) {
            // A key deleted meanwhile needs no deleting.
            map.delete(&key).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_hists_and_keys() {
        let mut raw = hist {
            count: 39,
            sum: 1234,
            ..Default::default()
        };
        raw.slots[4] = 1;
        let converted = histogram(&raw);
        assert_eq!(converted.slots.len(), layouts::HIST_SLOTS);
        assert_eq!(converted.slots[4], 1);
        assert_eq!((converted.count, converted.sum), (39, 1234));
        let mut key = hist_key {
            id: 77,
            cgroup: 4242,
            ..Default::default()
        };
        key.name[..3].copy_from_slice(&[b's' as i8, b'd' as i8, b'a' as i8]);
        assert_eq!(
            histogram_key(&key),
            HistogramKey::Keyed {
                id: 77,
                name: "sda".into()
            }
        );
    }
}
