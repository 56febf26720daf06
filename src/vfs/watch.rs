//! Keeping the mount current, and proving it: raw inotify on every folder of the watched
//! roots, a short debounce, a rescan, and the invalidations handed from this thread (never a
//! worker of the adapter) to the adapter's [`Sink`]: FUSE sends them to the kernel, and
//! another adapter (NFS) records them as it needs. The thread never dies of what it finds on disk: a rescan that fails keeps the
//! previous tree and says so ([`Vfs::refresh`]), and a panic anywhere else in a round is caught
//! and logged.
//!
//! The barrier (`vfs::live`): the kernel queues an inotify event inside the syscall that
//! makes the change, so draining the descriptor when a reader asks sees every change that
//! completed before it asked. No event since the last rebuild started (and nothing else that
//! sends none: see [`Refresher::stale`]) means the tree — and a catalog rendered after it —
//! is current; otherwise the reader waits for a rebuild here.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::live::{Barrier, BarrierRx, SyncAnswer};
use super::{Invalidation, Vfs};

/// Changes arriving within this window are handled by one rescan.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A rescan also runs this often without events (a safety net for missed events).
const PERIODIC: Duration = Duration::from_secs(30);
/// How often the loop looks at `stop`.
const TICK: Duration = Duration::from_millis(250);

/// Local file systems, where every change goes through this kernel and so sends its inotify
/// event. On any other (NFS, SMB, 9p, FUSE — sshfs, another mlxfs —, Ceph, …) a change made
/// elsewhere sends none: a mount over them still refreshes (events, periodic rescan) but
/// never claims to be current.
const LOCAL_FS: &[i64] = &[
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58F6, // ramfs
    0xF2F5_2010, // f2fs
    0x794C_7630, // overlayfs (changes through it; its layers are not changed beneath it)
    0x2FC1_2FC1, // zfs
    0xCA45_1A4E, // bcachefs
    0x3153_464A, // jfs
    0x5265_4973, // reiserfs
    0x4D44,      // vfat
    0x2011_BAB0, // exfat
    0x7366_746E, // ntfs3 (the kernel's; ntfs-3g is FUSE)
    0x482B,      // hfsplus
    0x3434,      // nilfs2
    0x7371_7368, // squashfs (read-only)
    0x9660,      // iso9660 (read-only)
    0xE0F5_E1E2, // erofs (read-only)
];

/// The inotify descriptor (Linux). Elsewhere there is none: the tree refreshes on the
/// periodic rescan and `catalog.json` never claims to be current.
#[cfg(target_os = "linux")]
mod os {
    use inotify::{EventMask, Inotify, WatchMask};
    use std::io;
    use std::os::fd::{AsRawFd, RawFd};
    use std::path::Path;

    /// Modifying events only: our own reads (and the catalog's) must never trigger a rescan.
    fn dir_mask() -> WatchMask {
        WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::MODIFY
            | WatchMask::ATTRIB
            | WatchMask::CLOSE_WRITE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::DONT_FOLLOW
            | WatchMask::ONLYDIR
    }

    /// The same for a single file (a hard link's other names are elsewhere).
    fn file_mask() -> WatchMask {
        WatchMask::MODIFY
            | WatchMask::ATTRIB
            | WatchMask::CLOSE_WRITE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::DONT_FOLLOW
    }

    pub struct Watcher {
        fd: Inotify,
        buf: Vec<u8>,
    }

    impl Watcher {
        pub fn new() -> io::Result<Watcher> {
            Ok(Watcher {
                fd: Inotify::init()?,
                buf: vec![0; 64 * 1024],
            })
        }

        /// Watch a folder (idempotent per inode).
        pub fn add_dir(&self, p: &Path) -> io::Result<()> {
            self.fd.watches().add(p, dir_mask()).map(|_| ())
        }

        pub fn add_file(&self, p: &Path) -> io::Result<()> {
            self.fd.watches().add(p, file_mask()).map(|_| ())
        }

