/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Which tasks a run observes: PIDs, TIDs, a cgroup v2 subtree, or a command
 * and its descendants. User space sets the flags before load and fills the
 * maps; without filters the checks cost no helper call.
 * Needs: TARGET_FILTER_MAPS, RUN_STATS_MAP (stats.h).
 */
#ifndef BPFSCOPE_TASK_FILTER_H
#define BPFSCOPE_TASK_FILTER_H

const volatile bool filter_tgids = false;
const volatile bool filter_tids = false;
const volatile bool filter_cgroup = false;
const volatile bool follow_children = false;

/* --cgroup for a task that is not current: the target's cgroup v2 id and depth. */
const volatile u64 target_cgroup_id = 0;
const volatile u32 target_cgroup_level = 0;

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

/* The cgroup v2 id of a task (its directory's inode number in cgroupfs). */
static __always_inline u64 task_cgroup_id(struct task_struct *task)
{
	return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
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

/*
 * The fork follower of COMMAND mode, in both flavors; a tool that runs
 * commands invokes this, and user space loads the flavor in use.
 */
#define FORK_FOLLOWER_PROGRAMS                                                          \
	SEC("tp_btf/sched_process_fork")                                                \
	int BPF_PROG(follow_fork_btf, struct task_struct *parent, struct task_struct *child) \
	{                                                                               \
		follow_fork(parent->tgid, child->tgid);                                 \
		return 0;                                                               \
	}                                                                               \
	SEC("raw_tp/sched_process_fork")                                                \
	int BPF_PROG(follow_fork_raw, struct task_struct *parent, struct task_struct *child) \
	{                                                                               \
		follow_fork(BPF_CORE_READ(parent, tgid), BPF_CORE_READ(child, tgid));   \
		return 0;                                                               \
	}

#endif /* BPFSCOPE_TASK_FILTER_H */
