//! Where a writer may put what it makes: the one rule `clone`, `convert` and `restore` ask
//! before a new workspace folder is made, and `archive` before its file is written. Facts
//! only ([`Refusal`]); each command words them (`convert` with mlx-knife's messages).
//!
//! Refused, because the new folder or file would land where it does harm:
//! - any Hugging Face cache — huggingface_hub owns that layout, and a folder written into
//!   `snapshots/` becomes a bogus revision it reports as a corrupted cache; what `run` finds in
//!   a run cache is counted as the model's (`show`'s "other files"):
//!   - the user's hub cache (`loc.hub_cache`: inside it, or a folder that holds it);
//!   - mlxfs's run caches ([`Misplaced::RunCache`]): the state folder's `hf-cache/` (hub
//!     models' and read-only workspaces' isolated caches: inside it, or a folder that holds
//!     it) and every `.hf_cache` (a workspace's own);
//!   - any folder inside a cache repo folder (`models--…`, `datasets--…`, `spaces--…` with
//!     its `snapshots/`, `blobs/`, `refs/` or `.no_exist/`), wherever the cache is;
//!   - any folder inside one that looks like a cache's root ([`Misplaced::CacheRoot`]: it
//!     holds such a repo folder, or huggingface_hub's `.locks/`) — another disk's cache,
//!     a second `HF_HOME`;
//! - a folder inside an existing model (it would make that model dirty or unhealthy);
//! - for a new workspace also: a workspace home itself, the current folder or one holding it
//!   (the rename would pull it from under the shell), a mount point (the staging folder would
//!   fill the disk below it, and the rename could only fail), a missing parent, and a target
//!   that exists and is not an empty folder.

use std::fs;
use std::path::{Path, PathBuf};

use super::Locations;
use super::hub_cache::{RepoDir, RepoKind};

/// Why nothing new may be written at a path ([`place`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misplaced {
    /// It is the hub cache or lies inside it (`holds`: it is a folder that holds the hub
    /// cache; `cache`: the hub cache).
    HubCache { cache: PathBuf, holds: bool },
    /// It is or lies in one of mlxfs's run caches (`cache`: the state folder's `hf-cache`, or
    /// a `.hf_cache`), or it is a folder that holds the state folder's (`holds`).
    RunCache { cache: PathBuf, holds: bool },
    /// It lies inside a Hugging Face cache repo folder (`repo`: that `models--…` folder).
    CacheRepo { repo: PathBuf },
    /// It lies inside a folder that looks like a Hugging Face cache's root (`root`: it holds
    /// a cache repo folder or `.locks/`).
    CacheRoot { root: PathBuf },
    /// It lies inside the model folder `model` (a `config.json` or a sentinel there).
    InsideModel { model: PathBuf },
}

/// Why a new workspace folder is refused ([`new_workspace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing may be written there.
    Misplaced(Misplaced),
    /// It is a workspace home.
    WorkspaceHome,
    /// It is the current folder or holds it.
    HoldsCurrentFolder,
    /// It is a mount point.
    MountPoint,
    /// It has no parent folder (`/`).
    NoParent,
    /// Its parent does not exist; `is_home`: the parent is the workspace home, which the
    /// command makes (a writer, not this rule).
    ParentMissing { parent: PathBuf, is_home: bool },
    /// It exists and is a folder with something in it.
    NotEmpty,
    /// It is a link (to this).
    Link { to: String },
    /// It exists and is not a folder.
    NotAFolder,
    /// It could not be looked at: why, and the OS error number when there is one.
    Unreadable { why: String, errno: Option<i32> },
}

/// The real path of `p`, which may not exist yet: its nearest existing ancestor resolved,
/// the rest of the path appended as it is.
fn real_or_nearest(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = p;
    loop {
        if let Ok(real) = fs::canonicalize(at) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Is the name that of a Hugging Face cache repo folder (`models--…`, `datasets--…`,
/// `spaces--…`: huggingface_hub's `REPO_ID_SEPARATOR` after the repo type)?
fn is_repo_folder_name(name: &std::ffi::OsStr) -> bool {
    RepoKind::is_repo_dir_name(name.as_encoded_bytes())
}

/// Is `dir` a folder (not through a link)?
fn is_folder(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
}

/// Is `dir` a Hugging Face cache repo folder: named `models--…`, `datasets--…` or
/// `spaces--…`, holding `snapshots/`, `blobs/`, `refs/` or `.no_exist/`?
fn is_cache_repo(dir: &Path) -> bool {
    dir.file_name().is_some_and(is_repo_folder_name)
        && [
            RepoDir::SNAPSHOTS,
            RepoDir::BLOBS,
            RepoDir::REFS,
            RepoDir::NO_EXIST,
        ]
        .iter()
        .any(|s| is_folder(&dir.join(s)))
}

/// Does `dir` look like a Hugging Face cache's root: it holds huggingface_hub's `.locks/`
/// or a cache repo folder ([`is_cache_repo`])? One listing of `dir`; a folder that cannot be
/// listed is not one.
fn is_cache_root(dir: &Path) -> bool {
    if is_folder(&dir.join(RepoDir::LOCKS)) {
        return true;
    }
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| is_repo_folder_name(&e.file_name()) && is_cache_repo(&e.path()))
    })
}

