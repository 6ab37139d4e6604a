/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Shared by every bpfscope BPF program: which tasks a run selects (PIDs,
 * TIDs, a cgroup v2 subtree, a command and its descendants), the stack key
 * that counts are summed under, run statistics, and the notification that
 * lets user space snapshot a process's mappings while it still lives.
 *
 * Keep layouts in sync with src/core/stacks.rs and src/core/stats.rs.
 */
#ifndef BPFSCOPE_COMMON_H
#define BPFSCOPE_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define TASK_COMM_LEN 16
#define MAX_STACK_DEPTH 127
#define EFAULT 14
#define EEXIST 17
#define ENOMEM 12
#define E2BIG 7

/* Filters, set by user space before load. */
const volatile bool filter_tgids = false;
const volatile bool filter_tids = false;
const volatile bool filter_cgroup = false;
const volatile bool follow_children = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, u8);
} target_tgids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, u8);
} target_tids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} target_cgroup SEC(".maps");

/* Indexes into the per-CPU stats array; mirrored in src/core/stats.rs. */
enum run_stat {
	STAT_EVENTS = 0,           /* events that passed the filters */
	STAT_COUNTS_FULL,          /* event dropped: the counts map was full */
	STAT_STACK_MAP_FULL,       /* a stack was lost: stack map full */
	STAT_STACK_COLLISION,      /* a stack was lost: stack map hash collision */
	STAT_USER_STACK_MISSING,   /* a user task whose user stack could not be read */
	STAT_NOTIFY_LOST,          /* new-process notification lost (ring buffer full) */
	STAT_TARGETS_FULL,         /* a followed child could not be added */
	STAT_STACK_REUSED,         /* offcpu: stacks reused from the per-thread cache */
	STAT_STACK_REVALIDATED,    /* offcpu: cached stacks walked again to check them */
	STAT_STACK_STALE,          /* offcpu: ... and found different */
	STAT_UNWIND_COMPLETE,      /* table unwinding reached the outermost frame */
	STAT_UNWIND_NO_TABLE,      /* ... stopped: no table or row for a PC */
	STAT_UNWIND_UNSUPPORTED,   /* ... stopped: an unsupported CFA or RBP rule */
	STAT_UNWIND_READ_FAULT,    /* ... stopped: the user stack could not be read */
	STAT_UNWIND_DEPTH,         /* ... stopped: the frame limit */
	STAT_UNWIND_UNMAPPED,      /* ... stopped: a PC in no file mapping (JIT, anonymous) */
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, u32);
	__type(value, u64);
} stats SEC(".maps");

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

/* Are the process and thread ids among those the user asked to observe? */
static __always_inline bool ids_selected(u32 tgid, u32 tid)
{
	if (filter_tgids && !bpf_map_lookup_elem(&target_tgids, &tgid))
		return false;
	if (filter_tids && !bpf_map_lookup_elem(&target_tids, &tid))
		return false;
	return true;
}

/* Does the current task (tgid, tid) belong to what the user asked to observe? */
static __always_inline bool task_selected(u32 tgid, u32 tid)
{
	if (!ids_selected(tgid, tid))
		return false;
	return !filter_cgroup || bpf_current_task_under_cgroup(&target_cgroup, 0) == 1;
}

/* Is the current task selected? Without filters, no helper call at all (hot paths). */
static __always_inline bool current_selected(void)
{
	u64 pid_tgid;

	if (!filter_tgids && !filter_tids && !filter_cgroup)
		return true;
	pid_tgid = bpf_get_current_pid_tgid();
	return task_selected(pid_tgid >> 32, (u32)pid_tgid);
}

/*
 * --cgroup for a task that is not current (runqlat's `next`): the cgroup v2
 * id of the target and its depth below the root, set by user space.
 */
const volatile u64 target_cgroup_id = 0;
const volatile u32 target_cgroup_level = 0;

