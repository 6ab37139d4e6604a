/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Counting what happened and what was lost (the `stats` map every object
 * declares with RUN_STATS_MAP), and the counting helpers that report a
 * full map there instead of dropping data silently.
 * Needs: RUN_STATS_MAP.
 */
#ifndef BPFSCOPE_STATS_H
#define BPFSCOPE_STATS_H

static __always_inline void stat_add(enum run_stat stat, u64 amount)
{
	u32 key = stat;
	u64 *value = bpf_map_lookup_elem(&stats, &key);

	if (value)
		*value += amount;
}

static __always_inline void stat_inc(enum run_stat stat)
{
	stat_add(stat, 1);
}

/* Adds `amount` to the u64 value of `key` in a hash map, creating it at 0. */
static __always_inline void add_to_count(void *counts, void *key, u64 amount)
{
	u64 *value = bpf_map_lookup_elem(counts, key);
	long err;

	if (value) {
		__sync_fetch_and_add(value, amount);
		return;
	}
	err = bpf_map_update_elem(counts, key, &amount, BPF_NOEXIST);
	if (err == -EEXIST) {
		value = bpf_map_lookup_elem(counts, key);
		if (value)
			__sync_fetch_and_add(value, amount);
	} else if (err) {
		stat_inc(STAT_COUNTS_FULL);
	}
}

#endif /* BPFSCOPE_STATS_H */
