//! One immutable snapshot of the mount's tree: nodes by inode number, the models it shows, and
//! what it deliberately leaves out. Refreshes build a new one ([`super::build`]).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, RandomState};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::catalog::ModelRef;

/// An inode number (FUSE's `ino`).
pub type Ino = u64;
/// The root folder's inode number.
pub const ROOT_INO: Ino = 1;

/// A node's file type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows for a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attr {
    pub kind: Kind,
    /// Bytes (a virtual file's size is that of its rendered content, see `Vfs::attr`).
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub mtime: SystemTime,
    /// Permission bits: a backed file's or folder's own (writes fail with EROFS anyway);
    /// 0o755 for the folders the mount makes up, 0o444 for virtual files, 0o777 for links.
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

/// The real path behind a file of the tree: its folder, shared by the files of one folder
/// (a hub model's blobs, a workspace folder's files), and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backing {
    pub dir: Arc<Path>,
    pub file: Box<OsStr>,
    /// The file's (device, inode) when the tree was built: a file replaced by rename keeps
    /// its path, size and maybe its time, but not this, so the tree sees the change (and the
    /// kernel drops what it cached of the old file).
    pub id: (u64, u64),
}

impl Backing {
    /// `path` as folder and name (a path without a parent folder stays whole in `dir`).
    pub fn new(path: &Path, id: (u64, u64), last_dir: &mut Option<Arc<Path>>) -> Backing {
        let (Some(parent), Some(file)) = (path.parent(), path.file_name()) else {
            return Backing {
                dir: Arc::from(path),
                file: Box::from(OsStr::new("")),
                id,
            };
        };
        let dir = match last_dir {
            Some(d) if **d == *parent => d.clone(),
            _ => {
                let d: Arc<Path> = Arc::from(parent);
                *last_dir = Some(d.clone());
                d
            }
        };
        Backing {
            dir,
            file: Box::from(file),
            id,
        }
    }

    /// The whole path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&*self.file)
    }
}

/// What a node holds.
#[derive(Clone, Debug, Hash)]
pub enum Content {
    /// A folder: child name → inode (the names are shared with the children's [`Node::name`]).
    Dir(BTreeMap<Arc<OsStr>, Ino>),
    /// A regular file read from this real path (a workspace file or a hub blob).
    Backed(Backing),
    /// A symlink with a relative target that stays inside its model.
    Link(OsString),
    Virtual(Virtual),
}

/// One entry of the tree.
#[derive(Clone, Debug)]
pub struct Node {
    pub parent: Ino,
    pub name: Arc<OsStr>,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Hash)]
pub struct Hidden {
    /// The real path that is not shown.
    pub path: String,
    pub why: String,
}

/// The nodes of a tree by inode number: a vector indexed by the number, since [`Inodes`]
/// hands them out densely from [`ROOT_INO`] (a hash map cost 2.5× the memory, issue 15 §4).
#[derive(Debug, Default)]
pub struct Nodes {
    slots: Vec<Option<Node>>,
    len: usize,
}

impl Nodes {
    pub fn get(&self, ino: &Ino) -> Option<&Node> {
        self.slots.get(usize::try_from(*ino).ok()?)?.as_ref()
    }

    pub fn get_mut(&mut self, ino: &Ino) -> Option<&mut Node> {
        self.slots.get_mut(usize::try_from(*ino).ok()?)?.as_mut()
    }

    pub fn contains_key(&self, ino: &Ino) -> bool {
        self.get(ino).is_some()
    }

    /// Put `node` at `ino` (replacing what was there).
    ///
    /// # Panics
    /// When `ino` does not fit in memory's address range (never: inodes are counted from 1).
    pub fn insert(&mut self, ino: Ino, node: Node) {
        let i = usize::try_from(ino).expect("inode numbers fit in usize");
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        if self.slots[i].replace(node).is_none() {
            self.len += 1;
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The inode numbers, ascending.
    pub fn keys(&self) -> impl Iterator<Item = Ino> + '_ {
        self.iter().map(|(i, _)| i)
    }

    /// (inode, node), by ascending inode.
    pub fn iter(&self) -> impl Iterator<Item = (Ino, &Node)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((i as Ino, n.as_ref()?)))
    }

    /// Give back the vector's spare room (after a build).
    pub fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
    }
}