/// mlxfs's run cache folder in the state folder (`hf-cache/`), as this process finds it
/// (with the temp fallback when neither `XDG_STATE_HOME` nor `HOME` is set), real.
fn state_run_caches() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = crate::state::dir()
        .into_iter()
        .chain(Some(crate::state::dir_or_temp()))
        .map(|d| real_or_nearest(&d.join("hf-cache")))
        .collect();
    out.dedup();
    out
}

/// May something new (a folder, a file) be written at `path`: not in a Hugging Face cache,
/// not inside a model folder. What `archive` asks of its output file; part of
/// [`new_workspace`].
pub fn place(path: &Path, loc: &Locations) -> Result<(), Misplaced> {
    let real = real_or_nearest(path);
    let cache = real_or_nearest(&loc.hub_cache);
    if real.starts_with(&cache) || cache.starts_with(&real) {
        let holds = real != cache && cache.starts_with(&real);
        return Err(Misplaced::HubCache { cache, holds });
    }
    for cache in state_run_caches() {
        if real.starts_with(&cache) || cache.starts_with(&real) {
            let holds = real != cache && cache.starts_with(&real);
            return Err(Misplaced::RunCache { cache, holds });
        }
    }
    if let Some(cache) = real
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == ".hf_cache"))
    {
        return Err(Misplaced::RunCache {
            cache: cache.to_path_buf(),
            holds: false,
        });
    }
    if let Some(repo) = real.ancestors().skip(1).find(|a| is_cache_repo(a)) {
        return Err(Misplaced::CacheRepo {
            repo: repo.to_path_buf(),
        });
    }
    if let Some(root) = real.ancestors().skip(1).find(|a| is_cache_root(a)) {
        return Err(Misplaced::CacheRoot {
            root: root.to_path_buf(),
        });
    }
    if let Some(model) = real
        .ancestors()
        .skip(1)
        .find(|a| super::has_config(a) || a.join(crate::hash::SENTINEL_FILENAME).is_file())
    {
        return Err(Misplaced::InsideModel {
            model: model.to_path_buf(),
        });
    }
    Ok(())
}

/// May a new workspace folder be made at `target` (an absolute path, `.` and `..` already
/// applied)? `workspace_home`: the home the command would make when missing. Nothing is
/// written: a missing workspace home is [`Refusal::ParentMissing`] with `is_home`, which the
/// command makes before it asks again.
pub fn new_workspace(
    target: &Path,
    workspace_home: Option<&Path>,
    loc: &Locations,
) -> Result<(), Refusal> {
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let real = canon(target);
    if loc.workspace_homes().any(|h| canon(h) == real)
        || workspace_home.is_some_and(|h| canon(h) == real)
    {
        return Err(Refusal::WorkspaceHome);
    }
    place(target, loc).map_err(Refusal::Misplaced)?;
    if std::env::current_dir().is_ok_and(|cwd| canon(&cwd).starts_with(&real)) {
        return Err(Refusal::HoldsCurrentFolder);
    }
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(t), Some(Ok(p))) = (fs::metadata(&real), real.parent().map(fs::metadata))
            && t.is_dir()
            && t.dev() != p.dev()
        {
            return Err(Refusal::MountPoint);
        }
    }
    let parent = target.parent().ok_or(Refusal::NoParent)?;
    if !parent.is_dir() {
        return Err(Refusal::ParentMissing {
            parent: parent.to_path_buf(),
            is_home: workspace_home == Some(parent),
        });
    }
    match fs::symlink_metadata(target) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => match fs::read_dir(target).map(|mut rd| rd.next().is_none()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::NotEmpty),
            Err(e) => Err(Refusal::Unreadable {
                why: super::io_reason(&e),
                errno: e.raw_os_error(),
            }),
        },
        Ok(m) if m.file_type().is_symlink() => Err(Refusal::Link {
            to: fs::read_link(target)
                .map(|t| t.display().to_string())
                .unwrap_or_default(),
        }),
        Ok(_) => Err(Refusal::NotAFolder),
    }
}
