// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope offcpu: time each thread spends switched out, from sched_switch
 * out to sched_switch in, summed in kernel (microseconds) under the user and
 * kernel stacks it blocked in.
 *
 * Walking stacks on every context switch costs about half the throughput of
 * a switch-heavy workload, and so does a hash update per block. So:
 * - the switch-out path computes a cheap blocking signature (syscall number,
 *   user ip/sp/bp, the two words on top of the user stack, task state) and
 *   walks the stacks only when the signature is not in the thread's two-slot
 *   cache; once a slot has been used `revalidate_every` times and its stacks
 *   are older than `revalidate_after_ns` (10 ms), they are walked again and a
 *   mismatch is counted (STAT_STACK_STALE), so the error of this shortcut is
 *   measured, never hidden, and the walks per thread stay bounded however
 *   fast it switches. Walks that went through JIT code are never reused:
 *   JIT callers blocking through the same runtime code share a signature;
 * - block time accumulates per thread (in nanoseconds) and is added to the
 *   counts map when the thread's stacks change, every `flush_every` blocks,
 *   when the thread exits, and at the end of the run (a task iterator).
 * The raw-tracepoint fallback has no task storage: it keys blocks by TID in a
 * hash, walks stacks on every switch-out and adds every block at once.
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

#define PF_KTHREAD 0x00200000
#define TASK_RUNNING 0
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

/* Stacks walked for one blocking signature. */
struct cached_stacks {
	u64 signature;          /* 0: empty */
	s32 user_stack_id;
	s32 kernel_stack_id;
	u32 uses_since_walk;
	u32 pad;
	u64 walked_ns;
};

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
	u32 reused;             /* STAT_STACK_REUSED */
};

/*
 * A thread's current block, its unflushed time and its stack cache (two
 * slots: a thread often alternates between two blocking points, e.g.
 * preempted in write() and blocked in read()).
 */
#define CACHE_SLOTS 2
struct blocked {
	u64 start_ns;           /* 0: not blocked (or not selected) */
	u64 announced_mm;       /* address space already announced to user space */
	struct pending_time pending;
	struct cached_stacks cache[CACHE_SLOTS];
	u32 last_slot;
	u32 pad;
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

/* The fields of a task the hot path needs, read directly (BTF) or with CO-RE (raw). */
struct task_view {
	u32 tid;
	u32 tgid;
	u32 flags;
	unsigned int state;     /* at switch-out */
	u64 mm;
};

static __always_inline void view_btf(struct task_struct *task, struct task_view *view)
{
	view->tid = task->pid;
	view->tgid = task->tgid;
	view->flags = task->flags;
	view->mm = (u64)task->mm;
}

static __always_inline void view_raw(struct task_struct *task, struct task_view *view)
{
	view->tid = BPF_CORE_READ(task, pid);
	view->tgid = BPF_CORE_READ(task, tgid);
	view->flags = BPF_CORE_READ(task, flags);
	view->mm = (u64)BPF_CORE_READ(task, mm);
}

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

static __always_inline bool thread_kind_selected(bool is_kthread)
{
	if (user_threads_only && is_kthread)
		return false;
	if (kernel_threads_only && !is_kthread)
		return false;
	return true;
}

static __always_inline u64 mix(u64 hash, u64 value)
{
	hash ^= value;
	return hash * 0x100000001b3ULL;
}

/*
 * Where a user thread blocked, from its saved user registers and the two
 * words on top of its user stack (usually the return address into the
 * caller of the syscall wrapper). The stack top is always mapped, so this
 * never takes the slow path of a faulting read.
 */
static __always_inline u64 blocking_signature(struct task_struct *task, unsigned int state)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	u64 top[2] = {}, sp, syscall_nr = 0;
	u64 hash = 0xcbf29ce484222325ULL;

	if (!regs)
		return 0;
	sp = PT_REGS_SP(regs);
#if defined(__TARGET_ARCH_x86)
	syscall_nr = regs->orig_ax;
#endif
	bpf_probe_read_user(top, sizeof(top), (void *)sp);
	hash = mix(hash, PT_REGS_IP(regs));
	hash = mix(hash, sp);
	hash = mix(hash, PT_REGS_FP(regs));
	hash = mix(hash, syscall_nr);
	hash = mix(hash, top[0]);
	hash = mix(hash, top[1]);
	hash = mix(hash, state);
	return hash | 1; /* never 0, which means "no signature" */
}

