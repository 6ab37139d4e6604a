/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The base every bpfscope BPF program includes: kernel types, libbpf's
 * helpers, the layouts shared with user space, kernel-version fixes, and
 * one macro per kind of map that several tools use. Declares no map and no
 * program: each <tool>.bpf.c invokes the macros of the maps it uses, then
 * includes the helper headers that work on them:
 *
 *   RUN_STATS_MAP;            stats        -> stats.h (every tool)
 *   TARGET_FILTER_MAPS;       target_*     -> task_filter.h
 *   STACK_TRACE_MAP;          stacks       -> stacks.h
 *   ADDRESS_SPACE_MAPS;       ring, LRU    -> stacks.h (announce_address_space)
 *   HISTOGRAM_MAPS;           hists, total -> histogram.h
 *   UNWIND_MAPS;              rows, ...    -> unwind.h
 *   PYTHON_MAPS;              python_*     -> python.h
 *   FORK_FOLLOWER_PROGRAMS;   (task_filter.h) COMMAND mode's fork follower
 */
#ifndef BPFSCOPE_COMMON_H
#define BPFSCOPE_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "layouts.h"
#include "kernel_fixes.h"

#define EFAULT 14
#define EEXIST 17
#define ENOMEM 12
#define E2BIG 7

/* Run statistics: events seen and every way data was lost, per CPU. */
#define RUN_STATS_MAP                                                   \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                \
		__uint(max_entries, STAT_MAX);                          \
		__type(key, u32);                                       \
		__type(value, u64);                                     \
	} stats SEC(".maps")

/* The PIDs, TIDs and cgroup a run observes (user space sizes them to 1 when unused). */
#define TARGET_FILTER_MAPS                                              \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, 4096);                              \
		__type(key, u32);                                       \
		__type(value, u8);                                      \
	} target_tgids SEC(".maps");                                    \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, 4096);                              \
		__type(key, u32);                                       \
		__type(value, u8);                                      \
	} target_tids SEC(".maps");                                     \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);                \
		__uint(max_entries, 1);                                 \
		__type(key, u32);                                       \
		__type(value, u32);                                     \
	} target_cgroup SEC(".maps")

/* Interned kernel (and frame-pointer user) stacks; sized by user space. */
#define STACK_TRACE_MAP                                                 \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                 \
		__uint(key_size, sizeof(u32));                          \
		__uint(value_size, MAX_USER_FRAMES * sizeof(u64));      \
		__uint(max_entries, 16384);                             \
	} stacks SEC(".maps");                                          \
	/* How many times user space emptied the stack maps: ids kept   \
	 * from before (stack caches, pending time) name nothing now. */ \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, 1);                                 \
		__type(key, u32);                                       \
		__type(value, u32);                                     \
	} stacks_cleared SEC(".maps")

/*
 * New process images announced to user space, which snapshots their
 * mappings while they live, and the image each process announced last.
 */
#define ADDRESS_SPACE_MAPS                                              \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                     \
		__uint(max_entries, 256 * 1024);                        \
	} address_space_events SEC(".maps");                            \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);                    \
		__uint(max_entries, 16384);                             \
		__type(key, u32);                                       \
		__type(value, u64);                                     \
	} announced_address_spaces SEC(".maps")

/*
 * Histograms summed in kernel: keyed ones in a hash, and a per-CPU total
 * for runs without keys (no shared cache lines on the hot path).
 */
#define HISTOGRAM_MAPS                                                  \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                   \
		__uint(max_entries, 10240);                             \
		__type(key, struct hist_key);                           \
		__type(value, struct hist);                             \
	} hists SEC(".maps");                                           \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                \
		__uint(max_entries, 1);                                 \
		__type(key, u32);                                       \
		__type(value, struct hist);                             \
	} total_hist SEC(".maps")

/* Why a table walk stopped (unwind.h). */
enum uw_stop {
	STOP_NONE = 0,
	STOP_END,               /* reached the outermost frame: a complete stack */
	STOP_NO_TABLE,          /* no table for the PC (tables mode) or no row */
	STOP_UNSUPPORTED,       /* a CFA or RBP rule the unwinder does not handle */
	STOP_READ_FAULT,        /* the stack could not be read */
	STOP_DEPTH,             /* MAX_UNWOUND_FRAMES reached */
	STOP_UNMAPPED,          /* PC outside any file mapping (JIT, anonymous code) */
};

