/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Shared by the histogram tools: log2 and linear histograms summed in
 * kernel (struct hist in layouts.h), so only the buckets cross to user
 * space. A run without per-key histograms adds to the per-CPU `total_hist`;
 * per-key runs use the `hists` hash.
 * Needs: HISTOGRAM_MAPS, RUN_STATS_MAP (stats.h).
 */
#ifndef BPFSCOPE_HISTOGRAM_H
#define BPFSCOPE_HISTOGRAM_H

/* serve --cgroup-labels: histograms keyed by the cgroup of the task measured. */
const volatile bool key_by_cgroup = false;

const struct hist zero_hist = {};

static __always_inline u32 log2_slot(u64 value)
{
	u32 slot = 0, shift;

	shift = (value > 0xFFFFFFFFULL) << 5; value >>= shift; slot |= shift;
	shift = (value > 0xFFFF) << 4; value >>= shift; slot |= shift;
	shift = (value > 0xFF) << 3; value >>= shift; slot |= shift;
	shift = (value > 0xF) << 2; value >>= shift; slot |= shift;
	shift = (value > 0x3) << 1; value >>= shift; slot |= shift;
	slot |= (value >> 1);
	return slot < HIST_SLOTS ? slot : HIST_SLOTS - 1;
}

/* Adds `value` in `slot` of the histogram of `key`, or of the per-CPU total when key is NULL. */
static __always_inline void hist_add_in_slot(struct hist_key *key, u32 slot, u64 value)
{
	u32 zero = 0;
	struct hist *h;

	if (!key) {
		h = bpf_map_lookup_elem(&total_hist, &zero);
		if (!h)
			return;
		h->slots[slot]++;
		h->count++;
		h->sum += value;
		return;
	}
	h = bpf_map_lookup_elem(&hists, key);
	if (!h) {
		bpf_map_update_elem(&hists, key, &zero_hist, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, key);
		if (!h) {
			stat_inc(STAT_COUNTS_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum, value);
}

/* Log2 histograms: slot by magnitude. */
static __always_inline void hist_add(struct hist_key *key, u64 value)
{
	hist_add_in_slot(key, log2_slot(value), value);
}

/* Linear histograms: slot n counts the value n (the last slot: n and above). */
static __always_inline void hist_add_linear(struct hist_key *key, u64 value)
{
	hist_add_in_slot(key, value < HIST_SLOTS ? value : HIST_SLOTS - 1, value);
}

#endif /* BPFSCOPE_HISTOGRAM_H */
