// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope runqlen: run-queue length sampled on each CPU by a cpu-clock
 * perf event, summed in kernel as a linear histogram (slot n: n tasks
 * waiting, not counting the one running), in total or per CPU.
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
HISTOGRAM_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "histogram.h"

const volatile bool per_cpu = false;

/*
 * Tasks runnable on this CPU, found through the interrupted task (the
 * per-CPU `runqueues` symbol is not in kallsyms on every kernel): its CFS
 * run queue's CPU run queue where group scheduling provides the link, else
 * the hierarchical count of its CFS run queue.
 */
static __always_inline u64 runnable_on_this_cpu(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct cfs_rq *cfs = BPF_CORE_READ(task, se.cfs_rq);

	if (!cfs)
		return 0;
	if (bpf_core_field_exists(cfs->rq))
		return BPF_CORE_READ(cfs, rq, nr_running);
	return cfs_rq_queued(cfs);
}

SEC("perf_event")
int sample_queue(struct bpf_perf_event_data *ctx)
{
	struct hist_key key = {};
	u64 waiting = runnable_on_this_cpu();

	if (waiting > 0)
		waiting--; /* the task running now is not waiting */
	stat_inc(STAT_EVENTS);
	if (!per_cpu) {
		hist_add_linear(NULL, waiting);
		return 0;
	}
	key.id = bpf_get_smp_processor_id();
	hist_add_linear(&key, waiting);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
