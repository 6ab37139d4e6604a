// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope runqlat: run-queue latency, from a task becoming runnable (wakeup,
 * wakeup of a new task, or preemption while still runnable) to it running,
 * summed in kernel as log2 histograms.
 */
#include "histogram.h"

#define TASK_RUNNING 0

const volatile u64 unit_ns = 1000;   /* 1000: usecs, 1000000: msecs */
const volatile bool per_process = false;
const volatile bool per_thread = false;

/* When each task became runnable: task storage (BTF) or a TID hash (raw). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} enqueued_at SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u64);
} enqueued_by_tid SEC(".maps");

static __always_inline bool selected(u32 tgid, u32 tid)
{
	return tid != 0 && task_selected(tgid, tid);
}

static __always_inline void record_latency(struct task_struct *task, u32 tgid, u32 tid, u64 delta_ns)
{
	struct hist_key key = {};

	/* Events are counted by the histograms themselves. */
	if (!per_process && !per_thread && !key_by_cgroup) {
		hist_add(NULL, delta_ns / unit_ns);
		return;
	}
	if (per_process || per_thread) {
		key.id = per_thread ? tid : tgid;
		BPF_CORE_READ_INTO(&key.name, task, comm);
	}
	if (key_by_cgroup)
		key.cgroup = task_cgroup_id(task);
	hist_add(&key, delta_ns / unit_ns);
}

/* --- BTF-typed flavor ---------------------------------------------------- */

static __always_inline void enqueue_btf(struct task_struct *task, u64 now)
{
	u64 *at;

	if (!selected(task->tgid, task->pid))
		return;
	at = bpf_task_storage_get(&enqueued_at, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (at)
		*at = now;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(wakeup_btf, struct task_struct *task)
{
	enqueue_btf(task, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(wakeup_new_btf, struct task_struct *task)
{
	enqueue_btf(task, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 now = bpf_ktime_get_ns();
	u64 *at;

	if (preempt || prev->__state == TASK_RUNNING)
		enqueue_btf(prev, now);
	at = bpf_task_storage_get(&enqueued_at, next, 0, 0);
	if (at && *at) {
		record_latency(next, next->tgid, next->pid, now - *at);
		*at = 0;
	}
	return 0;
}

/* --- raw tracepoint flavor ----------------------------------------------- */

static __always_inline void enqueue_raw(struct task_struct *task)
{
	u32 tid = BPF_CORE_READ(task, pid);
	u64 now;

	if (!selected(BPF_CORE_READ(task, tgid), tid))
		return;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&enqueued_by_tid, &tid, &now, BPF_ANY);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(wakeup_raw, struct task_struct *task)
{
	enqueue_raw(task);
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(wakeup_new_raw, struct task_struct *task)
{
	enqueue_raw(task);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u32 tid = BPF_CORE_READ(next, pid);
	u64 *at;

	if (preempt || BPF_CORE_READ(prev, __state) == TASK_RUNNING)
		enqueue_raw(prev);
	at = bpf_map_lookup_elem(&enqueued_by_tid, &tid);
	if (at) {
		record_latency(next, BPF_CORE_READ(next, tgid), tid, bpf_ktime_get_ns() - *at);
		bpf_map_delete_elem(&enqueued_by_tid, &tid);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
