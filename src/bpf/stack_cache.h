/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Walking a thread's stacks costs more than most scheduler events it is
 * taken on, so the scheduler tools (offcpu, offwaketime, wakeuptime) reuse
 * them. A cheap signature of where a user thread is (syscall number, user
 * ip/sp/bp, the two words on top of its user stack, a caller-chosen word)
 * keys a two-slot per-thread cache (a thread often alternates between two
 * points, e.g. preempted in write() and blocked in read()). Once a slot has
 * been used `revalidate_every` times and its stacks are older than
 * `revalidate_after_ns`, they are walked again and a mismatch is counted
 * (STAT_STACK_STALE): the error of the shortcut is measured, never hidden,
 * and walks per thread stay bounded however fast it switches. Walks that
 * went through JIT code are never reused: JIT callers blocking through the
 * same runtime code share a signature. Nor does a cached stack outlive what
 * it was walked with: each slot keeps the generation of its process's
 * unwind entry (tables that arrived since, libraries mapped since) and the
 * stack maps' epoch (serve empties them), and is walked again when either
 * has changed.
 * Needs: stats.h, stacks.h, unwind.h, and the includer's const volatile
 * capture_user, capture_kernel, revalidate_every, revalidate_after_ns.
 */
#ifndef BPFSCOPE_STACK_CACHE_H
#define BPFSCOPE_STACK_CACHE_H

/* Stacks walked for one signature. */
struct cached_stacks {
	u64 signature;          /* 0: empty */
	s32 user_stack_id;
	s32 kernel_stack_id;
	u32 uses_since_walk;
	u32 tables_generation;  /* tables_generation() at the walk */
	u64 walked_ns;
	u32 stacks_epoch;       /* stacks_epoch() at the walk */
	u32 pad;
};

#define CACHE_SLOTS 2
struct stack_cache {
	struct cached_stacks slots[CACHE_SLOTS];
	u32 last_slot;
	u32 reused;             /* STAT_STACK_REUSED not yet added to the shared counter */
};

static __always_inline u64 signature_mix(u64 hash, u64 value)
{
	hash ^= value;
	return hash * 0x100000001b3ULL;
}

/*
 * Where a user thread is, from its saved user registers and the two words
 * on top of its user stack (usually the return address into the caller of
 * the syscall wrapper), mixed with `extra` (e.g. the task state). The stack
 * top is always mapped, so this never takes the slow path of a faulting read.
 */
static __always_inline u64 user_signature(struct task_struct *task, u64 extra)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	u64 top[2] = {}, sp, syscall_nr = 0;
	u64 hash = 0xcbf29ce484222325ULL;

	if (!regs)
		return 0;
	sp = PT_REGS_SP(regs);
#if defined(__TARGET_ARCH_x86)
	syscall_nr = regs->orig_ax;
#endif
	bpf_probe_read_user(top, sizeof(top), (void *)sp);
	hash = signature_mix(hash, PT_REGS_IP(regs));
	hash = signature_mix(hash, sp);
	hash = signature_mix(hash, PT_REGS_FP(regs));
	hash = signature_mix(hash, syscall_nr);
	hash = signature_mix(hash, top[0]);
	hash = signature_mix(hash, top[1]);
	hash = signature_mix(hash, extra);
	return hash | 1; /* never 0, which means "no signature" */
}

/* The current thread's stacks, in *user_id and *kernel_id. */
static __always_inline void walk_stacks(void *ctx, u32 tgid, bool is_kthread, s32 *user_id, s32 *kernel_id)
{
	*user_id = -1;
	*kernel_id = -1;
	if (capture_user && !is_kthread)
		*user_id = capture_user_stack(ctx, tgid);
	if (capture_kernel)
		*kernel_id = capture_stack(ctx, 0);
}

/*
 * Stacks a walk superseded: what the cache held for the same signature,
 * walked under an older generation of the process's tables. Time the
 * caller kept under them belongs under the new walk's stacks.
 */
struct superseded_stacks {
	s32 user_stack_id;
	s32 kernel_stack_id;
	bool found;
};

/*
 * The current thread's stacks: cached ones for this signature, or walked
 * when the signature is 0 (no cache), unknown or due for revalidation.
 * `epoch` is stacks_epoch() now; `superseded` (may be NULL) says what a
 * walk under newer tables replaced.
 */
static __always_inline void cached_walk(void *ctx, struct stack_cache *cache, u64 signature, u32 tgid,
					bool is_kthread, u64 now, u32 epoch, s32 *user_id, s32 *kernel_id,
					struct superseded_stacks *superseded)
{
	struct cached_stacks *slot;
	u32 index = cache->last_slot & 1, generation;

	if (!signature) {
		walk_stacks(ctx, tgid, is_kthread, user_id, kernel_id);
		return;
	}
	if (cache->slots[index].signature != signature)
		index ^= 1;
	slot = &cache->slots[index];
	generation = is_kthread ? 0 : tables_generation(tgid);
	if (superseded)
		superseded->found = false;
	if (slot->signature == signature &&
	    (slot->tables_generation != generation || slot->stacks_epoch != epoch)) {
		/* Walked with older tables, or into emptied maps: neither
		 * reused nor compared (a difference is not the cache's error). */
		if (superseded && slot->stacks_epoch == epoch) {
			superseded->found = true;
			superseded->user_stack_id = slot->user_stack_id;
			superseded->kernel_stack_id = slot->kernel_stack_id;
		}
		slot->signature = 0;
	}
	if (slot->signature == signature &&
	    (slot->uses_since_walk + 1 < revalidate_every || now - slot->walked_ns < revalidate_after_ns)) {
		slot->uses_since_walk++;
		*user_id = slot->user_stack_id;
		*kernel_id = slot->kernel_stack_id;
		cache->last_slot = index;
		cache->reused++;
		return;
	}
	walk_stacks(ctx, tgid, is_kthread, user_id, kernel_id);
	if (!is_kthread && capture_user && last_walk_went_through_jit()) {
		/* Not reusable: see last_walk_went_through_jit(). Nor does it
		 * stand for earlier blocks of this signature: their JIT callers
		 * may have been others. */
		if (slot->signature == signature)
			slot->signature = 0;
		if (superseded)
			superseded->found = false;
		return;
	}
	if (slot->signature == signature) {
		stat_inc(STAT_STACK_REVALIDATED);
		if (slot->user_stack_id != *user_id || slot->kernel_stack_id != *kernel_id)
			stat_inc(STAT_STACK_STALE);
	} else if (slot->signature) {
		/* Unknown signature: replace the slot not used last (an empty
		 * or dropped one is taken as it is). */
		index = (cache->last_slot & 1) ^ 1;
		slot = &cache->slots[index];
	}
	slot->signature = signature;
	slot->user_stack_id = *user_id;
	slot->kernel_stack_id = *kernel_id;
	slot->uses_since_walk = 0;
	slot->tables_generation = generation;
	slot->stacks_epoch = epoch;
	slot->walked_ns = now;
	cache->last_slot = index;
}

/* Adds the cache's reuses to the shared counter. */
static __always_inline void flush_reused(struct stack_cache *cache)
{
	if (cache->reused)
		stat_add(STAT_STACK_REUSED, cache->reused);
	cache->reused = 0;
}

#endif /* BPFSCOPE_STACK_CACHE_H */
