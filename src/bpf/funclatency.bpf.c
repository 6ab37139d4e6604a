// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope funclatency: latency of a user-space function, entry (uprobe) to
 * return (uretprobe), summed in kernel as a log2 histogram (in total or per
 * process).
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
HISTOGRAM_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "histogram.h"

const volatile u64 unit_ns = 1000;
const volatile bool per_process = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);       /* pid_tgid */
	__type(value, u64);     /* entry time */
} entered_at SEC(".maps");

SEC("uprobe")
int BPF_UPROBE(function_entry)
{
	u64 pid_tgid = bpf_get_current_pid_tgid(), now;

	if (!task_selected(pid_tgid >> 32, (u32)pid_tgid))
		return 0;
	now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&entered_at, &pid_tgid, &now, BPF_ANY))
		stat_inc(STAT_COUNTS_FULL);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(function_return)
{
	u64 pid_tgid = bpf_get_current_pid_tgid(), *at, delta;
	struct hist_key key = {};

	at = bpf_map_lookup_elem(&entered_at, &pid_tgid);
	if (!at)
		return 0;
	delta = bpf_ktime_get_ns() - *at;
	bpf_map_delete_elem(&entered_at, &pid_tgid);
	stat_inc(STAT_EVENTS);
	if (!per_process) {
		hist_add(NULL, delta / unit_ns);
		return 0;
	}
	key.id = pid_tgid >> 32;
	bpf_get_current_comm(&key.name, sizeof(key.name));
	hist_add(&key, delta / unit_ns);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
