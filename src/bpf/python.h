/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * CPython frames read in BPF, so that Python processes run without
 * `-X perf` get Python functions in their stacks. User space finds each
 * Python process's runtime and its version's offsets (py_process); here the
 * sampled thread's thread state is found in the interpreter's thread list,
 * by pthread_self(), which is the FS base on x86-64 (elsewhere by the
 * kernel TID, 3.11+), remembered per thread and checked again on each use.
 * Its frames are walked from the newest: (code object, instruction) pairs,
 * with the frames a C call of _PyEval_EvalFrameDefault began marked, so
 * that user space can put each run of Python frames in place of the native
 * frame that ran it. Shim frames (3.12+) are skipped, a frame whose code is
 * not a code object stops the walk, and every walk is counted by how it
 * ended. Stacks are interned by hash like the table unwinder's. A process
 * running subinterpreters is not walked (counted).
 * Needs: RUN_STATS_MAP, PYTHON_MAPS, stacks.h (it announces new stacks).
 */
#ifndef BPFSCOPE_PYTHON_H
#define BPFSCOPE_PYTHON_H

/* The field at `offset` of a buffer read from the process (offsets come from user space: masked). */
static __always_inline u64 py_u64(u8 *bytes, u16 offset)
{
	return *(u64 *)(bytes + (offset & (PY_READ_BYTES - 1)));
}

static __always_inline u32 py_u32(u8 *bytes, u16 offset)
{
	return *(u32 *)(bytes + (offset & (PY_READ_BYTES - 1)));
}

static __always_inline u8 py_u8(u8 *bytes, u16 offset)
{
	return bytes[offset & (PY_READ_BYTES - 1)];
}

/* One thread state of the interpreter's list; 1 when the search is over. */
static long py_thread_step(u32 index, void *unused)
{
	u32 zero = 0;
	struct py_walk *st = bpf_map_lookup_elem(&python_scratch, &zero);
	u16 id_field;
	u64 id;

	if (!st || !st->tstate)
		return 1;
	id_field = st->use_native_id ? st->proc.offsets.tstate_native_thread_id
				     : st->proc.offsets.tstate_thread_id;
	if (bpf_probe_read_user(&id, sizeof(id), (void *)(st->tstate + id_field))) {
		st->tstate = 0;
		return 1;
	}
	if (id == st->thread_key) {
		st->found = 1;
		return 1;
	}
	if (bpf_probe_read_user(&st->tstate, sizeof(st->tstate),
				(void *)(st->tstate + st->proc.offsets.tstate_next)))
		st->tstate = 0;
	return 0;
}

/* Whether `tstate` is this thread's (its id field still holds the thread's key). */
static __always_inline bool py_thread_state_is_ours(struct py_walk *st, u64 tstate)
{
	u16 id_field = st->use_native_id ? st->proc.offsets.tstate_native_thread_id
					 : st->proc.offsets.tstate_thread_id;
	u64 id;

	return !bpf_probe_read_user(&id, sizeof(id), (void *)(tstate + id_field)) &&
	       id == st->thread_key;
}

/* Finds the current thread's thread state in `interp` into st->tstate (0 if it has none). */
static __always_inline void py_find_thread_state(struct py_walk *st, u32 tid, u64 interp)
{
	struct py_offsets *o = &st->proc.offsets;
	u64 *remembered = bpf_map_lookup_elem(&python_thread_states, &tid);

	if (remembered && py_thread_state_is_ours(st, *remembered)) {
		st->tstate = *remembered;
		return;
	}
	st->tstate = 0;
	st->found = 0;
	if (bpf_probe_read_user(&st->tstate, sizeof(st->tstate), (void *)(interp + o->interp_threads_head)))
		st->tstate = 0;
	bpf_loop(MAX_PYTHON_THREADS, py_thread_step, NULL, 0);
	if (!st->found) {
		st->tstate = 0;
		return;
	}
	bpf_map_update_elem(&python_thread_states, &tid, &st->tstate, BPF_ANY);
}

