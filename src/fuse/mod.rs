//! The fuser adapter: a thin `Filesystem` over [`crate::vfs::Vfs`], plus the mount lifecycle.
//!
//! Every operation has one shape: ask the `Vfs`, then reply with its answer or map its
//! [`VfsError`] to an errno (failures other than "not found" are logged to stderr, the daemon
//! log). The tree, the open files and their contents live in `vfs` and are tested without
//! mounting; what is left here is FUSE itself: kernel capabilities, passthrough (one backing id
//! per inode, kept with the handles until the last release), and the write operations, which
//! all fail with `EROFS`. Backed files (weights) are never opened with direct I/O (it would
//! bypass the page cache and, on kernels before 6.6, break mmap); virtual files always are
//! (each open reads the version it rendered).
//!
//! - `lifecycle`: mount (checks with clear errors, the session, signals);
//! - `error`: what can go wrong, by kind;
//! - `probe`: what is mounted where, and whether it answers;
//! - `unmount`: `umount`, lazy when busy (the one `fusermount3` call);
//! - `daemon`: `--daemon` (a detached copy of the process);
//! - `watch`: keeping the tree current.

pub mod daemon;
pub mod error;
pub mod lifecycle;
pub mod probe;
pub mod unmount;

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::vfs::reads::Refusal;
use crate::vfs::{
    Attr, Content, Kind, Opened, ROOT_INO, ReadMode, Tree, Vfs, VfsError, is_os_junk,
};

/// How long the kernel may keep a name or the attributes of a folder, file or link without
/// asking again. The daemon tells the kernel about every change it finds (`watch` sends an
/// invalidation for each difference between two trees), so this is only a safety net against
/// a change the watcher and the periodic rescan both missed. It used to be 60 s: a person who
/// came back to a folder after a minute made the kernel look up every entry again, and
/// `ls -lR` of the whole mount took 2× the backing folders' time (issue 15 §3).
const TTL: Duration = Duration::from_secs(3600);

/// The same for the virtual files (`.mlxfs/…`): their size is that of their rendered content,
/// and some change without a change in the tree (`status.json` shows the last refresh error),
/// so the kernel asks again after a second.
const TTL_VIRTUAL: Duration = Duration::from_secs(1);

/// The TTL for node `ino` of `tree`.
fn ttl(tree: &Tree, ino: u64) -> &'static Duration {
    if tree.partial {
        // Answered while the first full tree is built: nothing of it is cached.
        return &Duration::ZERO;
    }
    match tree.node(ino).map(|n| &n.content) {
        Ok(Content::Virtual(_)) => &TTL_VIRTUAL,
        _ => &TTL,
    }
}

fn errno(e: &VfsError) -> Errno {
    match e {
        VfsError::NotFound => Errno::ENOENT,
        VfsError::NotDir => Errno::ENOTDIR,
        VfsError::IsDir => Errno::EISDIR,
        VfsError::NotLink => Errno::EINVAL,
        VfsError::BadHandle => Errno::EBADF,
        VfsError::ReadOnly => Errno::EROFS,
        VfsError::Io(n) => Errno::from_i32(*n),
    }
}

