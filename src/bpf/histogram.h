/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Shared by the histogram tools: log2 histograms summed in kernel, so only
 * the buckets cross to user space. Keep layouts in sync with
 * src/core/histograms.rs.
 */
#ifndef BPFSCOPE_HISTOGRAM_H
#define BPFSCOPE_HISTOGRAM_H

#include "common.h"

/*
 * Histograms summed in kernel. Log2 ones: slot 0 counts values 0 and 1, slot
 * i (i >= 1) values in [2^i, 2^(i+1) - 1], as BCC and libbpf-tools print
 * them. Linear ones: slot n counts the value n.
 * A run without per-key histograms uses the per-CPU `total_hist` (no shared
 * cache lines on the hot path); per-key runs use the `hists` hash.
 */
#define HIST_SLOTS 40

struct hist {
	u64 slots[HIST_SLOTS];
	u64 count;
	u64 sum;
};

struct hist_key {
	u64 id;                 /* pid, tid, device, syscall number... per tool */
	u64 cgroup;             /* cgroup v2 id where key_by_cgroup, else 0 */
	char name[TASK_COMM_LEN];
};

/* serve --cgroup-labels: histograms keyed by the cgroup of the task measured. */
const volatile bool key_by_cgroup = false;


const struct hist zero_hist = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 10240);
	__type(key, struct hist_key);
	__type(value, struct hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct hist);
} total_hist SEC(".maps");

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
