//! `rm`: delete a hub model, or one revision of it, from the hub cache. Workspaces are the
//! user's folders and are never deleted here.
//!
//! `name@rev` removes that snapshot, the refs pointing at it, and only the blobs no other
//! snapshot links to; the last snapshot takes the whole model folder with it. Folders are
//! renamed out of sight first and deleted afterwards, so the cache never shows a half-removed
//! snapshot.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{ErrorKind, HubError, Result};
use crate::catalog::{HubRepo, Locations, ModelRef, RepoDir, Source};
use crate::text::short_rev;

/// What `rm` decided or did.
#[derive(Debug, Clone)]
pub enum RmOutcome {
    /// A fuzzy match: nothing deleted until confirmed (`-f`).
    NeedsConfirmation {
        model: String,
        spec: String,
        /// What `-f` would delete: the model, or one revision of it (`org/name@abcdef1`).
        what: String,
    },
    /// Held locks (a download in progress): nothing deleted until forced.
    Locked {
        model: String,
        locks: Vec<String>,
    },
    Deleted(Deleted),
}

#[derive(Debug, Clone)]
pub struct Deleted {
    pub model: String,
    /// `Some(commit)` when one revision was removed.
    pub commit: Option<String>,
    pub whole_model: bool,
    pub blobs_removed: usize,
    pub blobs_kept: usize,
    /// Bytes of every regular file removed (blobs, and a snapshot's own files when it holds
    /// copies rather than blob links), each file counted once.
    pub freed_bytes: u64,
    pub lock_files_cleaned: usize,
    /// Real folders outside the hub cache that were removed with the model: the targets of a
    /// repo folder, `snapshots/`, a snapshot or `blobs/` that had been moved to another disk
    /// and linked back.
    pub relocated_removed: Vec<PathBuf>,
    /// Link targets left in place, with why (a folder that holds the cache or a home folder,
    /// or one that does not look like the part of the model it stood for).
    pub relocated_kept: Vec<(PathBuf, String)>,
}

/// Blob names (files in `blobs/`) a snapshot folder links to.
fn blobs_of(snapshot: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fn walk(d: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                walk(&e.path(), out);
            } else if t.is_symlink()
                && let Ok(target) = fs::read_link(e.path())
                && target
                    .parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n == RepoDir::BLOBS)
                && let Some(n) = target.file_name().and_then(|n| n.to_str())
            {
                out.insert(n.to_string());
            }
        }
    }
    walk(snapshot, &mut out);
    out
}

/// Lock files of a model that some process holds right now (`mine` is ours, not probed).
pub fn held_locks(hub: &Path, repo_dir: &Path, mine: Option<&Path>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(name) = repo_dir.file_name() {
        collect_locks(&RepoDir::locks_in(hub, name), &mut files);
    }
    collect_locks(&RepoDir(repo_dir).blobs(), &mut files); // hf-hub 0.4 keeps them there
    files
        .into_iter()
        .filter(|p| Some(p.as_path()) != mine)
        .filter(|p| {
            // Never through a link, never waiting on a FIFO: only a real lock file counts.
            let Ok(f) = crate::sys::open_existing_lock(p) else {
                return false;
            };
            // Held when we cannot take it ourselves (released when `f` closes).
            f.try_lock().is_err()
        })
        .collect()
}

fn collect_locks(d: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(d) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_locks(&p, out);
        } else if p.extension().is_some_and(|x| x == "lock") {
            out.push(p);
        }
    }
}

fn remove_hidden(dir: &Path, parent: &Path, tag: &str) -> std::io::Result<()> {
    let trash = parent.join(format!(".mlxfs-rm-{tag}-{}", std::process::id()));
    fs::rename(dir, &trash)?;
    // A link (a folder moved elsewhere) is removed itself; its target is the caller's.
    if fs::symlink_metadata(&trash).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&trash)
    } else {
        fs::remove_dir_all(&trash)
    }
}

/// What to do with the target of a link inside a model being removed.
enum Target {
    /// Not a link to a folder, or a target removed with the model anyway.
    None,
    Remove(PathBuf),
    Keep(PathBuf, String),
}

/// Where relocated data may be deleted. Never a folder that holds `/`, the hub cache, the
/// home folder or the workspace home; never a folder inside the hub cache or the workspace
/// home (another model's or workspace's own folder, linked from this model).
struct Guard {
    holds: Vec<PathBuf>,
    inside: Vec<(PathBuf, &'static str)>,
}

impl Guard {
    fn new(loc: &Locations) -> Guard {
        let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let home = PathBuf::from(crate::sys::home_dir(crate::env::var(crate::env::HOME)));
        let mut holds = vec![PathBuf::from("/"), canon(&loc.hub_cache), canon(&home)];
        let mut inside = vec![(canon(&loc.hub_cache), "the hub cache")];
        for w in loc.workspace_homes() {
            holds.push(canon(w));
            inside.push((canon(w), "a workspace home"));
        }
        Guard { holds, inside }
    }

