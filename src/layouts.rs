//! The structs and enums BPF programs share with user space, as libbpf-cargo
//! generates them from src/bpf/layouts.h (through layouts.bpf.c, an object
//! that is never loaded): one Rust definition of each, read from and written
//! to kernel maps and ring buffers whole, never at hand-counted offsets. The
//! sizes asserted here are those layouts.h asserts, so a struct changed on
//! one side only fails the build.

use std::mem::size_of;

#[allow(dead_code, non_camel_case_types, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/layouts.skel.rs"));
}

pub use generated::types::{
    address_space_event, address_space_event_kind, block_flag, connect_event, connection, fs_op,
    hist, hist_key, py_frame, py_offsets, py_process, py_stack, retransmit_event, run_stat,
    session_event, slow_op, stack_key, syscall_class, syscall_total, uw_cfa_rule, uw_mapping,
    uw_mode, uw_process, uw_rbp_rule, uw_row, uw_stack, uw_stack_chunk, uw_stack_chunk_key,
    wake_key, waker_context,
};

/// Marks each layout as bytemuck's plain old data (every byte pattern of its
/// size a valid value, no implicit padding), so it is copied from and to
/// raw bytes by bytemuck, and checks its size against layouts.h's.
macro_rules! plain_layouts {
    ($($layout:ident = $size:expr),* $(,)?) => {
        $(
            // SAFETY: libbpf-cargo generates these `#[repr(C)]` from C structs of
            // integers and integer arrays, with every padding byte an explicit field.
            unsafe impl bytemuck::Zeroable for $layout {}
            // SAFETY: as above.
            unsafe impl bytemuck::Pod for $layout {}
            const _: () = assert!(size_of::<$layout>() == $size, concat!("layouts.h changed ", stringify!($layout)));
        )*
    };
}

// The sizes layouts.h asserts with _Static_assert.
plain_layouts! {
    stack_key = 48,
    wake_key = 104,
    address_space_event = 16,
    uw_row = 16,
    uw_mapping = 32,
    uw_process = 8 + 32 * MAX_MAPPINGS,
    uw_stack = 16 + 8 * STACK_CHUNK_FRAMES,
    uw_stack_chunk_key = 8,
    uw_stack_chunk = 8 * STACK_CHUNK_FRAMES,
    py_offsets = 40,
    py_process = 56,
    py_frame = 16,
    py_stack = 16 + 16 * MAX_PYTHON_FRAMES,
    hist = 8 * HIST_SLOTS + 16,
    hist_key = 32,
    syscall_total = 16,
    syscall_class = 2,
    slow_op = 96,
    connection = 40,
    connect_event = 72,
    session_event = 88,
    retransmit_event = 48,
}

/// `MAX_MAPPINGS`, `MAX_UNWOUND_FRAMES`, `STACK_CHUNK_FRAMES`, `HIST_SLOTS`,
/// `MAX_PYTHON_FRAMES`, `PY_NO_FIELD`, `PY_FRAME_ENTERED_FROM_C` and
/// `SIGNAL_FRAME_IP` in layouts.h.
pub const MAX_MAPPINGS: usize = 256;
pub const MAX_UNWOUND_FRAMES: usize = 2048;
pub const STACK_CHUNK_FRAMES: usize = 128;
pub const HIST_SLOTS: usize = 40;
pub const MAX_PYTHON_FRAMES: usize = 128;
pub const PY_NO_FIELD: u16 = 0xffff;
pub const PY_FRAME_ENTERED_FROM_C: u32 = 0x8000_0000;
pub const SIGNAL_FRAME_IP: u64 = 0xffff_ffff_ffff_fffe;

/// A value of `T` from the start of `bytes`, or None if they are too short.
pub fn read<T: bytemuck::Pod>(bytes: &[u8]) -> Option<T> {
    bytes
        .get(..size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
}

/// The bytes of a value, to write it into a map.
pub fn bytes_of<T: bytemuck::Pod>(value: &T) -> &[u8] {
    bytemuck::bytes_of(value)
}

/// A NUL-terminated C string (comm, names) of a layout, lossily as UTF-8.
pub fn c_string(chars: &[i8]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The connection of a TCP event, as the model describes it.
pub fn decode_connection(raw: &connection) -> crate::model::connection::Connection {
    use crate::model::connection::Connection;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    const AF_INET6: u16 = 10;
    let address = |bytes: [u8; 16]| -> IpAddr {
        if raw.family == AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(bytes))
        } else {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        }
    };
    Connection {
        local: address(raw.local_addr),
        local_port: raw.local_port,
        remote: address(raw.remote_addr),
        remote_port: raw.remote_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_layouts_and_refuses_short_ones() {
        let key = stack_key {
            tgid: 7,
            tid: 9,
            address_space: 0xdead_beef,
            user_stack_id: 3,
            kernel_stack_id: -14,
            comm: [0; 16],
            time_slot: 11,
            python_stack_id: -1,
        };
        let bytes = bytes_of(&key).to_vec();
        let back: stack_key = read(&bytes).unwrap();
        assert_eq!(
            (back.tgid, back.tid, back.address_space),
            (7, 9, 0xdead_beef)
        );
        assert_eq!(
            (back.user_stack_id, back.kernel_stack_id, back.time_slot),
            (3, -14, 11)
        );
        assert!(read::<stack_key>(&bytes[..47]).is_none());
    }

    #[test]
    fn c_strings_end_at_the_first_nul() {
        let mut name = [0i8; 16];
        for (slot, byte) in name.iter_mut().zip(b"burn\0junk") {
            *slot = *byte as i8;
        }
        assert_eq!(c_string(&name), "burn");
    }

    #[test]
    fn connections_decode_both_families() {
        let mut raw = connection {
            family: 2,
            local_port: 80,
            remote_port: 4242,
            ..Default::default()
        };
        raw.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        raw.remote_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let decoded = decode_connection(&raw);
        assert_eq!(decoded.local.to_string(), "127.0.0.1");
        assert_eq!((decoded.local_port, decoded.remote_port), (80, 4242));
        raw.family = 10;
        raw.local_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        assert_eq!(decode_connection(&raw).local.to_string(), "::1");
    }
}
