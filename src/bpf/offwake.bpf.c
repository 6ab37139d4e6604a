// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope offwaketime and wakeuptime: the time a thread spent blocked,
 * summed in kernel (nanoseconds) under who woke it.
 * - sched_switch out (not preempted): the block starts; offwaketime takes
 *   the blocked thread's stacks here (stack_cache.h).
 * - sched_waking: the waker is the current context. In a task, its stacks
 *   (cached per waker the same way) and name; in interrupt context (an
 *   interrupt handler, a softirq run at its exit, or the idle loop running
 *   deferred IPI work) only the kernel stack and the context: the task the
 *   interrupt landed on is not the waker. wakeuptime ends the block here.
 * - sched_switch in: offwaketime ends the block (run-queue wait included,
 *   as BCC's offwaketime counts it). Every block of a selected thread
 *   (switched out not runnable) ends with a sched_waking: a wakeup between
 *   setting the state and switching out makes the thread runnable again,
 *   and it does not switch out blocked.
 * Blocked time accumulates per thread under one key and is added to the
 * counts map when the key changes, every `flush_every` blocks, when the
 * thread exits, and at the end of the run (a task iterator). The idle task
 * never blocks here: only voluntary blocks of selected threads are timed.
 * The raw-tracepoint fallback keeps its state in a hash by TID, walks
 * stacks every time and adds every block at once.
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
STACK_TRACE_MAP;
ADDRESS_SPACE_MAPS;
UNWIND_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "stacks.h"
#include "unwind.h"

FORK_FOLLOWER_PROGRAMS

const volatile bool capture_user = true;
const volatile bool capture_kernel = true;
const volatile bool blocked_stacks = true;     /* offwaketime: the blocked thread's stacks too */
const volatile bool end_at_wakeup = false;     /* wakeuptime: the block ends when it is woken */
const volatile bool user_threads_only = false;
const volatile bool kernel_threads_only = false;
const volatile u64 min_block_ns = 1000;
const volatile u64 max_block_ns = ~0ULL;
const volatile u32 revalidate_every = 16;
const volatile u64 revalidate_after_ns = 10000000;
const volatile u32 flush_every = 64;

#include "stack_cache.h"
#include "sched_task.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 40960); /* resized by user space */
	__type(key, struct wake_key);
	__type(value, u64); /* nanoseconds */
} counts SEC(".maps");

/* One thread's block under way, its unflushed time, and its stack caches. */
struct wake_state {
	u64 blocked_ns;                 /* 0: not blocked (or not selected) */
	u64 announced_mm;               /* address space already announced to user space */
	u32 woken;                      /* the waker part of `block` is set */
	u32 pending_blocks;             /* STAT_EVENTS */
	u64 pending_ns;
	struct wake_key block;          /* the block under way (target comm read at flush) */
	struct wake_key pending;        /* the key of pending_ns */
	struct stack_cache blocked_cache;  /* where this thread blocks */
	struct stack_cache waker_cache;    /* where this thread wakes others */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct wake_state);
} wake_tasks SEC(".maps");

/* The raw-tracepoint fallback keys the state by TID instead. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct wake_state);
} wake_by_tid SEC(".maps");

static __always_inline bool same_key(const struct wake_key *a, const struct wake_key *b)
{
	const u64 *x = (const u64 *)a, *y = (const u64 *)b;

	/* Every byte of the key is a field or zeroed padding. */
	for (int i = 0; i < sizeof(*a) / sizeof(u64); i++)
		if (x[i] != y[i])
			return false;
	return true;
}

/* Adds the thread's (`task`'s) unflushed time to the counts map, under its name now. */
static __always_inline void flush_pending(struct task_struct *task, struct wake_state *s)
{
	if (s->pending_blocks)
		stat_add(STAT_EVENTS, s->pending_blocks);
	s->pending_blocks = 0;
	flush_reused(&s->blocked_cache);
	flush_reused(&s->waker_cache);
	if (!s->pending_ns)
		return;
	/* Named only while added: blocks compare without the name. */
	BPF_CORE_READ_INTO(&s->pending.target.comm, task, comm);
	add_to_count(&counts, &s->pending, s->pending_ns);
	__builtin_memset(&s->pending.target.comm, 0, sizeof(s->pending.target.comm));
	s->pending_ns = 0;
}

static __always_inline void announce_once(struct wake_state *s, u32 tgid, u64 mm)
{
	if (mm && capture_user && s->announced_mm != mm) {
		announce_address_space(tgid, mm);
		s->announced_mm = mm;
	}
}

/* prev (== current) blocks now. */
static __always_inline void block_starts(void *ctx, struct task_struct *prev, struct task_view *view,
					 struct wake_state *s, u64 now, bool use_cache)
{
	struct stack_key *target = &s->block.target;
	bool is_kthread = view->flags & PF_KTHREAD;
	u64 signature = 0;

