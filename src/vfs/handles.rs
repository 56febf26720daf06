//! The open files of the mount: FUSE file handle → what was opened. A virtual file keeps the
//! bytes rendered at `open` (so every piece read from one open is consistent, whatever a
//! refresh does meanwhile); a backed file keeps its descriptor for `pread`. An adapter may
//! attach something that must live as long as a handle (FUSE passthrough's backing id) without
//! this module knowing its type.

use std::any::Any;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::tree::Ino;

/// A file handle (FUSE `fh`).
pub type Fh = u64;

/// What an open gives access to.
#[derive(Debug, Clone)]
pub enum OpenFile {
    /// A real file (a workspace file or a hub blob), read with `pread`.
    Backed(Arc<File>),
    /// The rendered bytes of a virtual file.
    Virtual(Arc<Vec<u8>>),
}

type Token = Arc<dyn Any + Send + Sync>;

/// A shared token, and the (device, inode) of the backing file it was made for.
type SharedToken = (Weak<dyn Any + Send + Sync>, (u64, u64));

struct Handle {
    file: OpenFile,
    /// Kept alive as long as the handle (e.g. a passthrough backing id).
    _keep: Option<Token>,
}

/// The handle table, shared by every worker thread (short critical sections, no I/O under
/// the lock).
#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<Fh, Handle>>,
    /// One adapter token per inode, shared by every open of it while any is alive, with the
    /// identity (device, inode) of the backing file it was made for.
    per_inode: Mutex<HashMap<Ino, SharedToken>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handles {
    /// Register an open file; its handle is never 0 and never reused.
    pub fn insert(&self, file: OpenFile) -> Fh {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.open).insert(fh, Handle { file, _keep: None });
        fh
    }

    /// The file behind a handle.
    pub fn get(&self, fh: Fh) -> Option<OpenFile> {
        lock(&self.open).get(&fh).map(|h| h.file.clone())
    }

    /// Keep `token` alive until `fh` is released.
    pub fn keep(&self, fh: Fh, token: Token) {
        if let Some(h) = lock(&self.open).get_mut(&fh) {
            h._keep = Some(token);
        }
    }

    /// Forget a handle (its file closes when no read holds it any more). False when unknown.
    pub fn release(&self, fh: Fh) -> bool {
        lock(&self.open).remove(&fh).is_some()
    }

    /// Open handles (for status and tests).
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token shared by every open of `ino` (made by `make` when none is alive): FUSE
    /// requires all passthrough opens of one inode to use one backing file (and refuses any
    /// other open of it meanwhile). `file` is the (device, inode) of the file this open has;
    /// a live token keeps the one it was made for, which [`Handles::pinned`] tells the tree.
    pub fn shared<T: Any + Send + Sync>(
        &self,
        ino: Ino,
        file: (u64, u64),
        make: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<Arc<T>> {
        let mut map = lock(&self.per_inode);
        if let Some(t) = map
            .get(&ino)
            .and_then(|(w, _)| w.upgrade())
            .and_then(|t| t.downcast::<T>().ok())
        {
            return Ok(t);
        }
        let t = Arc::new(make()?);
        let dyn_t: Token = t.clone();
        map.insert(ino, (Arc::downgrade(&dyn_t), file));
        map.retain(|_, (w, _)| w.strong_count() > 0);
        Ok(t)
    }

    /// Inodes with a live shared token, and the (device, inode) of the file each is bound
    /// to: a refresh that finds another file at such a path gives it a new inode number
    /// (the kernel keeps the old file for whoever holds it open).
    pub fn pinned(&self) -> HashMap<Ino, (u64, u64)> {
        lock(&self.per_inode)
            .iter()
            .filter(|(_, (w, _))| w.strong_count() > 0)
            .map(|(i, (_, id))| (*i, *id))
            .collect()
    }
}
