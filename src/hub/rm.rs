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
use crate::catalog::{HubRepo, Locations, ModelRef, Source};
use crate::text::short_rev;

/// What `rm` decided or did.
#[derive(Debug, Clone)]
pub enum RmOutcome {
    /// A fuzzy match: nothing deleted until confirmed (`-f`).
    NeedsConfirmation {
        model: String,
        spec: String,
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
    pub freed_bytes: u64,
    pub lock_files_cleaned: usize,
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
                    .is_some_and(|n| n == "blobs")
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
        collect_locks(&hub.join(".locks").join(name), &mut files);
    }
    collect_locks(&repo_dir.join("blobs"), &mut files); // hf-hub 0.4 keeps them there
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
    fs::remove_dir_all(&trash)
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
        return Ok(RmOutcome::NeedsConfirmation {
            model: m.name.clone(),
            spec: spec.to_string(),
        });
    }
    let lock_dir = repo_dir
        .file_name()
        .map(|n| loc.hub_cache.join(".locks").join(n));
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
    let snap_dir = repo_dir.join("snapshots").join(&commit);
    let mine = blobs_of(&snap_dir);
    let mut used = BTreeSet::new();
    for s in &others {
        used.extend(blobs_of(&s.path));
    }
    let tag = short_rev(&commit).to_string();
    remove_hidden(&snap_dir, &repo_dir.join("snapshots"), &tag)
        .map_err(|e| io(e, &format!("removing {}", snap_dir.display())))?;
    let (mut freed, mut removed, mut kept, mut locks) = (0, 0, 0, 0);
    for b in &mine {
        if used.contains(b) {
            kept += 1;
            continue;
        }
        let p = repo_dir.join("blobs").join(b);
        let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
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
    remove_refs_to(&repo_dir.join("refs"), &commit);
    let _ = fs::remove_dir_all(repo_dir.join(".no_exist").join(&commit));
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
    }))
}

/// Take an exclusive flock on `p` if nobody holds it (`None` when held or not creatable).
fn try_hold(p: &Path) -> Option<fs::File> {
    fs::create_dir_all(p.parent()?).ok()?;
    let f = crate::sys::open_lock_file(p).ok()?;
    f.try_lock().is_ok().then_some(f)
}

/// Remove a whole `models--…` folder (renamed out of sight first) and its lock folder.
fn delete_model(
    loc: &Locations,
    repo_dir: &Path,
    lock_dir: Option<&Path>,
    model: String,
    commit: Option<String>,
) -> Result<RmOutcome> {
    let freed = dir_size(&repo_dir.join("blobs"));
    let blobs = fs::read_dir(repo_dir.join("blobs"))
        .map(|r| r.count())
        .unwrap_or(0);
    let mut locks = Vec::new();
    if let Some(d) = lock_dir {
        collect_locks(d, &mut locks);
    }
    remove_hidden(repo_dir, &loc.hub_cache, "model")
        .map_err(|e| HubError::io(&e, &format!("removing {}", repo_dir.display())))?;
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

fn dir_size(d: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(d) else { return 0 };
    rd.flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
