// SPDX-License-Identifier: BSD-2-Clause
/*
 * bpfscope fslatency / fsslower: latency of read, write, open and fsync on
 * regular files, per operation and filesystem type. Where the kernel allows
 * fentry/fexit, on the VFS entry points (vfs_read, vfs_write, vfs_open,
 * vfs_fsync_range); where it refuses them (as many do), at the syscall
 * boundary (sys_enter to sys_exit), resolving the descriptor to its file in
 * BPF. Only regular files count, classified by their superblock's
 * filesystem type. fsslower's per-operation events go through a ring
 * buffer; histograms are summed in kernel.
 */
#include "common.h"

RUN_STATS_MAP;
TARGET_FILTER_MAPS;
HISTOGRAM_MAPS;

#include "stats.h"
#include "task_filter.h"
#include "histogram.h"

#define S_IFMT  00170000
#define S_IFREG 0100000

const volatile u64 unit_ns = 1000;
const volatile bool report_slow = false;     /* fsslower: per-operation events */
const volatile u64 slow_ns = 10000000;
const volatile bool filter_fstype = false;
/* bpfscope itself: fsslower writing its lines to a file would report its own writes, without end. */
const volatile u32 own_tgid = 0;
const volatile char wanted_fstype[FSTYPE_LEN] = {};

#define MAX_SYSCALLS 1024
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, u32);
	__type(value, struct syscall_class);
} syscall_classes SEC(".maps");

struct in_flight {
	u64 start_ns;
	u64 offset;
	u32 op;
	u32 pad;
	struct file *file;      /* NULL for opens until they return */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);       /* tid */
	__type(value, struct in_flight);
} in_flight_ops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} slow_ops SEC(".maps");

static __always_inline struct file *file_of_fd(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;

	if (fd < 0 || !fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* Fills fstype for regular files; false for anything else. */
static __always_inline bool regular_file_fstype(struct file *file, char *fstype)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	const char *name;

	if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFREG)
		return false;
	name = BPF_CORE_READ(inode, i_sb, s_type, name);
	bpf_probe_read_kernel_str(fstype, FSTYPE_LEN, name);
	if (!filter_fstype)
		return true;
	for (int i = 0; i < FSTYPE_LEN; i++) {
		if (fstype[i] != wanted_fstype[i])
			return false;
		if (!fstype[i])
			break;
	}
	return true;
}

static __always_inline void syscall_enter(struct pt_regs *regs, long id)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct in_flight op = {};
	struct syscall_class *class;
	struct file *file;
	u32 index = id, tid = (u32)pid_tgid;

	class = bpf_map_lookup_elem(&syscall_classes, &index);
	if (!class || !class->op || (pid_tgid >> 32) == own_tgid || !task_selected(pid_tgid >> 32, tid))
		return;
	op.op = class->op;
	if (op.op != FS_OP_OPEN) {
		file = file_of_fd(PT_REGS_PARM1_CORE_SYSCALL(regs));
		if (!file)
			return;
		op.file = file;
		op.offset = class->positional ? PT_REGS_PARM4_CORE_SYSCALL(regs) : BPF_CORE_READ(file, f_pos);
	}
	op.start_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&in_flight_ops, &tid, &op, BPF_ANY))
		stat_inc(STAT_COUNTS_FULL);
}

/* The operation of the current thread ends with `ret`; `file` is its file. */
static __always_inline void finish_op(struct in_flight *op, struct file *file, long ret)
{
	struct hist_key key = {};
	struct slow_op *event;
	u64 delta = bpf_ktime_get_ns() - op->start_ns;

	if (!file || !regular_file_fstype(file, key.name))
		return;
	stat_inc(STAT_EVENTS);
	if (!report_slow) {
		key.id = op->op;
		if (key_by_cgroup)
			key.cgroup = bpf_get_current_cgroup_id();
		hist_add(&key, delta / unit_ns);
		return;
	}
	if (delta < slow_ns)
		return;
	event = bpf_ringbuf_reserve(&slow_ops, sizeof(*event), 0);
	if (!event) {
		stat_inc(STAT_NOTIFY_LOST);
		return;
	}
	event->latency_ns = delta;
	event->offset = op->offset;
	event->bytes = ret;
	event->tgid = bpf_get_current_pid_tgid() >> 32;
	event->op = op->op;
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
	__builtin_memcpy(event->fstype, key.name, FSTYPE_LEN);
	bpf_probe_read_kernel_str(event->file_name, FILE_NAME_LEN, BPF_CORE_READ(file, f_path.dentry, d_name.name));
	bpf_ringbuf_submit(event, 0);
}

