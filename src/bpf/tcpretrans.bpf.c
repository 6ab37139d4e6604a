// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope tcpretrans: one event per TCP retransmission, with the
 * connection's addresses and state, from the tcp:tcp_retransmit_skb
 * tracepoint. Retransmits mostly run from timers and softirqs, so the PID
 * is whatever task happened to be running (often 0), as in BCC.
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "sock.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} retransmit_events SEC(".maps");

static __always_inline void retransmit(const struct sock *sk)
{
	struct retransmit_event *event;

	stat_inc(STAT_EVENTS);
	event = bpf_ringbuf_reserve(&retransmit_events, sizeof(*event), 0);
	if (!event) {
		stat_inc(STAT_NOTIFY_LOST);
		return;
	}
	read_connection(sk, &event->conn);
	event->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	event->tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_ringbuf_submit(event, 0);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retransmit_btf, const struct sock *sk)
{
	retransmit(sk);
	return 0;
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(retransmit_raw, const struct sock *sk)
{
	retransmit(sk);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
