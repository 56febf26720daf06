//! The virtual tree the mount shows: workspaces and hub models merged into one folder
//! hierarchy with stable inode numbers, virtual metadata files rendered from the catalog, and
//! the open files of the mount.
//!
//! No fuser types here: the FUSE adapter (`crate::fuse`) maps each kernel request to one call
//! of [`Vfs`] and its answer (or [`VfsError`]) to a reply. Everything — tree shape, refreshes
//! and their invalidations, opens and reads — can be tested without mounting.
//!
//! - [`tree`]: one immutable snapshot (nodes, models, what is hidden and why);
//! - [`build`]: catalog → tree;
//! - [`diff`]: two trees → kernel invalidations;
//! - [`handles`]: open files;
//! - [`reads`]: which files are read through the daemon, and why;
//! - [`render`]: the contents of the virtual files.

pub mod build;
pub mod diff;
pub mod handles;
pub mod live;
pub mod reads;
pub mod render;
pub mod tree;
pub mod watch;

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::SystemTime;

use crate::catalog::Locations;
pub use crate::mountprobe::META_DIR;
pub use build::{build, build_shallow, fingerprint, is_os_junk};
pub use diff::{Invalidation, diff};
use handles::{Fh, Handles, OpenFile};
pub use tree::{
    Attr, Backing, Content, Hidden, Ino, Inodes, Kind, ModelEntry, Node, Nodes, ROOT_INO, Tree,
    VfsError, Virtual,
};

/// How the mount's weights are read (shown in `status.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// FUSE passthrough: the kernel reads the backing file itself.
    Passthrough,
    /// The daemon reads (`pread`) with the kernel page cache kept.
    Daemon,
}

impl ReadMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadMode::Passthrough => "passthrough",
            ReadMode::Daemon => "daemon",
        }
    }
}

/// Facts for `status.json`.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub mountpoint: PathBuf,
    pub read_mode: ReadMode,
    pub mounted_at: SystemTime,
    /// The last refresh that failed (it kept the previous tree), when the latest did.
    pub refresh_error: Option<String>,
}

/// What an `open` gave the adapter.
#[derive(Debug, Clone)]
pub enum Opened {
    /// A real file: the adapter may hand its descriptor to the kernel (passthrough).
    Backed {
        file: Arc<File>,
        /// Its (device, inode), from one `fstat` at the open.
        id: (u64, u64),
        /// It is the file the tree recorded at this path. When it is not (replaced by rename
        /// since the last rescan), what the kernel cached of this node is the old file's and
        /// must not be kept, or one read would mix both.
        recorded: bool,
    },
    /// A virtual file: reads are served from the bytes rendered at this open (for
    /// `catalog.json`, after the refresher's barrier), never from the kernel's page cache:
    /// every open may have rendered another version, and the kernel cuts cached reads at the
    /// size the latest `stat` gave, which is the newest version's (issue 25 §5).
    Virtual,
}

thread_local! {
    /// One read buffer per worker thread, grown to the largest request and reused.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A mount's first tree: full (`deep`, generation 1) or partial ([`build_shallow`],
/// generation 0). Never panics: should building panic on something on disk, the tree is
/// empty but for `.mlxfs/` (full, generation 1) and the second value says why.
fn first_tree(
    loc: &Locations,
    inodes: &mut Inodes,
    stamp: SystemTime,
    deep: bool,
) -> (Tree, Option<String>) {
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if deep {
            build(loc, inodes, 1, stamp)
        } else {
            build_shallow(loc, inodes, 0, stamp)
        }
    }));
    match built {
        Ok(t) => (t, None),
        Err(p) => {
            let why = format!("building the tree failed: {}", panic_text(&*p));
            let empty = Locations {
                hub_cache: PathBuf::from("/nonexistent/mlxfs-empty"),
                workspace_home: None,
                workspace_home_problem: None,
                workspace_home_set: None,
                model_path: Vec::new(),
                model_path_problems: Vec::new(),
            };
            (build(&empty, inodes, 1, stamp), Some(why))
        }
    }
}

/// Marks the [`Vfs`] ready when dropped, on every way out of [`Vfs::complete`].
struct ReadyOnDrop<'a>(&'a Vfs);

impl Drop for ReadyOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set_ready();
    }
}

/// The tree, its renderer and the open files: what the FUSE adapter talks to.
pub struct Vfs {
    pub loc: Locations,
    tree: RwLock<Arc<Tree>>,
    inodes: Mutex<Inodes>,
    pub renderer: render::Renderer,
    info: RwLock<DaemonInfo>,
    pub handles: Handles,
    /// Why the mount (or which of its files) reads through the daemon.
    pub reads: reads::Reads,
    /// The tree is full (not [`Tree::partial`]); with `ready_cv`, what requests that need
    /// more than the root wait on (see [`Vfs::new_partial`]).
    ready: AtomicBool,
    ready_lock: Mutex<()>,
    ready_cv: Condvar,
}

impl Vfs {
    /// Scan the catalog into the first tree. Never fails: should building panic on something
    /// on disk, the tree is empty (but for `.mlxfs/`) and `status.json` says why.
    pub fn new(loc: Locations, info: DaemonInfo) -> Vfs {
        Vfs::new_with(loc, info, true)
    }

