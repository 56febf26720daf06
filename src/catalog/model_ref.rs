//! One model located on disk (`ModelRef`: a hub snapshot or a workspace folder, with its
//! `Source`), where links inside it may lead (`LinkRoots`) and where its isolated runtime
//! cache lives (`IsolatedCache`).

use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

use super::folders::{holds_too_much, io_reason};
use super::hub_cache::{HubRepo, RepoDir, dir_from_repo_id};
use crate::text::short_rev;

/// Where a model comes from (the record's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash)]
#[serde(rename_all = "lowercase")]
// Read back from a live mount's reply (cli/live.rs).
#[derive(serde::Deserialize)]
pub enum Source {
    Cache,
    Workspace,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Workspace => "workspace",
        }
    }
}

/// Where links inside a model may lead ([`ModelRef::link_roots`]): real (canonical) folders,
/// each either with everything below it or (a relocated `blobs/`) only its direct entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRoots {
    roots: Vec<(PathBuf, bool)>,
    /// The model folder as given and its real path, when working out the roots showed it
    /// (so a walk of the model need not resolve it again).
    model: Option<(PathBuf, PathBuf)>,
    /// A hub model: the real `blobs/` folder of its repo, when its entries lie inside the
    /// roots (a walk matches the snapshot's links against its inodes).
    blobs: Option<PathBuf>,
}

impl LinkRoots {
    /// Does `target` (a resolved, canonical path) lie inside the model's own folders?
    pub fn contains(&self, target: &Path) -> bool {
        self.roots.iter().any(|(r, direct_only)| {
            if *direct_only {
                target.parent() == Some(r.as_path())
            } else {
                target.starts_with(r)
            }
        })
    }

    /// A hub model: the real `blobs/` folder whose direct entries are inside these roots.
    pub fn blobs(&self) -> Option<&Path> {
        self.blobs.as_deref()
    }

    /// The real folders.
    pub fn folders(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|(r, _)| r.as_path())
    }

    /// The real path of model folder `path`, when these roots were worked out from it and
    /// it was resolved on the way (else `None`: resolve it).
    pub fn real_path_of(&self, path: &Path) -> Option<&Path> {
        self.model
            .as_ref()
            .filter(|(given, _)| given == path)
            .map(|(_, real)| real.as_path())
    }
}

/// A model located on disk, ready to be described by a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// The record's `name`: `org/name` for the cache, the absolute path for a workspace.
    pub name: String,
    /// The name used by heuristics and shown in tables: `org/name` or the folder name.
    pub short_name: String,
    pub source: Source,
    /// The model folder: snapshot folder, workspace folder, or the repo folder when the hub
    /// model has no snapshot.
    pub path: PathBuf,
    /// Hub: the `models--…` folder (the boundary for links into `blobs/`).
    pub repo_dir: Option<PathBuf>,
    /// Hub: the snapshot's commit.
    pub revision: Option<String>,
    /// Hub: mlx-knife's reason when there is no snapshot to inspect.
    pub problem: Option<String>,
    /// Hub: is this the current revision (or a further snapshot)?
    pub is_current: bool,
    /// Hub: entries of `snapshots/` that were not used, with why.
    pub ignored: Vec<String>,
    /// Hub: the repo folder's real path when neither it, its `blobs/`, its `snapshots/` nor
    /// this snapshot is a link ([`HubRepo::real_dir`]): the link roots follow without a
    /// system call.
    pub real_repo: Option<PathBuf>,
}

impl ModelRef {
    /// Hub model `repo` at snapshot `snap` (an index into `repo.snapshots`; `None`, or an
    /// index out of range, stands for the repo folder without a snapshot).
    pub fn hub(repo: &HubRepo, snap: Option<usize>) -> ModelRef {
        let s = snap.and_then(|i| repo.snapshots.get(i));
        ModelRef {
            name: repo.repo_id.clone(),
            short_name: repo.repo_id.clone(),
            source: Source::Cache,
            path: s.map_or(repo.dir.clone(), |s| s.path.clone()),
            repo_dir: Some(repo.dir.clone()),
            revision: s.map(|s| s.commit.clone()),
            problem: repo
                .problem
                .clone()
                .or_else(|| s.is_none().then(|| repo.missing_main_problem()).flatten()),
            is_current: s.is_none() || snap == repo.current,
            ignored: repo.ignored.clone(),
            real_repo: repo
                .real_dir
                .clone()
                .filter(|_| s.is_none_or(|s| !s.linked)),
        }
    }

    pub fn workspace(path: PathBuf, short_name: String) -> ModelRef {
        ModelRef {
            name: path.to_string_lossy().into_owned(),
            short_name,
            source: Source::Workspace,
            path,
            repo_dir: None,
            revision: None,
            problem: None,
            is_current: true,
            ignored: Vec::new(),
            real_repo: None,
        }
    }

