//! `clone`: download a hub revision straight into a managed workspace.
//!
//! Everything happens in a staging folder next to the target (same file system):
//! `<parent>/.mlxfs-clone-<id>/` holds `parts/` (partial downloads), `model/` (the workspace
//! being built: real files, never links) and a lock. When every file is verified, the content
//! hash v2 and the sentinel are written into `model/`, the health check runs, and `model/` is
//! renamed to the target — the workspace appears whole or not at all. The staging name is
//! derived from the repo, revision and target, so running the same command again resumes.
//! Transient failures (network, hub 5xx) keep the staging folder for that; every other failure
//! removes it and leaves the parent as it was.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::client::RemoteSnapshot;
use super::download::{Job, fetch_all};
use super::progress::Progress;
use super::{ErrorKind, Hub, HubError, RepoSpec, Result};
use crate::catalog::verdict::Health;
use crate::catalog::{ModelRef, record};
use crate::hash::{self, Excludes, sentinel};
use crate::staging::Staging;
use crate::text::{human_bytes, short_rev};

/// The outcome of a clone.
#[derive(Debug, Clone)]
pub struct Cloned {
    pub target: PathBuf,
    pub commit: String,
    pub content_hash: Option<String>,
    pub files: usize,
    pub bytes: u64,
    /// The new workspace's health.
    pub health: Health,
    /// Bytes found already downloaded by an interrupted earlier run.
    pub resumed_bytes: u64,
}

/// Where a clone goes: explicit path, bare name under the workspace home, or the repo's name.
pub fn target_path(
    spec: &RepoSpec,
    target: Option<&str>,
    workspace_home: Option<&Path>,
) -> Result<PathBuf> {
    let example = format!("mlxfs clone {} ./{}", spec, spec.basename());
    target_for(spec.basename(), target, workspace_home, &example)
}

