// SPDX-License-Identifier: BSD-2-Clause
/*
 * Never loaded. One instance of each struct and enum of layouts.h, so that
 * libbpf-cargo generates a single Rust definition of each from the same
 * declarations the BPF programs use (src/layouts.rs re-exports them).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "layouts.h"

enum run_stat layout_run_stat;
enum address_space_event_kind layout_address_space_event_kind;
enum uw_mode layout_uw_mode;
enum uw_cfa_rule layout_uw_cfa_rule;
enum uw_rbp_rule layout_uw_rbp_rule;
enum block_flag layout_block_flag;
enum fs_op layout_fs_op;
enum waker_context layout_waker_context;
struct stack_key layout_stack_key;
struct wake_key layout_wake_key;
struct address_space_event layout_address_space_event;
struct uw_row layout_uw_row;
struct uw_process layout_uw_process;
struct uw_stack layout_uw_stack;
struct uw_stack_chunk_key layout_uw_stack_chunk_key;
struct uw_stack_chunk layout_uw_stack_chunk;
struct hist layout_hist;
struct hist_key layout_hist_key;
struct syscall_total layout_syscall_total;
struct syscall_class layout_syscall_class;
struct slow_op layout_slow_op;
struct connect_event layout_connect_event;
struct session_event layout_session_event;
struct retransmit_event layout_retransmit_event;
struct py_offsets layout_py_offsets;
struct py_process layout_py_process;
struct py_frame layout_py_frame;
struct py_stack layout_py_stack;

char LICENSE[] SEC("license") = "Dual BSD/GPL";
