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

use serde_json::{Value, json};

use crate::catalog::resolve::{ResolveError, resolve};
use crate::catalog::{HubRepo, Locations, Source};

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

/// Why `rm` refused.
#[derive(Debug, Clone)]
pub enum RmError {
    Resolve(ResolveError),
    Workspace(String),
    Io(String),
}

impl RmOutcome {
    pub fn data(&self) -> Value {
        match self {
            RmOutcome::NeedsConfirmation { model, spec } => json!({
                "model": model, "action": "requires_confirmation",
                "message": format!("Would delete '{model}' (matched from '{spec}')"),
                "requires_confirmation": true, "matches": [], "lock_files_cleaned": 0,
            }),
            RmOutcome::Locked { model, locks } => json!({
                "model": model, "action": "locked", "message": "", "requires_confirmation": false,
                "matches": [], "lock_files_cleaned": 0, "locks_detected": true, "lock_files": locks,
            }),
            RmOutcome::Deleted(d) => {
                let what = match &d.commit {
                    Some(c) => format!("{}@{}", d.model, c),
                    None => d.model.clone(),
                };
                let mut v = json!({
                    "model": d.model,
                    "action": if d.commit.is_some() { "delete_hash" } else { "delete_model" },
                    "message": format!("Deleted {what}"),
                    "requires_confirmation": false, "matches": [],
                    "lock_files_cleaned": d.lock_files_cleaned,
                });
                if let Some(c) = &d.commit {
                    v["commit_hash"] = json!(c);
                }
                v["whole_model_removed"] = json!(d.whole_model);
                v["blobs_removed"] = json!(d.blobs_removed);
                v["blobs_kept"] = json!(d.blobs_kept);
                v["freed_bytes"] = json!(d.freed_bytes);
                v
            }
        }
    }
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

/// Lock files of a model that some process holds right now.
pub fn held_locks(hub: &Path, repo_dir: &Path) -> Vec<PathBuf> {
    use std::os::fd::AsRawFd;
    let mut files = Vec::new();
    if let Some(name) = repo_dir.file_name() {
        collect_locks(&hub.join(".locks").join(name), &mut files);
    }
    collect_locks(&repo_dir.join("blobs"), &mut files); // hf-hub 0.4 keeps them there
    files
        .into_iter()
        .filter(|p| {
            let Ok(f) = fs::OpenOptions::new().read(true).open(p) else {
                return false;
            };
            // SAFETY: flock on an open descriptor; released when `f` closes.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
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

/// Delete what `spec` names in the hub cache. A fuzzy match needs `force`, as do held locks.
pub fn rm(loc: &Locations, spec: &str, force: bool) -> Result<RmOutcome, RmError> {
    let m = resolve(spec, loc).map_err(RmError::Resolve)?;
    if m.source == Source::Workspace {
        return Err(RmError::Workspace(m.name));
    }
    let repo_dir = m
        .repo_dir
        .clone()
        .ok_or_else(|| RmError::Io("no repo folder".into()))?;
    let (base, rev) = match spec.split_once('@') {
        Some((b, r)) => (b, Some(r)),
        None => (spec, None),
    };
    let exact = base == m.name || base.trim_end_matches("@hub") == m.name;
    if !exact && !force {
        return Ok(RmOutcome::NeedsConfirmation {
            model: m.name.clone(),
            spec: spec.to_string(),
        });
    }
    let held = held_locks(&loc.hub_cache, &repo_dir);
    if !held.is_empty() && !force {
        return Ok(RmOutcome::Locked {
            model: m.name.clone(),
            locks: held
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        });
    }
    let repo = HubRepo::load(&repo_dir).ok_or_else(|| RmError::Io("not a hub model".into()))?;
    let lock_dir = repo_dir
        .file_name()
        .map(|n| loc.hub_cache.join(".locks").join(n));
    let count_locks = |d: &Option<PathBuf>| {
        let mut v = Vec::new();
        if let Some(d) = d {
            collect_locks(d, &mut v);
        }
        v.len()
    };
    let io = |e: std::io::Error, what: &str| RmError::Io(format!("{what}: {e}"));

    let (Some(_), Some(commit)) = (rev, m.revision.clone()) else {
        // The whole model.
        let freed = dir_size(&repo_dir.join("blobs"));
        let blobs = fs::read_dir(repo_dir.join("blobs"))
            .map(|r| r.count())
            .unwrap_or(0);
        let locks = count_locks(&lock_dir);
        remove_hidden(&repo_dir, &loc.hub_cache, "model")
            .map_err(|e| io(e, &format!("removing {}", repo_dir.display())))?;
        if let Some(l) = &lock_dir {
            let _ = fs::remove_dir_all(l);
        }
        return Ok(RmOutcome::Deleted(Deleted {
            model: m.name,
            commit: None,
            whole_model: true,
            blobs_removed: blobs,
            blobs_kept: 0,
            freed_bytes: freed,
            lock_files_cleaned: locks,
        }));
    };

    // One revision.
    let others: Vec<&crate::catalog::Snapshot> = repo
        .snapshots
        .iter()
        .filter(|s| s.commit != commit)
        .collect();
    if others.is_empty() {
        let mut d = match rm(loc, base, true)? {
            RmOutcome::Deleted(d) => d,
            o => return Ok(o),
        };
        d.commit = Some(commit);
        return Ok(RmOutcome::Deleted(d));
    }
    let snap_dir = repo_dir.join("snapshots").join(&commit);
    let mine = blobs_of(&snap_dir);
    let mut used = BTreeSet::new();
    for s in &others {
        used.extend(blobs_of(&s.path));
    }
    remove_hidden(
        &snap_dir,
        &repo_dir.join("snapshots"),
        &commit[..7.min(commit.len())],
    )
    .map_err(|e| io(e, &format!("removing {}", snap_dir.display())))?;
    let mut freed = 0;
    let mut removed = 0;
    let mut kept = 0;
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
        if let Some(l) = &lock_dir {
            let _ = fs::remove_file(l.join(format!("{b}.lock")));
        }
    }
    // Refs that named this commit, and its negative cache / cached tree.
    remove_refs_to(&repo_dir.join("refs"), &commit);
    let _ = fs::remove_dir_all(repo_dir.join(".no_exist").join(&commit));
    let _ = fs::remove_file(repo_dir.join("trees").join(format!("{commit}.json")));
    Ok(RmOutcome::Deleted(Deleted {
        model: m.name,
        commit: Some(commit),
        whole_model: false,
        blobs_removed: removed,
        blobs_kept: kept,
        freed_bytes: freed,
        lock_files_cleaned: 0,
    }))
}

fn remove_refs_to(d: &Path, commit: &str) {
    let Ok(rd) = fs::read_dir(d) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_refs_to(&p, commit);
        } else if fs::read_to_string(&p).is_ok_and(|c| c.trim() == commit) {
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