/// The target rules of `clone` (and `restore`): an explicit path (`/…`, `./…`, `~…`, `.`,
/// `..`) as given, a bare name under the workspace home (else the current folder), and
/// without a target `default_name` under the workspace home. `example` is the command line
/// the hint suggests when there is no workspace home to default to.
pub fn target_for(
    default_name: &str,
    target: Option<&str>,
    workspace_home: Option<&Path>,
    example: &str,
) -> Result<PathBuf> {
    let cwd =
        std::env::current_dir().map_err(|e| HubError::io(&e, "reading the current folder"))?;
    let p = match target {
        None => match workspace_home {
            Some(h) => h.join(default_name),
            None => {
                return Err(HubError::new(
                    ErrorKind::InvalidTarget,
                    "No target folder given and MLXK_WORKSPACE_HOME is not set",
                )
                .hint(format!(
                    "Give a target (`{example}`) or set MLXK_WORKSPACE_HOME to your models folder."
                )));
            }
        },
        Some("") => {
            return Err(HubError::new(
                ErrorKind::InvalidTarget,
                "The target folder is empty",
            ));
        }
        Some(t) if !t.contains('/') && !t.starts_with('~') && t != "." && t != ".." => {
            match workspace_home {
                Some(h) => h.join(t),
                None => cwd.join(t),
            }
        }
        Some(t) => {
            let e = crate::catalog::resolve::expand_user(t);
            if e.is_absolute() { e } else { cwd.join(e) }
        }
    };
    // Normalise `.`/`..` lexically so the staging folder lands next to the real target.
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Check that `target` may be made into a new workspace by `clone` or `restore`: the
/// catalog's one rule ([`crate::catalog::target::new_workspace`]: not in a Hugging Face cache,
/// not inside a model, not a workspace home, the current folder or a mount point; parent
/// there, target absent or an empty folder), in clone's words (mlx-knife's where it has
/// them). A missing workspace home is created.
pub fn check_target(
    target: &Path,
    workspace_home: Option<&Path>,
    loc: &crate::catalog::Locations,
) -> Result<()> {
    check_target_as(target, workspace_home, loc, None)
}

/// [`check_target`] for `convert` (`Some(source argument)`): mlx-knife's convert messages
/// for the refusals it has (a target in the hub cache, one that is not empty).
pub fn check_target_as(
    target: &Path,
    workspace_home: Option<&Path>,
    loc: &crate::catalog::Locations,
    convert_source: Option<&str>,
) -> Result<()> {
    use crate::catalog::target::{Misplaced, Refusal, new_workspace};
    let mut made_home = false;
    loop {
        let r = match new_workspace(target, workspace_home, loc) {
            Ok(()) => return Ok(()),
            Err(r) => r,
        };
        let refuse = |why: String| {
            HubError::new(
                ErrorKind::InvalidTarget,
                format!("Cannot use {} as the target: {why}", target.display()),
            )
            .hint("Give a new folder's path (e.g. under your workspace home).")
        };
        let in_cache = |what: String| {
            match convert_source {
            Some(source) => HubError::new(
                ErrorKind::InvalidTarget,
                format!(
                    "Target path is in HF cache (read-only): {}. Convert cannot write to cache. Choose workspace location outside cache",
                    target.display()
                ),
            )
            .hint(format!("e.g. mlxfs convert {source} ./fixed-workspace --repair-index")),
            None => refuse(format!(
                "it lies in {what}, whose layout belongs to huggingface_hub (a folder written \
                 there becomes a bogus revision of a corrupted cache)"
            )),
        }
        };
        return Err(match r {
            Refusal::ParentMissing {
                parent,
                is_home: true,
            } if !made_home => {
                fs::create_dir_all(&parent)
                    .map_err(|e| HubError::io(&e, &format!("creating {}", parent.display())))?;
                made_home = true;
                continue;
            }
            Refusal::Misplaced(Misplaced::HubCache { cache, holds: true }) => refuse(format!(
                "it holds the hub cache ({})",
                cache.display()
            )),
            Refusal::Misplaced(Misplaced::HubCache { cache, .. }) => {
                in_cache(format!("the hub cache ({})", cache.display()))
            }
            Refusal::Misplaced(Misplaced::RunCache { cache, holds: true }) => refuse(format!(
                "it holds mlxfs's run caches ({})",
                cache.display()
            )),
            Refusal::Misplaced(Misplaced::RunCache { cache, .. }) => in_cache(format!(
                "a run cache of mlxfs ({}), a Hugging Face cache",
                cache.display()
            )),
            Refusal::Misplaced(Misplaced::CacheRepo { repo }) => {
                in_cache(format!("a Hugging Face cache ({})", repo.display()))
            }
            Refusal::Misplaced(Misplaced::CacheRoot { root }) => {
                in_cache(format!("a Hugging Face cache ({})", root.display()))
            }
            Refusal::Misplaced(Misplaced::InsideModel { model }) => refuse(format!(
                "it lies inside the model folder {}",
                model.display()
            )),
            Refusal::WorkspaceHome => refuse("it is a workspace home".into()),
            Refusal::HoldsCurrentFolder => refuse(
                "it is the current folder (or holds it); give a new folder inside it".into(),
            ),
            Refusal::MountPoint => refuse("it is a mount point; give a new folder inside it".into()),
            Refusal::NoParent => HubError::new(
                ErrorKind::InvalidTarget,
                format!("{} has no parent folder", target.display()),
            ),
            Refusal::ParentMissing { parent, .. } => HubError::new(
                ErrorKind::InvalidTarget,
                format!("Parent directory does not exist: {}", parent.display()),
            )
            .hint("Create it first, or give another target."),
            Refusal::NotEmpty => match convert_source {
                // mlx-knife convert's words (its clone's are the other ones).
                Some(_) => HubError::new(
                    ErrorKind::InvalidTarget,
                    format!(
                        "Target directory not empty: {}. Convert requires empty target workspace. Use different path or delete contents",
                        target.display()
                    ),
                ),
                None => HubError::new(
                    ErrorKind::InvalidTarget,
                    format!("Target directory '{}' is not empty", target.display()),
                )
                .hint("Choose another target, or remove the folder yourself if you no longer need it."),
            },
            Refusal::Link { to } => HubError::new(
                ErrorKind::InvalidTarget,
                format!("Target '{}' is a link (to {to})", target.display()),
            )
            .hint("Give the folder itself as the target: the new workspace replaces what is at the target path, and a link would be replaced, not followed."),
            Refusal::NotAFolder => HubError::new(
                ErrorKind::InvalidTarget,
                format!(
                    "Target '{}' exists but is not a directory",
                    target.display()
                ),
            ),
            Refusal::Unreadable { why, errno } => match errno {
                Some(n) => HubError::io(
                    &std::io::Error::from_raw_os_error(n),
                    &format!("reading {}", target.display()),
                ),
                None => HubError::new(
                    ErrorKind::Io,
                    format!("reading {}: {why}", target.display()),
                ),
            },
        });
    }
}

/// The staging folder of a clone of `spec` into `target` ([`crate::staging`]), named from
/// the spec and the target.
pub fn staging_dir(spec: &RepoSpec, target: &Path) -> PathBuf {
    crate::staging::path_for(target, "clone", &stage_key(spec, target))
}

fn stage_key(spec: &RepoSpec, target: &Path) -> String {
    format!("{spec}:{}", target.display())
}

/// Clone `spec` into `target` (already checked with [`check_target`]).
pub fn clone(hub: &Hub, spec: &RepoSpec, target: &Path, progress: &dyn Progress) -> Result<Cloned> {
    // Ask the hub first: when that fails, nothing at all was written.
    let remote = hub.remote_snapshot(spec)?;
    let (mut stage, resumed) = Staging::create(target, "clone", &stage_key(spec, target), |_| true)
        .map_err(|e| {
            let busy = format!("Another clone into {} is running", target.display());
            e.into_error(|| HubError::new(ErrorKind::Conflict, busy), HubError::io)
        })?;
    let dir = stage.dir().to_path_buf();
    let r = run(hub, spec, &remote, target, &dir, resumed, progress).and_then(|c| {
        // The one step that makes it visible.
        stage.publish().map_err(|e| {
            HubError::io(&e, &format!("moving the workspace to {}", target.display()))
        })?;
        Ok(c)
    });
    let kept = dir_bytes(&dir.join("parts")) + dir_bytes(&dir.join("model"));
    let keep = matches!(&r, Err(e) if e.kind.keeps_download()) && kept > 0;
    if keep {
        stage.keep();
    }
    drop(stage); // removed, still under the lock, unless kept
    r.map_err(|e| {
        if keep {
            e.add_hint(&format!(
                "{} downloaded so far are kept in {}; run the same command again to resume.",
                human_bytes(kept),
                dir.display()
            ))
        } else {
            e
        }
    })
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += dir_bytes(&e.path()),
                Ok(t) if t.is_file() => n += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    n
}

fn run(
    hub: &Hub,
    spec: &RepoSpec,
    remote: &RemoteSnapshot,
    target: &Path,
    stage: &Path,
    resumed: bool,
    progress: &dyn Progress,
) -> Result<Cloned> {
    let model = stage.join("model");
    let parts = stage.join("parts");
    let io = |e: std::io::Error, what: String| HubError::io(&e, &what);
    fs::create_dir_all(&model).map_err(|e| io(e, format!("creating {}", model.display())))?;

    // A branch may have moved since an interrupted run: finished files whose object id
    // changed (or is unknown) go, as do files the revision no longer has.
    let manifest_path = stage.join("manifest.json");
    let before: HashMap<String, String> = crate::sys::read_file(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| serde_json::from_value(v["files"].clone()).ok())
        .unwrap_or_default();
    for f in &remote.files {
        if before.get(&f.path) != Some(&f.etag) {
            let _ = fs::remove_file(model.join(&f.path));
        }
    }
    let wanted: BTreeSet<&str> = remote.files.iter().map(|f| f.path.as_str()).collect();
    prune(&model, &model, &wanted);
    let files: serde_json::Map<String, Value> = remote
        .files
        .iter()
        .map(|f| (f.path.clone(), json!(f.etag)))
        .collect();
    let manifest = json!({"repo": spec.repo, "revision": spec.revision(), "commit": remote.commit,
                          "target": target.to_string_lossy(), "files": files});
    crate::sys::write_new(&manifest_path, manifest.to_string().as_bytes(), false)
        .map_err(|e| io(e, "writing the staging manifest".into()))?;

    // One download per distinct blob, to its first path; other paths copy it afterwards.
    let mut first: HashMap<&str, &str> = HashMap::new();
    let mut jobs = Vec::new();
    for f in &remote.files {
        if first.contains_key(f.etag.as_str()) {
            continue;
        }
        first.insert(&f.etag, &f.path);
        jobs.push(Job {
            file: f.clone(),
            partial: parts.join(format!("{}.part", f.etag)),
            dest: model.join(&f.path),
            lock: None,
        });
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.file.size));
    let on_disk: u64 = jobs
        .iter()
        .map(|j| {
            let done = fs::metadata(&j.dest).map(|m| m.len()).unwrap_or(0);
            let part = fs::metadata(&j.partial).map(|m| m.len()).unwrap_or(0);
            if done == j.file.size {
                done
            } else {
                part.min(j.file.size)
            }
        })
        .fold(0u64, u64::saturating_add);
    let unique: u64 = jobs.iter().fold(0u64, |n, j| n.saturating_add(j.file.size));
    super::check_space(
        stage,
        unique
            .saturating_sub(on_disk)
            .saturating_add(remote.total_bytes().saturating_sub(unique)),
    )?;
    if resumed && on_disk > 0 {
        progress.note(&format!(
            "Resuming: {} already downloaded",
            human_bytes(on_disk)
        ));
    }
    progress.start(
        &format!("{}@{}", spec.repo, short_rev(&remote.commit)),
        remote.files.len(),
        unique,
    );
    let r = fetch_all(hub, &remote.repo, &remote.commit, &jobs, progress);
    progress.finish();
    r?;
    for f in &remote.files {
        let src = first[f.etag.as_str()];
        if src != f.path {
            let dst = model.join(&f.path);
            if let Some(p) = dst.parent() {
                fs::create_dir_all(p).map_err(|e| io(e, format!("creating {}", p.display())))?;
            }
            fs::copy(model.join(src), &dst).map_err(|e| io(e, format!("copying {}", f.path)))?;
        }
    }
    let _ = fs::remove_dir_all(&parts);

    // Content hash + sentinel, as mlx-knife writes them after a clone. A repo whose files
    // cannot be hashed (e.g. a corrupt safetensors header) still becomes a workspace, without a
    // hash, as mlx-knife does; the health line says why.
    let hashed = hash::compute_v2(&model, &Excludes::default_list());
    if let Err(e) = &hashed {
        progress.note(&format!("warning: no content hash: {e}"));
    }
    let provenance = sentinel::Provenance {
        source_repo: &spec.repo,
        source_revision: &remote.commit,
        operation: "clone",
    };
    sentinel::write_managed(&model, &provenance, hashed.as_ref().ok())
        .map_err(|e| io(e, "writing the sentinel".into()))?;
    let content_hash = hashed.ok().map(|(h, _)| h);

    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let health = record::describe(&ModelRef::workspace(model.clone(), name)).health;

    Ok(Cloned {
        target: target.to_path_buf(),
        commit: remote.commit.clone(),
        content_hash,
        files: remote.files.len(),
        bytes: remote.total_bytes(),
        health,
        resumed_bytes: on_disk,
    })
}

/// Remove files under `dir` that are not in `wanted` (paths relative to `base`).
fn prune(base: &Path, dir: &Path, wanted: &BTreeSet<&str>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            prune(base, &p, wanted);
            let _ = fs::remove_dir(&p); // only when empty
        } else {
            let rel = p
                .strip_prefix(base)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if !wanted.contains(rel.as_str()) {
                let _ = fs::remove_file(&p);
            }
        }
    }
}