    /// Where links inside this model may lead, as real (canonical) folders: the model folder
    /// itself, and for a hub snapshot the `models--…` folder and its `blobs/`. Each is
    /// resolved on its own, so a repo folder, a snapshot or `blobs/` moved to another disk
    /// and linked back still counts as the model's own (huggingface_hub's cache layout),
    /// while a link whose target is none of these is refused. A linked part too wide to be one
    /// model's (the disk's root, a folder holding the home folder or the repo folder) is not a
    /// root, and through a linked `blobs/` only its direct entries (the blobs) count.
    pub fn link_roots(&self) -> LinkRoots {
        let canon = |p: &Path| crate::sys::real_path(p).unwrap_or_else(|_| p.to_path_buf());
        let Some(repo) = &self.repo_dir else {
            let real = canon(&self.path);
            return LinkRoots {
                roots: vec![(real.clone(), false)],
                model: Some((self.path.clone(), real)),
                blobs: None,
            };
        };
        if let Some(real_repo) = &self.real_repo {
            // The plain layout, known from the scan: what the general way below finds.
            let model = match (self.path.file_name(), self.path.parent()) {
                (Some(rev), Some(parent)) if *parent == RepoDir(repo).snapshots() => {
                    Some((self.path.clone(), RepoDir(real_repo).snapshot(rev)))
                }
                _ => None,
            };
            return LinkRoots {
                roots: vec![(real_repo.clone(), false)],
                model,
                blobs: Some(RepoDir(real_repo).blobs()),
            };
        }
        // The repo folder holds the others unless they are links (one realpath, then a
        // lstat per part: this runs for every model of a listing).
        let real_repo = canon(repo);
        let mut roots = vec![(real_repo.clone(), false)];
        let linked = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
        // A linked part too wide to be one model's (`blobs -> /`, `-> ~`, `-> ..`) is no
        // root: links through it count as escaping.
        // Adds the real path of `p` as a root unless it is too wide; gives it when it is one.
        let mut add = |p: &Path, direct_only: bool| {
            let r = canon(p);
            if holds_too_much(&r, Some(&real_repo)) {
                return None;
            }
            if !roots.iter().any(|(x, _)| *x == r) {
                roots.push((r.clone(), direct_only));
            }
            Some(r)
        };
        let blobs = RepoDir(repo).blobs();
        let real_blobs = if linked(&blobs) {
            // A snapshot links to blobs, which sit directly in `blobs/`.
            add(&blobs, true)
        } else {
            Some(RepoDir(&real_repo).blobs())
        };
        let snaps = RepoDir(repo).snapshots();
        let mut model = None;
        if self.path != *repo {
            if linked(&snaps) || linked(&self.path) {
                let _ = add(&self.path, false);
            } else if let (Some(rev), true) = (
                self.path.file_name(),
                self.path.parent() == Some(snaps.as_path()),
            ) {
                // Neither `snapshots/` nor the snapshot is a link: it lies in the real repo.
                model = Some((self.path.clone(), RepoDir(&real_repo).snapshot(rev)));
            }
        }
        LinkRoots {
            roots,
            model,
            blobs: real_blobs,
        }
    }

    /// The model's isolated Hugging Face cache for `run` and `serve` workers, and why it is
    /// there ([`IsolatedCache`]: the one rule `run`, serve's workers and the readers ask).
    /// Never creates anything (for the readers: `show`, `health --verbose`, the mount); a
    /// writer takes [`Self::isolated_cache_for_writer`].
    pub fn isolated_cache(&self) -> IsolatedCache {
        self.isolated_cache_in(&crate::state::dir_or_temp())
    }

    /// [`Self::isolated_cache`] for a writer (`run`, a serve worker): when the cache is in
    /// mlxfs's state folder, the state folder's temp fallback is made first, with its own
    /// mode, and the cache is below the folder made (the readers never make it).
    pub fn isolated_cache_for_writer(&self) -> IsolatedCache {
        let own = self.isolated_cache_in(Path::new(""));
        if own.location == CacheLocation::Workspace {
            return own;
        }
        self.isolated_cache_in(&crate::state::create_dir_or_temp())
    }

    /// The folder of [`Self::isolated_cache_for_writer`] (serve's worker pool).
    pub fn isolated_cache_to_write(&self) -> PathBuf {
        self.isolated_cache_for_writer().dir
    }

