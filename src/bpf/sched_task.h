/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * What the sched_switch tools (offcpu, offwaketime, wakeuptime) read of a
 * switching task, directly (BTF-typed programs) or with CO-RE reads (raw
 * tracepoints), and their user/kernel thread filter (-u, -k).
 * Needs: the includer's const volatile user_threads_only, kernel_threads_only.
 */
#ifndef BPFSCOPE_SCHED_TASK_H
#define BPFSCOPE_SCHED_TASK_H

#define PF_KTHREAD 0x00200000
#define TASK_RUNNING 0

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

static __always_inline bool thread_kind_selected(bool is_kthread)
{
	if (user_threads_only && is_kthread)
		return false;
	if (kernel_threads_only && !is_kthread)
		return false;
	return true;
}

/*
 * The programs that keep the time a thread accumulates in task storage
 * (`map`, values of `type`) from being lost: one at thread exit, and an
 * iterator user space runs at the end over every living thread. The
 * includer defines flush_pending(struct task_struct *, type *).
 */
#define PER_THREAD_FLUSH_PROGRAMS(map, type)					\
SEC("tp_btf/sched_process_exit")						\
int BPF_PROG(exit_btf, struct task_struct *task)				\
{										\
	type *state = bpf_task_storage_get(&map, task, 0, 0);			\
										\
	if (state)								\
		flush_pending(task, state);					\
	return 0;								\
}										\
										\
SEC("iter/task")								\
int flush_all(struct bpf_iter__task *ctx)					\
{										\
	struct task_struct *task = ctx->task;					\
	type *state;								\
										\
	if (!task)								\
		return 0;							\
	state = bpf_task_storage_get(&map, task, 0, 0);				\
	if (state)								\
		flush_pending(task, state);					\
	return 0;								\
}

#endif /* BPFSCOPE_SCHED_TASK_H */
