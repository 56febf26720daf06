//! Keeping the mount current: inotify on the hub cache and the workspace home, a short
//! debounce, a rescan, and kernel invalidations sent from this thread (never a FUSE worker).
//! The thread never dies of what it finds on disk: a rescan that fails keeps the previous tree
//! and says so ([`Vfs::refresh`]), and a panic anywhere else in a round is caught and logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{INodeNo, Notifier};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::vfs::{Invalidation, Vfs};

/// Changes arriving within this window are handled by one rescan.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A rescan also runs this often without events (a safety net for missed events).
const PERIODIC: Duration = Duration::from_secs(30);

/// Send the kernel what a refresh changed. Errors (e.g. ENOENT for names the kernel never
/// cached) are expected and ignored.
pub fn apply(notifier: &Notifier, changes: &[Invalidation]) {
    for c in changes {
        let _ = match c {
            Invalidation::Entry { parent, name } => notifier.inval_entry(INodeNo(*parent), name),
            Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
        };
    }
}

/// The folders to watch: the hub cache, the workspace home, the hub models' runtime caches
/// under mlxfs's state folder, and every real folder of a model that lives elsewhere (a repo folder, snapshot, `blobs/` or workspace moved to another disk
/// and linked back: the watcher does not follow links, so it watches their targets).
fn watch_roots(
    w: &mut notify::RecommendedWatcher,
    vfs: &Vfs,
    watched: &mut Vec<std::path::PathBuf>,
) {
    let mut want: Vec<PathBuf> = vec![vfs.loc.hub_cache.clone()];
    want.extend(vfs.loc.workspace_homes().map(Path::to_path_buf));
    let inside: Vec<PathBuf> = want
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let tree = vfs.tree();
    // Never a folder that holds the mount itself (watching it would read the mount).
    let mnt = &vfs.info().mountpoint;
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
        .filter(|r| !inside.iter().any(|i| r.starts_with(i)) && !mnt.starts_with(r))
        .collect();
    relocated.sort();
    relocated.dedup();
    want.extend(relocated);
    // Hub models' runtime caches (their `.mlxfs/runtime-cache.json`), once the folder exists:
    // its parent holds the daemon's own logs, whose writes must not trigger rescans (the
    // periodic rescan looks again).
    if let Some(state) = crate::state::dir() {
        let caches = state.join("hf-cache");
        if caches.is_dir() && !mnt.starts_with(&caches) {
            want.push(caches);
        }
    }
    for p in &want {
        if watched.iter().any(|x| x == p) {
            continue;
        }
        if p.is_dir() {
            if w.watch(p, RecursiveMode::Recursive).is_ok() {
                watched.push(p.to_path_buf());
            }
        } else if let Some(parent) = p.parent().filter(|pp| pp.is_dir()) {
            // Not there yet (e.g. no hub cache before the first pull): watch for it to appear.
            if !watched.iter().any(|x| x == parent)
                && w.watch(parent, RecursiveMode::NonRecursive).is_ok()
            {
                watched.push(parent.to_path_buf());
            }
        }
    }
}

/// Run until `stop` is set: rescan on changes, then invalidate.
pub fn spawn(
    vfs: Arc<Vfs>,
    notifier: Notifier,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("mlxfs-refresh".into()).spawn(move || {
        let (tx, rx) = channel::<notify::Result<notify::Event>>();
        // Links are never followed: the tree does not follow them either, and a web of links
        // in a workspace must not keep the watcher busy forever.
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut watcher = match notify::RecommendedWatcher::new(tx, config) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("mlxfs: warning: cannot watch for changes ({e}); the tree refreshes every {}s", PERIODIC.as_secs());
                return periodic_only(&vfs, &notifier, &stop);
            }
        };
        let mut watched = Vec::new();
        watch_roots(&mut watcher, &vfs, &mut watched);
        // What changed between the tree's build and these watches sent no event: one rescan
        // now, so that nothing waits for the periodic one.
        round(|| apply(&notifier, &vfs.refresh()));
        let relevant = |ev: &notify::Result<notify::Event>| match ev {
            // Reads (ours included) must not trigger rescans.
            Ok(e) => !matches!(e.kind, EventKind::Access(_)),
            Err(_) => true,
        };
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(ev) if relevant(&ev) => {
                    let until = Instant::now() + DEBOUNCE;
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        if rx.recv_timeout(left).is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) if last.elapsed() >= PERIODIC => {}
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            last = Instant::now();
            round(|| {
                watch_roots(&mut watcher, &vfs, &mut watched);
                apply(&notifier, &vfs.refresh());
            });
        }
    })
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

fn periodic_only(vfs: &Vfs, notifier: &Notifier, stop: &AtomicBool) {
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        if last.elapsed() >= PERIODIC {
            last = Instant::now();
            round(|| apply(notifier, &vfs.refresh()));
        }
    }
}
