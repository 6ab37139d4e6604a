//! Names for cgroup v2 ids, for `serve --cgroup-labels`. BPF keys series by
//! the id the kernel gives a cgroup (its directory's inode number in the
//! cgroup2 filesystem); a label needs its path, found by walking the cgroup2
//! mount. Ids of removed cgroups resolve to nothing, so their series can be
//! dropped and the maps stay bounded under container churn.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::host::target::cgroup2_mount;

#[derive(Default)]
pub struct CgroupNames {
    /// Where cgroup2 is mounted, found at the first walk.
    root: Option<PathBuf>,
    names: HashMap<u64, String>,
}

/// Every cgroup directory under `root` by id, named by its path from `root`
/// ("/" for the root itself).
fn walk(root: &Path) -> HashMap<u64, String> {
    let mut names = HashMap::new();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(metadata) = fs::symlink_metadata(&dir) else {
            continue; // removed while walking
        };
        let relative = dir.strip_prefix(root).unwrap_or(&dir);
        names.insert(metadata.ino(), format!("/{}", relative.display()));
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    names
}

impl CgroupNames {
    /// Whether the path known for `id` still is that cgroup (the directory
    /// exists with that inode: removed cgroups and recreated names fail).
    fn still_named(&self, id: u64) -> bool {
        let (Some(root), Some(path)) = (&self.root, self.names.get(&id)) else {
            return false;
        };
        fs::symlink_metadata(root.join(path.trim_start_matches('/')))
            .is_ok_and(|metadata| metadata.ino() == id)
    }

    /// Resolves `ids`, walking the hierarchy again once if any is unknown.
    /// Returns each id's path, or None for cgroups that no longer exist.
    pub fn resolve(&mut self, ids: impl IntoIterator<Item = u64>) -> HashMap<u64, Option<String>> {
        let ids: Vec<u64> = ids.into_iter().collect();
        if ids.iter().any(|id| !self.still_named(*id)) {
            self.root = self.root.take().or_else(cgroup2_mount);
            self.names = self.root.as_deref().map(walk).unwrap_or_default();
        }
        ids.into_iter()
            .map(|id| (id, self.names.get(&id).cloned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_names_directories_by_inode() {
        let root = std::env::temp_dir().join(format!("bpfscope-cgwalk-{}", std::process::id()));
        fs::create_dir_all(root.join("a/b")).unwrap();
        let names = walk(&root);
        let inode = |path: &Path| fs::metadata(path).unwrap().ino();
        assert_eq!(names[&inode(&root)], "/");
        assert_eq!(names[&inode(&root.join("a/b"))], "/a/b");
        fs::remove_dir_all(&root).unwrap();
    }
}
