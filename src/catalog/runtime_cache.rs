//! What a model's isolated runtime cache holds (a workspace's `.hf_cache`, a hub model's
//! per-model folder under mlxfs's state folder): the hub repos the libraries downloaded at run
//! time, with their refs, revisions, files and bytes, the other files there, and what would
//! keep a run from finding them offline (an `.incomplete` download, a dangling snapshot link,
//! a ref naming a revision that is not cached).
//!
//! This is a verdict of its own, never part of the model's health: a runtime cache is
//! runtime artifacts (excluded from the content hash), and a broken one does not make the
//! model unhealthy. Reading never writes, and links are never followed out of the cache.

use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

use super::hub_cache::{RepoDir, RepoKind, refs_of};
use super::{CacheLocation, IsolatedCache};
use crate::text::short_rev;

/// One file of a cached revision (a snapshot entry).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CachedFile {
    /// Path inside the revision (`/`-separated).
    pub path: String,
    /// Bytes of the file the entry leads to (0 when it leads nowhere).
    pub size: u64,
}

/// One cached revision of a repo (a `snapshots/<commit>` folder).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CachedRevision {
    pub commit: String,
    /// The refs (`main`, `pr/1`, …) that name this revision.
    pub refs: Vec<String>,
    pub files: Vec<CachedFile>,
    pub bytes: u64,
}

/// One repo of the cache's `hub/` folder (`models--org--name`, `datasets--…`, `spaces--…`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CachedRepo {
    /// `org/name`.
    pub repo_id: String,
    /// `model`, `dataset` or `space`.
    pub kind: &'static str,
    /// The folder (`…/hub/models--org--name`; lossy when not UTF-8).
    pub dir: String,
    pub revisions: Vec<CachedRevision>,
    /// Bytes on disk: every blob (shared by revisions, counted once), partial downloads
    /// included.
    pub bytes: u64,
    /// What keeps this repo from being used offline (empty when it can be).
    pub problems: Vec<String>,
}

/// A model's runtime cache, as [`inspect`] found it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RuntimeCache {
    /// The folder (lossy when not UTF-8: a JSON string either way).
    pub dir: String,
    /// Where it is: `workspace` (the workspace's own `.hf_cache`), `state_folder` (mlxfs's
    /// per-user state folder: a hub model's, or a workspace's this user cannot write),
    /// `given` (`run --workspace-cache`); absent when only a folder was inspected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<CacheLocation>,
    /// Why it is not where the model's cache usually is (a workspace that is not writable),
    /// else `null` ([`super::IsolatedCache::reason`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_reason: Option<Option<String>>,
    /// The folder exists (a model that never ran has none).
    pub exists: bool,
    /// Hub repos under `hub/`, sorted by kind and id.
    pub repos: Vec<CachedRepo>,
    /// Regular files outside the hub repos (assets, modules, xet, locks, …) and their bytes.
    pub other_files: u64,
    pub other_bytes: u64,
    /// Every regular file of the cache and every byte (blobs, snapshot files that are not
    /// links, other files).
    pub files: u64,
    pub bytes: u64,
    /// Every repo's problems, prefixed with its id, and problems of the cache itself.
    pub problems: Vec<String>,
    /// Nothing found that would make an offline run miss a downloaded file: no partial
    /// download, no dangling snapshot link, no ref to an uncached revision. (A run that needs
    /// something never downloaded still needs the network: this judges what is there.)
    pub offline_ready: bool,
}

impl RuntimeCache {
    /// One line: `empty`, or `N repo(s), F file(s), B bytes` with the offline verdict; and
    /// why the cache is where it is, when that is not the model's usual place.
    pub fn summary(&self) -> String {
        match self.location_reason.clone().flatten() {
            Some(why) => format!("{} — {why}", self.contents()),
            None => self.contents(),
        }
    }

    /// [`Self::summary`] without the location.
    fn contents(&self) -> String {
        if !self.exists {
            return "none yet (the model has not run)".into();
        }
        if self.files == 0 && self.repos.is_empty() && self.offline_ready {
            return "empty (nothing downloaded at run time); offline-ready".into();
        }
        let verdict = if self.offline_ready {
            "offline-ready".to_string()
        } else {
            format!("NOT offline-ready: {} problem(s)", self.problems.len())
        };
        format!(
            "{} repo(s), {} file(s), {}; {verdict}",
            self.repos.len(),
            self.files,
            crate::text::human_bytes(self.bytes),
        )
    }
}

