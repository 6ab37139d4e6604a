/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Every struct and enum that BPF programs share with user space, declared
 * once. Rust reads and writes them through the types libbpf-cargo generates
 * from layouts.bpf.c (src/layouts.rs), never at hand-counted offsets.
 * Each size is asserted here and again in src/layouts.rs, so a change
 * to a struct fails the build until both sides agree on it.
 */
#ifndef BPFSCOPE_LAYOUTS_H
#define BPFSCOPE_LAYOUTS_H

#define TASK_COMM_LEN 16

/* Indexes into the per-CPU `stats` array of every object. */
enum run_stat {
	STAT_EVENTS = 0,           /* events that passed the filters */
	STAT_COUNTS_FULL,          /* event dropped: the counts map was full */
	STAT_STACK_MAP_FULL,       /* a stack was lost: stack map full */
	STAT_STACK_COLLISION,      /* a stack was lost: stack map hash collision */
	STAT_USER_STACK_MISSING,   /* a user task whose user stack could not be read */
	STAT_NOTIFY_LOST,          /* event or notification lost (ring buffer full) */
	STAT_TARGETS_FULL,         /* a followed child could not be added */
	STAT_STACK_REUSED,         /* offcpu: stacks reused from the per-thread cache */
	STAT_STACK_REVALIDATED,    /* offcpu: cached stacks walked again to check them */
	STAT_STACK_STALE,          /* offcpu: ... and found different */
	STAT_THREADS_UNTRACKED,    /* a thread whose state found its map full (raw-tracepoint fallbacks) */
	STAT_WAKEUP_UNSEEN,        /* wakeuptime: a block whose wakeup was not seen, dropped */
	STAT_UNWIND_COMPLETE,      /* table unwinding reached the outermost frame */
	STAT_UNWIND_NO_TABLE,      /* ... stopped: no table or row for a PC */
	STAT_UNWIND_UNSUPPORTED,   /* ... stopped: an unsupported CFA or RBP rule */
	STAT_UNWIND_READ_FAULT,    /* ... stopped: the user stack could not be read */
	STAT_UNWIND_DEPTH,         /* ... stopped: the frame limit */
	STAT_UNWIND_UNMAPPED,      /* ... stopped: a PC in no file mapping (JIT, anonymous) */
	/* The same six ends again, for the walks that went through code in no
	 * file mapping (JIT code) by frame pointers (auto mode), in the same order. */
	STAT_JIT_UNWIND_COMPLETE,
	STAT_JIT_UNWIND_NO_TABLE,
	STAT_JIT_UNWIND_UNSUPPORTED,
	STAT_JIT_UNWIND_READ_FAULT,
	STAT_JIT_UNWIND_DEPTH,
	STAT_JIT_UNWIND_UNMAPPED,
	STAT_UNWIND_NOT_LOADED,    /* auto mode: the process's tables were not loaded yet, frame pointers walked */
	STAT_PY_COMPLETE,          /* a Python walk reached the thread's first frame */
	STAT_PY_DEPTH,             /* ... stopped at MAX_PYTHON_FRAMES */
	STAT_PY_READ_FAULT,        /* ... stopped: interpreter memory could not be read */
	STAT_PY_NO_THREAD_STATE,   /* a thread of a Python process with no thread state (not Python, or between calls) */
	STAT_PY_NOT_CODE,          /* ... a frame whose code is not a code object, walk stopped */
	STAT_PY_STACKS_FULL,       /* a Python stack not interned: its map was full or another stack had its slot */
	STAT_PY_SUBINTERPRETERS,   /* a sample of a process running subinterpreters: not walked (unsupported) */
	STAT_PENDING_CLEARED,      /* a thread's unflushed off-CPU time dropped: the stack maps were emptied under it */
	STAT_MAX,
};

/* --- stack tools ------------------------------------------------------- */

/* Counts are summed in kernel under this key; stacks are interned by id. */
struct stack_key {
	u32 tgid;
	u32 tid;            /* 0 unless per-thread keys were asked for */
	u64 address_space;  /* identifies the process image (mm pointer); 0 for kernel threads */
	s32 user_stack_id;  /* < 0: no user stack */
	s32 kernel_stack_id;/* < 0: no kernel stack */
	char comm[TASK_COMM_LEN];
	u32 time_slot;      /* profile --heatmap: 20 ms slots since the start; else 0 */
	s32 python_stack_id;/* < 0: no Python frames (python.h) */
};
_Static_assert(sizeof(struct stack_key) == 48, "struct stack_key: update src/layouts.rs");

