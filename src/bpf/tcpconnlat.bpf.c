// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope tcpconnlat: active TCP connect latency, from SYN_SENT (in the
 * connecting process) to ESTABLISHED, from the sock:inet_sock_set_state
 * tracepoint. One event per connection (ring buffer), or with --hist a log2
 * histogram summed in kernel.
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
HISTOGRAM_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "histogram.h"
#include "sock.h"

const volatile bool histogram_only = false;
const volatile u64 unit_ns = 1000;

struct connecting {
	u64 start_ns;
	u64 cgroup;             /* of the connecting task, where key_by_cgroup */
	u32 tgid;
	u32 pad;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);       /* struct sock * */
	__type(value, struct connecting);
} connecting_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} connect_events SEC(".maps");

static __always_inline void state_change(const struct sock *sk, int old_state, int new_state)
{
	u64 key = (u64)sk, pid_tgid = bpf_get_current_pid_tgid();
	struct connecting fresh = {}, *started;
	struct hist_key hkey = {};
	struct connect_event *event;
	u64 delta;

	if (!is_tcp(sk))
		return;
	if (new_state == TCP_SYN_SENT) {
		if (!task_selected(pid_tgid >> 32, (u32)pid_tgid))
			return;
		fresh.start_ns = bpf_ktime_get_ns();
		fresh.tgid = pid_tgid >> 32;
		if (key_by_cgroup)
			fresh.cgroup = bpf_get_current_cgroup_id();
		bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
		if (bpf_map_update_elem(&connecting_socks, &key, &fresh, BPF_ANY))
			stat_inc(STAT_COUNTS_FULL);
		return;
	}
	if (old_state != TCP_SYN_SENT)
		return;
	started = bpf_map_lookup_elem(&connecting_socks, &key);
	if (!started)
		return;
	delta = bpf_ktime_get_ns() - started->start_ns;
	if (new_state == TCP_ESTABLISHED) {
		stat_inc(STAT_EVENTS);
		if (histogram_only && key_by_cgroup) {
			hkey.cgroup = started->cgroup;
			hist_add(&hkey, delta / unit_ns);
		} else if (histogram_only) {
			hist_add(NULL, delta / unit_ns);
		} else if ((event = bpf_ringbuf_reserve(&connect_events, sizeof(*event), 0))) {
			read_connection(sk, &event->conn);
			event->latency_ns = delta;
			event->tgid = started->tgid;
			__builtin_memcpy(event->comm, started->comm, TASK_COMM_LEN);
			bpf_ringbuf_submit(event, 0);
		} else {
			stat_inc(STAT_NOTIFY_LOST);
		}
	}
	bpf_map_delete_elem(&connecting_socks, &key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(state_btf, const struct sock *sk, int old_state, int new_state)
{
	state_change(sk, old_state, new_state);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(state_raw, const struct sock *sk, int old_state, int new_state)
{
	state_change(sk, old_state, new_state);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