/// The errno for `e`, with a line in the daemon log for failures that are not routine
/// (a missing name is routine: shells and file managers probe all the time).
fn failed(op: &str, ino: INodeNo, e: &VfsError) -> Errno {
    if !matches!(e, VfsError::NotFound | VfsError::ReadOnly) {
        eprintln!("mlxfs: {op} of inode {} failed: {e:?}", ino.0);
    }
    errno(e)
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

/// The `Filesystem` the fuser session runs.
pub struct MlxFs {
    pub vfs: Arc<Vfs>,
    uid: u32,
    gid: u32,
    /// Try passthrough (set from options; cleared when the kernel or privileges refuse).
    passthrough: Arc<AtomicBool>,
    /// The kernel accepted `FUSE_NO_OPENDIR_SUPPORT` (Linux 5.1): `opendir` answers ENOSYS
    /// once, and from then on the kernel opens folders itself, with `FOPEN_CACHE_DIR |
    /// FOPEN_KEEP_CACHE`, and sends neither `opendir` nor `releasedir`.
    no_opendir: bool,
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
            no_opendir: false,
        }
    }

    /// Requests wait for the full tree ([`Vfs::wait_ready`]), but for the root's own
    /// attributes and entries, which the partial tree has (answered uncached: [`ttl`]).
    fn wait_unless_root(&self, ino: INodeNo) {
        if ino.0 != ROOT_INO {
            self.vfs.wait_ready();
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
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Hand an open backing file to the kernel (passthrough), sharing one backing id per
    /// inode (a refresh gives a path a new inode when another file took it meanwhile:
    /// `Handles::pinned`); `identity` is the file's (device, inode). Gives the reply back
    /// when this file is read through the daemon instead: the kernel refused it (or its
    /// file system) before, or refuses it now ([`refusal_scope`] says for which files).
    fn passthrough(
        &self,
        ino: INodeNo,
        fh: u64,
        file: &std::fs::File,
        identity: (u64, u64),
        reply: ReplyOpen,
    ) -> Option<ReplyOpen> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return Some(reply);
        }
        let dev = identity.0;
        let path = || {
            self.vfs
                .tree()
                .path_of(ino.0)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("inode {}", ino.0))
        };
        if self.vfs.reads.through_daemon(dev, ino.0) {
            self.vfs.reads.note(dev, ino.0, path, None);
            return Some(reply);
        }
        match self
            .vfs
            .handles
            .shared::<BackingId>(ino.0, identity, || reply.open_backing(file))
        {
            Ok(id) => {
                self.vfs.handles.keep(fh, id.clone());
                reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id);
                None
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let scope = refusal_scope(errno);
                let why = refusal_why(&e, errno, scope);
                if scope == Scope::Everywhere {
                    eprintln!("mlxfs: {why}");
                    self.passthrough.store(false, Ordering::Relaxed);
                    self.vfs.set_read_mode(ReadMode::Daemon, Some(why));
                    return Some(reply);
                }
                let (file_system, mount_point) = match probe::device_mount(dev) {
                    Some((t, mp)) => (Some(t), Some(mp.to_string_lossy().into_owned())),
                    None => (None, None),
                };
                let shown = path();
                eprintln!(
                    "mlxfs: {shown}: {why} (file system {}:{}{})",
                    libc::major(dev),
                    libc::minor(dev),
                    mount_point
                        .as_deref()
                        .map(|m| format!(" at {}", crate::text::one_line(m)))
                        .unwrap_or_default()
                );
                self.vfs.reads.note(
                    dev,
                    ino.0,
                    || shown,
                    Some(Refusal {
                        why,
                        whole_file_system: scope == Scope::FileSystem,
                        file_system,
                        mount_point,
                    }),
                );
                Some(reply)
            }
        }
    }
}

/// Which files a refused passthrough open stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every file: the daemon may not hand files to the kernel at all.
    Everywhere,
    /// Every file of the backing file's file system.
    FileSystem,
    /// This file.
    File,
}

/// What the kernel's refusal of a backing file (`FUSE_DEV_IOC_BACKING_OPEN`, errno `errno`)
/// means, from `fuse_backing_open` (fs/fuse/passthrough.c, Linux 6.9+): EPERM — the
/// connection has no passthrough or the daemon lacks CAP_SYS_ADMIN — and ENOTTY — no such
/// ioctl — hold for every file; ELOOP — the backing file's file system is stacked as deep
/// as the kernel allows (another FUSE mount that uses passthrough itself, as an mlxfs mount
/// does; an overlayfs over one) — and EOPNOTSUPP — Linux 6.9 to 6.11: the file system has
/// no `read_iter`/`write_iter` — hold for its whole file system; anything
/// else (ENOMEM, no backing id left …) for this file. A refused file stays read through the
/// daemon until unmount: the kernel fails an open with EIO when an inode mixes opens with
/// and without passthrough.
fn refusal_scope(errno: i32) -> Scope {
    match errno {
        libc::EPERM | libc::ENOTTY => Scope::Everywhere,
        libc::ELOOP | libc::EOPNOTSUPP => Scope::FileSystem,
        _ => Scope::File,
    }
}