/* What ran the wakeup of a blocked thread (offwaketime, wakeuptime). */
enum waker_context {
	WAKER_TASK = 0,         /* a task, in process context (ksoftirqd included): its stacks are the waker's */
	WAKER_INTERRUPT = 1,    /* an interrupt handler or the softirqs run at its exit (timers,
				 * devices, IPIs, network receive), or the idle loop */
	WAKER_UNSEEN = 2,       /* the thread ran again without a wakeup seen (e.g. woken before the run) */
};

/*
 * offwaketime and wakeuptime sum blocked time under this key: the blocked
 * thread (its stacks only in offwaketime) and its waker (stacks and comm
 * only for WAKER_TASK; in interrupt context only the kernel stack).
 */
struct wake_key {
	struct stack_key target;
	struct stack_key waker;
	u32 waker_context;      /* enum waker_context */
	u32 pad;
};
_Static_assert(sizeof(struct wake_key) == 104, "struct wake_key: update src/layouts.rs");

enum address_space_event_kind {
	ADDRESS_SPACE_NEW = 0,     /* a process image seen for the first time */
	ADDRESS_SPACE_CHANGED = 1, /* a walk met code outside the known mappings */
	/* A Python stack was interned for the first time (address_space holds
	 * its id): its code objects are read now, before the module or class
	 * body that runs them (code freed once an import is over) is gone. */
	PYTHON_STACK_NEW = 2,
};

/* Ring-buffer notification: snapshot this process's mappings now. */
struct address_space_event {
	u32 tgid;
	u32 kind;               /* enum address_space_event_kind */
	u64 address_space;
};
_Static_assert(sizeof(struct address_space_event) == 16, "struct address_space_event: update src/layouts.rs");

/* --- table-driven unwinding (unwind.h) ---------------------------------- */

#define MAX_USER_FRAMES 127     /* frames of the kernel's stack-trace maps (perf_event_max_stack) */
#define MAX_UNWOUND_FRAMES 2048 /* user frames a table walk records */
#define STACK_CHUNK_FRAMES 128  /* frames per interned piece: deep stacks pay for what they use */
#define STACK_CHUNKS (MAX_UNWOUND_FRAMES / STACK_CHUNK_FRAMES)
#define MAX_MAPPINGS 256

enum uw_mode {
	UNWIND_FP = 0,
	UNWIND_AUTO = 1,
	UNWIND_TABLES = 2,
};

enum uw_cfa_rule {
	CFA_NONE = 0,           /* no information (between functions) */
	CFA_RSP = 1,
	CFA_RBP = 2,
	CFA_PLT = 3,            /* rsp + 8, + 8 more past byte 11 of the 16-byte stub */
	CFA_END = 4,            /* the return address is undefined: outermost frame */
	CFA_UNSUPPORTED = 5,
	/* rsp + offset, for return addresses only: code copied into anonymous
	 * memory whose frame is a fixed size once it has called (CPython's perf
	 * trampolines: sub $8,%rsp; call *%rcx). At the leaf the walk stops. */
	CFA_RSP_AFTER_CALL = 6,
	/* A signal trampoline (its CIE has the 'S' augmentation: glibc's
	 * __restore_rt). SP points at the kernel's struct ucontext (x86-64
	 * rt_sigframe, after pretcode); the interrupted RIP, RSP and RBP are in
	 * its sigcontext, at SIGFRAME_RIP/RSP/RBP from SP. */
	CFA_SIGNAL = 7,
};

/* struct ucontext: uc_flags, uc_link, uc_stack (40 bytes), then struct
 * sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip. */
#define SIGFRAME_RBP (40 + 80)
#define SIGFRAME_RSP (40 + 120)
#define SIGFRAME_RIP (40 + 128)

/* Stands for a signal frame in a table-walked stack (user space shows
 * "[signal]"); the frame after it is the interrupted instruction itself,
 * not a return address. */
#define SIGNAL_FRAME_IP 0xfffffffffffffffeULL

enum uw_rbp_rule {
	RBP_SAME = 0,
	RBP_AT_CFA_OFFSET = 1,
	RBP_UNSUPPORTED = 2,
};

/* From this object-relative PC on: how to find the CFA and the caller's RBP. */
struct uw_row {
	u32 pc;
	s32 cfa_offset;
	s16 rbp_offset;
	u8 cfa_rule;            /* enum uw_cfa_rule */
	u8 rbp_rule;            /* enum uw_rbp_rule */
	u32 pad;                /* array elements are 8-byte aligned anyway */
};
_Static_assert(sizeof(struct uw_row) == 16, "struct uw_row: update src/layouts.rs");

struct uw_mapping {
	u64 start;
	u64 end;
	u64 bias;               /* runtime address - bias = object address */
	u32 table_start;        /* index of its first row in unwind_rows */
	u32 table_len;          /* 0: no table (frame pointers in auto mode) */
};
_Static_assert(sizeof(struct uw_mapping) == 32, "struct uw_mapping: update src/layouts.rs");

