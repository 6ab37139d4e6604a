/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Shared by the TCP tools: a connection's addresses and ports read from its
 * struct sock, for IPv4 and IPv6 (struct connection in layouts.h).
 */
#ifndef BPFSCOPE_SOCK_H
#define BPFSCOPE_SOCK_H

#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* TCP states (include/net/tcp_states.h). */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9

static __always_inline bool is_tcp(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline void read_connection(const struct sock *sk, struct connection *conn)
{
	conn->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	/* inet_sport, not skc_num: the bound port is released before TCP_CLOSE. */
	conn->local_port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	conn->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (conn->family == AF_INET6) {
		BPF_CORE_READ_INTO(&conn->local_addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&conn->remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((u32 *)conn->local_addr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((u32 *)conn->remote_addr, sk, __sk_common.skc_daddr);
	}
}

#endif /* BPFSCOPE_SOCK_H */