/* Is `task` in the target cgroup or below it? Its ancestor at the target's depth must be the target. */
static __always_inline bool task_in_target_cgroup(struct task_struct *task)
{
	struct cgroup *cgroup = BPF_CORE_READ(task, cgroups, dfl_cgrp), *ancestor = NULL;
	u32 level = target_cgroup_level;

	if (!cgroup || BPF_CORE_READ(cgroup, level) < (int)level || level > 255)
		return false;
	bpf_core_read(&ancestor, sizeof(ancestor), &cgroup->ancestors[level]);
	return ancestor && BPF_CORE_READ(ancestor, kn, id) == target_cgroup_id;
}

/* task_selected() for a task other than current. */
static __always_inline bool other_task_selected(struct task_struct *task, u32 tgid, u32 tid)
{
	if (!ids_selected(tgid, tid))
		return false;
	return !filter_cgroup || task_in_target_cgroup(task);
}

/* COMMAND mode: a traced process's children (new processes, not threads) are traced too. */
static __always_inline void follow_fork(u32 parent_tgid, u32 child_tgid)
{
	u8 one = 1;

	if (!follow_children || parent_tgid == child_tgid)
		return;
	if (!bpf_map_lookup_elem(&target_tgids, &parent_tgid))
		return;
	if (bpf_map_update_elem(&target_tgids, &child_tgid, &one, BPF_ANY))
		stat_inc(STAT_TARGETS_FULL);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(follow_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	follow_fork(parent->tgid, child->tgid);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(follow_fork_raw, struct task_struct *parent, struct task_struct *child)
{
	follow_fork(BPF_CORE_READ(parent, tgid), BPF_CORE_READ(child, tgid));
	return 0;
}

/* Stacks are interned in a stack-trace map; counts are keyed by this. */
struct stack_key {
	u32 tgid;
	u32 tid;            /* 0 unless per-thread keys were asked for */
	u64 address_space;  /* identifies the process image (mm pointer); 0 for kernel threads */
	s32 user_stack_id;  /* < 0: no user stack */
	s32 kernel_stack_id;/* < 0: no kernel stack */
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(u64));
	__uint(max_entries, 16384); /* resized by user space */
} stacks SEC(".maps");

/* Interns the current stack; returns its id or a negative errno, counting losses. */
static __always_inline s32 capture_stack(void *ctx, u64 flags)
{
	s32 id = bpf_get_stackid(ctx, &stacks, flags);

	if (id == -EEXIST)
		stat_inc(STAT_STACK_COLLISION);
	else if (id == -ENOMEM)
		stat_inc(STAT_STACK_MAP_FULL);
	else if (id == -EFAULT && (flags & BPF_F_USER_STACK))
		stat_inc(STAT_USER_STACK_MISSING);
	return id;
}

/* The cgroup v2 id of a task (its directory's inode number in cgroupfs). */
static __always_inline u64 task_cgroup_id(struct task_struct *task)
{
	return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
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

/*
 * A process image seen for the first time is announced to user space, which
 * snapshots /proc/PID/maps at once, so stacks of processes that exit before
 * the run ends can still be symbolized.
 */
struct new_address_space {
	u32 tgid;
	u32 kind;               /* ADDRESS_SPACE_NEW, or ADDRESS_SPACE_CHANGED (unwind.h) */
	u64 address_space;
};

#define ADDRESS_SPACE_NEW 0
#define ADDRESS_SPACE_CHANGED 1

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} address_space_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u64);
} announced_address_spaces SEC(".maps");

static __always_inline void announce_address_space(u32 tgid, u64 address_space)
{
	struct new_address_space event = { .tgid = tgid, .address_space = address_space };
	u64 *known = bpf_map_lookup_elem(&announced_address_spaces, &tgid);

	if (known && *known == address_space)
		return;
	if (bpf_ringbuf_output(&address_space_events, &event, sizeof(event), 0)) {
		stat_inc(STAT_NOTIFY_LOST);
		return;
	}
	bpf_map_update_elem(&announced_address_spaces, &tgid, &address_space, BPF_ANY);
}

#endif /* BPFSCOPE_COMMON_H */
