//! `pull`: download a revision into the hub cache, in the layout huggingface_hub writes
//! (`blobs/<etag>`, `snapshots/<commit>/<path>` → relative links, `refs/<branch>`, lock files
//! under `.locks/`), so Python tools and mlx-knife see the same cache.
//!
//! Nothing half-written is ever visible: blobs are downloaded as `blobs/<etag>.incomplete`
//! (the name huggingface_hub uses, so either tool continues the other's partial file) and
//! renamed once verified; a snapshot folder is assembled under a dot name and renamed into
//! place after every blob is there; a model that is new to the cache is built in a
//! `.mlxfs-pull-*` folder next to the `models--*` folders and renamed in whole. Interrupted
//! pulls resume from what is on disk.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::client::RemoteSnapshot;
use super::download::{Job, fetch_all};
use super::progress::Progress;
use super::{ErrorKind, Hub, HubError, RepoSpec, Result};
use crate::catalog::verdict::Health;
use crate::catalog::{HubRepo, Locations, ModelRef, RepoDir, dir_from_repo_id, record};
use crate::staging::Staging;
use crate::text::short_rev;

/// What a pull found or did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The revision is in the cache and healthy; nothing was downloaded.
    AlreadyExists { commit: String, path: PathBuf },
    /// The revision is in the cache but unhealthy: resuming needs the user's yes.
    NeedsConfirmation { commit: String, reason: String },
    /// Downloaded (or completed) this revision.
    Pulled {
        commit: String,
        path: PathBuf,
        files: usize,
        bytes: u64,
        health: Health,
    },
}

/// The commit a cached revision names: a full commit with a snapshot, or `refs/<rev>`.
fn cached_commit(repo: &HubRepo, rev: &str) -> Option<String> {
    if super::is_commit(rev) {
        return repo
            .snapshots
            .iter()
            .find(|s| s.commit == rev)
            .map(|s| s.commit.clone());
    }
    repo.snapshot_for_ref(rev)
        .and_then(|i| repo.snapshots.get(i))
        .map(|s| s.commit.clone())
}

/// Health of one snapshot of a cached repo.
fn snapshot_health(dir: &Path, commit: &str) -> Health {
    let Some(repo) = HubRepo::load(dir) else {
        return Health::Unhealthy("not a hub model folder".into());
    };
    match repo.snapshots.iter().position(|s| s.commit == commit) {
        Some(i) => record::describe(&ModelRef::hub(&repo, Some(i))).health,
        None => Health::Unhealthy("snapshot missing".into()),
    }
}

/// Look in the cache only (no network).
pub fn check_cached(loc: &Locations, spec: &RepoSpec) -> Option<Outcome> {
    let dir = loc.hub_cache.join(dir_from_repo_id(&spec.repo));
    let repo = HubRepo::load(&dir)?;
    let commit = cached_commit(&repo, spec.revision())?;
    Some(match snapshot_health(&dir, &commit) {
        Health::Healthy(_) => Outcome::AlreadyExists {
            path: RepoDir(&dir).snapshot(&commit),
            commit,
        },
        Health::Unhealthy(reason) => Outcome::NeedsConfirmation { commit, reason },
    })
}

/// How a pull treats what the cache already has.
#[derive(Debug, Clone, Copy, Default)]
pub struct PullFlags {
    /// Resume or repair an unhealthy cached copy without asking.
    pub force_resume: bool,
    /// Ask the hub which commit the revision names now, even when the cache has one.
    pub refresh: bool,
}

