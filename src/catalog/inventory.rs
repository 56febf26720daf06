//! One walk of a model folder, shared by health, size and detection.
//!
//! Symlinked directories are not descended (as Python's `rglob`); every link is resolved once,
//! so a dangling link or one that leaves the model's folders is recorded, never fatal. OS
//! junk names (`._*` sidecars, `.DS_Store`, …: [`crate::osjunk`]) are not model files: they
//! are skipped (not in sizes, health or detection) and counted in [`Inventory::junk`].

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::hash::resolve_link;

/// What a symlink turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    NotALink,
    /// Target exists inside one of the model's own folders ([`crate::catalog::ModelRef::link_roots`]).
    Inside,
    /// Target does not exist.
    Dangling,
    /// Target exists but is outside every one of the model's own folders.
    Escapes,
}

/// One entry below a model folder.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the model folder, `/`-separated (lossy for non-UTF-8 names).
    pub rel: String,
    pub name: String,
    pub path: PathBuf,
    pub link: LinkState,
    /// Followed type and size (None when dangling or unreadable).
    pub is_file: bool,
    pub is_dir: bool,
    pub size: u64,
    /// True for entries under the workspace's `.hf_cache/` (runtime artifacts).
    pub in_hf_cache: bool,
    pub non_utf8: bool,
}

/// All entries of a model folder.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub entries: Vec<Entry>,
    /// Folders that could not be read (relative paths).
    pub unreadable: Vec<String>,
    /// OS junk entries skipped (relative paths; folders are not descended).
    pub junk: Vec<String>,
    /// Folders where another file system is mounted (relative paths): not descended, so a
    /// walk never wanders onto another disk, or into a FUSE mount (mlxfs's own included).
    pub other_fs: Vec<String>,
}

impl Inventory {
    /// Walk `root`. Links must resolve inside one of `roots`, real (canonical) folders: the
    /// model's own ([`crate::catalog::ModelRef::link_roots`]).
    pub fn scan(root: &Path, roots: &crate::catalog::LinkRoots) -> Inventory {
        let mut inv = Inventory::default();
        // Walk from the resolved root: every folder reached is then resolved too (symlinked
        // folders are not descended), so a link resolves from its parent without a full
        // realpath of each path component.
        let root = match roots.real_path_of(root) {
            Some(real) => real.to_path_buf(),
            None => fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
        };
        let dev = fs::metadata(&root).map(|m| m.dev()).ok();
        let mut links = Links::default();
        let mut stack = vec![(root, String::new(), false)];
        while let Some((dir, prefix, in_cache)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(_) => {
                    inv.unreadable.push(if prefix.is_empty() {
                        ".".into()
                    } else {
                        prefix
                    });
                    continue;
                }
            };
            for e in rd.flatten() {
                let os_name = e.file_name();
                let non_utf8 = os_name.to_str().is_none();
                let name = os_name.to_string_lossy().into_owned();
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if crate::osjunk::is_os_junk(&os_name) {
                    inv.junk.push(rel);
                    continue;
                }
                let path = e.path();
                let Ok(ft) = e.file_type() else { continue };
                let in_hf_cache = in_cache || (prefix.is_empty() && name == ".hf_cache");
                let (link, md) = if ft.is_symlink() {
                    match links.follow(&dir, &path) {
                        (_, None) => (LinkState::Dangling, None),
                        (target, Some(md)) => {
                            if target.is_some_and(|t| roots.contains(&t)) {
                                (LinkState::Inside, Some(md))
                            } else {
                                (LinkState::Escapes, Some(md))
                            }
                        }
                    }
                } else {
                    // Relative to the open folder: one path component for the kernel to walk.
                    (LinkState::NotALink, e.metadata().ok())
                };
                let is_dir = md.as_ref().is_some_and(|m| m.is_dir());
                let is_file = md.as_ref().is_some_and(|m| m.is_file());
                let size = md.as_ref().map_or(0, |m| m.len());
                if is_dir && link == LinkState::NotALink {
                    if dev.is_some() && md.as_ref().map(|m| m.dev()) != dev {
                        inv.other_fs.push(rel.clone());
                    } else {
                        stack.push((path.clone(), rel.clone(), in_hf_cache));
                    }
                }
                inv.entries.push(Entry {
                    rel,
                    name,
                    path,
                    link,
                    is_file,
                    is_dir,
                    size,
                    in_hf_cache,
                    non_utf8,
                });
            }
        }
        inv.entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        inv.junk.sort();
        inv
    }

    /// Entries that count for health (everything but `.hf_cache/`).
    pub fn model_entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| !e.in_hf_cache)
    }

    /// Top-level entry by name.
    pub fn top(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.rel == name)
    }

    /// Does a top-level regular file (links followed) with this name exist?
    pub fn has_file(&self, name: &str) -> bool {
        self.top(name).is_some_and(|e| e.is_file)
    }

    /// Σ sizes of files (links followed), as mlx-knife's `size_bytes`.
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.is_file)
            .fold(0u64, |n, e| n.saturating_add(e.size))
    }
}

/// Following the links of one walk. A hub snapshot's links all lead to the same `blobs/`
/// folder: once a folder is known not to be a link it is not looked at again, and the last
/// component's `lstat` is the followed metadata when it is not a link itself, so a link costs
/// a `readlink` and one `lstat` instead of a followed `stat`, a `readlink` and an `lstat` per
/// target component (issue 15 §1).
#[derive(Default)]
pub struct Links {
    /// Real folders (not links) met so far.
    real_dirs: HashSet<PathBuf>,
}

impl Links {
    /// Link `path` found in the resolved folder `dir`: where it leads (as
    /// [`resolve_link`]: `None` on a loop) and the metadata of what it leads to (as
    /// `fs::metadata(path)`: `None` when dangling).
    pub fn follow(&mut self, dir: &Path, path: &Path) -> (Option<PathBuf>, Option<fs::Metadata>) {
        let Ok(target) = fs::read_link(path) else {
            return (None, fs::metadata(path).ok());
        };
        if let Some(found) = self.fast(dir, &target) {
            return found;
        }
        (resolve_link(dir, &target), fs::metadata(path).ok())
    }

    /// The common case: a relative target of `..` and names whose folders are real and whose
    /// last component is not a link. `None` when the case does not apply (then the caller
    /// resolves the general way).
    fn fast(
        &mut self,
        dir: &Path,
        target: &Path,
    ) -> Option<(Option<PathBuf>, Option<fs::Metadata>)> {
        let comps: Vec<Component> = target.components().collect();
        let (last, folders) = comps.split_last()?;
        let Component::Normal(last) = last else {
            return None;
        };
        let mut at = dir.to_path_buf();
        for c in folders {
            match c {
                Component::ParentDir => {
                    if !at.pop() {
                        return None;
                    }
                }
                Component::CurDir => {}
                Component::Normal(n) => {
                    at.push(n);
                    if !self.real_dirs.contains(&at) {
                        let md = fs::symlink_metadata(&at).ok()?;
                        if !md.is_dir() {
                            return None;
                        }
                        self.real_dirs.insert(at.clone());
                    }
                }
                _ => return None,
            }
        }
        at.push(last);
        match fs::symlink_metadata(&at) {
            Ok(md) if md.file_type().is_symlink() => None,
            Ok(md) => Some((Some(at), Some(md))),
            // Nothing there: the link dangles (resolve_link still names the place).
            Err(_) => Some((Some(at), None)),
        }
    }
}
