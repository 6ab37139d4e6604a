// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope tcplife: one event per closed TCP session with its process,
 * addresses, bytes sent (acked) and received, and duration, from the
 * sock:inet_sock_set_state tracepoint. The owning process is recorded when
 * the socket changes state in process context (connect, close).
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "sock.h"

struct owner {
	u32 tgid;
	u32 selected;           /* passed the filters, checked in its own context */
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);       /* struct sock * */
	__type(value, u64);     /* first state change */
} births SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct owner);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} session_events SEC(".maps");

static __always_inline void state_change(const struct sock *sk, int new_state)
{
	u64 key = (u64)sk, now = bpf_ktime_get_ns(), pid_tgid = bpf_get_current_pid_tgid(), *birth;
	struct owner current_owner = {}, *owner;
	struct session_event *event;
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	if (!is_tcp(sk))
		return;
	if (new_state < TCP_FIN_WAIT1 && !bpf_map_lookup_elem(&births, &key))
		if (bpf_map_update_elem(&births, &key, &now, BPF_NOEXIST) == -E2BIG)
			stat_inc(STAT_COUNTS_FULL);
	if ((new_state == TCP_SYN_SENT || new_state == TCP_FIN_WAIT1 || new_state == TCP_LAST_ACK) &&
	    (pid_tgid >> 32) != 0) {
		current_owner.tgid = pid_tgid >> 32;
		current_owner.selected = task_selected(pid_tgid >> 32, (u32)pid_tgid);
		bpf_get_current_comm(&current_owner.comm, sizeof(current_owner.comm));
		bpf_map_update_elem(&owners, &key, &current_owner, BPF_ANY);
	}
	if (new_state != TCP_CLOSE)
		return;
	birth = bpf_map_lookup_elem(&births, &key);
	owner = bpf_map_lookup_elem(&owners, &key);
	if (!birth)
		goto forget;
	/* Sessions closed in softirq context: the filters apply to the owner. */
	if (owner && !owner->selected)
		goto forget;
	if (!owner && (filter_tgids || filter_tids || filter_cgroup))
		goto forget;
	stat_inc(STAT_EVENTS);
	event = bpf_ringbuf_reserve(&session_events, sizeof(*event), 0);
	if (!event) {
		stat_inc(STAT_NOTIFY_LOST);
		goto forget;
	}
	read_connection(sk, &event->conn);
	event->duration_ns = now - *birth;
	event->bytes_sent = BPF_CORE_READ(tp, bytes_acked);
	event->bytes_received = BPF_CORE_READ(tp, bytes_received);
	if (owner) {
		event->tgid = owner->tgid;
		__builtin_memcpy(event->comm, owner->comm, TASK_COMM_LEN);
	} else {
		event->tgid = pid_tgid >> 32;
		bpf_get_current_comm(&event->comm, sizeof(event->comm));
	}
	bpf_ringbuf_submit(event, 0);
forget:
	bpf_map_delete_elem(&births, &key);
	bpf_map_delete_elem(&owners, &key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(state_btf, const struct sock *sk, int old_state, int new_state)
{
	state_change(sk, new_state);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(state_raw, const struct sock *sk, int old_state, int new_state)
{
	state_change(sk, new_state);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
