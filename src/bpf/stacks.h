/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * What the stack tools share around the stack-trace map: interning a stack
 * (counting every loss), and announcing a process image to user space the
 * first time it is seen, so its mappings are snapshotted while it lives and
 * stacks of processes that exit mid-run can still be symbolized.
 * Needs: STACK_TRACE_MAP, ADDRESS_SPACE_MAPS, RUN_STATS_MAP (stats.h).
 */
#ifndef BPFSCOPE_STACKS_H
#define BPFSCOPE_STACKS_H

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

/* How many times the stack maps were emptied (see stacks_cleared). */
static __always_inline u32 stacks_epoch(void)
{
	u32 zero = 0, *cleared = bpf_map_lookup_elem(&stacks_cleared, &zero);

	return cleared ? *cleared : 0;
}

/* Sends an address-space event; false when the ring buffer was full (counted). */
static __always_inline bool send_address_space_event(u32 tgid, u32 kind, u64 address_space)
{
	struct address_space_event event = { .tgid = tgid, .kind = kind, .address_space = address_space };

	if (bpf_ringbuf_output(&address_space_events, &event, sizeof(event), 0)) {
		stat_inc(STAT_NOTIFY_LOST);
		return false;
	}
	return true;
}

static __always_inline void announce_address_space(u32 tgid, u64 address_space)
{
	u64 *known = bpf_map_lookup_elem(&announced_address_spaces, &tgid);

	if (known && *known == address_space)
		return;
	if (send_address_space_event(tgid, ADDRESS_SPACE_NEW, address_space))
		bpf_map_update_elem(&announced_address_spaces, &tgid, &address_space, BPF_ANY);
}

#endif /* BPFSCOPE_STACKS_H */