        /// One non-blocking read: `None` when nothing is queued, else whether the queue
        /// overflowed (events were lost).
        pub fn read(&mut self) -> io::Result<Option<bool>> {
            match self.fd.read_events(&mut self.buf) {
                Ok(events) => {
                    let mut any = None;
                    for e in events {
                        let overflow = e.mask.contains(EventMask::Q_OVERFLOW);
                        any = Some(any.unwrap_or(false) || overflow);
                    }
                    Ok(any)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            }
        }

        pub fn fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    use std::io;
    use std::os::fd::RawFd;
    use std::path::Path;

    pub struct Watcher;

    impl Watcher {
        pub fn new() -> io::Result<Watcher> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "inotify is Linux's",
            ))
        }
        pub fn add_dir(&self, _: &Path) -> io::Result<()> {
            Ok(())
        }
        pub fn add_file(&self, _: &Path) -> io::Result<()> {
            Ok(())
        }
        pub fn read(&mut self) -> io::Result<Option<bool>> {
            Ok(None)
        }
        pub fn fd(&self) -> RawFd {
            -1
        }
    }
}

/// Where a refresh's invalidations go: the adapter's delivery (FUSE: the kernel's entry and
/// inode caches). Called from the refresher's thread only; it must not block on the adapter's
/// workers (they may be waiting for this thread's barrier answer).
pub type Sink = Box<dyn Fn(&[Invalidation]) + Send>;

/// The configured roots: the hub cache, the workspace homes, and the hub models' runtime
/// caches under mlxfs's state folder (`hf-cache`: its parent holds the daemon's own logs,
/// whose writes must not trigger rescans).
fn configured_roots(vfs: &Vfs) -> Vec<PathBuf> {
    let mut want: Vec<PathBuf> = vec![vfs.loc.hub_cache.clone()];
    want.extend(vfs.loc.workspace_homes().map(Path::to_path_buf));
    // The same folder `show` and `run` take (with no HOME, the temp fallback).
    want.push(crate::state::dir_or_temp().join("hf-cache"));
    want
}

/// The real folders of models that live outside the configured roots (a repo folder,
/// snapshot, `blobs/` or workspace moved to another disk and linked back: nothing follows
/// links, so their targets are roots of their own), as the current tree knows them.
fn relocated_roots(vfs: &Vfs, inside: &[PathBuf]) -> Vec<PathBuf> {
    let tree = vfs.tree();
    let mut relocated: Vec<PathBuf> = tree
        .models
        .iter()
        .filter(|m| m.model.problem.is_none())
        .flat_map(|m| {
            m.model
                .link_roots()
                .folders()
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .filter(|r| !inside.iter().any(|i| r.starts_with(i)))
        .collect();
    relocated.sort();
    relocated.dedup();
    relocated
}

/// A root as last walked: its canonical path and the folder's identity then. Any difference
/// later (a link in its path re-pointed, a parent renamed — which sends no event for the
/// folders below —, the folder created or replaced) is a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RootState {
    path: PathBuf,
    real: Option<(PathBuf, u64, u64)>,
}

fn root_state(p: &Path) -> RootState {
    let real = std::fs::canonicalize(p).ok().and_then(|c| {
        let m = std::fs::metadata(&c).ok().filter(|m| m.is_dir())?;
        Some((c, m.dev(), m.ino()))
    });
    RootState {
        path: p.to_path_buf(),
        real,
    }
}

/// The mount table: a file system mounted or unmounted anywhere (a disk attached where a
/// relocated model's link leads) sends no inotify event, so a change here is a change.
fn mount_table() -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read("/proc/self/mountinfo")
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// Where a link found by the walk leads: lexically when its target has no `..` after a
/// name (the folder holding it is real, so popping it is exact; a link met on the way is
/// inside a watched folder and checked on its own), else by the file system.
fn link_target(dir: &Path, link: &Path) -> Option<PathBuf> {
    let t = std::fs::read_link(link).ok()?;
    let mut out = if t.is_absolute() {
        PathBuf::from("/")
    } else {
        dir.to_path_buf()
    };
    let mut named = false;
    for c in t.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir if !named => {
                out.pop();
            }
            Component::Normal(n) => {
                named = true;
                out.push(n);
            }
            Component::ParentDir | Component::Prefix(_) => {
                return std::fs::canonicalize(link).ok();
            }
        }
    }
    Some(out)
}

/// What one walk of the roots found that makes currency unprovable, and the links to check
/// once every root is known.
#[derive(Default)]
struct Walk {
    problems: Vec<String>,
    links: Vec<(PathBuf, Option<PathBuf>)>,
    walked: HashSet<PathBuf>,
}

impl Walk {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 8 {
            self.problems.push(p);
        }
    }
}