    /// [`Self::isolated_cache`] with `state` as mlxfs's state folder.
    fn isolated_cache_in(&self, state: &Path) -> IsolatedCache {
        let in_state = |sub: PathBuf, reason: Option<String>, read_only_source| IsolatedCache {
            dir: state.join("hf-cache").join(sub),
            location: CacheLocation::StateFolder,
            reason,
            read_only_source,
        };
        if self.source == Source::Cache {
            return in_state(PathBuf::from(dir_from_repo_id(&self.name)), None, None);
        }
        let own = self.path.join(".hf_cache");
        let here = IsolatedCache {
            dir: own.clone(),
            location: CacheLocation::Workspace,
            reason: None,
            read_only_source: None,
        };
        // Where runs would write: the `.hf_cache` that is there (a link or a file is the
        // workspace's own problem, which `run` names), else the workspace folder.
        let (probe, what) = match fs::symlink_metadata(&own) {
            Ok(md) if md.is_dir() => (own.clone(), "its .hf_cache"),
            Ok(_) => return here,
            Err(_) => (self.path.clone(), "the workspace folder"),
        };
        // An existing `hub/` of its own is where downloads land (made by someone else, it may
        // be closed while `.hf_cache` is open).
        let hub = own.join("hub");
        let probed = writable(&probe).and_then(|()| {
            if probe == own && fs::symlink_metadata(&hub).is_ok_and(|m| m.is_dir()) {
                writable(&hub)
            } else {
                Ok(())
            }
        });
        let Err(why) = probed else {
            return here;
        };
        let existing = (probe == own).then_some(own);
        let reason = format!(
            "{what} is not writable for this user ({why}): runs keep their cache in mlxfs's \
             state folder{}",
            if existing.is_some() {
                " (a draft model captured in the workspace's .hf_cache is still found there)"
            } else {
                ""
            }
        );
        in_state(
            PathBuf::from("workspaces").join(workspace_cache_name(&self.path)),
            Some(reason),
            existing,
        )
    }

    /// The name `show`/`run` accept for this model (`org/name@rev7` for further snapshots).
    pub fn spec(&self) -> String {
        match (&self.source, &self.revision, self.is_current) {
            (Source::Cache, Some(r), false) => format!("{}@{}", self.name, short_rev(r)),
            _ => self.short_name.clone(),
        }
    }
}

/// Where a model's isolated Hugging Face cache lives ([`ModelRef::isolated_cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheLocation {
    /// The workspace's own `.hf_cache` (ADR-022: runtime artifacts visible in the workspace).
    Workspace,
    /// A folder of its own under mlxfs's per-user state folder (`hf-cache/models--org--name`
    /// for a hub model, whose cache is never written; `hf-cache/workspaces/<name>-<id>` for a
    /// workspace this user cannot write: a shared `/opt/models`, a read-only disk, a service
    /// user serving an admin's models).
    StateFolder,
    /// A folder the user gave (`run --workspace-cache`).
    Given,
}

/// A model's isolated runtime cache: the folder, where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolatedCache {
    pub dir: PathBuf,
    pub location: CacheLocation,
    /// Why the cache is not where it would be (a workspace that is not writable); `None` for
    /// the model's usual place.
    pub reason: Option<String>,
    /// The workspace's own `.hf_cache` when it exists but this user cannot write it: never
    /// written, but still read for what a run may take from it (a captured draft model).
    pub read_only_source: Option<PathBuf>,
}

impl IsolatedCache {
    /// A folder the user gave, used as it is.
    pub fn given(dir: PathBuf) -> IsolatedCache {
        IsolatedCache {
            dir,
            location: CacheLocation::Given,
            reason: None,
            read_only_source: None,
        }
    }
}

impl std::ops::Deref for IsolatedCache {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.dir
    }
}

impl AsRef<Path> for IsolatedCache {
    fn as_ref(&self) -> &Path {
        &self.dir
    }
}

/// Can this process create entries in folder `p` (`faccessat(W_OK | X_OK, AT_EACCESS)`:
/// the effective user, a read-only mount included)? `Err`: why not. Nothing is written.
fn writable(p: &Path) -> Result<(), String> {
    use rustix::fs::{Access, AtFlags};
    rustix::fs::accessat(
        rustix::fs::CWD,
        p,
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .map_err(|e| io_reason(&std::io::Error::from(e)))
}

/// The state folder's name for a workspace's cache: its folder name (at most 64 characters)
/// and 16 hex digits of the SHA-256 of its real path (two workspaces of one name differ).
fn workspace_cache_name(ws: &Path) -> String {
    use sha2::{Digest, Sha256};
    let real = crate::sys::real_path(ws).unwrap_or_else(|_| ws.to_path_buf());
    let id = crate::text::hex(&Sha256::digest(real.as_os_str().as_encoded_bytes()));
    let name: String = ws
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(64).collect())
        .unwrap_or_default();
    format!("{name}-{}", &id[..16])
}