/* One frame of the walk; 1 when the walk is over. */
static long py_frame_step(u32 index, void *unused)
{
	u32 zero = 0, len, size, check, filename;
	struct py_walk *st = bpf_map_lookup_elem(&python_scratch, &zero);
	struct py_offsets *o;
	struct py_frame *frame;
	u64 code, instruction;

	if (!st)
		return 1;
	if (!st->frame) {
		st->stop = PY_STOP_END;
		return 1;
	}
	o = &st->proc.offsets;
	size = o->frame_size;
	if (size > PY_READ_BYTES || !size ||
	    bpf_probe_read_user(st->frame_bytes, ((size - 1) & (PY_READ_BYTES - 1)) + 1, (void *)st->frame)) {
		st->stop = PY_STOP_READ_FAULT;
		return 1;
	}
	st->frame = py_u64(st->frame_bytes, o->frame_previous);
	len = st->stack.len;
	if (o->frame_owner != PY_NO_FIELD &&
	    py_u8(st->frame_bytes, o->frame_owner) == o->owned_by_cstack) {
		/* A shim frame: the frame after it (the one recorded last) began a C call. */
		if (len)
			st->stack.frames[(len - 1) & (MAX_PYTHON_FRAMES - 1)].check |= PY_FRAME_ENTERED_FROM_C;
		return 0;
	}
	if (len >= MAX_PYTHON_FRAMES) {
		st->stop = PY_STOP_DEPTH;
		return 1;
	}
	code = py_u64(st->frame_bytes, o->frame_code);
	size = o->code_size;
	if (!code || size > PY_READ_BYTES || !size ||
	    bpf_probe_read_user(st->code_bytes, ((size - 1) & (PY_READ_BYTES - 1)) + 1, (void *)code)) {
		st->stop = PY_STOP_READ_FAULT;
		return 1;
	}
	if (py_u64(st->code_bytes, 8) != st->proc.code_type) {     /* ob_type */
		st->stop = PY_STOP_NOT_CODE;
		return 1;
	}
	if (o->code_instructions == PY_NO_FIELD) {
		instruction = py_u32(st->frame_bytes, o->frame_instruction);
	} else {
		instruction = py_u64(st->frame_bytes, o->frame_instruction) - (code + o->code_instructions);
		if (instruction > 0xffffffffULL)
			instruction = 0xffffffffULL;
	}
	check = py_u32(st->code_bytes, o->code_firstlineno) ^ (u32)(py_u64(st->code_bytes, o->code_name) >> 4);
	if (o->code_filename != PY_NO_FIELD) {
		filename = (u32)(py_u64(st->code_bytes, o->code_filename) >> 4);
		check ^= (filename << 16) | (filename >> 16);
	}
	check &= ~PY_FRAME_ENTERED_FROM_C;
	if (o->frame_is_entry != PY_NO_FIELD) {
		if (py_u8(st->frame_bytes, o->frame_is_entry))
			check |= PY_FRAME_ENTERED_FROM_C;
	} else if (o->frame_owner == PY_NO_FIELD) {
		check |= PY_FRAME_ENTERED_FROM_C;       /* 3.8 to 3.10: one C call per frame */
	}
	frame = &st->stack.frames[len & (MAX_PYTHON_FRAMES - 1)];
	frame->code = code;
	frame->instruction = instruction;
	frame->check = check;
	st->stack.len = len + 1;
	st->stack.hash = (st->stack.hash ^ code ^ ((u64)check << 32) ^ instruction) * 0x100000001b3ULL;
	return 0;
}

/*
 * The current thread's Python stack, interned: its id, or -1 when the
 * process is not a known Python process, the thread runs no Python code,
 * or the stack could not be kept (counted). Sets *no_thread_state when the
 * thread has no thread state (a native thread, or no interpreter started,
 * as in a program that only links libpython): a caller that sees the
 * thread often can leave it alone for a while.
 */
