//! Names of JIT-compiled code from perf maps (`/tmp/perf-PID.map`, one
//! `START SIZE NAME` line per code object, in hex with or without `0x`),
//! as V8 (`--perf-basic-prof`), CPython (`-X perf`) and the JVM
//! (`jcmd PID Compiler.perfmap`) write them.
//!
//! A process in another mount or PID namespace writes its map in its own
//! `/tmp` under its own PID: that is read first, as
//! `/proc/PID/root/tmp/perf-NSPID.map` (NSPID: the last field of `NStgid`)
//! resolved inside the process's root, then the host's `/tmp/perf-PID.map`
//! (maps written by an agent outside the container).
//!
//! The file is the process owner's: it is used only when owned by the
//! process's user (so nobody can plant a map, or a symlink to another
//! file, for someone else's process), opened without blocking, must be a
//! regular file, and is read with bounded reads. Runtimes append while
//! they run, so a map is re-read from where it was left when it has grown,
//! and from the start when it shrank or was replaced; it stays open, and is
//! read to its end once more when collection ends (`read_to_end`), even if
//! its process has exited by then. At most
//! `MAX_ENTRIES` entries are kept per process, within the memory budget's
//! limit for one perf map and its total (later entries replace earlier
//! ones at the same address; past MAX_ENTRIES new entries are dropped and
//! counted; past the budget the rest of the map is not read, counted in
//! bytes). Two processes whose maps are links to one file each pay.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::host::memory_budget::{budget, Kind, Reservation};
use crate::host::object_files::{ObjectFile, MAX_OBJECT_SIZE};

/// How CPython (`-X perf`) names its trampolines: `py::QUALNAME:FILE`.
pub const CPYTHON_TRAMPOLINE_PREFIX: &str = "py::";

/// Entries kept per process: a map can grow without end.
pub const MAX_ENTRIES: usize = 1 << 20;
/// The longest line read; longer ones are skipped.
const MAX_LINE: usize = 4096;
/// Bytes an entry costs besides its name (tree node, addresses, string header).
const ENTRY_OVERHEAD: u64 = 64;

/// One process's perf map as read so far.
#[derive(Debug, Default)]
pub struct PerfMap {
    /// start → (end, name); the latest entry at a start wins.
    entries: BTreeMap<u64, (u64, String)>,
    /// Which file was read, and how far.
    source: Option<(u64, u64)>,
    read_to: u64,
    /// Entries not kept because the map was full.
    pub dropped: u64,
    /// Lines parsed so far, and the time spent reading them.
    pub lines_read: u64,
    pub read_time: Duration,
    /// The entries' share of the memory budget.
    held: Option<Reservation>,
    /// The budget refused this map more room: the rest of it is not read.
    full: bool,
    /// Bytes of the map not read because it was full.
    pub skipped_bytes: u64,
    /// The map as last opened, read to its end once more after collection.
    file: Option<fs::File>,
}

/// Parses one `START SIZE NAME` line.
fn parse_line(line: &str) -> Option<(u64, u64, &str)> {
    let mut fields = line.splitn(3, ' ');
    let hex = |text: &str| {
        let digits = text.strip_prefix("0x").unwrap_or(text);
        u64::from_str_radix(digits, 16).ok()
    };
    let start = hex(fields.next()?)?;
    let size = hex(fields.next()?)?;
    let name = fields.next()?.trim_end();
    (size > 0 && !name.is_empty()).then_some((start, start.checked_add(size)?, name))
}

/// A process's innermost PID (its PID in its own namespace) and real UID.
fn namespace_pid_and_uid(tgid: u32) -> Option<(u32, u32)> {
    let status = fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name));
    let pid = field("NStgid:")?.split_whitespace().last()?.parse().ok()?;
    let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
    Some((pid, uid))
}

/// The perf map of a living `tgid`: its own root's first, then the host's;
/// only a file its user owns.
fn open_map(tgid: u32) -> Option<ObjectFile> {
    let (pid, uid) = namespace_pid_and_uid(tgid)?;
    let own = fs::File::open(format!("/proc/{tgid}/root"))
        .ok()
        .and_then(|root| {
            let path = format!("/tmp/perf-{pid}.map");
            ObjectFile::open_in_root(&root.into(), Path::new(&path)).ok()
        });
    own.into_iter()
        .chain(ObjectFile::open_named(Path::new(&format!("/tmp/perf-{tgid}.map"))).ok())
        .find(|map| map.owner == uid)
}

impl PerfMap {
    /// Reads what was appended to the process's map since the last call
    /// (all of it when the file is new, replaced or shorter), and keeps
    /// the map open for `read_to_end`.
    pub fn refresh(&mut self, tgid: u32) {
        let Some(map) = open_map(tgid) else {
            return;
        };
        let identity = (map.device, map.inode);
        if self.source != Some(identity) || map.size < self.read_to {
            *self = PerfMap {
                dropped: self.dropped,
                lines_read: self.lines_read,
                read_time: self.read_time,
                skipped_bytes: self.skipped_bytes,
                ..PerfMap::default()
            };
            self.source = Some(identity);
        }
        self.file = map.file().try_clone().ok();
        self.read_to_end();
    }