/* A table walk in progress: one per CPU, in `unwind_scratch`. */
struct uw_walk {
	u64 ip, sp, bp;
	u64 hash;
	u32 tgid;
	u32 stop;               /* enum uw_stop */
	u32 jit_frames;         /* frames in no file mapping walked by frame pointers (auto) */
	u32 exact_ip;           /* 1: ip is an interrupted instruction (past a signal frame), not a return address */
	struct uw_stack stack;  /* the first STACK_CHUNK_FRAMES frames, as interned */
	u64 deeper_ips[MAX_UNWOUND_FRAMES - STACK_CHUNK_FRAMES];
};

/* The table unwinder's maps (see unwind.h). */
#define PY_READ_BYTES 128       /* the most of a frame or code object one read takes */

/* python.h's walk in progress, per CPU (too large for the BPF stack). */
struct py_walk {
	struct py_stack stack;
	struct py_process proc;
	u64 thread_key;         /* what the thread state's id field holds for this thread */
	u64 tstate;
	u64 frame;
	u32 stop;
	u16 found;
	u16 use_native_id;      /* match the kernel TID, not pthread_self() */
	u8 frame_bytes[PY_READ_BYTES + 8];
	u8 code_bytes[PY_READ_BYTES + 8];
};

enum py_stop {
	PY_STOP_NONE = 0,
	PY_STOP_END,
	PY_STOP_DEPTH,
	PY_STOP_READ_FAULT,
	PY_STOP_NOT_CODE,
};

/*
 * CPython: the Python processes user space found, each thread's thread
 * state as last found, the interned Python stacks (preallocated: written in
 * NMI context), the walk's scratch space, and a generation bumped at each
 * registration (0: no Python process; an array lookup, so the hot path of
 * a host without Python skips the hash lookup, and offcpu's threads can
 * remember whether their process is Python until the next registration).
 */
#define PYTHON_MAPS                                                     \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                   \
		__uint(max_entries, 4096);                              \
		__type(key, u32);               /* tgid */              \
		__type(value, struct py_process);                       \
	} python_processes SEC(".maps");                                \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);                    \
		__uint(max_entries, 16384);                             \
		__type(key, u32);               /* tid */               \
		__type(value, u64);             /* its thread state */  \
	} python_thread_states SEC(".maps");                            \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, 2048);      /* PYTHON_STACK_CAPACITY in engine/stack.rs */ \
		__type(key, u32);                                       \
		__type(value, struct py_stack);                         \
	} python_stacks SEC(".maps");                                   \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                \
		__uint(max_entries, 1);                                 \
		__type(key, u32);                                       \
		__type(value, struct py_walk);                          \
	} python_scratch SEC(".maps");                                  \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, 1);                                 \
		__type(key, u32);                                       \
		__type(value, u32);     /* bumped at each registration; 0: none */ \
	} python_present SEC(".maps")

#define UNWIND_MAPS                                                     \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(map_flags, BPF_F_MMAPABLE);                      \
		__uint(max_entries, 1); /* resized by user space */     \
		__type(key, u32);                                       \
		__type(value, struct uw_row);                           \
	} unwind_rows SEC(".maps");                                     \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                   \
		__uint(max_entries, 8192);                              \
		__type(key, u32);               /* tgid */              \
		__type(value, struct uw_process);                       \
	} unwind_processes SEC(".maps");                                \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                   \
		__uint(max_entries, 16384);     /* resized by user space */ \
		__type(key, u32);                                       \
		__type(value, struct uw_stack);                         \
	} unwound_stacks SEC(".maps");                                  \
	/* Preallocated: in NMI context, allocating three 4 KiB values for  \
	 * one stack drains the allocator's per-CPU cache (-ENOMEM). */ \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, 1024);      /* resized by user space */ \
		__type(key, struct uw_stack_chunk_key);                 \
		__type(value, struct uw_stack_chunk);                   \
	} unwound_stack_chunks SEC(".maps");                            \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);                    \
		__uint(max_entries, 8192);                              \
		__type(key, u32);                                       \
		__type(value, u64);                                     \
	} unwind_refreshes SEC(".maps");                                \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                \
		__uint(max_entries, 1);                                 \
		__type(key, u32);                                       \
		__type(value, struct uw_walk);                          \
	} unwind_scratch SEC(".maps")

#endif /* BPFSCOPE_COMMON_H */
