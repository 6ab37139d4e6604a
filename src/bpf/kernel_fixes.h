/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Every kernel field or tracepoint that changed name or shape across the
 * kernels bpfscope supports, in one place. Each helper reads the current
 * name where the running kernel's BTF has it and the older one otherwise
 * (CO-RE "flavors": a struct name suffixed ___something matches the
 * unsuffixed kernel type, so fields missing from this kernel can still be
 * named), and says which kernel version or commit it handles.
 */
#ifndef BPFSCOPE_KERNEL_FIXES_H
#define BPFSCOPE_KERNEL_FIXES_H

/*
 * Linux 5.14 (commit 2f064a59a11f, "sched: Change task_struct::state")
 * renamed task_struct.state to __state.
 */
struct task_struct___pre_5_14 {
	long state;
} __attribute__((preserve_access_index));

/* For raw tracepoints: a probe read. */
static __always_inline unsigned int task_state(struct task_struct *task)
{
	struct task_struct___pre_5_14 *old;

	if (bpf_core_field_exists(task->__state))
		return BPF_CORE_READ(task, __state);
	old = (void *)task;
	return BPF_CORE_READ(old, state);
}

/* For BTF-typed programs, whose task pointers can be read directly: a plain load. */
static __always_inline unsigned int task_state_btf(struct task_struct *task)
{
	if (bpf_core_field_exists(task->__state))
		return task->__state;
	return ((struct task_struct___pre_5_14 *)task)->state;
}

/*
 * Linux 6.14 (commit 7b8a702d9438, "sched/fair: Rename h_nr_running into
 * h_nr_queued") renamed cfs_rq.h_nr_running to h_nr_queued.
 */
struct cfs_rq___pre_6_14 {
	unsigned int h_nr_running;
} __attribute__((preserve_access_index));

static __always_inline unsigned int cfs_rq_queued(struct cfs_rq *cfs)
{
	struct cfs_rq___pre_6_14 *old;

	if (bpf_core_field_exists(cfs->h_nr_queued))
		return BPF_CORE_READ(cfs, h_nr_queued);
	old = (void *)cfs;
	return BPF_CORE_READ(old, h_nr_running);
}

/*
 * Linux 5.17 (commit f3fa33acca9f, "block: remove the ->rq_disk field in
 * struct request") removed request.rq_disk; the disk is request.q->disk.
 */
struct request___pre_5_17 {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct gendisk *request_disk(struct request *rq)
{
	struct request___pre_5_17 *old;

	if (bpf_core_field_exists(((struct request___pre_5_17 *)rq)->rq_disk)) {
		old = (void *)rq;
		return BPF_CORE_READ(old, rq_disk);
	}
	return BPF_CORE_READ(rq, q, disk);
}

#endif /* BPFSCOPE_KERNEL_FIXES_H */