struct Refresher {
    inotify: Option<os::Watcher>,
    /// Why there is no inotify at all (then nothing is ever provable).
    no_inotify: Option<String>,
    /// An event (or an overflow) arrived since the last rebuild started.
    dirty: bool,
    /// Events did arrive (not only `dirty` from the start): the next rebuild builds a tree
    /// without first comparing fingerprints.
    changed: bool,
    /// The first event of the current debounce window.
    pending_since: Option<Instant>,
    /// Counts rebuilds (the `build` of a sync answer).
    build: u64,
    /// Why the last rebuild cannot vouch for itself (walk problems, links out, file systems).
    unprovable: Option<String>,
    roots: Vec<RootState>,
    mounts: u64,
    last: Instant,
}

impl Refresher {
    fn new() -> Refresher {
        let (inotify, no_inotify) = match os::Watcher::new() {
            Ok(i) => (Some(i), None),
            Err(e) => {
                eprintln!(
                    "mlxfs: warning: cannot watch for changes ({e}); the tree refreshes every {}s",
                    PERIODIC.as_secs()
                );
                (None, Some(format!("inotify is not available ({e})")))
            }
        };
        Refresher {
            inotify,
            no_inotify,
            dirty: true,
            changed: false,
            pending_since: None,
            build: 0,
            unprovable: None,
            roots: Vec::new(),
            mounts: 0,
            last: Instant::now(),
        }
    }

