//! The fuser adapter: a thin `Filesystem` over [`crate::vfs::Vfs`], plus the mount lifecycle.
//!
//! Reads of weights use FUSE passthrough when the kernel and our privileges allow it (one
//! backing id per inode, kept until the last release), otherwise `pread` in the daemon with the
//! kernel page cache kept (`FOPEN_KEEP_CACHE`). Never direct I/O: it breaks mmap.

pub mod lifecycle;
pub mod watch;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::vfs::{Attr, Kind, Opened, Tree, Vfs, VfsError, is_os_junk};

/// Entries and attributes stay valid until a refresh invalidates them (inotify drives those),
/// with this bound as a safety net.
const TTL: Duration = Duration::from_secs(60);

fn errno(e: VfsError) -> Errno {
    match e {
        VfsError::NotFound => Errno::ENOENT,
        VfsError::NotDir => Errno::ENOTDIR,
        VfsError::IsDir => Errno::EISDIR,
        VfsError::NotLink => Errno::EINVAL,
        VfsError::Io(n) => Errno::from_i32(n),
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

enum Handle {
    File(Arc<File>),
    Passthrough(#[allow(dead_code)] Arc<BackingId>),
    Virtual(Arc<Vec<u8>>),
}

pub struct MlxFs {
    pub vfs: Arc<Vfs>,
    uid: u32,
    gid: u32,
    /// Try passthrough (set from options; cleared when the kernel or privileges refuse).
    passthrough: Arc<AtomicBool>,
    handles: Mutex<HashMap<u64, Handle>>,
    backing: Mutex<HashMap<u64, Weak<BackingId>>>,
    next_fh: AtomicU64,
}

impl MlxFs {
    pub fn new(vfs: Arc<Vfs>, passthrough: Arc<AtomicBool>) -> MlxFs {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        MlxFs {
            vfs,
            uid,
            gid,
            passthrough,
            handles: Mutex::new(HashMap::new()),
            backing: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn fattr(&self, ino: u64, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: a.size,
            blocks: a.blocks,
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind: match a.kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
                Kind::Symlink => FileType::Symlink,
            },
            perm: a.perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn attr_of(&self, tree: &Tree, ino: u64) -> Result<FileAttr, Errno> {
        let a = self.vfs.attr(tree, ino).map_err(errno)?;
        Ok(self.fattr(ino, &a))
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// One backing id per inode, shared by every open of it (the kernel requires all opens of
    /// an inode to use the same mode).
    fn backing_for(
        &self,
        ino: u64,
        file: &File,
        reply: &ReplyOpen,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut map = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = map.get(&ino).and_then(Weak::upgrade) {
            return Ok(id);
        }
        let id = Arc::new(reply.open_backing(file)?);
        map.insert(ino, Arc::downgrade(&id));
        Ok(id)
    }
}

fn kind_to_ft(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

impl Filesystem for MlxFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        if self.passthrough.load(Ordering::Relaxed) {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(2).is_ok();
            if !ok {
                self.passthrough.store(false, Ordering::Relaxed);
            }
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if is_os_junk(name) {
            return reply.error(Errno::ENOENT);
        }
        let tree = self.vfs.tree();
        match tree
            .lookup(parent.0, name)
            .map_err(errno)
            .and_then(|ino| self.attr_of(&tree, ino))
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // An open virtual file reports the size of the content that open rendered.
        // (Clone the size out: the handle table's lock is never held while rendering.)
        let open_len = fh.and_then(|fh| match self.handles().get(&fh.0) {
            Some(Handle::Virtual(data)) => Some(data.len() as u64),
            _ => None,
        });
        let tree = self.vfs.tree();
        if let Some(len) = open_len
            && let Ok(node) = tree.node(ino.0)
        {
            let mut a = node.attr.clone();
            a.size = len;
            a.blocks = len.div_ceil(512);
            return reply.attr(&TTL, &self.fattr(ino.0, &a));
        }
        match self.attr_of(&tree, ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vfs.readlink(ino.0) {
            Ok(t) => reply.data(t.as_encoded_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let opened = match self.vfs.open(ino.0) {
            Ok(o) => o,
            Err(e) => return reply.error(errno(e)),
        };
        let fh = self.new_fh();
        match opened {
            Opened::Virtual(data) => {
                self.handles().insert(fh, Handle::Virtual(data));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Opened::Backed(path) => {
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) => return reply.error(io_errno(&e)),
                };
                if self.passthrough.load(Ordering::Relaxed) {
                    match self.backing_for(ino.0, &file, &reply) {
                        Ok(id) => {
                            self.handles().insert(fh, Handle::Passthrough(id.clone()));
                            return reply.opened_passthrough(
                                FileHandle(fh),
                                FopenFlags::FOPEN_NOFLUSH,
                                &id,
                            );
                        }
                        Err(_) => {
                            // Not permitted here (no CAP_SYS_ADMIN): read through the daemon from now on.
                            self.passthrough.store(false, Ordering::Relaxed);
                            self.vfs
                                .info
                                .write()
                                .unwrap_or_else(|e| e.into_inner())
                                .read_mode = "daemon".into();
                        }
                    }
                }
                self.handles().insert(fh, Handle::File(Arc::new(file)));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = match self.handles().get(&fh.0) {
            Some(Handle::File(f)) => Ok(f.clone()),
            Some(Handle::Virtual(d)) => Err(d.clone()),
            Some(Handle::Passthrough(_)) | None => return reply.error(Errno::EBADF),
        };
        match h {
            Err(data) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Ok(file) => READ_BUF.with_borrow_mut(|buf| {
                // One buffer per worker thread, grown to the largest request and reused.
                if buf.len() < size as usize {
                    buf.resize(size as usize, 0);
                }
                let buf = &mut buf[..size as usize];
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return reply.error(io_errno(&e)),
                    }
                }
                reply.data(&buf[..done]);
            }),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles().remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.vfs.tree().node(ino.0) {
            Ok(n) if n.attr.kind == Kind::Dir => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.vfs.tree();
        let entries = match tree.entries(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), (i + 1) as u64, kind_to_ft(*kind), name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let tree = self.vfs.tree();
        let entries = match tree.entries(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, (child, _kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            let Ok(attr) = self.attr_of(&tree, *child) else {
                continue;
            };
            if reply.add(
                INodeNo(*child),
                (i + 1) as u64,
                name,
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.vfs.tree().nodes.len() as u64;
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // No extended attributes: ENOSYS makes the kernel stop asking for them at all.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    // Everything that would write: EROFS.
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }
    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }
    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
    fn symlink(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _t: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
    fn create(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}
