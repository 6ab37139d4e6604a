// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope profile: on every cpu-clock sample, intern the interrupted task's
 * user and kernel stacks and count the sample under (process, stacks) in
 * kernel. User space reads only the summed counts at the end. User stacks
 * come from frame pointers or unwind tables (unwind.h), and Python
 * processes' Python frames from their interpreter (python.h).
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
STACK_TRACE_MAP;
ADDRESS_SPACE_MAPS;
UNWIND_MAPS;
PYTHON_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "stacks.h"
#include "unwind.h"
#include "python.h"

FORK_FOLLOWER_PROGRAMS

const volatile bool capture_user = true;
const volatile bool capture_kernel = true;
const volatile bool include_idle = false;
const volatile bool per_thread = false;
const volatile u64 time_slot_ns = 0;       /* --heatmap: count per slot of this length */
const volatile u64 start_ns = 0;           /* ... from this CLOCK_MONOTONIC time */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 40960); /* resized by user space */
	__type(key, struct stack_key);
	__type(value, u64);
} counts SEC(".maps");

SEC("perf_event")
int sample_stack(struct bpf_perf_event_data *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	u32 tid = (u32)pid_tgid;
	struct task_struct *task;
	struct stack_key key = {};

	if (tid == 0 && !include_idle)
		return 0;
	if (!task_selected(tgid, tid))
		return 0;

	task = bpf_get_current_task_btf();
	key.tgid = tgid;
	key.tid = per_thread ? tid : 0;
	key.address_space = (u64)task->mm;
	key.user_stack_id = -1;
	key.kernel_stack_id = -1;
	key.python_stack_id = -1;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	if (time_slot_ns)
		key.time_slot = (bpf_ktime_get_ns() - start_ns) / time_slot_ns;

	if (capture_user && key.address_space) {
		key.user_stack_id = capture_user_stack(ctx, tgid);
		bool no_thread_state;

		key.python_stack_id = capture_python_stack(tgid, tid, &no_thread_state);
	}
	if (capture_kernel)
		key.kernel_stack_id = capture_stack(ctx, 0);

	stat_inc(STAT_EVENTS);
	add_to_count(&counts, &key, 1);
	if (key.address_space && capture_user)
		announce_address_space(tgid, key.address_space);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