    /// Reads the map opened last to its end as it is now: runtimes append
    /// until they exit, so this is called once more after collection,
    /// when the process may be gone (its map is still open here).
    pub fn read_to_end(&mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        let started = Instant::now();
        let size = file.metadata().map_or(0, |metadata| metadata.len());
        let size = size.min(MAX_OBJECT_SIZE);
        if size < self.read_to {
            self.file = Some(file); // shrunk since: a new map is read whole by refresh
            return;
        }
        if self.full {
            self.skipped_bytes += size - self.read_to;
            self.read_to = size;
            self.file = Some(file);
            return;
        }
        let mut offset = self.read_to;
        let mut chunk = vec![0u8; 1 << 20];
        let mut pending: Vec<u8> = Vec::new();
        while offset < size {
            let want = chunk.len().min((size - offset) as usize);
            let Ok(read) = file.read_at(&mut chunk[..want], offset) else {
                break;
            };
            if read == 0 {
                break;
            }
            offset += read as u64;
            pending.extend_from_slice(&chunk[..read]);
            let complete = match pending.iter().rposition(|&b| b == b'\n') {
                Some(last) => last + 1,
                None if pending.len() > MAX_LINE => {
                    pending.clear(); // a line too long to be a perf map's
                    continue;
                }
                None => continue,
            };
            self.add_lines(&pending[..complete]);
            pending.drain(..complete);
            if self.full {
                // The rest could not be kept: it is not read.
                self.skipped_bytes += size - offset;
                offset = size;
                pending.clear();
            }
        }
        // A last line without its newline is read again next time.
        self.read_to = offset - pending.len() as u64;
        self.read_time += started.elapsed();
        self.file = Some(file);
    }

    /// Entries kept now.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    fn add_lines(&mut self, text: &[u8]) {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        for line in text.split(|&b| b == b'\n') {
            self.lines_read += 1;
            if line.len() > MAX_LINE {
                continue;
            }
            let Some((start, end, name)) = std::str::from_utf8(line).ok().and_then(parse_line)
            else {
                continue;
            };
            let replaced = self
                .entries
                .get(&start)
                .map_or(0, |(_, old)| old.len() as u64);
            if replaced == 0 && self.entries.len() >= MAX_ENTRIES {
                self.dropped += 1;
                continue;
            }
            if !self.hold(name, replaced) {
                self.full = true;
                return;
            }
            self.entries.insert(start, (end, name.to_string()));
        }
    }

    /// Takes room in the memory budget for an entry named `name` that
    /// replaces one whose name had `replaced` bytes (0: a new entry).
    fn hold(&mut self, name: &str, replaced: u64) -> bool {
        let wanted = name.len() as u64 + if replaced == 0 { ENTRY_OVERHEAD } else { 0 };
        let held = match &mut self.held {
            Some(held) => held,
            None => {
                self.held = budget().reserve(Kind::PerfMap, wanted.saturating_sub(replaced));
                return self.held.is_some();
            }
        };
        if wanted >= replaced {
            held.grow(wanted - replaced)
        } else {
            held.shrink(replaced - wanted);
            true
        }
    }

    /// The address ranges of the entries whose names start with `prefix`,
    /// neighbours (at most 64 bytes apart) merged.
    pub fn ranges_named(&self, prefix: &str) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (&start, (end, name)) in &self.entries {
            if !name.starts_with(prefix) {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if start <= last.1 + 64 => last.1 = last.1.max(*end),
                _ => ranges.push((start, *end)),
            }
        }
        ranges
    }

    /// The name of the code object at `address`, if the map has one.
    pub fn name(&self, address: u64) -> Option<&str> {
        let (_, (end, name)) = self.entries.range(..=address).next_back()?;
        (address < *end).then_some(name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_address_forms_and_keeps_the_latest_entry() {
        let mut map = PerfMap::default();
        map.add_lines(
            b"7f00 10 JS:*burnThree /app/split.js:4:19\n\
              0x8000 0x20 Lcom/example/Split;::burnOne\n\
              7f00 8 JS:^burnThree /app/split.js:4:19\n\
              junk line\n",
        );
        assert_eq!(map.name(0x7f04), Some("JS:^burnThree /app/split.js:4:19"));
        assert_eq!(
            map.name(0x7f08),
            None,
            "the latest entry at 7f00 is 8 bytes"
        );
        assert_eq!(map.name(0x801f), Some("Lcom/example/Split;::burnOne"));
        assert_eq!(map.name(0x8020), None);
        map.add_lines(b"9000 b py::a:/x.py\n9010 b py::b:/x.py\n9400 b py::c:/x.py\n");
        assert_eq!(
            map.ranges_named("py::"),
            vec![(0x9000, 0x901b), (0x9400, 0x940b)]
        );
    }

    #[test]
    fn reads_appended_lines_of_its_own_map() {
        let me = std::process::id();
        let path = format!("/tmp/perf-{me}.map");
        fs::write(&path, "1000 10 first\n2000 10 sec").unwrap();
        let mut map = PerfMap::default();
        map.refresh(me);
        assert_eq!(map.name(0x1008), Some("first"));
        assert_eq!(map.name(0x2008), None, "a line without its newline waits");
        std::io::Write::write_all(
            &mut fs::OpenOptions::new().append(true).open(&path).unwrap(),
            b"ond\n3000 10 third\n",
        )
        .unwrap();
        map.refresh(me);
        assert_eq!(map.name(0x2008), Some("second"));
        assert_eq!(map.name(0x3008), Some("third"));
        assert_eq!((map.lines_read, map.entry_count()), (3, 3));
        fs::remove_file(&path).unwrap();
    }
}