struct uw_process {
	u32 count;
	/* Bumped at every write of the entry (tables arrived, mappings read
	 * again): stacks cached under an older generation are walked again. */
	u32 generation;
	struct uw_mapping mappings[MAX_MAPPINGS];  /* sorted by start */
};
_Static_assert(sizeof(struct uw_process) == 8 + 32 * MAX_MAPPINGS, "struct uw_process: update src/layouts.rs");

/*
 * An interned table-walked stack: its first STACK_CHUNK_FRAMES frames here,
 * in `unwound_stacks`, the rest (len > STACK_CHUNK_FRAMES) in
 * `unwound_stack_chunks` under (id, 1), (id, 2), ...
 */
struct uw_stack {
	u64 hash;               /* of the frames: a different one under the same id is a collision */
	u32 len;                /* all frames, chunks included */
	u32 truncated;          /* 1: the walk stopped at MAX_UNWOUND_FRAMES, callers are missing */
	u64 ips[STACK_CHUNK_FRAMES];
};
_Static_assert(sizeof(struct uw_stack) == 16 + 8 * STACK_CHUNK_FRAMES, "struct uw_stack: update src/layouts.rs");

struct uw_stack_chunk_key {
	u32 stack_id;
	u32 index;              /* 1 .. STACK_CHUNKS - 1: frames from index * STACK_CHUNK_FRAMES */
};
_Static_assert(sizeof(struct uw_stack_chunk_key) == 8, "struct uw_stack_chunk_key: update src/layouts.rs");

struct uw_stack_chunk {
	u64 ips[STACK_CHUNK_FRAMES];
};
_Static_assert(sizeof(struct uw_stack_chunk) == 8 * STACK_CHUNK_FRAMES, "struct uw_stack_chunk: update src/layouts.rs");

/* --- histograms (histogram.h) -------------------------------------------- */

/*
 * Log2 histograms: slot 0 counts values 0 and 1, slot i (i >= 1) values in
 * [2^i, 2^(i+1) - 1], as BCC and libbpf-tools print them. Linear ones: slot
 * n counts the value n.
 */
#define HIST_SLOTS 40

struct hist {
	u64 slots[HIST_SLOTS];
	u64 count;
	u64 sum;
};
_Static_assert(sizeof(struct hist) == 8 * HIST_SLOTS + 16, "struct hist: update src/layouts.rs");

struct hist_key {
	u64 id;                 /* pid, tid, device, syscall number... per tool */
	u64 cgroup;             /* cgroup v2 id where key_by_cgroup, else 0 */
	char name[TASK_COMM_LEN];
};
_Static_assert(sizeof(struct hist_key) == 32, "struct hist_key: update src/layouts.rs");

/* syscount: calls and their summed latency. */
struct syscall_total {
	u64 count;
	u64 total_ns;
};
_Static_assert(sizeof(struct syscall_total) == 16, "struct syscall_total: update src/layouts.rs");

/* biolatency -F: the request operation (low 8 bits) with these flags. */
enum block_flag {
	BLOCK_FLAG_SYNC = 1 << 8,
	BLOCK_FLAG_META = 1 << 9,
	BLOCK_FLAG_FUA = 1 << 10,
	BLOCK_FLAG_PREFLUSH = 1 << 11,
	BLOCK_FLAG_RAHEAD = 1 << 12,
};

/* --- file systems (fslatency.bpf.c) --------------------------------------- */

#define FSTYPE_LEN 16
#define FILE_NAME_LEN 32

/* Operation classes, set per syscall number by user space (0: not traced). */
enum fs_op {
	FS_OP_NONE = 0,
	FS_OP_READ,
	FS_OP_WRITE,
	FS_OP_OPEN,
	FS_OP_FSYNC,
};

/* How a syscall's arguments locate the file and offset. */
struct syscall_class {
	u8 op;                  /* enum fs_op */
	u8 positional;          /* the 4th argument is the file offset (pread, pwrite) */
};
_Static_assert(sizeof(struct syscall_class) == 2, "struct syscall_class: update src/layouts.rs");

/* fsslower: one slow operation. */
struct slow_op {
	u64 latency_ns;
	u64 offset;
	s64 bytes;
	u32 tgid;
	u32 op;                 /* enum fs_op */
	char comm[TASK_COMM_LEN];
	char fstype[FSTYPE_LEN];
	char file_name[FILE_NAME_LEN];
};
_Static_assert(sizeof(struct slow_op) == 96, "struct slow_op: update src/layouts.rs");

/* --- TCP (sock.h) ----------------------------------------------------------- */

struct connection {
	u16 family;
	u16 local_port;         /* host order */
	u16 remote_port;        /* host order */
	u16 pad;
	u8 local_addr[16];      /* IPv4: first 4 bytes */
	u8 remote_addr[16];
};
_Static_assert(sizeof(struct connection) == 40, "struct connection: update src/layouts.rs");

