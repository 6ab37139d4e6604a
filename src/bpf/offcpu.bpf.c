// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope offcpu: time each thread spends switched out, from sched_switch
 * out to sched_switch in, summed in kernel (microseconds) under the user and
 * kernel stacks it blocked in.
 *
 * Walking stacks on every context switch costs about half the throughput of
 * a switch-heavy workload, and so does a hash update per block. So:
 * - the switch-out path walks the stacks only when the thread's blocking
 *   signature (user registers and task state) is not in its stack cache
 *   (stack_cache.h), and revalidates cached stacks every 10 ms of reuse;
 * - block time accumulates per thread (in nanoseconds) and is added to the
 *   counts map when the thread's stacks change, every `flush_every` blocks,
 *   when the thread exits, and at the end of the run (a task iterator);
 * - time blocked before the process's unwind tables arrived, under a stack
 *   walked without them, goes under the stacks that the first walk with the
 *   tables gives the same signature, not under the cut one.
 * The raw-tracepoint fallback has no task storage: it keys blocks by TID in a
 * hash, walks stacks on every switch-out and adds every block at once.
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

#define TASK_INTERRUPTIBLE 1
#define TASK_UNINTERRUPTIBLE 2
#define TASK_NOLOAD 0x0400
#define STATE_ALL -1

const volatile bool capture_user = true;
const volatile bool capture_kernel = true;
const volatile bool user_threads_only = false;
const volatile bool kernel_threads_only = false;
const volatile int state_filter = STATE_ALL;
const volatile u64 min_block_ns = 1000;
const volatile u64 max_block_ns = ~0ULL;
const volatile u32 revalidate_every = 16;
const volatile u64 revalidate_after_ns = 10000000;
const volatile u32 flush_every = 64;
const volatile bool total_by_cgroup = false;   /* serve: off-CPU time per cgroup */

#include "stack_cache.h"
#include "sched_task.h"

/* Off-CPU nanoseconds per cgroup v2 id, where total_by_cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, u64);
} cgroup_totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 40960); /* resized by user space */
	__type(key, struct stack_key);
	__type(value, u64); /* nanoseconds */
} counts SEC(".maps");

/*
 * Off-CPU time not yet added to the counts map, all under one pair of
 * stacks, and the thread's run statistics not yet added to the shared ones
 * (one shared counter less to touch per block).
 */
struct pending_time {
	s32 user_stack_id;
	s32 kernel_stack_id;
	u64 ns;
	u32 blocks;             /* STAT_EVENTS */
	s32 python_stack_id;
	u32 stacks_epoch;       /* stacks_epoch() when the ids were taken */
	u32 pad;
	u64 signature;          /* of every block in it; 0: blocks of several */
};

/* A thread's current block, its unflushed time and its stack cache. */
struct blocked {
	u64 start_ns;           /* 0: not blocked (or not selected) */
	u64 announced_mm;       /* address space already announced to user space */
	u32 python_generation;  /* python_present's value when ... */
	u32 python_process;     /* ... this thread's process was looked up: 1 if Python */
	u64 python_skip_until_ns; /* no thread state found: not walked before then */
	struct pending_time pending;
	struct stack_cache cache;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct blocked);
} blocked_tasks SEC(".maps");

/* The raw-tracepoint fallback keys blocks by TID instead. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct blocked);
} blocked_by_tid SEC(".maps");

static __always_inline bool state_selected(unsigned int state)
{
	if (state_filter == STATE_ALL)
		return true;
	if (state_filter == TASK_RUNNING)
		return state == TASK_RUNNING;
	if (state_filter == TASK_UNINTERRUPTIBLE) /* "disk": not TASK_IDLE waits */
		return (state & TASK_UNINTERRUPTIBLE) && !(state & TASK_NOLOAD);
	return (state & state_filter) != 0;
}

/* Adds a thread's unflushed off-CPU time to the counts map. */
static __always_inline void flush_pending(struct task_struct *task, struct blocked *b)
{
	struct stack_key key = {};

	if (b->pending.blocks)
		stat_add(STAT_EVENTS, b->pending.blocks);
	flush_reused(&b->cache);
	b->pending.blocks = 0;
	if (!b->pending.ns)
		return;
	if (b->pending.stacks_epoch != stacks_epoch()) {
		/* Its ids point into emptied maps: they may name other stacks now. */
		stat_inc(STAT_PENDING_CLEARED);
		b->pending.ns = 0;
		return;
	}
	key.tgid = BPF_CORE_READ(task, tgid);
	key.address_space = (u64)BPF_CORE_READ(task, mm);
	key.user_stack_id = b->pending.user_stack_id;
	key.kernel_stack_id = b->pending.kernel_stack_id;
	key.python_stack_id = b->pending.python_stack_id;
	BPF_CORE_READ_INTO(&key.comm, task, comm);
	add_to_count(&counts, &key, b->pending.ns);
	if (total_by_cgroup) {
		u64 cgroup = task_cgroup_id(task);

		add_to_count(&cgroup_totals, &cgroup, b->pending.ns);
	}
	b->pending.ns = 0;
}

/*
 * A thread of a Python process without a thread state (a native thread, or
 * a program that links libpython without starting it, as perf does) is
 * walked again only this long after, not at every block.
 */
#define PYTHON_RECHECK_NS (100 * 1000 * 1000ULL)