static __always_inline void syscall_exit(long ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct in_flight op_copy, *op;

	op = bpf_map_lookup_elem(&in_flight_ops, &tid);
	if (!op)
		return;
	op_copy = *op;
	bpf_map_delete_elem(&in_flight_ops, &tid);
	finish_op(&op_copy, op_copy.op == FS_OP_OPEN ? file_of_fd(ret) : op_copy.file, ret);
}

/* --- fentry/fexit on the VFS entry points -------------------------------- */

static __always_inline void vfs_enter(struct file *file, u32 operation, u64 offset)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct in_flight op = { .op = operation, .file = file, .offset = offset };
	u32 tid = (u32)pid_tgid;

	if ((pid_tgid >> 32) == own_tgid || !task_selected(pid_tgid >> 32, tid))
		return;
	op.start_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&in_flight_ops, &tid, &op, BPF_ANY))
		stat_inc(STAT_COUNTS_FULL);
}

static __always_inline void vfs_exit(struct file *file, long ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct in_flight op_copy, *op;

	op = bpf_map_lookup_elem(&in_flight_ops, &tid);
	if (!op)
		return;
	op_copy = *op;
	bpf_map_delete_elem(&in_flight_ops, &tid);
	finish_op(&op_copy, file, ret);
}

static __always_inline u64 position(loff_t *pos)
{
	loff_t value = 0;

	if (pos)
		bpf_probe_read_kernel(&value, sizeof(value), pos);
	return value;
}

SEC("fentry/vfs_read")
int BPF_PROG(vfs_read_entry, struct file *file, char *buf, size_t count, loff_t *pos)
{
	vfs_enter(file, FS_OP_READ, position(pos));
	return 0;
}

SEC("fexit/vfs_read")
int BPF_PROG(vfs_read_exit, struct file *file, char *buf, size_t count, loff_t *pos, ssize_t ret)
{
	vfs_exit(file, ret);
	return 0;
}

SEC("fentry/vfs_write")
int BPF_PROG(vfs_write_entry, struct file *file, const char *buf, size_t count, loff_t *pos)
{
	vfs_enter(file, FS_OP_WRITE, position(pos));
	return 0;
}

SEC("fexit/vfs_write")
int BPF_PROG(vfs_write_exit, struct file *file, const char *buf, size_t count, loff_t *pos, ssize_t ret)
{
	vfs_exit(file, ret);
	return 0;
}

SEC("fentry/vfs_open")
int BPF_PROG(vfs_open_entry, const struct path *path, struct file *file)
{
	vfs_enter(file, FS_OP_OPEN, 0);
	return 0;
}

SEC("fexit/vfs_open")
int BPF_PROG(vfs_open_exit, const struct path *path, struct file *file, int ret)
{
	vfs_exit(file, ret);
	return 0;
}

SEC("fentry/vfs_fsync_range")
int BPF_PROG(vfs_fsync_entry, struct file *file, loff_t start, loff_t end, int datasync)
{
	vfs_enter(file, FS_OP_FSYNC, start);
	return 0;
}

SEC("fexit/vfs_fsync_range")
int BPF_PROG(vfs_fsync_exit, struct file *file, loff_t start, loff_t end, int datasync, int ret)
{
	vfs_exit(file, ret);
	return 0;
}

/* --- the syscall boundary -------------------------------------------------- */

SEC("tp_btf/sys_enter")
int BPF_PROG(enter_btf, struct pt_regs *regs, long id)
{
	syscall_enter(regs, id);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(exit_btf, struct pt_regs *regs, long ret)
{
	syscall_exit(ret);
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(enter_raw, struct pt_regs *regs, long id)
{
	syscall_enter(regs, id);
	return 0;
}

SEC("raw_tp/sys_exit")
int BPF_PROG(exit_raw, struct pt_regs *regs, long ret)
{
	syscall_exit(ret);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
