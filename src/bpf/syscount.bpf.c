// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope syscount / syslat: syscalls counted at sys_exit (as BCC does:
 * syscalls that never return, such as exit, are not seen), by syscall or by
 * process, with their total latency (sys_enter to sys_exit) when asked, or
 * a latency histogram per syscall. Everything is summed in kernel.
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
HISTOGRAM_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "histogram.h"

const volatile bool measure_latency = false;
const volatile bool per_process = false;
const volatile bool histogram_per_syscall = false;
const volatile bool failures_only = false;
const volatile u64 unit_ns = 1000;

/* By syscall number: per-CPU, no atomics, an inlined array lookup. */
#define MAX_SYSCALLS 1024
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, u32);
	__type(value, struct syscall_total);
} syscall_totals SEC(".maps");

/* By process (-P): keyed like histograms, tgid with the comm. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 10240);
	__type(key, struct hist_key);
	__type(value, struct syscall_total);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} entered_at SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u64);
} entered_by_tid SEC(".maps");

static __always_inline void account(long syscall_nr, long ret, u64 latency_ns)
{
	struct syscall_total *total, fresh = { 1, latency_ns };
	struct hist_key key = {};
	long err;

	if (syscall_nr < 0 || (failures_only && ret >= 0))
		return;
	if (histogram_per_syscall) {
		key.id = syscall_nr;
		hist_add(&key, latency_ns / unit_ns);
		return;
	}
	if (!per_process) {
		u32 index = syscall_nr;

		total = bpf_map_lookup_elem(&syscall_totals, &index);
		if (!total) {
			stat_inc(STAT_COUNTS_FULL); /* a syscall number beyond MAX_SYSCALLS */
			return;
		}
		total->count++;
		total->total_ns += latency_ns;
		return;
	}
	key.id = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(&key.name, sizeof(key.name));
	total = bpf_map_lookup_elem(&totals, &key);
	if (!total) {
		err = bpf_map_update_elem(&totals, &key, &fresh, BPF_NOEXIST);
		if (!err)
			return;
		if (err != -EEXIST) {
			stat_inc(STAT_COUNTS_FULL);
			return;
		}
		total = bpf_map_lookup_elem(&totals, &key);
		if (!total)
			return;
	}
	__sync_fetch_and_add(&total->count, 1);
	__sync_fetch_and_add(&total->total_ns, latency_ns);
}

/* The syscall number as the architecture saves it (user space names it
 * from that architecture's table: src/host/syscall_table.rs). */
static __always_inline long syscall_nr_btf(struct pt_regs *regs)
{
#if defined(__TARGET_ARCH_x86)
	return regs->orig_ax;
#elif defined(__TARGET_ARCH_arm64)
	return regs->syscallno;
#else
	return -1;
#endif
}

static __always_inline long syscall_nr_raw(struct pt_regs *regs)
{
#if defined(__TARGET_ARCH_x86)
	return BPF_CORE_READ(regs, orig_ax);
#elif defined(__TARGET_ARCH_arm64)
	return BPF_CORE_READ(regs, syscallno);
#else
	return -1;
#endif
}

SEC("tp_btf/sys_enter")
int BPF_PROG(enter_btf, struct pt_regs *regs, long id)
{
	struct task_struct *task = bpf_get_current_task_btf();
	u64 *at;

	if (!current_selected())
		return 0;
	at = bpf_task_storage_get(&entered_at, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (at)
		*at = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(exit_btf, struct pt_regs *regs, long ret)
{
	u64 latency = 0, *at;

	if (!current_selected())
		return 0;
	if (measure_latency) {
		at = bpf_task_storage_get(&entered_at, bpf_get_current_task_btf(), 0, 0);
		if (!at || !*at)
			return 0;
		latency = bpf_ktime_get_ns() - *at;
		*at = 0;
	}
	account(syscall_nr_btf(regs), ret, latency);
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(enter_raw, struct pt_regs *regs, long id)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 now;

	if (!current_selected())
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&entered_by_tid, &tid, &now, BPF_ANY);
	return 0;
}

SEC("raw_tp/sys_exit")
int BPF_PROG(exit_raw, struct pt_regs *regs, long ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 latency = 0, *at;

	if (!current_selected())
		return 0;
	if (measure_latency) {
		at = bpf_map_lookup_elem(&entered_by_tid, &tid);
		if (!at)
			return 0;
		latency = bpf_ktime_get_ns() - *at;
		bpf_map_delete_elem(&entered_by_tid, &tid);
	}
	account(syscall_nr_raw(regs), ret, latency);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