    /// A Vfs whose first tree holds only the names down to the model folders
    /// ([`build_shallow`]: no model folder read, so a mount answers its root at once, issue
    /// 15 §4). Until [`Vfs::complete`] has run, [`Vfs::is_ready`] is false: the adapter
    /// answers only the root's attributes and entries (uncached) and makes every other
    /// request [`Vfs::wait_ready`].
    pub fn new_partial(loc: Locations, info: DaemonInfo) -> Vfs {
        Vfs::new_with(loc, info, false)
    }

    fn new_with(loc: Locations, mut info: DaemonInfo, deep: bool) -> Vfs {
        let mut inodes = Inodes::default();
        let (tree, failed) = first_tree(&loc, &mut inodes, info.mounted_at, deep);
        info.refresh_error = failed;
        render::trim_heap();
        Vfs {
            loc,
            ready: AtomicBool::new(!tree.partial),
            tree: RwLock::new(Arc::new(tree)),
            inodes: Mutex::new(inodes),
            renderer: render::Renderer::default(),
            info: RwLock::new(info),
            handles: Handles::default(),
            reads: reads::Reads::default(),
            ready_lock: Mutex::new(()),
            ready_cv: Condvar::new(),
        }
    }

    /// Is the tree full (see [`Vfs::new_partial`])?
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Block until the tree is full.
    pub fn wait_ready(&self) {
        if self.is_ready() {
            return;
        }
        let mut g = self.ready_lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.is_ready() {
            g = self.ready_cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Build the full tree in place of a partial one, wake the requests waiting for it, and
    /// return what the kernel must forget: only what it can hold from the partial tree, the
    /// root's entries (cached with `FOPEN_CACHE_DIR`); everything else was answered
    /// uncached or not at all. Never panics and always makes the Vfs ready: a build that
    /// fails leaves an empty tree (but for `.mlxfs/`) and says why in `status.json`, as
    /// [`Vfs::new`]. Nothing to do (empty) when the tree is full already.
    pub fn complete(&self) -> Vec<Invalidation> {
        if self.is_ready() {
            return Vec::new();
        }
        // Whatever happens below, even a panic, the waiting requests are woken: they then
        // get the tree that is in place, rather than waiting forever.
        let ready = ReadyOnDrop(self);
        let old = self.tree();
        let stamp = self.info().mounted_at;
        let new = {
            let mut inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            let (tree, failed) = first_tree(&self.loc, &mut inodes, stamp, true);
            if let Some(why) = failed {
                eprintln!("mlxfs: {why}");
                self.info
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .refresh_error = Some(why);
            }
            tree
        };
        let new = Arc::new(new);
        *self.tree.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        // A diff that fails costs the root's whole cached listing, nothing more.
        let changes: Vec<Invalidation> =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| diff(&old, &new)))
                .unwrap_or_else(|_| vec![Invalidation::Inode(ROOT_INO)])
                .into_iter()
                .filter(|c| match c {
                    Invalidation::Entry { parent, .. } => *parent == ROOT_INO,
                    Invalidation::Inode(ino) => *ino == ROOT_INO,
                })
                .collect();
        drop((old, new));
        drop(ready);
        render::trim_heap();
        changes
    }

    fn set_ready(&self) {
        let _g = self.ready_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.ready.store(true, Ordering::Release);
        self.ready_cv.notify_all();
    }

