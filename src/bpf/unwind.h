/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Table-driven user-stack unwinding for binaries without frame pointers
 * (x86-64). User space turns each object's .eh_frame into rows (PC -> how
 * to find the CFA and the saved RBP; src/unwind/table.rs), puts them
 * in `unwind_rows`, and describes each process's executable mappings in
 * `unwind_processes`. Per frame, this code finds the mapping of the PC
 * (binary search), then the row (binary search), computes the CFA, reads
 * the return address at CFA - 8 and the caller's RBP where saved. Walks run
 * in bpf_loop, up to MAX_UNWOUND_FRAMES frames (stacks cut there are
 * marked truncated). The frames are interned in
 * `unwound_stacks` under an id above UNWOUND_STACK_BASE, so counts keys keep
 * one user-stack id whichever unwinder produced it; frames past the first
 * STACK_CHUNK_FRAMES go to `unwound_stack_chunks`, so only deep stacks
 * take the memory of deep stacks.
 *
 * Modes: frame pointers only (bpf_get_stackid), tables only, or auto:
 * tables where the process's are loaded, frame pointers for mappings
 * without a table and for processes whose tables are not loaded yet.
 * The row, mapping and stack layouts are in layouts.h.
 * Needs: UNWIND_MAPS, STACK_TRACE_MAP and ADDRESS_SPACE_MAPS (stacks.h),
 * RUN_STATS_MAP (stats.h).
 */
#ifndef BPFSCOPE_UNWIND_H
#define BPFSCOPE_UNWIND_H

#define UNWOUND_STACK_BASE 0x40000000
#define MAX_ROW_SEARCH 24   /* 2^24 rows at most */

const volatile int unwind_mode = UNWIND_FP;

#if defined(__TARGET_ARCH_x86)
/*
 * A walk reached code outside the process's known mappings: libraries
 * mapped after its tables were loaded (ld.so maps libc after the first
 * look, dlopen) or JIT code. Asks user space to read the mappings again, at
 * most once a second per process (user space allows the next ask sooner
 * when the last one found libraries loaded since: src/unwind/manager.rs).
 */
static __always_inline void request_refresh(u32 tgid)
{
	u64 now = bpf_ktime_get_ns(), *last = bpf_map_lookup_elem(&unwind_refreshes, &tgid);

	if (last && now - *last < 1000000000ULL)
		return;
	if (send_address_space_event(tgid, ADDRESS_SPACE_CHANGED, (u64)bpf_get_current_task_btf()->mm))
		bpf_map_update_elem(&unwind_refreshes, &tgid, &now, BPF_ANY);
}

/*
 * The searches are global functions: the verifier checks each once instead
 * of at every call site, which keeps program load fast.
 */

/* Index of the mapping of `proc` containing ip, or -1. */
__noinline int uw_find_mapping(struct uw_process *proc, u64 ip)
{
	u32 count, found = 0, probe;

	if (!proc)
		return -1;
	count = proc->count;
	if (!count || proc->mappings[0].start > ip)
		return -1;
	/* The last mapping starting at or below ip, in power-of-two steps
	 * (masked indexes keep the verifier's state count small). */
	for (u32 step = MAX_MAPPINGS / 2; step > 0; step /= 2) {
		probe = found + step;
		if (probe < count && proc->mappings[probe & (MAX_MAPPINGS - 1)].start <= ip)
			found = probe;
	}
	found &= MAX_MAPPINGS - 1;
	if (ip >= proc->mappings[found].end)
		return -1;
	return found;
}

