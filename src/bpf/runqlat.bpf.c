// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope runqlat: run-queue latency, from a task becoming runnable (wakeup,
 * wakeup of a new task, or preemption while still runnable) to it running,
 * summed in kernel as log2 histograms.
 *
 * The scheduler already timestamps every enqueue (CONFIG_SCHED_INFO:
 * task->sched_info.last_queued, in its run queue's clock), so one program on
 * sched_switch suffices and no wakeup is hooked: the latency of `next` is
 * "now" minus that timestamp. Hooking the wakeups as well, as BCC does, cost
 * about 5 % more of a context-switch storm's throughput.
 * - "Now" is the run queue's clock, which __schedule() updated just before
 *   sched_switch, except when a wakeup asked it to skip that update (the woken
 *   task preempting the current one): then the clock still reads the
 *   wakeup's time, and the wait until the preemption (often microseconds)
 *   would read as 0. So "now" is bpf_ktime_get_ns() plus the run queue
 *   clock's offset from it, learnt per CPU as the largest difference seen in
 *   the last 10 ms (the freshest readings give the largest; the two clocks
 *   drift apart by NTP's slewing, microseconds per second at most).
 * - A wait interrupted by a migration is timestamped again on the new run
 *   queue, the earlier part going into the task's run_delay; the run_delay
 *   seen at the task's previous switch-in recovers it.
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
HISTOGRAM_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "histogram.h"

const volatile u64 unit_ns = 1000;   /* 1000: usecs, 1000000: msecs */
const volatile bool per_process = false;
const volatile bool per_thread = false;

/* A task's run_delay (its total wait) right after its last switch-in: task storage (BTF) or a TID hash (raw). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} waited_before SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);  /* exited threads age out */
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u64);
} waited_before_by_tid SEC(".maps");

struct clock_offset {
	s64 offset;             /* run queue clock - bpf_ktime_get_ns() */
	u64 window_start;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct clock_offset);
} clock_offsets SEC(".maps");

#define OFFSET_WINDOW_NS 10000000

/* What sched_switch reads of `next`. */
struct arriving {
	struct task_struct *task;
	u32 tgid;
	u32 tid;
	u64 queued;             /* sched_info.last_queued */
	u64 run_delay;          /* sched_info.run_delay, before this arrival */
	u64 rq_clock;           /* its (this CPU's) run queue clock */
};

/* The run queue clock's "now" (see the top of this file). */
static __always_inline u64 run_queue_now(u64 rq_clock)
{
	u64 ktime = bpf_ktime_get_ns();
	s64 offset = rq_clock - ktime;
	struct clock_offset *learnt;
	u32 zero = 0;

	learnt = bpf_map_lookup_elem(&clock_offsets, &zero);
	if (!learnt)
		return rq_clock;
	if (ktime - learnt->window_start > OFFSET_WINDOW_NS || offset > learnt->offset) {
		learnt->offset = offset;
		learnt->window_start = ktime;
		return rq_clock;
	}
	return ktime + learnt->offset;
}

static __always_inline void record_latency(struct arriving *next, u64 delta_ns)
{
	struct task_struct *task = next->task;
	struct hist_key key = {};

	/* Events are counted by the histograms themselves. */
	if (!per_process && !per_thread && !key_by_cgroup) {
		hist_add(NULL, delta_ns / unit_ns);
		return;
	}
	if (per_process || per_thread) {
		key.id = per_thread ? next->tid : next->tgid;
		BPF_CORE_READ_INTO(&key.name, task, comm);
	}
	if (key_by_cgroup)
		key.cgroup = task_cgroup_id(task);
	hist_add(&key, delta_ns / unit_ns);
}

/* Records next's wait; *before is its run_delay after its previous switch-in (0: unknown). */
static __always_inline void arrive(struct arriving *next, u64 *before)
{
	u64 now = run_queue_now(next->rq_clock);

	if (*before && *before <= next->run_delay)
		record_latency(next, next->run_delay - *before + (now - next->queued));
	else
		record_latency(next, now - next->queued);
	/* The kernel adds rq_clock - queued to run_delay as next arrives. */
	*before = next->run_delay + (next->rq_clock - next->queued);
}

static __always_inline bool selected(struct arriving *next)
{
	return next->queued && next->tid && next->rq_clock >= next->queued &&
	       other_task_selected(next->task, next->tgid, next->tid);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct arriving arriving = {
		.task = next,
		.tgid = next->tgid,
		.tid = next->pid,
		.queued = next->sched_info.last_queued,
		.run_delay = next->sched_info.run_delay,
		/* next is on this CPU's run queue. */
		.rq_clock = next->se.cfs_rq->rq->clock,
	};
	u64 *before;

	if (!selected(&arriving))
		return 0;
	before = bpf_task_storage_get(&waited_before, next, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (before)
		arrive(&arriving, before);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct arriving arriving = {
		.task = next,
		.tgid = BPF_CORE_READ(next, tgid),
		.tid = BPF_CORE_READ(next, pid),
		.queued = BPF_CORE_READ(next, sched_info.last_queued),
		.run_delay = BPF_CORE_READ(next, sched_info.run_delay),
		.rq_clock = BPF_CORE_READ(next, se.cfs_rq, rq, clock),
	};
	u64 unknown = 0, *before;

	if (!selected(&arriving))
		return 0;
	before = bpf_map_lookup_elem(&waited_before_by_tid, &arriving.tid);
	if (!before) {
		bpf_map_update_elem(&waited_before_by_tid, &arriving.tid, &unknown, BPF_NOEXIST);
		before = bpf_map_lookup_elem(&waited_before_by_tid, &arriving.tid);
	}
	if (before)
		arrive(&arriving, before);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
