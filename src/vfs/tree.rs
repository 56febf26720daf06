//! One immutable snapshot of the mount's tree: nodes by inode number, the models it shows, and
//! what it deliberately leaves out. Refreshes build a new one ([`super::build`]).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::catalog::ModelRef;

/// An inode number (FUSE's `ino`).
pub type Ino = u64;
/// The root folder's inode number.
pub const ROOT_INO: Ino = 1;

/// A node's file type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows for a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    /// Bytes (a virtual file's size is that of its rendered content, see `Vfs::attr`).
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub mtime: SystemTime,
    /// Permission bits (read-only: 0o555 folders, 0o444 files, 0o777 links).
    pub perm: u16,
    /// Link count (folders: 2 + sub-folders).
    pub nlink: u32,
}

/// A virtual file: which content to render.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Virtual {
    /// Root: the `list --json` envelope.
    ModelsJson,
    /// Root: one line per model.
    FleetHealth,
    /// Root: daemon facts.
    Status,
    /// Root: the catalog (`list`/`health` data), rendered on open after a barrier.
    Catalog,
    /// Per model (index into `Tree::models`): the record.
    ModelJson(usize),
    /// Per model: `healthy` or `unhealthy: <reason>`.
    Health(usize),
    /// Per model: the content-hash state.
    Hash(usize),
    /// Per model: the sentinel, or a record of a hub model's origin.
    Sentinel(usize),
    /// Per model: what its isolated runtime cache holds, with the offline-readiness verdict.
    RuntimeCache(usize),
}

/// What a node holds.
#[derive(Clone, Debug)]
pub enum Content {
    /// A folder: child name → inode.
    Dir(BTreeMap<OsString, Ino>),
    /// A regular file read from this real path (a workspace file or a hub blob).
    Backed(PathBuf),
    /// A symlink with a relative target that stays inside its model.
    Link(OsString),
    Virtual(Virtual),
}

/// One entry of the tree.
#[derive(Clone, Debug)]
pub struct Node {
    pub parent: Ino,
    pub name: OsString,
    pub attr: Attr,
    pub content: Content,
}

/// A model shown in the tree.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub model: ModelRef,
    /// The model's folder in the tree.
    pub dir: Ino,
    /// Its path in the mount (`org/repo`, `org/repo@abc1234`, `my-ws`), lossy for names that
    /// are not UTF-8.
    pub mount_path: String,
}

/// Something on disk the tree deliberately does not show, and why (`status.json` lists
/// these: nothing is hidden silently).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hidden {
    /// The real path that is not shown.
    pub path: String,
    pub why: String,
}

/// One immutable snapshot of the tree.
#[derive(Debug)]
pub struct Tree {
    pub nodes: HashMap<Ino, Node>,
    pub models: Vec<ModelEntry>,
    /// What this tree leaves out on purpose (see [`Hidden`]).
    pub hidden: Vec<Hidden>,
    pub generation: u64,
    pub built_at: SystemTime,
}

/// Why a request fails; the adapter maps it to an errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VfsError {
    /// ENOENT.
    NotFound,
    /// ENOTDIR.
    NotDir,
    /// EISDIR.
    IsDir,
    /// EINVAL (readlink of something that is not a link).
    NotLink,
    /// EBADF: no open file with this handle.
    BadHandle,
    /// EROFS: the tree is read-only.
    ReadOnly,
    /// The backing file system's error (raw errno).
    Io(i32),
}

impl VfsError {
    /// From an I/O error of the backing file system (EIO when it carries no errno).
    pub fn io(e: &std::io::Error) -> VfsError {
        VfsError::Io(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Path → inode number, never recycled, so unchanged paths keep their inode across refreshes.
#[derive(Debug)]
pub struct Inodes {
    by_path: HashMap<PathBuf, Ino>,
    next: Ino,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut by_path = HashMap::new();
        by_path.insert(PathBuf::new(), ROOT_INO);
        Inodes {
            by_path,
            next: ROOT_INO + 1,
        }
    }
}

impl Inodes {
    /// The inode of a mount-relative path, allocated on first sight.
    pub fn get(&mut self, vpath: &Path) -> Ino {
        if let Some(&i) = self.by_path.get(vpath) {
            return i;
        }
        let i = self.next;
        self.next += 1;
        self.by_path.insert(vpath.to_path_buf(), i);
        i
    }
}

impl Tree {
    pub fn node(&self, ino: Ino) -> Result<&Node, VfsError> {
        self.nodes.get(&ino).ok_or(VfsError::NotFound)
    }

    /// The child `name` of folder `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, VfsError> {
        match &self.node(parent)?.content {
            Content::Dir(children) => children.get(name).copied().ok_or(VfsError::NotFound),
            _ => Err(VfsError::NotDir),
        }
    }

    /// Entries of a folder with `.` and `..` first.
    pub fn entries(&self, ino: Ino) -> Result<Vec<(Ino, Kind, OsString)>, VfsError> {
        let node = self.node(ino)?;
        let Content::Dir(children) = &node.content else {
            return Err(VfsError::NotDir);
        };
        let mut out = Vec::with_capacity(children.len() + 2);
        out.push((ino, Kind::Dir, OsString::from(".")));
        out.push((node.parent, Kind::Dir, OsString::from("..")));
        for (name, &c) in children {
            if let Some(n) = self.nodes.get(&c) {
                out.push((c, n.attr.kind, name.clone()));
            }
        }
        Ok(out)
    }

    /// The inode at a mount-relative path (`org/repo/config.json`).
    pub fn resolve_path(&self, path: &Path) -> Result<Ino, VfsError> {
        let mut ino = ROOT_INO;
        for c in path.components() {
            if let Component::Normal(n) = c {
                ino = self.lookup(ino, n)?;
            }
        }
        Ok(ino)
    }

    /// The mount-relative path of a node (`None` for an inode not in this tree).
    pub fn path_of(&self, mut ino: Ino) -> Option<PathBuf> {
        let mut parts = Vec::new();
        while ino != ROOT_INO {
            let n = self.nodes.get(&ino)?;
            parts.push(n.name.clone());
            ino = n.parent;
            if parts.len() > self.nodes.len() {
                return None; // a cycle cannot be built, but never loop on one
            }
        }
        Some(parts.iter().rev().collect())
    }
}