    /// Read every queued event (never blocks). Any event marks the tree dirty; an overflow
    /// (events lost) too, and the next rebuild re-walks everything.
    fn drain(&mut self) {
        let Some(ino) = self.inotify.as_mut() else {
            return;
        };
        loop {
            match ino.read() {
                Ok(None) => break,
                Ok(Some(overflow)) => {
                    if overflow {
                        eprintln!("mlxfs: inotify queue overflow: rescanning everything");
                    }
                    self.dirty = true;
                    self.changed = true;
                    self.pending_since.get_or_insert_with(Instant::now);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dirty = true;
                    self.pending_since.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
    }

    /// Watch every folder below `root` (links never followed, the mount point never
    /// entered). Each folder is watched before it is listed, so an entry added after the
    /// listing sends an event.
    fn walk(&mut self, root: &Path, mnt: &Path, w: &mut Walk) {
        let Some(ino) = self.inotify.as_ref() else {
            return;
        };
        if !w.walked.insert(root.to_path_buf()) {
            return;
        }
        let mut stack: Vec<(PathBuf, Option<u64>)> = vec![(root.to_path_buf(), None)];
        while let Some((d, parent_dev)) = stack.pop() {
            if d == mnt {
                w.problem(format!(
                    "the mount point {} is inside a watched folder",
                    d.display()
                ));
                continue;
            }
            let dev = match std::fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() => m.dev(),
                // Gone or replaced since it was listed: its parent's event says so.
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    w.problem(format!("cannot read {}: {e}", d.display()));
                    continue;
                }
            };
            if parent_dev != Some(dev) {
                match crate::sys::fs_type(&d) {
                    Ok(t) if LOCAL_FS.contains(&t) => {}
                    Ok(t) => w.problem(format!(
                        "{} is on a file system (type {t:#x}) where changes made elsewhere send no event",
                        d.display()
                    )),
                    Err(e) => w.problem(format!("cannot read {}: {e}", d.display())),
                }
            }
            match ino.add_dir(&d) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    w.problem(format!(
                        "cannot watch {}: the inotify watch limit (fs.inotify.max_user_watches) is reached",
                        d.display()
                    ));
                    continue;
                }
                Err(e) => {
                    w.problem(format!("cannot watch {}: {e}", d.display()));
                    continue;
                }
            }
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    w.problem(format!("cannot list {}: {e}", d.display()));
                    continue;
                }
            };
            for e in rd {
                let e = match e {
                    Ok(e) => e,
                    Err(err) => {
                        w.problem(format!("cannot list {}: {err}", d.display()));
                        break;
                    }
                };
                let Ok(ft) = e.file_type() else { continue };
                let p = e.path();
                if ft.is_dir() {
                    stack.push((p, Some(dev)));
                } else if ft.is_file() {
                    // A file with another name elsewhere can change through that name, which
                    // tells only the folder holding it and the file itself: watch the file.
                    let linked = e.metadata().is_ok_and(|m| m.nlink() > 1);
                    if linked
                        && let Err(err) = ino.add_file(&p)
                        && err.raw_os_error() != Some(libc::ENOENT)
                    {
                        w.problem(format!("cannot watch {}: {err}", p.display()));
                    }
                } else if ft.is_symlink() {
                    // Only links that may lead out are kept for the check after the walk: one
                    // into this root is inside (a hub snapshot's links into `blobs/`, tens of
                    // thousands of paths held for nothing, issue 15 §4).
                    let t = link_target(&d, &p);
                    if !t.as_ref().is_some_and(|t| t.starts_with(root)) {
                        w.links.push((p, t));
                    }
                }
            }
        }
    }

    /// Rescan: walk (watch) every root, then build the tree; walk the roots the new tree
    /// brought (a model relocated by a new link) and build again, so that nothing the tree
    /// shows went unwatched while it was built.
    fn rebuild(&mut self, vfs: &Vfs, sink: &Sink) {
        // Events queued before this point are covered by this rebuild.
        self.drain();
        let changed = std::mem::take(&mut self.changed);
        self.dirty = false;
        self.pending_since = None;
        self.build += 1;
        self.last = Instant::now();
        self.mounts = mount_table();
        // Until this rebuild ends (a panic in it leaves this standing).
        self.unprovable = Some("the last rescan did not finish".into());
        let mnt = vfs.info().mountpoint;
        let configured = configured_roots(vfs);
        let mut states: Vec<RootState> = configured.iter().map(|p| root_state(p)).collect();
        let inside: Vec<PathBuf> = states
            .iter()
            .filter_map(|s| s.real.as_ref().map(|r| r.0.clone()))
            .collect();
        let mut w = Walk::default();
        let runtime_caches = crate::state::dir_or_temp().join("hf-cache");
        for s in &states {
            match &s.real {
                // The runtime caches are watched for the tree (`runtime-cache.json`), but no
                // `list` or `health` answer depends on them: what they hold (links, their
                // file system) never makes the catalog unprovable.
                Some((real, ..)) if runtime_caches == s.path => {
                    let real = real.clone();
                    self.walk(&real, &mnt, &mut Walk::default());
                }
                Some((real, ..)) => {
                    let real = real.clone();
                    self.walk(&real, &mnt, &mut w);
                }
                // Not there yet (no hub cache before the first pull): watch its parent for
                // it to appear (the barrier also sees it in `stale`). Never the state
                // folder, which holds the daemon's logs.
                None => {
                    if let Some(ino) = self.inotify.as_ref()
                        && runtime_caches != s.path
                        && let Some(parent) = s.path.parent().filter(|p| p.is_dir())
                        && !mnt.starts_with(parent)
                    {
                        let _ = ino.add_dir(parent);
                    }
                }
            }
        }
        let mut relocated = relocated_roots(vfs, &inside);
        for r in &relocated {
            if !mnt.starts_with(r) {
                self.walk(r, &mnt, &mut w);
            }
        }
        let mut settled = false;
        for round in 0..3 {
            sink(&vfs.refresh_after(changed && round == 0));
            let now = relocated_roots(vfs, &inside);
            let new: Vec<PathBuf> = now
                .iter()
                .filter(|r| !w.walked.contains(*r) && !mnt.starts_with(r))
                .cloned()
                .collect();
            relocated = now;
            if new.is_empty() {
                settled = true;
                break;
            }
            for r in &new {
                self.walk(r, &mnt, &mut w);
            }
        }
        if !settled {
            w.problem("relocated models kept appearing during the rescan".into());
        }
        for r in &relocated {
            if mnt.starts_with(r) {
                w.problem(format!(
                    "the mount point is inside the model folder {}",
                    r.display()
                ));
            }
        }
        states.extend(relocated.iter().map(|p| root_state(p)));
        // A link the catalog follows to somewhere unwatched (a link out of a model, a
        // dangling one, a relocated model whose disk is not attached): what happens there
        // sends no event.
        let roots: Vec<&PathBuf> = w.walked.iter().collect();
        let outside = w.links.iter().find(|(_, t)| match t {
            Some(t) => !roots.iter().any(|r| t.starts_with(r)),
            None => true,
        });
        if let Some((link, _)) = outside {
            let why = format!(
                "the link {} leads out of the watched folders",
                link.display()
            );
            w.problems.insert(0, why);
        }
        if let Some(e) = vfs.info().refresh_error {
            w.problems.insert(0, e);
        }
        self.roots = states;
        self.unprovable = (!w.problems.is_empty()).then(|| w.problems.join("; "));
    }

    /// Did anything change that sends no inotify event: a root's path now leads elsewhere,
    /// the mount table changed, or the last rescan failed.
    fn stale(&self, vfs: &Vfs) -> bool {
        vfs.info().refresh_error.is_some()
            || mount_table() != self.mounts
            || self.roots.iter().any(|s| root_state(&s.path) != *s)
    }

    /// The barrier: drain, rebuild when anything changed, answer.
    fn sync(&mut self, vfs: &Vfs, sink: &Sink) -> SyncAnswer {
        self.drain();
        if self.inotify.is_some() && (self.dirty || self.stale(vfs)) {
            round(|| self.rebuild(vfs, sink));
        }
        let unprovable = self.no_inotify.clone().or_else(|| self.unprovable.clone());
        SyncAnswer {
            build: self.build,
            unprovable,
        }
    }
}

