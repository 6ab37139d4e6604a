//! Unwind tables cached on disk, so a restart does not parse CFI again.
//!
//! The cache is shared by every run on the host and its inputs come from
//! files any user may write, so:
//! - entries are keyed by content: a SHA-256 of everything the table was
//!   built from (`.eh_frame` and the addresses that place it), never by a
//!   build ID, which anyone can forge to plant a table under another
//!   program's ID;
//! - it is a `PrivateDir` (0700, owned by this user, entries written
//!   through exclusive temporary names), bounded in total size.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::host::private_dir::PrivateDir;
use crate::layouts;
use crate::unwind::table::{ElfImage, Row};

/// Entry files start with this (the row layout's version; 03: signal
/// trampolines have their own rule).
const CACHE_MAGIC: &[u8; 8] = b"BPFSUW03";
/// The most the cache directory holds before old entries are pruned.
pub const MAX_CACHE_BYTES: u64 = 256 << 20;

/// Unwind tables cached on disk, one file per table content key.
pub struct TableCache {
    dir: Option<PrivateDir>,
    max_bytes: u64,
}

/// `$BPFSCOPE_CACHE_DIR`, else /var/cache/bpfscope/unwind.
pub fn default_dir() -> PathBuf {
    std::env::var_os("BPFSCOPE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/bpfscope/unwind"))
}

/// The content key of a table: hex SHA-256 of what it is built from.
pub fn content_key(image: &ElfImage) -> String {
    let (addresses, contents) = image.table_source();
    let mut hash = Sha256::new();
    hash.update(CACHE_MAGIC);
    for address in addresses {
        hash.update(address.to_le_bytes());
    }
    hash.update(contents);
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl TableCache {
    /// Opens (creating it 0700) the cache directory; a path that is not a
    /// directory owned by this user, or is a symlink, leaves the cache off.
    pub fn open(dir: &Path) -> Result<TableCache, String> {
        Ok(TableCache {
            dir: Some(PrivateDir::open(dir, "unwind cache")?),
            max_bytes: MAX_CACHE_BYTES,
        })
    }

    /// The cache at the default place, or none (said once on stderr).
    pub fn at_default() -> TableCache {
        TableCache::open(&default_dir()).unwrap_or_else(|reason| {
            eprintln!("bpfscope: note: {reason}; unwind tables are not cached");
            TableCache::disabled()
        })
    }

    /// A cache that never has anything and stores nothing.
    pub fn disabled() -> TableCache {
        TableCache {
            dir: None,
            max_bytes: 0,
        }
    }

    /// Whether entries are loaded and stored at all.
    pub fn is_enabled(&self) -> bool {
        self.dir.is_some()
    }

    pub fn load(&self, key: &str) -> Option<Vec<Row>> {
        let mut file = self
            .dir
            .as_ref()?
            .open_entry(&format!("{key}.rows"), libc::O_RDONLY, 0)?;
        let metadata = file.metadata().ok()?;
        if !metadata.file_type().is_file() || metadata.size() > self.max_bytes {
            return None;
        }
        let mut bytes = Vec::with_capacity(metadata.size() as usize);
        file.read_to_end(&mut bytes).ok()?;
        let body = bytes.strip_prefix(CACHE_MAGIC.as_slice())?;
        let row_size = std::mem::size_of::<Row>();
        if body.len() % row_size != 0 {
            return None;
        }
        // Used now: pruning keeps the most recently used entries.
        file.set_modified(SystemTime::now()).ok();
        Some(
            body.chunks_exact(row_size)
                .filter_map(layouts::read::<Row>)
                .collect(),
        )
    }

    /// Writes an entry through an exclusively created temporary file, renamed into place.
    pub fn store(&self, key: &str, rows: &[Row]) {
        let Some(dir) = self.dir.as_ref() else {
            return;
        };
        let mut bytes = CACHE_MAGIC.to_vec();
        for row in rows {
            bytes.extend_from_slice(layouts::bytes_of(row));
        }
        if bytes.len() as u64 > self.max_bytes / 4 {
            return; // one table may not take over the cache
        }
        dir.write_entry(&format!("{key}.rows"), |file| {
            file.write_all(&bytes).is_ok()
        });
        dir.prune(".rows", self.max_bytes);
    }

    #[cfg(test)]
    fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("bpfscope-cache-{name}-{}", std::process::id()));
        fs::remove_dir_all(&dir).ok();
        dir
    }

    fn rows(count: u32) -> Vec<Row> {
        (0..count)
            .map(|pc| Row {
                pc,
                cfa_offset: 8,
                cfa_rule: 1,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn stores_loads_and_is_private() {
        let dir = scratch("private");
        let cache = TableCache::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        cache.store("abc", &rows(3));
        assert_eq!(cache.load("abc").unwrap().len(), 3);
        assert!(cache.load("missing").is_none());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_planted_symlinks() {
        let dir = scratch("symlink");
        let target = scratch("symlink-target");
        fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        assert!(
            TableCache::open(&dir).is_err(),
            "the directory is a symlink"
        );
        fs::remove_file(&dir).unwrap();
        let cache = TableCache::open(&dir).unwrap();
        let victim = target.join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("abc.rows")).unwrap();
        assert!(
            cache.load("abc").is_none(),
            "an entry that is a symlink is not read"
        );
        cache.store("abc", &rows(2));
        assert_eq!(fs::read(&victim).unwrap(), b"keep", "nor written through");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&target).unwrap();
    }

    #[test]
    fn stays_within_its_bound() {
        let dir = scratch("bound");
        let cache = TableCache::open(&dir).unwrap().with_max_bytes(64 << 10);
        for key in 0..20 {
            cache.store(&format!("k{key}"), &rows(256)); // 4 KiB each
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let total: u64 = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().size())
            .sum();
        assert!(total <= 64 << 10, "{total} bytes");
        assert!(cache.load("k19").is_some(), "the newest entry is kept");
        assert!(cache.load("k0").is_none(), "the oldest was pruned");
        fs::remove_dir_all(&dir).unwrap();
    }
}