/* Whether prev's process may be Python, looked up again only after a registration. */
static __always_inline bool maybe_python(struct blocked *b, u32 tgid)
{
	u32 zero = 0, *generation = bpf_map_lookup_elem(&python_present, &zero);

	if (!generation || !*generation)
		return false;
	if (b->python_generation != *generation) {
		b->python_generation = *generation;
		b->python_process = bpf_map_lookup_elem(&python_processes, &tgid) != NULL;
		b->python_skip_until_ns = 0;
	}
	return b->python_process;
}

/* prev (== current) is switching out: start its block, with its stacks. */
static __always_inline void switch_out(void *ctx, struct task_struct *prev, struct task_view *view,
				       struct blocked *b, u64 now, bool use_cache)
{
	bool is_kthread = view->flags & PF_KTHREAD;
	s32 user_id, kernel_id, python_id = -1;
	u64 signature = 0;
	u32 epoch;
	struct superseded_stacks superseded;

	if (use_cache && !is_kthread && capture_user)
		signature = user_signature(prev, view->state);
	epoch = stacks_epoch();
	cached_walk(ctx, &b->cache, signature, view->tgid, is_kthread, now, epoch, &user_id, &kernel_id,
		    &superseded);
	/* Not cached: Python functions blocked alike share one native signature. */
	if (!is_kthread && capture_user && maybe_python(b, view->tgid) && now >= b->python_skip_until_ns) {
		bool no_thread_state;

		python_id = capture_python_stack(view->tgid, view->tid, &no_thread_state);
		if (no_thread_state)
			b->python_skip_until_ns = now + PYTHON_RECHECK_NS;
	}
	if (user_id != b->pending.user_stack_id || kernel_id != b->pending.kernel_stack_id ||
	    python_id != b->pending.python_stack_id || epoch != b->pending.stacks_epoch) {
		/* Blocks here walked before the process's tables arrived (or
		 * with fewer of them): their time goes under this walk too. */
		if (!(superseded.found && signature && b->pending.signature == signature &&
		      b->pending.user_stack_id == superseded.user_stack_id &&
		      b->pending.kernel_stack_id == superseded.kernel_stack_id &&
		      b->pending.python_stack_id == python_id && b->pending.stacks_epoch == epoch))
			flush_pending(prev, b);
		b->pending.user_stack_id = user_id;
		b->pending.kernel_stack_id = kernel_id;
		b->pending.python_stack_id = python_id;
		b->pending.stacks_epoch = epoch;
		b->pending.signature = signature;
	} else if (b->pending.signature != signature) {
		b->pending.signature = 0;
	}
	if (view->mm && capture_user && b->announced_mm != view->mm) {
		announce_address_space(view->tgid, view->mm);
		b->announced_mm = view->mm;
	}
	b->start_ns = now;
}

static __always_inline bool prev_selected(struct task_view *view)
{
	if (view->tid == 0)
		return false;
	if (!thread_kind_selected(view->flags & PF_KTHREAD))
		return false;
	if (!state_selected(view->state))
		return false;
	return task_selected(view->tgid, view->tid);
}

/* next is switching in: its block ends now. */
static __always_inline void switch_in(struct task_struct *next, struct blocked *b, u64 now)
{
	u64 delta = now - b->start_ns;

	b->start_ns = 0;
	if (delta < min_block_ns || delta > max_block_ns)
		return;
	b->pending.ns += delta;
	if (++b->pending.blocks >= flush_every)
		flush_pending(next, b);
}

/* A preempted task leaves in state TASK_RUNNING: it is still runnable. */
SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 now = bpf_ktime_get_ns();
	struct task_view view;
	struct blocked *b;

	view_btf(prev, &view);
	view.state = preempt ? TASK_RUNNING : task_state_btf(prev);
	if (prev_selected(&view)) {
		b = bpf_task_storage_get(&blocked_tasks, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (b)
			switch_out(ctx, prev, &view, b, now, true);
	}
	b = bpf_task_storage_get(&blocked_tasks, next, 0, 0);
	if (b && b->start_ns)
		switch_in(next, b, now);
	return 0;
}

/* A thread's unflushed time must not die with it, nor stay in task storage at the end. */
PER_THREAD_FLUSH_PROGRAMS(blocked_tasks, struct blocked)

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 now = bpf_ktime_get_ns();
	struct blocked fresh = {}, *b;
	struct task_view view;
	u32 tid;

	view_raw(prev, &view);
	view.state = preempt ? TASK_RUNNING : task_state(prev);
	if (prev_selected(&view)) {
		tid = view.tid;
		b = bpf_map_lookup_elem(&blocked_by_tid, &tid);
		if (!b) {
			fresh.pending.user_stack_id = -1;
			fresh.pending.kernel_stack_id = -1;
			fresh.pending.python_stack_id = -1;
			bpf_map_update_elem(&blocked_by_tid, &tid, &fresh, BPF_NOEXIST);
			b = bpf_map_lookup_elem(&blocked_by_tid, &tid);
		}
		if (b)
			switch_out(ctx, prev, &view, b, now, false);
	}
	tid = BPF_CORE_READ(next, pid);
	b = bpf_map_lookup_elem(&blocked_by_tid, &tid);
	if (b && b->start_ns)
		switch_in(next, b, now);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