/* Index of the last row at or before pc in [start, start + len), or -1. */
__noinline int uw_find_row(u32 start, u32 len, u32 pc)
{
	u32 lo = start, hi = start + len, mid;
	struct uw_row *row;

	for (int i = 0; i < MAX_ROW_SEARCH && lo < hi; i++) {
		mid = lo + (hi - lo) / 2;
		row = bpf_map_lookup_elem(&unwind_rows, &mid);
		if (!row)
			return -1;
		if (row->pc <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == start)
		return -1;
	return lo - 1;
}

/* One frame with frame pointers: the caller's RBP and return address are at RBP. */
static __always_inline bool frame_pointer_step(struct uw_walk *st)
{
	u64 saved[2];

	if (!st->bp || bpf_probe_read_user(saved, sizeof(saved), (void *)st->bp))
		return false;
	st->sp = st->bp + 16;
	st->bp = saved[0];
	st->ip = saved[1];
	return true;
}

/*
 * Whether RBP can be a frame pointer of the current frame: on the stack,
 * above SP and within 8 MiB of it. Code that does not keep RBP (CPython
 * 3.12/3.13's perf trampolines) leaves another value there; following it
 * would name frames that are not the caller, so the walk stops instead.
 */
static __always_inline bool plausible_frame_pointer(struct uw_walk *st)
{
	return st->bp > st->sp && st->bp - st->sp < (8ULL << 20) && !(st->bp & 7);
}

/* Frame `len` of the walk's stack (len < MAX_UNWOUND_FRAMES). */
static __always_inline void set_frame(struct uw_walk *st, u32 len, u64 ip)
{
	if (len < STACK_CHUNK_FRAMES)
		st->stack.ips[len] = ip;
	else if (len < MAX_UNWOUND_FRAMES)
		st->deeper_ips[len - STACK_CHUNK_FRAMES] = ip;
}

/*
 * Through a signal frame: the interrupted thread's registers, as the kernel
 * saved them. The trampoline's frame (len) becomes SIGNAL_FRAME_IP; the next
 * frame is the interrupted instruction, looked up as is. 1 when the walk is
 * over (the frame could not be read).
 */
static __always_inline int signal_frame_step(struct uw_walk *st, u32 len)
{
	if (bpf_probe_read_user(&st->ip, sizeof(st->ip), (void *)(st->sp + SIGFRAME_RIP)) ||
	    bpf_probe_read_user(&st->bp, sizeof(st->bp), (void *)(st->sp + SIGFRAME_RBP)) ||
	    bpf_probe_read_user(&st->sp, sizeof(st->sp), (void *)(st->sp + SIGFRAME_RSP))) {
		st->stop = STOP_READ_FAULT;
		return 1;
	}
	set_frame(st, len, SIGNAL_FRAME_IP);
	st->exact_ip = 1;
	if (!st->ip) {
		st->stop = STOP_END;
		return 1;
	}
	return 0;
}

/* One frame of the current walk (unwind_scratch); 1 when the walk is over. */
__noinline int uw_step(void)
{
	u32 zero = 0, len, index;
	struct uw_walk *st = bpf_map_lookup_elem(&unwind_scratch, &zero);
	int found;
	struct uw_process *proc;
	struct uw_row *row;
	struct uw_mapping *m;
	u64 lookup_ip, cfa, saved_bp;

	if (!st)
		return 1;
	len = st->stack.len;
	if (len >= MAX_UNWOUND_FRAMES) {
		st->stop = STOP_DEPTH;
		return 1;
	}
	set_frame(st, len, st->ip);
	st->stack.len = len + 1;
	st->hash = (st->hash ^ st->ip) * 0x100000001b3ULL;

	/* A return address may be just past its call's function: look up ip - 1. */
	lookup_ip = (len && !st->exact_ip) ? st->ip - 1 : st->ip;
	st->exact_ip = 0;
	proc = bpf_map_lookup_elem(&unwind_processes, &st->tgid);
	found = proc ? uw_find_mapping(proc, lookup_ip) : -1;
	if (!proc || found < 0 || found >= MAX_MAPPINGS) {
		/* Auto mode: JIT code (V8, HotSpot with PreserveFramePointer,
		 * CPython's perf trampolines) keeps RBP; the walk goes back to
		 * tables once it returns into a file mapping. */
		if (proc && unwind_mode == UNWIND_AUTO && plausible_frame_pointer(st) &&
		    frame_pointer_step(st)) {
			st->jit_frames++;
			goto next;
		}
		st->stop = proc ? STOP_UNMAPPED : STOP_NO_TABLE;
		return 1;
	}
	m = &proc->mappings[(u32)found & (MAX_MAPPINGS - 1)];  /* the mask convinces the verifier */
	row = NULL;
	if (m->table_len) {
		found = uw_find_row(m->table_start, m->table_len, (u32)(lookup_ip - m->bias));
		if (found >= 0) {
			index = found;
			row = bpf_map_lookup_elem(&unwind_rows, &index);
		}
	}
	if (!row || row->cfa_rule == CFA_NONE) {
		/* Auto mode: frame pointers where there is no table; a zero frame
		 * pointer is the root's (_start and Go's goexit clear RBP), so the
		 * walk is complete, not cut. */
		if (unwind_mode == UNWIND_AUTO) {
			if (frame_pointer_step(st))
				goto next;
			if (!st->bp) {
				st->stop = STOP_END;
				return 1;
			}
		}
		st->stop = STOP_NO_TABLE;
		return 1;
	}
	switch (row->cfa_rule) {
	case CFA_RSP:
		cfa = st->sp + row->cfa_offset;
		break;
	case CFA_RBP:
		cfa = st->bp + row->cfa_offset;
		break;
	case CFA_PLT:
		cfa = st->sp + 8 + (((st->ip & 15) >= 11) ? 8 : 0);
		break;
	case CFA_RSP_AFTER_CALL:
		if (!len) {     /* the leaf may be before the sub or at the ret */
			st->stop = STOP_UNSUPPORTED;
			return 1;
		}
		cfa = st->sp + row->cfa_offset;
		break;
	case CFA_END:
		st->stop = STOP_END;
		return 1;
	case CFA_SIGNAL:
		return signal_frame_step(st, len);
	default:
		st->stop = STOP_UNSUPPORTED;
		return 1;
	}
	if (row->rbp_rule == RBP_AT_CFA_OFFSET) {
		if (bpf_probe_read_user(&saved_bp, sizeof(saved_bp), (void *)(cfa + row->rbp_offset))) {
			st->stop = STOP_READ_FAULT;
			return 1;
		}
		st->bp = saved_bp;
	} else if (row->rbp_rule == RBP_UNSUPPORTED) {
		st->bp = 0;     /* unknown from here: an RBP-based CFA will fail cleanly */
	}
	if (bpf_probe_read_user(&st->ip, sizeof(st->ip), (void *)(cfa - 8))) {
		st->stop = STOP_READ_FAULT;
		return 1;
	}
	st->sp = cfa;
next:
	if (!st->ip) {
		st->stop = STOP_END;
		return 1;
	}
	return 0;
}

/* The bpf_loop body: the verifier checks a global function once, not once per simulated iteration. */
static long unwind_step(u32 frame, void *unused)
{
	return uw_step() ? 1 : 0;
}

/* Counts how a walk ended, among the walks through JIT code too if it was one. */
static __always_inline void count_stop(u32 stop, bool through_jit)
{
	switch (stop) {
	case STOP_END:
		stat_inc(STAT_UNWIND_COMPLETE);
		break;
	case STOP_NO_TABLE:
		stat_inc(STAT_UNWIND_NO_TABLE);
		break;
	case STOP_UNSUPPORTED:
		stat_inc(STAT_UNWIND_UNSUPPORTED);
		break;
	case STOP_READ_FAULT:
		stat_inc(STAT_UNWIND_READ_FAULT);
		break;
	case STOP_DEPTH:
		stat_inc(STAT_UNWIND_DEPTH);
		break;
	case STOP_UNMAPPED:
		stat_inc(STAT_UNWIND_UNMAPPED);
		break;
	default:
		return;
	}
	if (through_jit)
		stat_inc(STAT_JIT_UNWIND_COMPLETE + (stop - STOP_END));
}

/*
 * Stores the walk's frames past the first STACK_CHUNK_FRAMES under (id, 1..),
 * before the head is interned, so a reader that finds the head finds them.
 * Non-zero when the chunk map is full.
 */
static __always_inline int intern_deeper_frames(struct uw_walk *st, u32 id)
{
	struct uw_stack_chunk_key key = { .stack_id = id };

	for (u32 index = 1; index < STACK_CHUNKS; index++) {
		if (st->stack.len <= index * STACK_CHUNK_FRAMES)
			break;
		key.index = index;
		if (bpf_map_update_elem(&unwound_stack_chunks, &key,
					&st->deeper_ips[(index - 1) * STACK_CHUNK_FRAMES], BPF_ANY))
			return -1;
	}
	return 0;
}

/*
 * The current task's user stack by tables, interned; returns its id, or a
 * negative value where frame pointers should be used instead (auto mode:
 * the process's tables are not loaded) or the walk failed.
 */
static __always_inline s32 unwind_user_stack(u32 tgid)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	struct uw_stack *interned;
	struct uw_walk *st;
	u32 zero = 0, id;

	if (unwind_mode == UNWIND_AUTO && !bpf_map_lookup_elem(&unwind_processes, &tgid)) {
		stat_inc(STAT_UNWIND_NOT_LOADED);
		return -1;
	}
	st = bpf_map_lookup_elem(&unwind_scratch, &zero);
	if (!st || !regs)
		return -1;
	st->ip = PT_REGS_IP_CORE(regs);
	st->sp = PT_REGS_SP_CORE(regs);
	st->bp = PT_REGS_FP_CORE(regs);
	st->hash = 0xcbf29ce484222325ULL;
	st->tgid = tgid;
	st->stop = STOP_NONE;
	st->jit_frames = 0;
	st->exact_ip = 0;
	st->stack.len = 0;
	bpf_loop(MAX_UNWOUND_FRAMES + 1, unwind_step, NULL, 0);
	count_stop(st->stop, st->jit_frames > 0);
	st->stack.truncated = st->stop == STOP_DEPTH;
	/* Code in no known mapping may be a library mapped since (or JIT code,
	 * whose perf map user space then reads again). */
	if (st->stop == STOP_UNMAPPED || st->jit_frames)
		request_refresh(tgid);
	if (!st->stack.len)
		return -1;
	st->stack.hash = st->hash;
	id = UNWOUND_STACK_BASE | (u32)(st->hash & (UNWOUND_STACK_BASE - 1));
	interned = bpf_map_lookup_elem(&unwound_stacks, &id);
	if (interned) {
		if (interned->hash == st->hash)
			return id;
		stat_inc(STAT_STACK_COLLISION);
		return -1;
	}
	if (intern_deeper_frames(st, id) ||
	    bpf_map_update_elem(&unwound_stacks, &id, &st->stack, BPF_NOEXIST)) {
		stat_inc(STAT_STACK_MAP_FULL);
		return -1;
	}
	return id;
}