struct connect_event {
	struct connection conn;
	u64 latency_ns;
	u32 tgid;
	u32 pad;
	char comm[TASK_COMM_LEN];
};
_Static_assert(sizeof(struct connect_event) == 72, "struct connect_event: update src/layouts.rs");

struct session_event {
	struct connection conn;
	u64 duration_ns;
	u64 bytes_sent;
	u64 bytes_received;
	u32 tgid;
	u32 pad;
	char comm[TASK_COMM_LEN];
};
_Static_assert(sizeof(struct session_event) == 88, "struct session_event: update src/layouts.rs");

struct retransmit_event {
	struct connection conn;
	u32 state;
	u32 tgid;
};
_Static_assert(sizeof(struct retransmit_event) == 48, "struct retransmit_event: update src/layouts.rs");

/* --- CPython frames (python.h) ------------------------------------------ */

#define MAX_PYTHON_FRAMES 128        /* Python frames a walk records */
#define MAX_PYTHON_THREADS 256       /* thread states searched for the sampled thread */
#define PYTHON_STACK_BASE 0x20000000 /* interned Python stacks have ids from here up */
#define PY_NO_FIELD 0xffff           /* a field this CPython version does not have */
#define PY_FRAME_ENTERED_FROM_C 0x80000000u /* py_frame.check: a _PyEval_EvalFrameDefault call began here */

/*
 * Where one CPython version keeps what the walk reads: byte offsets,
 * PY_NO_FIELD where the version has no such field. User space fills it
 * from _Py_DebugOffsets (3.13) or its table (3.8 to 3.12).
 */
struct py_offsets {
	u16 runtime_interpreters_head;
	u16 interp_threads_head;
	u16 tstate_next;
	u16 tstate_thread_id;        /* pthread_self(): the thread's FS base on x86-64 */
	u16 tstate_native_thread_id; /* the kernel's TID (3.11+; used off x86-64) */
	u16 tstate_frame;            /* frame (3.8 to 3.10), cframe (3.11, 3.12), current_frame (3.13) */
	u16 cframe_current_frame;    /* 3.11, 3.12 */
	u16 frame_previous;
	u16 frame_code;
	u16 frame_instruction;       /* int f_lasti (3.8 to 3.10), or a pointer to the instruction (3.11+) */
	u16 frame_owner;             /* 3.11+ */
	u16 frame_is_entry;          /* 3.11 */
	u16 frame_size;              /* bytes of a frame the walk reads (at most 128) */
	u16 code_firstlineno;
	u16 code_name;
	u16 code_instructions;       /* co_code_adaptive (3.11+) */
	u16 code_size;               /* bytes of a code object the walk reads (at most 128) */
	u16 interp_next;             /* PyInterpreterState.next: set while subinterpreters exist */
	u8 owned_by_cstack;          /* frame_owner of the shim frames each C call pushes (3.12+), else 0xff */
	u8 pad;
	u16 code_filename;           /* in the check: code freed and reused by another file's differs */
};
_Static_assert(sizeof(struct py_offsets) == 40, "struct py_offsets: update src/layouts.rs");

/* A Python process: where its runtime state is, and its version's offsets. */
struct py_process {
	u64 runtime;            /* address of _PyRuntime */
	u64 code_type;          /* address of PyCode_Type: what a frame's code must point to */
	struct py_offsets offsets;
};
_Static_assert(sizeof(struct py_process) == 56, "struct py_process: update src/layouts.rs");

/* One Python frame as the walk found it. */
struct py_frame {
	u64 code;               /* the code object's address */
	u32 instruction;        /* f_lasti as stored (3.8 to 3.10), or bytes from the first instruction (3.11+) */
	u32 check;              /* PY_FRAME_ENTERED_FROM_C, and in the other bits co_firstlineno ^ (co_name >> 4)
	                         * ^ rotl32(co_filename >> 4, 16): user space names the code object only if it
	                         * still matches (every module body has the same first line and interned name) */
};
_Static_assert(sizeof(struct py_frame) == 16, "struct py_frame: update src/layouts.rs");

/* An interned Python stack, leaf first. */
struct py_stack {
	u16 len;
	u16 truncated;          /* 1: the walk stopped early, callers are missing */
	u32 tgid;               /* the process it was read from (its code objects are there) */
	u64 hash;
	struct py_frame frames[MAX_PYTHON_FRAMES];
};
_Static_assert(sizeof(struct py_stack) == 16 + 16 * MAX_PYTHON_FRAMES, "struct py_stack: update src/layouts.rs");

#endif /* BPFSCOPE_LAYOUTS_H */