static __always_inline s32 capture_python_stack(u32 tgid, u32 tid, bool *no_thread_state)
{
	struct py_process *proc;
	struct py_offsets *o;
	struct py_stack *interned;
	struct py_walk *st;
	u32 zero = 0, id, *present;
	u64 cframe, interp, other_interp;

	*no_thread_state = false;
	present = bpf_map_lookup_elem(&python_present, &zero);
	if (!present || !*present)
		return -1;
	proc = bpf_map_lookup_elem(&python_processes, &tgid);
	if (!proc)
		return -1;
	st = bpf_map_lookup_elem(&python_scratch, &zero);
	if (!st)
		return -1;
	st->proc = *proc;
	o = &st->proc.offsets;
#ifdef __TARGET_ARCH_x86
	/* pthread_self() (glibc and musl) is the FS base: the same in every
	 * PID namespace, unlike the TID a containerized process sees. */
	st->thread_key = BPF_CORE_READ(bpf_get_current_task_btf(), thread.fsbase);
	st->use_native_id = 0;
#else
	if (o->tstate_native_thread_id == PY_NO_FIELD)
		return -1;
	st->thread_key = tid;   /* right outside PID namespaces only */
	st->use_native_id = 1;
#endif
	if (bpf_probe_read_user(&interp, sizeof(interp), (void *)(st->proc.runtime + o->runtime_interpreters_head))) {
		stat_inc(STAT_PY_READ_FAULT);
		return -1;
	}
	if (!interp) {
		stat_inc(STAT_PY_NO_THREAD_STATE);
		*no_thread_state = true;
		return -1;
	}
	if (bpf_probe_read_user(&other_interp, sizeof(other_interp), (void *)(interp + o->interp_next))) {
		stat_inc(STAT_PY_READ_FAULT);
		return -1;
	}
	/* With subinterpreters a thread can hold a thread state in each, and
	 * the lists do not say which one it runs: not walked, never misnamed. */
	if (other_interp) {
		stat_inc(STAT_PY_SUBINTERPRETERS);
		return -1;
	}
	py_find_thread_state(st, tid, interp);
	if (!st->tstate) {
		stat_inc(STAT_PY_NO_THREAD_STATE);
		*no_thread_state = true;
		return -1;
	}
	if (bpf_probe_read_user(&st->frame, sizeof(st->frame), (void *)(st->tstate + o->tstate_frame))) {
		stat_inc(STAT_PY_READ_FAULT);
		return -1;
	}
	if (o->cframe_current_frame != PY_NO_FIELD) {
		cframe = st->frame;
		if (!cframe || bpf_probe_read_user(&st->frame, sizeof(st->frame),
						   (void *)(cframe + o->cframe_current_frame))) {
			st->frame = 0;
		}
	}
	st->stack.len = 0;
	st->stack.truncated = 0;
	st->stack.tgid = tgid;
	st->stack.hash = (0xcbf29ce484222325ULL ^ tgid) * 0x100000001b3ULL;
	st->stop = PY_STOP_NONE;
	bpf_loop(MAX_PYTHON_FRAMES * 2 + 1, py_frame_step, NULL, 0);
	switch (st->stop) {
	case PY_STOP_END:
		stat_inc(STAT_PY_COMPLETE);
		break;
	case PY_STOP_DEPTH:
		stat_inc(STAT_PY_DEPTH);
		st->stack.truncated = 1;
		break;
	case PY_STOP_NOT_CODE:
		stat_inc(STAT_PY_NOT_CODE);
		break;
	default:
		stat_inc(STAT_PY_READ_FAULT);
		break;
	}
	if (!st->stack.len)
		return -1;
	/* A walk that stopped early keeps its newest frames, marked cut. */
	if (st->stop != PY_STOP_END)
		st->stack.truncated = 1;
	st->stack.hash ^= st->stack.truncated;
	id = PYTHON_STACK_BASE | (u32)(st->stack.hash & (PYTHON_STACK_BASE - 1));
	interned = bpf_map_lookup_elem(&python_stacks, &id);
	if (interned) {
		if (interned->hash == st->stack.hash)
			return id;
		stat_inc(STAT_PY_STACKS_FULL);
		return -1;
	}
	if (bpf_map_update_elem(&python_stacks, &id, &st->stack, BPF_NOEXIST)) {
		stat_inc(STAT_PY_STACKS_FULL);
		return -1;
	}
	send_address_space_event(tgid, PYTHON_STACK_NEW, id);
	return id;
}

#endif /* BPFSCOPE_PYTHON_H */