/* Stacks of the block starting now, in *user_id and *kernel_id. */
static __always_inline void walk_stacks(void *ctx, u32 tgid, bool is_kthread, s32 *user_id, s32 *kernel_id)
{
	*user_id = -1;
	*kernel_id = -1;
	if (capture_user && !is_kthread)
		*user_id = capture_user_stack(ctx, tgid);
	if (capture_kernel)
		*kernel_id = capture_stack(ctx, 0);
}

/* Reuses cached stacks for this signature, walking them when unknown or due. */
static __always_inline void stacks_for_block(void *ctx, struct blocked *b, u64 signature, u32 tgid,
					     bool is_kthread, u64 now, s32 *user_id, s32 *kernel_id)
{
	struct cached_stacks *slot;
	u32 index = b->last_slot & 1;

	if (!signature) {
		walk_stacks(ctx, tgid, is_kthread, user_id, kernel_id);
		return;
	}
	if (b->cache[index].signature != signature)
		index ^= 1;
	slot = &b->cache[index];
	if (slot->signature == signature &&
	    (slot->uses_since_walk + 1 < revalidate_every || now - slot->walked_ns < revalidate_after_ns)) {
		slot->uses_since_walk++;
		*user_id = slot->user_stack_id;
		*kernel_id = slot->kernel_stack_id;
		b->last_slot = index;
		b->pending.reused++;
		return;
	}
	walk_stacks(ctx, tgid, is_kthread, user_id, kernel_id);
	if (!is_kthread && capture_user && last_walk_went_through_jit()) {
		/* Not reusable: see last_walk_went_through_jit(). */
		if (slot->signature == signature)
			slot->signature = 0;
		return;
	}
	if (slot->signature == signature) {
		stat_inc(STAT_STACK_REVALIDATED);
		if (slot->user_stack_id != *user_id || slot->kernel_stack_id != *kernel_id)
			stat_inc(STAT_STACK_STALE);
	} else {
		/* Unknown signature: replace the slot not used last. */
		index = (b->last_slot & 1) ^ 1;
		slot = &b->cache[index];
	}
	slot->signature = signature;
	slot->user_stack_id = *user_id;
	slot->kernel_stack_id = *kernel_id;
	slot->uses_since_walk = 0;
	slot->walked_ns = now;
	b->last_slot = index;
}

/* Adds a thread's unflushed off-CPU time to the counts map. */
static __always_inline void flush_pending(struct task_struct *task, struct blocked *b)
{
	struct stack_key key = {};

	if (b->pending.blocks)
		stat_add(STAT_EVENTS, b->pending.blocks);
	if (b->pending.reused)
		stat_add(STAT_STACK_REUSED, b->pending.reused);
	b->pending.blocks = 0;
	b->pending.reused = 0;
	if (!b->pending.ns)
		return;
	key.tgid = BPF_CORE_READ(task, tgid);
	key.address_space = (u64)BPF_CORE_READ(task, mm);
	key.user_stack_id = b->pending.user_stack_id;
	key.kernel_stack_id = b->pending.kernel_stack_id;
	BPF_CORE_READ_INTO(&key.comm, task, comm);
	add_to_count(&counts, &key, b->pending.ns);
	if (total_by_cgroup) {
		u64 cgroup = task_cgroup_id(task);

		add_to_count(&cgroup_totals, &cgroup, b->pending.ns);
	}
	b->pending.ns = 0;
}

/* prev (== current) is switching out: start its block, with its stacks. */
static __always_inline void switch_out(void *ctx, struct task_struct *prev, struct task_view *view,
				       struct blocked *b, u64 now, bool use_cache)
{
	bool is_kthread = view->flags & PF_KTHREAD;
	s32 user_id, kernel_id;
	u64 signature = 0;

	if (use_cache && !is_kthread && capture_user)
		signature = blocking_signature(prev, view->state);
	stacks_for_block(ctx, b, signature, view->tgid, is_kthread, now, &user_id, &kernel_id);
	if (user_id != b->pending.user_stack_id || kernel_id != b->pending.kernel_stack_id) {
		flush_pending(prev, b);
		b->pending.user_stack_id = user_id;
		b->pending.kernel_stack_id = kernel_id;
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

/* A thread's unflushed time must not die with it. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit_btf, struct task_struct *task)
{
	struct blocked *b = bpf_task_storage_get(&blocked_tasks, task, 0, 0);

	if (b)
		flush_pending(task, b);
	return 0;
}

/* Run by user space at the end: flushes every living thread's time. */
SEC("iter/task")
int flush_all(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct blocked *b;

	if (!task)
		return 0;
	b = bpf_task_storage_get(&blocked_tasks, task, 0, 0);
	if (b)
		flush_pending(task, b);
	return 0;
}

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
