//! A module: one executable mapping of a file (or of a pseudo-file such as
//! `[vdso]`) in a process, which frames are located in and named from.

use std::path::PathBuf;

/// One executable mapping of a file (or a pseudo-file such as `[vdso]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Module {
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    /// The file's device ("fe:00") and inode; inode 0 for pseudo-files.
    pub device: String,
    pub inode: u64,
    /// The file's GNU build ID (hex), where it has one and it could be read.
    pub build_id: Option<String>,
}

impl Module {
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.to_string_lossy().into_owned())
    }
}
