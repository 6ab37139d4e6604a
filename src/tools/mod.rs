//! The command line and its wiring, one module per tool: its flags, how it
//! loads and attaches its BPF object, and which engine runs it. Flags
//! several tools share are in `flags`.

pub mod biolatency;
pub mod diff;
pub mod docs;
pub mod flags;
pub mod fslatency;
pub mod funclatency;
pub mod offcpu;
pub mod offwake;
pub mod profile;
pub mod runqlat;
pub mod runqlen;
pub mod serve;
pub mod syscount;
pub mod tcpconnlat;
pub mod tcplife;
pub mod tcpretrans;
pub mod unwind_table;

#[cfg(test)]
mod tests {
    //! Every object includes layouts.h, and Rust reads each shared struct
    //! through the one definition `crate::layouts` re-exports: a struct that
    //! an object redefined, or that changed on one side only, shows here as
    //! a size or field offset that differs between the two.

    use std::mem::{offset_of, size_of};

    use crate::layouts;

    macro_rules! same_layout {
        ($object:ty, $shared:ty, [$($field:ident),* $(,)?]) => {
            assert_eq!(
                size_of::<$object>(),
                size_of::<$shared>(),
                "size of {}",
                stringify!($object)
            );
            $(
                assert_eq!(
                    offset_of!($object, $field),
                    offset_of!($shared, $field),
                    "{}.{}",
                    stringify!($object),
                    stringify!($field)
                );
            )*
        };
    }

    #[test]
    fn every_object_shares_the_declared_layouts() {
        use super::*;
        same_layout!(
            profile::skel::types::stack_key,
            layouts::stack_key,
            [
                tgid,
                tid,
                address_space,
                user_stack_id,
                kernel_stack_id,
                comm
            ]
        );
        same_layout!(
            offcpu::skel::types::stack_key,
            layouts::stack_key,
            [
                tgid,
                tid,
                address_space,
                user_stack_id,
                kernel_stack_id,
                comm
            ]
        );
        same_layout!(
            offwake::skel::types::wake_key,
            layouts::wake_key,
            [target, waker, waker_context]
        );
        same_layout!(
            profile::skel::types::uw_row,
            layouts::uw_row,
            [pc, cfa_offset, rbp_offset, cfa_rule, rbp_rule]
        );
        same_layout!(
            offcpu::skel::types::uw_process,
            layouts::uw_process,
            [count, mappings]
        );
        same_layout!(
            offcpu::skel::types::uw_mapping,
            layouts::uw_mapping,
            [start, end, bias, table_start, table_len]
        );
        same_layout!(
            profile::skel::types::uw_stack,
            layouts::uw_stack,
            [hash, len, ips]
        );
        same_layout!(
            runqlat::skel::types::hist,
            layouts::hist,
            [slots, count, sum]
        );
        same_layout!(
            biolatency::skel::types::hist_key,
            layouts::hist_key,
            [id, cgroup, name]
        );
        same_layout!(
            fslatency::skel::types::hist_key,
            layouts::hist_key,
            [id, cgroup, name]
        );
        same_layout!(
            syscount::skel::types::syscall_total,
            layouts::syscall_total,
            [count, total_ns]
        );
        same_layout!(
            fslatency::skel::types::syscall_class,
            layouts::syscall_class,
            [op, positional]
        );
    }
}