/// The `why` of a refusal, for status.json and the daemon log.
fn refusal_why(e: &std::io::Error, errno: i32, scope: Scope) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOTTY => "ENOTTY",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOMEM => "ENOMEM",
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        _ => "errno",
    };
    // The system's message without io::Error's " (os error N)": the name says it.
    let e = e.to_string();
    let e = e.split(" (os error").next().unwrap_or_default();
    match scope {
        Scope::Everywhere => format!(
            "the kernel refused passthrough ({name}: {e}): the daemon may not hand files to \
             the kernel, so every file is read through the daemon"
        ),
        Scope::FileSystem if errno == libc::ELOOP => format!(
            "the kernel refused passthrough ({name}: {e}): this file system is stacked as \
             deep as the kernel allows (a FUSE file system that uses passthrough itself, such \
             as another mlxfs mount), so its files are read through the daemon"
        ),
        Scope::FileSystem => format!(
            "the kernel refused passthrough ({name}: {e}): this file system cannot back it, \
             so its files are read through the daemon"
        ),
        Scope::File => format!(
            "the kernel refused passthrough ({name}: {e}): this file is read through the \
             daemon until unmount"
        ),
    }
}

/// Filesystem methods that would write, each answered `EROFS` (the mount is read-only):
/// `name(argument types after the request) -> reply type`, as fuser's trait declares them.
macro_rules! read_only {
    ($($name:ident($($ty:ty),+ $(,)?) -> $reply:ty;)*) => {
        $(fn $name(&self, _: &Request, $(_: $ty),+, reply: $reply) {
            reply.error(Errno::EROFS);
        })*
    };
}