	if (s->blocked_ns)
		stat_inc(STAT_WAKEUP_UNSEEN); /* only wakeuptime leaves a block open */
	target->tgid = view->tgid;
	target->address_space = view->mm;
	target->user_stack_id = -1;
	target->kernel_stack_id = -1;
	if (blocked_stacks) {
		if (use_cache && !is_kthread && capture_user)
			signature = user_signature(prev, view->state);
		cached_walk(ctx, &s->blocked_cache, signature, view->tgid, is_kthread, now, stacks_epoch(),
			    &target->user_stack_id, &target->kernel_stack_id, NULL);
		announce_once(s, view->tgid, view->mm);
	}
	s->woken = 0;
	s->blocked_ns = now;
}

/* `task`'s block ends (woken, or running again): its time goes to the pending sum. */
static __always_inline void block_ends(struct task_struct *task, struct wake_state *s, u64 now)
{
	u64 started = s->blocked_ns, delta;

	/* A block that began after `now` is not this event's to end (see
	 * woken_by_current): its time would wrap to centuries. */
	if (now < started)
		return;
	delta = now - started;
	s->blocked_ns = 0;
	if (!s->woken) {
		__builtin_memset(&s->block.waker, 0, sizeof(s->block.waker));
		s->block.waker.user_stack_id = -1;
		s->block.waker.kernel_stack_id = -1;
		s->block.waker_context = WAKER_UNSEEN;
	}
	if (delta < min_block_ns || delta > max_block_ns)
		return;
	if (!same_key(&s->pending, &s->block)) {
		flush_pending(task, s);
		s->pending = s->block;
	}
	s->pending_ns += delta;
	if (++s->pending_blocks >= flush_every)
		flush_pending(task, s);
}

/*
 * A per-CPU word that turns the address of a BPF stack slot into a number
 * (storing a pointer in a map is allowed to privileged programs only, which
 * these are). BPF programs run on the kernel stack of the context that ran
 * them, so that address says which stack that is.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} stack_address SEC(".maps");

/* Task stacks are THREAD_SIZE: 16 KiB on x86-64 and arm64, 32 KiB with KASAN. */
#define TASK_STACK_BOUND (32 * 1024)

/*
 * Which context runs the wakeup. Interrupt handlers (and the softirqs run
 * at their exit) run on the CPU's interrupt stacks, not on the stack of the
 * task they interrupted: the wakeup ran in interrupt context when this
 * program does not run on the current task's stack. (The preempt count
 * would say so too, but x86 keeps it in a per-CPU variable that BPF can
 * only name where kallsyms lists data symbols.) The idle task is never the
 * waker: it runs IPI work deferred to it.
 */
static __always_inline u32 waking_context(u32 current_tid, u64 task_stack)
{
	u32 zero = 0;
	u64 *slot = bpf_map_lookup_elem(&stack_address, &zero);
	u64 here = 0;

	if (current_tid == 0)
		return WAKER_INTERRUPT;
	if (!slot)
		return WAKER_TASK;
	*slot = (u64)&here;
	/* Read back through the map (volatile: not the pointer the compiler still holds). */
	if (*(volatile u64 *)slot - task_stack >= TASK_STACK_BOUND)
		return WAKER_INTERRUPT;
	return WAKER_TASK;
}

/*
 * The current context (`current`: the current task's fields, and where its
 * stack is) wakes `wakee`, whose state is `s`. `waker_state` (the current
 * task's, for its stack cache) may be NULL: walk every time.
 */
static __always_inline void woken_by_current(void *ctx, struct task_struct *wakee, struct wake_state *s,
					     struct task_view *current, u64 task_stack,
					     struct wake_state *waker_state, u64 signature, u64 now)
{
	struct stack_key *waker = &s->block.waker;
	u32 context = waking_context(current->tid, task_stack);
	bool is_kthread = current->flags & PF_KTHREAD;
	u64 started = s->blocked_ns;

	__builtin_memset(waker, 0, sizeof(*waker));
	waker->user_stack_id = -1;
	waker->kernel_stack_id = -1;
	if (context == WAKER_TASK) {
		waker->tgid = current->tgid;
		waker->address_space = current->mm;
		bpf_get_current_comm(&waker->comm, sizeof(waker->comm));
		if (waker_state) {
			cached_walk(ctx, &waker_state->waker_cache, is_kthread ? 0 : signature, waker->tgid,
				    is_kthread, now, stacks_epoch(), &waker->user_stack_id, &waker->kernel_stack_id, NULL);
			announce_once(waker_state, waker->tgid, waker->address_space);
		} else {
			walk_stacks(ctx, waker->tgid, is_kthread, &waker->user_stack_id, &waker->kernel_stack_id);
			if (waker->address_space && capture_user)
				announce_address_space(waker->tgid, waker->address_space);
		}
	} else if (capture_kernel) {
		waker->kernel_stack_id = capture_stack(ctx, 0);
	}
	/* The wakee began a newer block while the waker was walked: this
	 * wakeup was the older block's (wakeuptime leaves a block whose wakeup
	 * went unseen open, counted then, and its thread runs on). */
	if (s->blocked_ns != started)
		return;
	s->block.waker_context = context;
	s->woken = 1;
	if (end_at_wakeup)
		block_ends(wakee, s, now);
}