/// Regular files below `dir` (links not followed): (count, bytes).
fn count_files(dir: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0u64, 0u64);
    super::for_each_below(&[dir.to_path_buf()], |_, md| {
        if md.is_file() {
            n += 1;
            bytes = bytes.saturating_add(md.len());
        }
    });
    (n, bytes)
}

/// Does the resolved `target` stay inside the repo folder `repo` (both canonical)?
fn inside(target: &Path, repo: &Path) -> bool {
    target.starts_with(repo)
}

/// The files of one snapshot folder, with the problems of its links.
fn snapshot_files(
    snap: &Path,
    repo_real: &Path,
    label: &str,
    problems: &mut Vec<String>,
) -> (Vec<CachedFile>, u64, u64) {
    let mut files = Vec::new();
    let (mut plain_files, mut plain_bytes) = (0u64, 0u64);
    let mut stack = vec![(snap.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else {
            problems.push(format!("{label}: {prefix} cannot be read"));
            continue;
        };
        for e in rd.flatten() {
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if md.file_type().is_symlink() {
                match fs::canonicalize(&p) {
                    Ok(real) if !inside(&real, repo_real) => {
                        problems.push(format!(
                            "{label}/{rel}: a link that leads out of the repo folder"
                        ));
                        files.push(CachedFile { path: rel, size: 0 });
                    }
                    Ok(real) => match fs::metadata(&real) {
                        Ok(m) if m.is_file() => files.push(CachedFile {
                            path: rel,
                            size: m.len(),
                        }),
                        // huggingface_hub never links a folder: not followed (a loop
                        // would never end), listed as it is.
                        Ok(m) if m.is_dir() => files.push(CachedFile { path: rel, size: 0 }),
                        _ => {
                            problems.push(format!("{label}/{rel}: a link to something not a file"));
                            files.push(CachedFile { path: rel, size: 0 });
                        }
                    },
                    Err(_) => {
                        let target = fs::read_link(&p)
                            .map(|t| t.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        problems.push(format!(
                            "{label}/{rel}: dangling link (to {target}): its blob is missing"
                        ));
                        files.push(CachedFile { path: rel, size: 0 });
                    }
                }
            } else if md.is_dir() {
                stack.push((p, format!("{rel}/")));
            } else if md.is_file() {
                plain_files += 1;
                plain_bytes = plain_bytes.saturating_add(md.len());
                files.push(CachedFile {
                    path: rel,
                    size: md.len(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    (files, plain_files, plain_bytes)
}

/// Read one repo folder of the cache's `hub/`: its refs, revisions, blobs and problems.
/// Returns the repo and the (files, bytes) it holds on disk.
fn inspect_repo(dir: &Path, kind: RepoKind, repo_id: String) -> (CachedRepo, u64, u64) {
    let mut problems = Vec::new();
    let repo_real = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // Blobs: complete ones, and partial downloads.
    let (mut files, mut bytes) = (0u64, 0u64);
    if let Ok(rd) = fs::read_dir(RepoDir(dir).blobs()) {
        let mut partial: Vec<(String, u64)> = Vec::new();
        for e in rd.flatten() {
            let Ok(md) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            files += 1;
            bytes = bytes.saturating_add(md.len());
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(RepoDir::INCOMPLETE) {
                partial.push((name, md.len()));
            }
        }
        partial.sort();
        for (name, size) in partial {
            problems.push(format!(
                "blobs/{name}: a download that did not finish ({})",
                crate::text::human_bytes(size)
            ));
        }
    }
    // Revisions.
    let refs = refs_of(dir);
    let mut revisions = Vec::new();
    if let Ok(rd) = fs::read_dir(RepoDir(dir).snapshots()) {
        let mut snaps: Vec<_> = rd.flatten().collect();
        snaps.sort_by_key(|e| e.file_name());
        for e in snaps {
            let commit = e.file_name().to_string_lossy().into_owned();
            if commit.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            let label = format!("snapshots/{}", short_rev(&commit));
            let (fs_, n, b) = snapshot_files(&e.path(), &repo_real, &label, &mut problems);
            files += n;
            bytes = bytes.saturating_add(b);
            let rev_bytes = fs_.iter().fold(0u64, |a, f| a.saturating_add(f.size));
            revisions.push(CachedRevision {
                refs: refs
                    .iter()
                    .filter(|(_, c)| *c == commit)
                    .map(|(n, _)| n.clone())
                    .collect(),
                commit,
                files: fs_,
                bytes: rev_bytes,
            });
        }
    }
    for (name, commit) in &refs {
        if !revisions.iter().any(|r| r.commit == *commit) {
            problems.push(format!(
                "refs/{name} names revision {}, which is not cached",
                short_rev(commit)
            ));
        }
    }
    if revisions.is_empty() && refs.is_empty() && files > 0 {
        problems.push("blobs without any snapshot: nothing here can be loaded".into());
    }
    // `.no_exist/`: files the hub said do not exist (empty markers).
    let (n, b) = count_files(&dir.join(RepoDir::NO_EXIST));
    files += n;
    bytes = bytes.saturating_add(b);
    let repo = CachedRepo {
        repo_id,
        kind: kind.as_str(),
        dir: dir.to_string_lossy().into_owned(),
        revisions,
        bytes,
        problems,
    };
    (repo, files, bytes)
}

/// What [`inspect`] looks at: a model's [`IsolatedCache`] (its folder, where and why), or
/// only a folder.
pub trait CacheSite {
    fn cache_dir(&self) -> &Path;
    /// Where the cache is and why (`None` for a bare folder).
    fn placement(&self) -> Option<(CacheLocation, Option<String>)> {
        None
    }
}

impl CacheSite for Path {
    fn cache_dir(&self) -> &Path {
        self
    }
}

impl CacheSite for PathBuf {
    fn cache_dir(&self) -> &Path {
        self
    }
}

impl CacheSite for IsolatedCache {
    fn cache_dir(&self) -> &Path {
        &self.dir
    }
    fn placement(&self) -> Option<(CacheLocation, Option<String>)> {
        Some((self.location, self.reason.clone()))
    }
}

/// Inspect a runtime cache (its `hub/` as huggingface_hub lays it out, and every other file):
/// a model's ([`crate::catalog::ModelRef::isolated_cache`], reported with where it is and
/// why), or a folder. Never fails and never writes; a missing folder is `exists: false`.
pub fn inspect(cache: &(impl CacheSite + ?Sized)) -> RuntimeCache {
    let dir = cache.cache_dir();
    let placement = cache.placement();
    let mut rc = RuntimeCache {
        dir: dir.to_string_lossy().into_owned(),
        location: placement.as_ref().map(|p| p.0),
        location_reason: placement.map(|p| p.1),
        exists: false,
        repos: Vec::new(),
        other_files: 0,
        other_bytes: 0,
        files: 0,
        bytes: 0,
        problems: Vec::new(),
        offline_ready: true,
    };
    match fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => rc.exists = true,
        Ok(md) => {
            rc.exists = true;
            rc.offline_ready = false;
            rc.problems.push(format!(
                "{} is {}, not a folder",
                dir.display(),
                if md.file_type().is_symlink() {
                    "a link"
                } else {
                    "a file"
                }
            ));
            return rc;
        }
        Err(_) => return rc,
    }
    let hub = dir.join("hub");
    let mut repo_dirs: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = fs::read_dir(&hub) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if RepoKind::parse_dir_name(&name).is_some() && e.file_type().is_ok_and(|t| t.is_dir())
            {
                repo_dirs.push(e.path());
            }
        }
    }
    repo_dirs.sort();
    let (mut files, mut bytes) = (0u64, 0u64);
    for d in &repo_dirs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((kind, repo_id)) = RepoKind::parse_dir_name(&name) else {
            continue;
        };
        let (repo, n, b) = inspect_repo(d, kind, repo_id);
        files += n;
        bytes = bytes.saturating_add(b);
        for p in &repo.problems {
            rc.problems.push(format!("{}: {p}", repo.repo_id));
        }
        rc.repos.push(repo);
    }
    rc.repos
        .sort_by(|a, b| (a.kind, &a.repo_id).cmp(&(b.kind, &b.repo_id)));
    // Everything else: the whole folder minus the repo folders.
    let (all_n, all_b) = count_files(dir);
    let (repo_n, repo_b) = repo_dirs.iter().fold((0u64, 0u64), |(n, b), d| {
        let (dn, db) = count_files(d);
        (n + dn, b.saturating_add(db))
    });
    rc.other_files = all_n.saturating_sub(repo_n);
    rc.other_bytes = all_b.saturating_sub(repo_b);
    rc.files = files + rc.other_files;
    rc.bytes = bytes.saturating_add(rc.other_bytes);
    rc.offline_ready = rc.problems.is_empty();
    rc
}

/// The newest modification time of anything in the runtime cache `dir` (the folder itself
/// included; links not followed), or `None` when there is no such folder: a cheap stamp that
/// changes with every download, rename or removal there.
pub fn newest_change(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = fs::symlink_metadata(dir).ok()?.modified().ok()?;
    super::for_each_below(&[dir.to_path_buf()], |_, md| {
        if let Ok(t) = md.modified() {
            newest = newest.max(t);
        }
    });
    Some(newest)
}