impl Filesystem for MlxFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            // A shared read-only mmap of a virtual file (opened with direct I/O) is served
            // through the page cache instead of failing with ENODEV (Linux 6.6). Weights are
            // never opened with direct I/O: this changes nothing for them.
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ] {
            let _ = config.add_capabilities(flag);
        }
        // Every folder's listing is cached by the kernel (FOPEN_CACHE_DIR) and kept across
        // opens (FOPEN_KEEP_CACHE) until `watch` invalidates it; what was left of a listing
        // was the opendir/releasedir round trip per folder, 2 of every 2 requests a warm
        // `ls -lR` sent (issue 15 §3). Without it, that listing sends none.
        self.no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
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
        self.vfs.wait_ready();
        let tree = self.vfs.tree();
        match tree
            .lookup(parent.0, name)
            .and_then(|ino| Ok((ino, self.vfs.attr(&tree, ino)?)))
        {
            Ok((ino, a)) => reply.entry(ttl(&tree, ino), &self.fattr(ino, &a), Generation(0)),
            Err(e) => reply.error(failed("lookup", parent, &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.wait_unless_root(ino);
        let tree = self.vfs.tree();
        match self.vfs.getattr_in(&tree, ino.0, fh.map(|f| f.0)) {
            Ok(a) => reply.attr(ttl(&tree, ino.0), &self.fattr(ino.0, &a)),
            Err(e) => reply.error(failed("getattr", ino, &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.vfs.wait_ready();
        match self.vfs.readlink(ino.0) {
            Ok(t) => reply.data(t.as_encoded_bytes()),
            Err(e) => reply.error(failed("readlink", ino, &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        self.vfs.wait_ready();
        match self.vfs.open(ino.0, write) {
            // Direct I/O: every read reaches the daemon, which answers from the bytes this
            // open rendered. Through the page cache, the kernel cut a holder's reads at the
            // size a later `stat` gave (the new version's), and pages another open read could
            // mix with this one's: a reader got the old text cut to the new length (issue 25
            // §5). mmap of these files still works (`FUSE_DIRECT_IO_ALLOW_MMAP`).
            Ok((fh, Opened::Virtual)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Ok((fh, Opened::Backed { file, id, recorded })) => {
                if let Some(reply) = self.passthrough(ino, fh, &file, id, reply) {
                    // Without FOPEN_KEEP_CACHE the kernel drops the node's cached pages at
                    // this open: a file replaced since the last rescan is then read whole
                    // from the new file, never as old pages mixed with new ones.
                    let keep = if recorded {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(fh), keep);
                }
            }
            Err(e) => reply.error(failed("open", ino, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.vfs.read(fh.0, offset, size, |r| match r {
            Ok(bytes) => reply.data(bytes),
            Err(e) => reply.error(failed("read", ino, &e)),
        });
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
        let _ = self.vfs.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            // The kernel then opens this and every later folder itself, with the flags
            // below (fs/fuse/file.c, fuse_file_open: "Default for no-open"). A folder that
            // is not there fails at its readdir instead.
            return reply.error(Errno::ENOSYS);
        }
        self.wait_unless_root(ino);
        match self.vfs.tree().node(ino.0) {
            Ok(n) if n.attr.kind == Kind::Dir => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(failed("opendir", ino, &e)),
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
        self.wait_unless_root(ino);
        let entries = match self.vfs.tree().entries(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(failed("readdir", ino, &e)),
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (child, kind, name)) in entries.iter().enumerate().skip(skip) {
            if reply.add(INodeNo(*child), (i + 1) as u64, file_type(*kind), name) {
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
        self.wait_unless_root(ino);
        let tree = self.vfs.tree();
        let entries = match tree.entries(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(failed("readdirplus", ino, &e)),
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (child, _kind, name)) in entries.iter().enumerate().skip(skip) {
            let Ok(a) = self.vfs.attr(&tree, *child) else {
                continue;
            };
            let attr = self.fattr(*child, &a);
            if reply.add(
                INodeNo(*child),
                (i + 1) as u64,
                name,
                ttl(&tree, *child),
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
    read_only! {
        setattr(INodeNo, Option<u32>, Option<u32>, Option<u32>, Option<u64>, Option<TimeOrNow>,
            Option<TimeOrNow>, Option<std::time::SystemTime>, Option<FileHandle>,
            Option<std::time::SystemTime>, Option<std::time::SystemTime>,
            Option<std::time::SystemTime>, Option<fuser::BsdFileFlags>) -> ReplyAttr;
        mknod(INodeNo, &OsStr, u32, u32, u32) -> ReplyEntry;
        mkdir(INodeNo, &OsStr, u32, u32) -> ReplyEntry;
        unlink(INodeNo, &OsStr) -> ReplyEmpty;
        rmdir(INodeNo, &OsStr) -> ReplyEmpty;
        symlink(INodeNo, &OsStr, &std::path::Path) -> ReplyEntry;
        rename(INodeNo, &OsStr, INodeNo, &OsStr, RenameFlags) -> ReplyEmpty;
        link(INodeNo, INodeNo, &OsStr) -> ReplyEntry;
        write(INodeNo, FileHandle, u64, &[u8], WriteFlags, OpenFlags, Option<LockOwner>)
            -> ReplyWrite;
        create(INodeNo, &OsStr, u32, u32, i32) -> fuser::ReplyCreate;
        setxattr(INodeNo, &OsStr, &[u8], i32, u32) -> ReplyEmpty;
        removexattr(INodeNo, &OsStr) -> ReplyEmpty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_stands_for_its_file_its_file_system_or_every_file() {
        assert_eq!(refusal_scope(libc::EPERM), Scope::Everywhere);
        assert_eq!(refusal_scope(libc::ENOTTY), Scope::Everywhere);
        assert_eq!(refusal_scope(libc::ELOOP), Scope::FileSystem);
        assert_eq!(refusal_scope(libc::EOPNOTSUPP), Scope::FileSystem);
        assert_eq!(refusal_scope(libc::ENOMEM), Scope::File);
        assert_eq!(refusal_scope(libc::EBADF), Scope::File);
        let e = std::io::Error::from_raw_os_error(libc::ELOOP);
        let why = refusal_why(&e, libc::ELOOP, Scope::FileSystem);
        assert!(
            why.contains("(ELOOP: Too many levels of symbolic links)"),
            "{why}"
        );
        assert!(!why.contains("os error"), "{why}");
    }
}