/* The generation of tgid's unwind_processes entry; 0 without one. */
static __always_inline u32 tables_generation(u32 tgid)
{
	struct uw_process *proc = bpf_map_lookup_elem(&unwind_processes, &tgid);

	return proc ? proc->generation : 0;
}

/*
 * Whether this CPU's last table walk went through JIT code. Callers that
 * reuse stacks by a cheap signature (offcpu) must not reuse those: JIT
 * callers that block through the same runtime code look alike at the top
 * of the stack.
 */
static __always_inline bool last_walk_went_through_jit(void)
{
	u32 zero = 0;
	struct uw_walk *st = bpf_map_lookup_elem(&unwind_scratch, &zero);

	return st && st->jit_frames;
}

/* The current task's user stack by the configured unwinder: an id in `stacks` or `unwound_stacks`. */
static __always_inline s32 capture_user_stack(void *ctx, u32 tgid)
{
	s32 id;

	if (unwind_mode == UNWIND_FP)
		return capture_stack(ctx, BPF_F_USER_STACK);
	id = unwind_user_stack(tgid);
	if (id >= 0 || unwind_mode == UNWIND_TABLES)
		return id;
	return capture_stack(ctx, BPF_F_USER_STACK);
}

#else
/* The rules above are x86-64's: elsewhere user stacks are walked with frame pointers. */
static __always_inline s32 capture_user_stack(void *ctx, u32 tgid)
{
	return capture_stack(ctx, BPF_F_USER_STACK);
}

static __always_inline bool last_walk_went_through_jit(void)
{
	return false;
}

static __always_inline u32 tables_generation(u32 tgid)
{
	return 0;
}
#endif /* __TARGET_ARCH_x86 */

#endif /* BPFSCOPE_UNWIND_H */