    /// The current tree (cheap: an `Arc` clone under a short read lock).
    pub fn tree(&self) -> Arc<Tree> {
        self.tree.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The daemon facts.
    pub fn info(&self) -> DaemonInfo {
        self.info.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Record how weights are read (the kernel or our privileges may refuse passthrough),
    /// and why every file is read through the daemon when so (`status.json`).
    pub fn set_read_mode(&self, mode: ReadMode, why: Option<String>) {
        self.info
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .read_mode = mode;
        self.reads.set_why_daemon(why);
    }

    /// Rescan, swap in the new tree, and return what the kernel must invalidate. Never
    /// panics: a rescan that fails keeps the current tree, says why in `status.json` and on
    /// stderr (the daemon log), and the next rescan tries again.
    pub fn refresh(&self) -> Vec<Invalidation> {
        self.refresh_after(false)
    }

    /// [`Vfs::refresh`]; `changed` says the watcher saw the sources change, so the
    /// fingerprint pass is skipped (it would differ: scanning twice only costs time).
    pub fn refresh_after(&self, changed: bool) -> Vec<Invalidation> {
        if !self.is_ready() {
            return self.complete();
        }
        let old = self.tree();
        let stamp = self.info().mounted_at;
        // A rescan that finds what the current tree was built from builds nothing: the
        // daemon's peak memory stays one tree (issue 15 §4).
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            inodes.pinned = self.handles.pinned();
            (changed || build::fingerprint(&self.loc, &inodes, stamp) != old.fingerprint)
                .then(|| build(&self.loc, &mut inodes, old.generation + 1, stamp))
        }));
        if changed {
            // The sources changed, maybe in a way the tree does not show (a file's bytes
            // rewritten in place with its size and time kept): what the virtual files
            // rendered from them is rendered again.
            self.renderer.forget();
        }
        let new = match built {
            Ok(None) => {
                self.info
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .refresh_error = None;
                render::trim_heap();
                return Vec::new();
            }
            Ok(Some(t)) => {
                self.info
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .refresh_error = None;
                Arc::new(t)
            }
            Err(p) => {
                let why = format!(
                    "rescan failed, keeping the previous tree: {}",
                    panic_text(&*p)
                );
                eprintln!("mlxfs: {why}");
                self.info
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .refresh_error = Some(why);
                return Vec::new();
            }
        };
        let changes = diff(&old, &new);
        if !changes.is_empty() {
            *self.tree.write().unwrap_or_else(|e| e.into_inner()) = new;
        } else {
            drop(new);
        }
        drop(old);
        render::trim_heap();
        changes
    }

    /// Attributes of a node; a virtual file's size is that of its rendered content.
    pub fn attr(&self, tree: &Tree, ino: Ino) -> Result<Attr, VfsError> {
        let n = tree.node(ino)?;
        let mut a = n.attr.clone();
        if let Content::Virtual(v) = &n.content {
            let data = self.renderer.render(self, tree, v);
            a.size = data.len() as u64;
            a.blocks = a.size.div_ceil(512);
        }
        Ok(a)
    }

    /// `getattr`: with the handle of an open virtual file, the size of what that open
    /// rendered (the content it reads), else [`Vfs::attr`].
    pub fn getattr(&self, ino: Ino, fh: Option<Fh>) -> Result<Attr, VfsError> {
        self.getattr_in(&self.tree(), ino, fh)
    }

    /// [`Vfs::getattr`] in a tree the caller already holds.
    pub fn getattr_in(&self, tree: &Tree, ino: Ino, fh: Option<Fh>) -> Result<Attr, VfsError> {
        if let Some(OpenFile::Virtual(data)) = fh.and_then(|fh| self.handles.get(fh)) {
            let mut a = tree.node(ino)?.attr.clone();
            a.size = data.len() as u64;
            a.blocks = a.size.div_ceil(512);
            return Ok(a);
        }
        self.attr(tree, ino)
    }

    /// The target of a link.
    pub fn readlink(&self, ino: Ino) -> Result<OsString, VfsError> {
        match &self.tree().node(ino)?.content {
            Content::Link(t) => Ok(t.clone()),
            _ => Err(VfsError::NotLink),
        }
    }

    /// Open a file for reading (`write` asks for write access: `ReadOnly`). Returns its handle
    /// and what it is.
    pub fn open(&self, ino: Ino, write: bool) -> Result<(Fh, Opened), VfsError> {
        if write {
            return Err(VfsError::ReadOnly);
        }
        let tree = self.tree();
        match &tree.node(ino)?.content {
            Content::Backed(p) => {
                // Never through a link or into a FIFO planted since the tree was built.
                let file =
                    Arc::new(crate::sys::open_resolved(&p.path()).map_err(|e| VfsError::io(&e))?);
                let id = {
                    use std::os::unix::fs::MetadataExt;
                    file.metadata()
                        .map(|m| (m.dev(), m.ino()))
                        .unwrap_or_default()
                };
                let fh = self.handles.insert(OpenFile::Backed(file.clone()));
                let recorded = id == p.id;
                Ok((fh, Opened::Backed { file, id, recorded }))
            }
            Content::Virtual(Virtual::Catalog) => {
                let data = self.renderer.catalog(self);
                Ok((
                    self.handles.insert(OpenFile::Virtual(data)),
                    Opened::Virtual,
                ))
            }
            Content::Virtual(v) => {
                let data = self.renderer.render(self, &tree, v);
                Ok((
                    self.handles.insert(OpenFile::Virtual(data)),
                    Opened::Virtual,
                ))
            }
            Content::Dir(_) => Err(VfsError::IsDir),
            Content::Link(_) => Err(VfsError::NotFound),
        }
    }

    /// Read up to `size` bytes at `offset` of an open file and hand them to `reply` (a short
    /// read only at the end of the file).
    pub fn read<R>(
        &self,
        fh: Fh,
        offset: u64,
        size: u32,
        reply: impl FnOnce(Result<&[u8], VfsError>) -> R,
    ) -> R {
        match self.handles.get(fh) {
            None => reply(Err(VfsError::BadHandle)),
            Some(OpenFile::Virtual(data)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply(Ok(&data[start..end]))
            }
            Some(OpenFile::Backed(file)) => READ_BUF.with_borrow_mut(|buf| {
                let size = size as usize;
                if buf.len() < size {
                    buf.resize(size, 0);
                }
                let buf = &mut buf[..size];
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], offset.saturating_add(done as u64)) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return reply(Err(VfsError::io(&e))),
                    }
                }
                reply(Ok(&buf[..done]))
            }),
        }
    }

    /// Close a handle.
    pub fn release(&self, fh: Fh) -> Result<(), VfsError> {
        if self.handles.release(fh) {
            Ok(())
        } else {
            Err(VfsError::BadHandle)
        }
    }
}
