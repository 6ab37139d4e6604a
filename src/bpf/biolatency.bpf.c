// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope biolatency: block I/O latency from issue (or, with -Q, from being
 * queued) to completion, summed in kernel as log2 histograms: in total, per
 * disk, and/or per I/O flags.
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
HISTOGRAM_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "histogram.h"

const volatile u64 unit_ns = 1000;
const volatile bool from_queue = false;   /* -Q */
const volatile bool per_disk = false;     /* -D */
const volatile bool per_flags = false;    /* -F */

#define REQ_OP_MASK   0xff

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, u64);       /* struct request * */
	__type(value, u64);     /* start time */
} started_at SEC(".maps");

static __always_inline void start(struct request *rq, bool only_if_absent)
{
	u64 key = (u64)rq, now = bpf_ktime_get_ns();

	if (!current_selected())
		return;
	if (bpf_map_update_elem(&started_at, &key, &now, only_if_absent ? BPF_NOEXIST : BPF_ANY) == -E2BIG)
		stat_inc(STAT_COUNTS_FULL);
}

static __always_inline u64 normalized_flags(u32 cmd_flags)
{
	u64 flags = cmd_flags & REQ_OP_MASK;

	if (cmd_flags & (1 << bpf_core_enum_value(enum req_flag_bits, __REQ_SYNC)))
		flags |= BLOCK_FLAG_SYNC;
	if (cmd_flags & (1 << bpf_core_enum_value(enum req_flag_bits, __REQ_META)))
		flags |= BLOCK_FLAG_META;
	if (cmd_flags & (1 << bpf_core_enum_value(enum req_flag_bits, __REQ_FUA)))
		flags |= BLOCK_FLAG_FUA;
	if (cmd_flags & (1 << bpf_core_enum_value(enum req_flag_bits, __REQ_PREFLUSH)))
		flags |= BLOCK_FLAG_PREFLUSH;
	if (cmd_flags & (1 << bpf_core_enum_value(enum req_flag_bits, __REQ_RAHEAD)))
		flags |= BLOCK_FLAG_RAHEAD;
	return flags;
}

static __always_inline void complete(struct request *rq)
{
	u64 key = (u64)rq, *at, delta;
	struct hist_key hkey = {};
	struct gendisk *disk;

	at = bpf_map_lookup_elem(&started_at, &key);
	if (!at)
		return;
	delta = bpf_ktime_get_ns() - *at;
	bpf_map_delete_elem(&started_at, &key);
	stat_inc(STAT_EVENTS);
	if (!per_disk && !per_flags) {
		hist_add(NULL, delta / unit_ns);
		return;
	}
	if (per_disk) {
		disk = request_disk(rq);
		hkey.id = (u64)BPF_CORE_READ(disk, major) << 20 | BPF_CORE_READ(disk, first_minor);
		bpf_probe_read_kernel_str(&hkey.name, sizeof(hkey.name), &disk->disk_name);
	}
	if (per_flags)
		hkey.id = hkey.id << 16 | normalized_flags(BPF_CORE_READ(rq, cmd_flags));
	hist_add(&hkey, delta / unit_ns);
}

SEC("tp_btf/block_rq_insert")
int BPF_PROG(insert_btf, struct request *rq)
{
	start(rq, false);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(issue_btf, struct request *rq)
{
	start(rq, from_queue);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(complete_btf, struct request *rq)
{
	complete(rq);
	return 0;
}

SEC("raw_tp/block_rq_insert")
int BPF_PROG(insert_raw, struct request *rq)
{
	start(rq, false);
	return 0;
}

SEC("raw_tp/block_rq_issue")
int BPF_PROG(issue_raw, struct request *rq)
{
	start(rq, from_queue);
	return 0;
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(complete_raw, struct request *rq)
{
	complete(rq);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
