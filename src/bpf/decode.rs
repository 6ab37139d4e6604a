//! Names of the values BPF programs report, for every tool and for serve:
//! block I/O operations and flags (biolatency's normalized flags) and file
//! system operation classes (fslatency's `enum fs_op`).

use crate::layouts::{block_flag, fs_op};

/// BCC-style names of biolatency's normalized flags: the request operation
/// (low 8 bits) and the `enum block_flag` bits, e.g. "Sync-Write".
pub fn describe_block_flags(flags: u64) -> String {
    let operation = match flags & 0xff {
        0 => "Read",
        1 => "Write",
        2 => "Flush",
        3 => "Discard",
        5 => "SecureErase",
        9 => "WriteZeroes",
        _ => "Unknown",
    };
    let mut words: Vec<&str> = [
        (block_flag::BLOCK_FLAG_SYNC, "Sync"),
        (block_flag::BLOCK_FLAG_META, "Metadata"),
        (block_flag::BLOCK_FLAG_FUA, "ForcedUnitAccess"),
        (block_flag::BLOCK_FLAG_PREFLUSH, "PreFlush"),
        (block_flag::BLOCK_FLAG_RAHEAD, "ReadAhead"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit.0 as u64 != 0)
    .map(|(_, word)| *word)
    .collect();
    words.push(operation);
    words.join("-")
}

/// The name of an `enum fs_op` value ("read", "write", "open", "fsync").
pub fn fs_operation_name(op: u64) -> &'static str {
    match u32::try_from(op).map(fs_op) {
        Ok(fs_op::FS_OP_READ) => "read",
        Ok(fs_op::FS_OP_WRITE) => "write",
        Ok(fs_op::FS_OP_OPEN) => "open",
        Ok(fs_op::FS_OP_FSYNC) => "fsync",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_flags_and_operations() {
        assert_eq!(describe_block_flags(1 | 1 << 8), "Sync-Write");
        assert_eq!(describe_block_flags(0), "Read");
        assert_eq!(fs_operation_name(4), "fsync");
        assert_eq!(fs_operation_name(0), "unknown");
    }
}