impl<'a> IntoIterator for &'a Nodes {
    type Item = (Ino, &'a Node);
    type IntoIter = Box<dyn Iterator<Item = (Ino, &'a Node)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl std::ops::Index<Ino> for Nodes {
    type Output = Node;
    fn index(&self, ino: Ino) -> &Node {
        self.get(&ino).expect("no node with this inode")
    }
}

impl std::ops::Index<&Ino> for Nodes {
    type Output = Node;
    fn index(&self, ino: &Ino) -> &Node {
        &self[*ino]
    }
}

/// One immutable snapshot of the tree.
#[derive(Debug)]
pub struct Tree {
    pub nodes: Nodes,
    pub models: Vec<ModelEntry>,
    /// What this tree leaves out on purpose (see [`Hidden`]).
    pub hidden: Vec<Hidden>,
    pub generation: u64,
    pub built_at: SystemTime,
    /// What the tree was built from, as [`super::build::fingerprint`] computes it.
    pub fingerprint: u128,
    /// Built by [`super::build::build_shallow`]: names down to the model folders only, until
    /// [`super::Vfs::complete`] swaps in the full tree.
    pub partial: bool,
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

/// (folder, name) → inode number, never recycled, so that an unchanged path keeps its inode
/// across refreshes (and a path that goes away and comes back gets its inode back).
///
/// Keyed by a 64-bit keyed hash of the folder's inode and the name, not by the path: an
/// entry costs 16 bytes instead of a copy of the path (issue 15 §4). Two names whose hashes
/// collide never share an inode: the builder asks for a fresh one when the inode it got is
/// already in the tree it is building ([`Inodes::fresh`]).
#[derive(Debug)]
pub struct Inodes {
    by_key: HashMap<u64, Ino>,
    /// Inodes whose file the kernel holds open through passthrough, and that file's
    /// (device, inode) ([`super::handles::Handles::pinned`]), set before a build.
    pub pinned: HashMap<Ino, (u64, u64)>,
    next: Ino,
    keys: RandomState,
    /// Keys of the trees' fingerprints (`build::fingerprint`).
    fingerprint_keys: [RandomState; 2],
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes {
            by_key: HashMap::new(),
            pinned: HashMap::new(),
            next: ROOT_INO + 1,
            keys: RandomState::new(),
            fingerprint_keys: [RandomState::new(), RandomState::new()],
        }
    }
}

impl Inodes {
    fn key(&self, parent: Ino, name: &OsStr) -> u64 {
        self.keys.hash_one((parent, name.as_encoded_bytes()))
    }

    /// The inode of `name` in folder `parent`, allocated on first sight.
    pub fn get(&mut self, parent: Ino, name: &OsStr) -> Ino {
        let key = self.key(parent, name);
        match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.allocate();
                self.by_key.insert(key, i);
                i
            }
        }
    }

    /// A new inode for `name` in `parent` from now on: another file took the path while the
    /// kernel holds the old one open through passthrough (one backing file per inode).
    pub fn replace(&mut self, parent: Ino, name: &OsStr) -> Ino {
        let key = self.key(parent, name);
        let i = self.allocate();
        self.by_key.insert(key, i);
        i
    }

    /// A new inode for a name whose key collides with another's (the one [`Inodes::get`] gave
    /// is taken in this build). The map keeps the first one's, so neither flips between builds.
    pub fn fresh(&mut self) -> Ino {
        self.allocate()
    }

    /// The keys of the fingerprints of this mount's trees.
    pub fn fingerprint_keys(&self) -> [RandomState; 2] {
        self.fingerprint_keys.clone()
    }

    fn allocate(&mut self) -> Ino {
        let i = self.next;
        self.next += 1;
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

    /// Entries of a folder with `.` and `..` first: every child but a model's virtual
    /// `.mlxfs/` ([`Tree::unlisted`]).
    pub fn entries(&self, ino: Ino) -> Result<Vec<(Ino, Kind, Arc<OsStr>)>, VfsError> {
        let node = self.node(ino)?;
        let Content::Dir(children) = &node.content else {
            return Err(VfsError::NotDir);
        };
        let mut out = Vec::with_capacity(children.len() + 2);
        out.push((ino, Kind::Dir, Arc::from(OsStr::new("."))));
        out.push((node.parent, Kind::Dir, Arc::from(OsStr::new(".."))));
        for (name, &c) in children {
            if let Some(n) = self.nodes.get(&c)
                && !self.unlisted(ino, name, n)
            {
                out.push((c, n.attr.kind, name.clone()));
            }
        }
        Ok(out)
    }

    /// Is `child`, named `name` in folder `parent`, left out of its folder's listing? Only a
    /// model's virtual `.mlxfs/` is: it answers by name (`cat MODEL/.mlxfs/health`, and
    /// everything that maps a path inside a mount back to its model reads
    /// `.mlxfs/model.json`), but a copier — `cp -a`, `rsync -a`, Finder — copies what a
    /// listing shows, and a workspace copied with it was not clean (issue 25 §5). The
    /// root's `.mlxfs/` is listed (no model is copied with it); a real folder of that name
    /// deeper in a model holds no virtual file and is listed too.
    pub fn unlisted(&self, parent: Ino, name: &OsStr, child: &Node) -> bool {
        parent != ROOT_INO
            && name == crate::mountprobe::META_DIR
            && matches!(&child.content, Content::Dir(files) if files
                .values()
                .next()
                .and_then(|f| self.nodes.get(f))
                .is_some_and(|f| matches!(f.content, Content::Virtual(_))))
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
        Some(parts.iter().rev().map(|p| Path::new(&**p)).collect())
    }
}