/// Run until `stop` is set: rescan on changes, then hand `sink` the invalidations; answer
/// sync requests.
pub fn spawn(vfs: Arc<Vfs>, sink: Sink, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let (barrier, rx) = Barrier::new()?;
    let _ = vfs.renderer.barrier.set(barrier);
    std::thread::Builder::new()
        .name("mlxfs-refresh".into())
        .spawn(move || run(&vfs, &sink, &stop, &rx))
}

fn run(vfs: &Vfs, sink: &Sink, stop: &AtomicBool, rx: &BarrierRx) {
    // The full tree first (the mount started on names only: `Vfs::new_partial`).
    sink(&vfs.complete());
    let mut r = Refresher::new();
    // What changed between the tree's build and these watches sent no event: one rescan
    // now (walk first, then build), so that nothing waits for the periodic one.
    round(|| r.rebuild(vfs, sink));
    while !stop.load(Ordering::Relaxed) {
        let wait = match r.pending_since {
            Some(t) => DEBOUNCE.saturating_sub(t.elapsed()),
            None => TICK.min(PERIODIC.saturating_sub(r.last.elapsed())),
        };
        let mut fds = vec![libc::pollfd {
            fd: rx.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(i) = &r.inotify {
            fds.push(libc::pollfd {
                fd: i.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: poll on a live array of pollfds of the length given.
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        r.drain();
        let requests = rx.take();
        if !requests.is_empty() {
            let answer = r.sync(vfs, sink);
            for q in requests {
                let _ = q.send(answer.clone());
            }
            continue;
        }
        let due = match r.pending_since {
            Some(t) => t.elapsed() >= DEBOUNCE,
            None => r.last.elapsed() >= PERIODIC,
        };
        if due {
            round(|| r.rebuild(vfs, sink));
        }
    }
}

/// One refresh round; a panic in it is logged and the refresher goes on (a dead refresher
/// would freeze the tree without a word).
fn round(f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("mlxfs: a refresh round failed ({why}); the next change retries");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        let dir = root.join("a/b");
        std::fs::create_dir_all(&dir).unwrap();
        let mk = |name: &str, t: &str| {
            let l = dir.join(name);
            std::os::unix::fs::symlink(t, &l).unwrap();
            l
        };
        assert_eq!(
            link_target(&dir, &mk("x", "../../blobs/abc")),
            Some(root.join("blobs/abc"))
        );
        assert_eq!(
            link_target(&dir, &mk("y", "/etc/passwd")),
            Some("/etc/passwd".into())
        );
        assert_eq!(link_target(&dir, &mk("z", "c/./d")), Some(dir.join("c/d")));
        // `..` after a name: the file system decides (here: nothing there).
        assert_eq!(link_target(&dir, &mk("w", "c/../../x")), None);
        std::fs::write(root.join("a/x"), b"").unwrap();
        std::fs::create_dir(dir.join("c")).unwrap();
        assert_eq!(
            link_target(&dir, &mk("v", "c/../../x")),
            Some(root.join("a/x"))
        );
    }

    #[test]
    fn root_state_sees_a_replaced_folder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hub");
        let none = root_state(&p);
        assert!(none.real.is_none());
        std::fs::create_dir(&p).unwrap();
        let one = root_state(&p);
        assert_ne!(none, one);
        std::fs::rename(&p, d.path().join("old")).unwrap();
        std::fs::create_dir(&p).unwrap();
        assert_ne!(one, root_state(&p), "a new folder under the same name");
    }
}