/// Pull `spec` into the hub cache. Without `force_resume`, an unhealthy cached copy is
/// reported (`NeedsConfirmation`) instead of touched; without `refresh`, a healthy cached
/// revision is not looked up on the hub again.
pub fn pull(
    hub: &Hub,
    loc: &Locations,
    spec: &RepoSpec,
    flags: PullFlags,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let force_resume = flags.force_resume;
    match check_cached(loc, spec) {
        Some(o @ Outcome::AlreadyExists { .. }) if !flags.refresh => return Ok(o),
        Some(o @ Outcome::NeedsConfirmation { .. }) if !force_resume => return Ok(o),
        _ => {}
    }
    let hub_dir = &loc.hub_cache;
    let folder = dir_from_repo_id(&spec.repo);
    // One pull of a repo at a time (also what `rm` sees as a held lock); another pull may
    // have finished it while we waited.
    let _pulling = super::download::lock(
        &RepoDir::locks_in(hub_dir, &folder).join(".mlxfs-pull.lock"),
        progress,
    )?;
    if let Some(o @ Outcome::AlreadyExists { .. }) = check_cached(loc, spec)
        && !flags.refresh
    {
        return Ok(o);
    }
    let remote = hub.remote_snapshot(spec)?;
    let existing = hub_dir.join(&folder);
    if flags.refresh && snapshot_health(&existing, &remote.commit).is_healthy() {
        // The hub's commit is here already: only the ref may need to follow it.
        if !super::is_commit(spec.revision()) {
            write_ref(&existing, spec.revision(), &remote.commit)?;
        }
        return Ok(Outcome::AlreadyExists {
            path: RepoDir(&existing).snapshot(&remote.commit),
            commit: remote.commit,
        });
    }
    fs::create_dir_all(hub_dir)
        .map_err(|e| HubError::io(&e, &format!("creating the hub cache {}", hub_dir.display())))?;
    let final_dir = hub_dir.join(&folder);
    // A model new to the cache is built in a staging folder ([`crate::staging`], named from
    // the repo id) and renamed into place at the end; a failed pull keeps it to resume.
    let staged = !final_dir.exists();
    let mut stage = None;
    if staged || crate::staging::path_for(&final_dir, "pull", &spec.repo).is_dir() {
        let (mut s, _) =
            Staging::create(&final_dir, "pull", &spec.repo, |_| true).map_err(|e| {
                let busy = format!("Another pull of {} is running", spec.repo);
                e.into_error(|| HubError::new(ErrorKind::Conflict, busy), HubError::io)
            })?;
        if staged {
            s.keep();
            stage = Some(s);
        } else {
            // The model appeared (another tool) after an interrupted pull of ours: keep its
            // bytes; the staging folder goes when `s` is dropped.
            adopt_blobs(&RepoDir(&s.model()).blobs(), &RepoDir(&final_dir).blobs());
        }
    }
    let root = stage.as_ref().map_or(final_dir.clone(), Staging::model);
    let locks = RepoDir::locks_in(hub_dir, &folder);
    let jobs = blob_jobs(&remote, &root, &locks);
    let need: u64 = jobs
        .iter()
        .filter(|j| !j.dest.exists())
        .map(|j| {
            j.file.size
                - fs::metadata(&j.partial)
                    .map(|m| m.len())
                    .unwrap_or(0)
                    .min(j.file.size)
        })
        .fold(0u64, u64::saturating_add);
    // Where the bytes really land: `blobs/` may live on another disk (linked back).
    let blobs = RepoDir(&root).blobs();
    super::check_space(if blobs.is_dir() { &blobs } else { hub_dir }, need)?;
    progress.start(
        &format!("{}@{}", spec.repo, short_rev(&remote.commit)),
        remote.files.len(),
        remote.total_bytes(),
    );
    let r = fetch_all(hub, &remote.repo, &remote.commit, &jobs, progress);
    progress.finish();
    r?;
    assemble_snapshot(&root, &remote)?;
    if !super::is_commit(spec.revision()) {
        write_ref(&root, spec.revision(), &remote.commit)?;
    }
    if let Some(mut s) = stage {
        s.publish().map_err(|e| {
            HubError::io(
                &e,
                &format!("moving the new model into {}", final_dir.display()),
            )
        })?;
    }
    let health = snapshot_health(&final_dir, &remote.commit);
    Ok(Outcome::Pulled {
        path: RepoDir(&final_dir).snapshot(&remote.commit),
        commit: remote.commit.clone(),
        files: remote.files.len(),
        bytes: remote.total_bytes(),
        health,
    })
}

/// Move blobs (complete or partial) that `to` lacks from `from` into it.
fn adopt_blobs(from: &Path, to: &Path) {
    let Ok(rd) = fs::read_dir(from) else { return };
    let _ = fs::create_dir_all(to);
    for e in rd.flatten() {
        let dst = to.join(e.file_name());
        if !dst.exists() {
            let _ = fs::rename(e.path(), dst);
        }
    }
}

/// One job per distinct blob.
fn blob_jobs(remote: &RemoteSnapshot, root: &Path, locks: &Path) -> Vec<Job> {
    let mut seen = std::collections::HashSet::new();
    let mut jobs = Vec::new();
    for f in &remote.files {
        if !seen.insert(f.etag.clone()) {
            continue;
        }
        let blob = RepoDir(root).blob(&f.etag);
        jobs.push(Job {
            file: f.clone(),
            partial: RepoDir(root).incomplete_blob(&f.etag),
            dest: blob,
            lock: Some(locks.join(format!("{}.lock", f.etag))),
        });
    }
    // Large files first: the transfer stays parallel until the end.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.file.size));
    jobs
}

/// `snapshots/<commit>/` with one relative link per file, built under a dot name and renamed.
pub fn assemble_snapshot(root: &Path, remote: &RemoteSnapshot) -> Result<()> {
    let snaps = RepoDir(root).snapshots();
    let tmp = snaps.join(format!(".mlxfs-{}", remote.commit));
    let io = |e: std::io::Error, what: &str| HubError::io(&e, what);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| io(e, "creating the snapshot"))?;
    for f in &remote.files {
        let link = tmp.join(&f.path);
        if let Some(p) = link.parent() {
            fs::create_dir_all(p).map_err(|e| io(e, "creating the snapshot"))?;
        }
        let target = RepoDir::blob_link(&f.path, &f.etag);
        symlink(&target, &link).map_err(|e| io(e, "linking the snapshot"))?;
    }
    let fin = snaps.join(&remote.commit);
    if fin.exists() {
        // An earlier, incomplete snapshot of the same commit: swap it out.
        let old = snaps.join(format!(".mlxfs-old-{}", remote.commit));
        let _ = fs::remove_dir_all(&old);
        fs::rename(&fin, &old).map_err(|e| io(e, "replacing the snapshot"))?;
        fs::rename(&tmp, &fin).map_err(|e| io(e, "replacing the snapshot"))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&tmp, &fin).map_err(|e| io(e, "placing the snapshot"))?;
    }
    Ok(())
}

/// `refs/<name>` = commit, written atomically.
pub fn write_ref(root: &Path, name: &str, commit: &str) -> Result<()> {
    let p = RepoDir(root).ref_file(name);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(|e| HubError::io(&e, "creating refs/"))?;
    }
    let tmp = p.with_file_name(format!(
        ".{}.mlxfs-tmp",
        p.file_name().and_then(|n| n.to_str()).unwrap_or("ref")
    ));
    crate::sys::write_new(&tmp, commit.as_bytes(), false)
        .and_then(|_| fs::rename(&tmp, &p))
        .map_err(|e| HubError::io(&e, &format!("writing {}", p.display())))
}