static __always_inline bool blocker_selected(struct task_view *view)
{
	if (view->tid == 0 || view->state == TASK_RUNNING)
		return false;
	if (!thread_kind_selected(view->flags & PF_KTHREAD))
		return false;
	return task_selected(view->tgid, view->tid);
}

/* A preempted task is still runnable: nobody wakes it, so it is not timed. */
SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 now = bpf_ktime_get_ns();
	struct task_view view;
	struct wake_state *s;

	if (!preempt) {
		view_btf(prev, &view);
		view.state = task_state_btf(prev);
		if (blocker_selected(&view)) {
			s = bpf_task_storage_get(&wake_tasks, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (s)
				block_starts(ctx, prev, &view, s, now, true);
		}
	}
	/* wakeuptime ends blocks at the wakeup, which every block has (see below). */
	if (end_at_wakeup)
		return 0;
	s = bpf_task_storage_get(&wake_tasks, next, 0, 0);
	if (s && s->blocked_ns)
		block_ends(next, s, now);
	return 0;
}

SEC("tp_btf/sched_waking")
int BPF_PROG(waking_btf, struct task_struct *p)
{
	struct wake_state *s = bpf_task_storage_get(&wake_tasks, p, 0, 0);
	struct wake_state *waker_state = NULL;
	struct task_struct *current;
	struct task_view view;
	u64 signature = 0;

	if (!s || !s->blocked_ns || s->woken)
		return 0;
	current = bpf_get_current_task_btf();
	view_btf(current, &view);
	if (view.tid) {
		waker_state = bpf_task_storage_get(&wake_tasks, current, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (capture_user && view.mm)
			signature = user_signature(current, 0);
	}
	woken_by_current(ctx, p, s, &view, (u64)current->stack, waker_state, signature, bpf_ktime_get_ns());
	return 0;
}

/* A thread's unflushed time must not die with it, nor stay in task storage at the end. */
PER_THREAD_FLUSH_PROGRAMS(wake_tasks, struct wake_state)

static __always_inline struct wake_state *state_by_tid(u32 tid, bool create)
{
	static const struct wake_state fresh = {};
	struct wake_state *s = bpf_map_lookup_elem(&wake_by_tid, &tid);

	if (s || !create)
		return s;
	if (bpf_map_update_elem(&wake_by_tid, &tid, &fresh, BPF_NOEXIST) == -E2BIG)
		stat_inc(STAT_THREADS_UNTRACKED);
	return bpf_map_lookup_elem(&wake_by_tid, &tid);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 now = bpf_ktime_get_ns();
	struct task_view view;
	struct wake_state *s;

	if (!preempt) {
		view_raw(prev, &view);
		view.state = task_state(prev);
		if (blocker_selected(&view)) {
			s = state_by_tid(view.tid, true);
			if (s)
				block_starts(ctx, prev, &view, s, now, false);
		}
	}
	s = state_by_tid(BPF_CORE_READ(next, pid), false);
	if (s && s->blocked_ns)
		block_ends(next, s, now);
	return 0;
}

SEC("raw_tp/sched_waking")
int BPF_PROG(waking_raw, struct task_struct *p)
{
	struct wake_state *s = state_by_tid(BPF_CORE_READ(p, pid), false);
	struct task_struct *current;
	struct task_view view;

	if (!s || !s->blocked_ns || s->woken)
		return 0;
	current = (struct task_struct *)bpf_get_current_task();
	view_raw(current, &view);
	woken_by_current(ctx, p, s, &view, (u64)BPF_CORE_READ(current, stack), NULL, 0, bpf_ktime_get_ns());
	return 0;
}

/* The fallback's per-TID state goes with the thread. */
SEC("raw_tp/sched_process_exit")
int BPF_PROG(exit_raw, struct task_struct *task)
{
	u32 tid = BPF_CORE_READ(task, pid);
	struct wake_state *s = bpf_map_lookup_elem(&wake_by_tid, &tid);

	if (s) {
		flush_pending(task, s);
		bpf_map_delete_elem(&wake_by_tid, &tid);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