    /// Why `real` must be kept, or `None` when it may be deleted.
    fn keep(&self, real: &Path) -> Option<String> {
        if let Some(x) = self.holds.iter().find(|x| x.starts_with(real)) {
            return Some(format!("it holds {}", x.display()));
        }
        self.inside
            .iter()
            .find(|(x, _)| real.starts_with(x))
            .map(|(_, what)| format!("it is inside {what}: another model's own folder"))
    }
}

/// The real folder behind `p` when `p` is a link to a folder (a folder moved to another disk
/// and linked back), unless it lies inside `within` (removed with it anyway). It is removed
/// only when the [`Guard`] allows it and it looks like what it stands for (`looks_right`
/// says why not).
fn relocated_target(
    p: &Path,
    within: &Path,
    guard: &Guard,
    looks_right: impl Fn(&Path) -> Option<String>,
) -> Target {
    let is_link = fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    let Some(real) = is_link.then(|| fs::canonicalize(p).ok()).flatten() else {
        return Target::None;
    };
    if !fs::metadata(&real).is_ok_and(|m| m.is_dir()) || real.starts_with(within) {
        return Target::None;
    }
    match guard.keep(&real).or_else(|| looks_right(&real)) {
        Some(why) => Target::Keep(real, why),
        None => Target::Remove(real),
    }
}

/// A repo folder holds `snapshots/`, `blobs/` or `refs/`.
fn looks_like_repo(p: &Path) -> Option<String> {
    let ok = [RepoDir::SNAPSHOTS, RepoDir::BLOBS, RepoDir::REFS]
        .iter()
        .any(|n| fs::symlink_metadata(p.join(n)).is_ok());
    (!ok).then(|| "it does not look like a model folder (no snapshots/, blobs/ or refs/)".into())
}

/// A snapshot folder holds no folder named like the cache's own parts.
fn looks_like_snapshot(p: &Path) -> Option<String> {
    let odd = [RepoDir::SNAPSHOTS, RepoDir::BLOBS, "hub", "models"]
        .iter()
        .any(|n| fs::symlink_metadata(p.join(n)).is_ok_and(|m| m.is_dir()));
    if fs::symlink_metadata(p.join(crate::hash::SENTINEL_FILENAME)).is_ok() {
        return Some("it is a workspace (it holds a workspace sentinel)".into());
    }
    odd.then(|| "it does not look like a snapshot folder".into())
}

/// Remove a real folder that lives outside the cache: renamed out of sight in its own parent
/// first, then deleted.
/// A folder that cannot be renamed (a disk's mount root: `EBUSY`) is emptied in place.
fn remove_relocated(real: &Path, tag: &str) -> std::io::Result<()> {
    let parent = real.parent().unwrap_or(Path::new("/"));
    let trash = parent.join(format!(".mlxfs-rm-{tag}-{}", std::process::id()));
    match fs::rename(real, &trash) {
        Ok(()) => fs::remove_dir_all(&trash),
        Err(_) => {
            for e in fs::read_dir(real)? {
                let p = e?.path();
                if fs::symlink_metadata(&p)?.is_dir() {
                    fs::remove_dir_all(&p)?;
                } else {
                    fs::remove_file(&p)?;
                }
            }
            // The folder itself stays when it is a mount point.
            let _ = fs::remove_dir(real);
            Ok(())
        }
    }
}

/// Remove the named blobs from a relocated `blobs/` folder (only this model's files: the
/// folder may hold others), then the folder when it is left empty. (bytes freed, removed).
fn remove_blob_files(
    real_blobs: &Path,
    names: &BTreeSet<String>,
    seen: &mut BTreeSet<(u64, u64)>,
) -> (u64, bool) {
    use std::os::unix::fs::MetadataExt;
    let mut freed = 0u64;
    for n in names {
        for name in [n.clone(), format!("{n}{}", RepoDir::INCOMPLETE)] {
            let p = real_blobs.join(name);
            if let Ok(m) = fs::symlink_metadata(&p)
                && m.is_file()
                && fs::remove_file(&p).is_ok()
                && seen.insert((m.dev(), m.ino()))
            {
                freed += m.len();
            }
        }
    }
    (freed, fs::remove_dir(real_blobs).is_ok())
}

/// Bytes of the regular files below `dirs` (links not followed), each file counted once.
fn bytes_below(dirs: &[PathBuf], seen: &mut BTreeSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    crate::catalog::for_each_below(dirs, |_, md| {
        if md.is_file() && seen.insert((md.dev(), md.ino())) {
            total = total.saturating_add(md.len());
        }
    });
    total
}

/// How sure the caller is.
#[derive(Debug, Clone, Copy, Default)]
pub struct RmFlags {
    /// The user confirmed an approximate name.
    pub name_confirmed: bool,
    /// Delete even while another process holds one of the model's locks.
    pub override_locks: bool,
}

impl RmFlags {
    /// `-f`: both.
    pub fn force() -> RmFlags {
        RmFlags {
            name_confirmed: true,
            override_locks: true,
        }
    }
}

/// `name@rev` → (`name`, `rev`); the mount's `@hub` names (`org@hub/name`, `name@hub`) are
/// names, not revisions.
fn split_rev(spec: &str) -> (String, Option<&str>) {
    match spec.rsplit_once('@') {
        Some((b, r)) if r != "hub" && !r.starts_with("hub/") => (b.replace("@hub", ""), Some(r)),
        _ => (spec.replace("@hub", ""), None),
    }
}

/// Delete `m` (what the user's `spec` resolved to) from the hub cache. A fuzzy match needs a
/// confirmed name; held locks (a download in progress) need `override_locks`. Workspaces are
/// the user's folders: refused (`WorkspaceModel`).
pub fn rm(loc: &Locations, m: &ModelRef, spec: &str, flags: RmFlags) -> Result<RmOutcome> {
    if m.source == Source::Workspace {
        return Err(HubError::new(
            ErrorKind::WorkspaceModel,
            format!(
                "Cannot delete workspace model. Use: rm -rf {}",
                crate::text::shell_quote(&m.name)
            ),
        )
        .hint("Workspaces are your folders; mlxfs only deletes from the hub cache."));
    }
    let m = m.clone();
    let repo_dir = m
        .repo_dir
        .clone()
        .ok_or_else(|| HubError::new(ErrorKind::Io, format!("{}: no repo folder", m.name)))?;
    let (base, rev) = split_rev(spec);
    if base != m.name && !flags.name_confirmed {
        let what = match (&rev, &m.revision) {
            (Some(_), Some(commit)) => {
                format!("{}@{} (that revision only)", m.name, short_rev(commit))
            }
            _ => m.name.clone(),
        };
        return Ok(RmOutcome::NeedsConfirmation {
            model: m.name.clone(),
            spec: spec.to_string(),
            what,
        });
    }
    let lock_dir = repo_dir
        .file_name()
        .map(|n| RepoDir::locks_in(&loc.hub_cache, n));
    // Hold the pull lock while deleting, so no mlxfs pull starts meanwhile.
    let pull_lock = lock_dir.as_ref().map(|d| d.join(".mlxfs-pull.lock"));
    let held_pull = pull_lock.as_ref().and_then(|p| try_hold(p));
    let mut held = held_locks(&loc.hub_cache, &repo_dir, pull_lock.as_deref());
    if held_pull.is_none()
        && let Some(p) = &pull_lock
        && p.exists()
    {
        held.push(p.clone());
    }
    if !held.is_empty() && !flags.override_locks {
        return Ok(RmOutcome::Locked {
            model: m.name.clone(),
            locks: held
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        });
    }
    let repo = HubRepo::load(&repo_dir).ok_or_else(|| {
        HubError::new(
            ErrorKind::Io,
            format!("{} is not a hub model folder", repo_dir.display()),
        )
    })?;
    let io = |e: std::io::Error, what: &str| HubError::io(&e, what);

    let (Some(_), Some(commit)) = (rev, m.revision.clone()) else {
        return delete_model(loc, &repo_dir, lock_dir.as_deref(), m.name.clone(), None);
    };
    // One revision; the last one takes the model with it.
    let others: Vec<&crate::catalog::Snapshot> = repo
        .snapshots
        .iter()
        .filter(|s| s.commit != commit)
        .collect();
    if others.is_empty() {
        return delete_model(
            loc,
            &repo_dir,
            lock_dir.as_deref(),
            m.name.clone(),
            Some(commit),
        );
    }
    let snap_dir = RepoDir(&repo_dir).snapshot(&commit);
    let mine = blobs_of(&snap_dir);
    let mut used = BTreeSet::new();
    for s in &others {
        used.extend(blobs_of(&s.path));
    }
    let tag = short_rev(&commit).to_string();
    // The snapshot's own files count too (a snapshot of copies holds no blob links); a
    // snapshot that is a link counts only when its target is removed with it.
    let guard = Guard::new(loc);
    let real_repo = fs::canonicalize(&repo_dir).unwrap_or_else(|_| repo_dir.clone());
    let relocated = relocated_target(&snap_dir, &real_repo, &guard, looks_like_snapshot);
    let snap_is_link = fs::symlink_metadata(&snap_dir).is_ok_and(|m| m.file_type().is_symlink());
    let mut seen = BTreeSet::new();
    let mut freed = match &relocated {
        Target::Remove(real) => bytes_below(std::slice::from_ref(real), &mut seen),
        _ if !snap_is_link => bytes_below(std::slice::from_ref(&snap_dir), &mut seen),
        _ => 0,
    };
    // Blobs are deleted only from this model's own blobs/ (a link into another model's, or
    // somewhere the guard keeps, leaves them).
    let blobs_kept_why =
        match relocated_target(&RepoDir(&repo_dir).blobs(), &real_repo, &guard, |_| None) {
            Target::Keep(real, why) => Some((real, why)),
            _ => None,
        };
    remove_hidden(&snap_dir, &RepoDir(&repo_dir).snapshots(), &tag)
        .map_err(|e| io(e, &format!("removing {}", snap_dir.display())))?;
    let (mut relocated_removed, mut relocated_kept) = (Vec::new(), Vec::new());
    match relocated {
        Target::Remove(real) => {
            remove_relocated(&real, &tag)
                .map_err(|e| io(e, &format!("removing {}", real.display())))?;
            relocated_removed.push(real);
        }
        Target::Keep(real, why) => relocated_kept.push((real, why)),
        Target::None => {}
    }
    let blobs_usable = blobs_kept_why.is_none();
    relocated_kept.extend(blobs_kept_why);
    let (mut removed, mut kept, mut locks) = (0, 0, 0);
    for b in &mine {
        if used.contains(b) || !blobs_usable {
            kept += 1;
            continue;
        }
        let p = RepoDir(&repo_dir).blob(b);
        let len = fs::symlink_metadata(&p)
            .ok()
            .filter(|m| {
                use std::os::unix::fs::MetadataExt;
                m.is_file() && seen.insert((m.dev(), m.ino()))
            })
            .map_or(0, |m| m.len());
        if fs::remove_file(&p).is_ok() {
            freed += len;
            removed += 1;
        }
        if let Some(l) = &lock_dir
            && fs::remove_file(l.join(format!("{b}.lock"))).is_ok()
        {
            locks += 1;
        }
    }
    // Refs that named this commit, and its negative cache / cached tree.
    remove_refs_to(&RepoDir(&repo_dir).refs(), &commit);
    let _ = fs::remove_dir_all(RepoDir(&repo_dir).no_exist(&commit));
    let _ = fs::remove_file(repo_dir.join("trees").join(format!("{commit}.json")));
    drop(held_pull);
    Ok(RmOutcome::Deleted(Deleted {
        model: m.name,
        commit: Some(commit),
        whole_model: false,
        blobs_removed: removed,
        blobs_kept: kept,
        freed_bytes: freed,
        lock_files_cleaned: locks,
        relocated_removed,
        relocated_kept,
    }))
}

/// Take an exclusive flock on `p` if nobody holds it (`None` when held or not creatable).
fn try_hold(p: &Path) -> Option<fs::File> {
    fs::create_dir_all(p.parent()?).ok()?;
    let f = crate::sys::open_lock_file(p).ok()?;
    f.try_lock().is_ok().then_some(f)
}

/// Remove a whole `models--…` folder (renamed out of sight first) and its lock folder. Parts
/// moved to another disk and linked back (the repo folder itself, `snapshots/`, a snapshot,
/// `blobs/`) are removed where they really are, so the space is freed there too.
fn delete_model(
    loc: &Locations,
    repo_dir: &Path,
    lock_dir: Option<&Path>,
    model: String,
    commit: Option<String>,
) -> Result<RmOutcome> {
    let guard = Guard::new(loc);
    let real_repo = fs::canonicalize(repo_dir).unwrap_or_else(|_| repo_dir.to_path_buf());
    let (mut relocated, mut relocated_kept) = (Vec::new(), Vec::new());
    let cache_real = fs::canonicalize(&loc.hub_cache).unwrap_or_else(|_| loc.hub_cache.clone());
    let repo_target = relocated_target(repo_dir, &cache_real, &guard, looks_like_repo);
    let repo_kept = matches!(repo_target, Target::Keep(..));
    let mut blob_dir: Option<PathBuf> = None;
    match repo_target {
        Target::Remove(r) => relocated.push(r),
        Target::Keep(r, why) => relocated_kept.push((r, why)),
        Target::None => {}
    }
    if !repo_kept {
        match relocated_target(&RepoDir(&real_repo).blobs(), &real_repo, &guard, |_| None) {
            Target::Remove(r) => blob_dir = Some(r),
            Target::Keep(r, why) => relocated_kept.push((r, why)),
            Target::None => {}
        }
        let mut snaps = vec![RepoDir(&real_repo).snapshots()];
        if let Ok(rd) = fs::read_dir(RepoDir(&real_repo).snapshots()) {
            snaps.extend(rd.flatten().map(|e| e.path()));
        }
        for p in snaps {
            match relocated_target(&p, &real_repo, &guard, looks_like_snapshot) {
                Target::Remove(r) if !relocated.iter().any(|x| r.starts_with(x)) => {
                    relocated.push(r)
                }
                Target::Keep(r, why) => relocated_kept.push((r, why)),
                _ => {}
            }
        }
    }
    // This model's blobs, by the names its snapshots link to (a relocated blobs/ may hold
    // other files, which stay).
    let mut blob_names = BTreeSet::new();
    if let Ok(rd) = fs::read_dir(RepoDir(&real_repo).snapshots()) {
        for e in rd.flatten() {
            blob_names.extend(blobs_of(&e.path()));
        }
    }
    let mut seen = BTreeSet::new();
    let mut counted = if repo_kept {
        Vec::new()
    } else {
        vec![real_repo.clone()]
    };
    counted.extend(relocated.iter().cloned());
    let mut freed = bytes_below(&counted, &mut seen);
    let blobs_linked =
        fs::symlink_metadata(RepoDir(&real_repo).blobs()).is_ok_and(|m| m.file_type().is_symlink());
    let blobs = match &blob_dir {
        Some(_) => blob_names.len(),
        None if blobs_linked || repo_kept => 0,
        None => fs::read_dir(RepoDir(&real_repo).blobs())
            .map(|r| r.count())
            .unwrap_or(0),
    };
    let mut locks = Vec::new();
    if let Some(d) = lock_dir {
        collect_locks(d, &mut locks);
    }
    // Out of the catalog first (the cache's own entry, renamed out of sight), then the data
    // wherever it lives; if that fails, the entry comes back so that `rm` can be run again.
    let trash = loc
        .hub_cache
        .join(format!(".mlxfs-rm-model-{}", std::process::id()));
    fs::rename(repo_dir, &trash)
        .map_err(|e| HubError::io(&e, &format!("removing {}", repo_dir.display())))?;
    let elsewhere = || -> std::io::Result<()> {
        for r in &relocated {
            remove_relocated(r, "model")?;
        }
        Ok(())
    };
    if let Err(e) = elsewhere() {
        let _ = fs::rename(&trash, repo_dir);
        return Err(HubError::io(
            &e,
            "removing the model's folders on another disk (the model stays listed; run rm again)",
        ));
    }
    let mut relocated_removed = relocated;
    if let Some(real_blobs) = &blob_dir {
        let (bytes, gone) = remove_blob_files(real_blobs, &blob_names, &mut seen);
        freed += bytes;
        if gone {
            relocated_removed.push(real_blobs.clone());
        } else {
            relocated_kept.push((
                real_blobs.clone(),
                "it holds other files: only this model's blobs were removed".into(),
            ));
        }
    }
    let removed = if fs::symlink_metadata(&trash).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&trash)
    } else {
        fs::remove_dir_all(&trash)
    };
    removed.map_err(|e| HubError::io(&e, &format!("removing {}", trash.display())))?;
    if let Some(l) = lock_dir {
        let _ = fs::remove_dir_all(l);
    }
    Ok(RmOutcome::Deleted(Deleted {
        model,
        commit,
        whole_model: true,
        blobs_removed: blobs,
        blobs_kept: 0,
        freed_bytes: freed,
        lock_files_cleaned: locks.len(),
        relocated_removed,
        relocated_kept,
    }))
}

fn remove_refs_to(d: &Path, commit: &str) {
    let Ok(rd) = fs::read_dir(d) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_refs_to(&p, commit);
        } else if crate::sys::read_text(&p).is_ok_and(|c| c.trim() == commit) {
            let _ = fs::remove_file(&p);
        }
    }
}
