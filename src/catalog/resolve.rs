//! Name resolution: the one place that turns what a user typed into a model (the rules of
//! mlx-knife's ADR-022 name lookup, with its "first directory entry wins" gap closed).
//!
//! Explicit paths are exact. Names are looked up among workspace-home folders and hub repos:
//! an exact name wins (workspaces first), otherwise a case-insensitive substring match,
//! and more than one match is always an ambiguity listing every candidate. Workspaces come
//! from every home (`MLXK_WORKSPACE_HOME`, then `MLXK_MODEL_PATH`): the same name in two
//! homes is an ambiguity naming both paths, never "first folder wins".

use std::fs;
use std::path::{Path, PathBuf};

use super::hub_cache::{RepoDir, RepoKind};
use super::{HubRepo, Locations, ModelRef, has_config, scan_all_workspaces, scan_hub};
use crate::mountprobe::mounted_model_path;
use crate::text::short_rev;
use crate::{env, error};

/// How many mounts a path may lead through before resolution gives up (a mount whose
/// model.json names a folder inside another mount).
const MAX_MOUNT_HOPS: usize = 4;

/// Why a spec did not resolve to exactly one model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("No model found matching '{spec}'{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NotFound { spec: String, hint: Option<String> },
    #[error("Multiple models match '{spec}'")]
    Ambiguous { spec: String, matches: Vec<String> },
    #[error("Hash '{rev}' not found for model '{name}'{}", if available.is_empty() { String::new() } else { format!(" (available: {})", available.join(", ")) })]
    HashNotFound {
        name: String,
        rev: String,
        available: Vec<String>,
    },
    /// A ref (`refs/main`, a branch or tag) names a commit whose snapshot is not cached.
    #[error("{name}@{rev}: refs/{rev} names commit {commit}, which is not in the cache{}", if cached.is_empty() { String::new() } else { format!(" (cached: {})", cached.join(", ")) })]
    RefNotCached {
        name: String,
        rev: String,
        commit: String,
        /// The cached snapshots as `org/name@rev7`.
        cached: Vec<String>,
    },
    #[error("'{path}' is not a model folder: {why}")]
    NotAModel { path: String, why: String },
}

impl ResolveError {
    /// The `error.type` of the JSON envelope.
    pub fn error_type(&self) -> error::ErrorType {
        use error::ErrorType as T;
        match self {
            ResolveError::NotFound { .. } | ResolveError::NotAModel { .. } => T::ModelNotFound,
            ResolveError::Ambiguous { .. } => T::AmbiguousMatch,
            ResolveError::HashNotFound { .. } | ResolveError::RefNotCached { .. } => {
                T::HashNotFound
            }
        }
    }
}

/// Starts with `/`, `./`, `../`, `~`, or is `.`/`..`.
pub fn is_explicit_path(s: &str) -> bool {
    s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || s.starts_with('~')
        || s == "."
        || s == ".."
}

/// Expand a leading `~` with `$HOME`.
pub fn expand_user(s: &str) -> PathBuf {
    if let Some(rest) = s.strip_prefix('~')
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let mut p = PathBuf::from(crate::sys::home_dir(env::var(env::HOME)));
        p.push(rest.trim_start_matches('/'));
        return p;
    }
    PathBuf::from(s)
}

/// A folder given by path: a workspace, a snapshot folder of the hub cache, or a model folder
/// inside an mlxfs mount (the model it shows).
pub fn resolve_path(spec: &str, loc: &Locations) -> Result<ModelRef, ResolveError> {
    resolve_path_hops(spec, loc, 0)
}

fn resolve_path_hops(spec: &str, loc: &Locations, hops: usize) -> Result<ModelRef, ResolveError> {
    let p = expand_user(spec);
    let canon = fs::canonicalize(&p).map_err(|e| ResolveError::NotFound {
        spec: spec.to_string(),
        hint: Some(format!("{}: {e}", p.display())),
    })?;
    if !canon.is_dir() {
        return Err(ResolveError::NotAModel {
            path: spec.to_string(),
            why: "not a folder".into(),
        });
    }
    if let Some(m) = hub_snapshot_at(&p, &canon, loc) {
        return Ok(m);
    }
    if hops < MAX_MOUNT_HOPS
        && let Some(backing) = mounted_model_path(&canon)
        && backing != canon
    {
        // A model folder inside an mlxfs mount stands for the model it shows.
        return resolve_path_hops(&backing.to_string_lossy(), loc, hops + 1);
    }
    if let Some(m) = linked_snapshot_at(&canon, loc) {
        return Ok(m);
    }
    if !has_config(&canon) {
        return Err(ResolveError::NotAModel {
            path: spec.to_string(),
            why: "no config.json in it".into(),
        });
    }
    let short = canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| canon.to_string_lossy().into_owned());
    Ok(ModelRef::workspace(canon, short))
}

/// `…/hub/models--o--n/snapshots/<commit>` → that hub model at that revision. The path is
/// matched as typed (a snapshot folder moved elsewhere and linked back is found by its place
/// in the cache) and as resolved (a repo folder moved elsewhere and linked back is found by
/// its real place, when the cache links to it).
fn hub_snapshot_at(typed: &Path, canon: &Path, loc: &Locations) -> Option<ModelRef> {
    let hub_real = fs::canonicalize(&loc.hub_cache).ok()?;
    let typed = std::path::absolute(typed).ok().map(|p| lexical_normal(&p));
    let mut tries: Vec<(PathBuf, PathBuf)> = Vec::new();
    if let Some(t) = &typed {
        tries.push((loc.hub_cache.clone(), t.clone()));
        tries.push((hub_real.clone(), t.clone()));
    }
    tries.push((hub_real.clone(), canon.to_path_buf()));
    for (hub, path) in tries {
        let Ok(rel) = path.strip_prefix(&hub) else {
            continue;
        };
        let parts: Vec<_> = rel.components().collect();
        if let [repo_dir, snaps, commit] = parts.as_slice()
            && snaps.as_os_str() == RepoDir::SNAPSHOTS
            && let Some(m) = snapshot_model(&hub.join(repo_dir.as_os_str()), commit.as_os_str())
            && fs::canonicalize(&m.path).is_ok_and(|c| c == canon)
        {
            return Some(m);
        }
    }
    // A repo folder on another disk: `<real>/models--o--n/snapshots/<commit>`, linked from
    // the cache under the same name.
    let snaps = canon.parent()?;
    let real_repo = snaps.parent()?;
    let repo_name = real_repo.file_name()?;
    if snaps.file_name()? != RepoDir::SNAPSHOTS
        || !repo_name
            .as_encoded_bytes()
            .starts_with(RepoKind::Model.prefix().as_bytes())
    {
        return None;
    }
    let in_cache = hub_real.join(repo_name);
    (fs::canonicalize(&in_cache).ok()? == real_repo)
        .then(|| snapshot_model(&in_cache, canon.file_name()?))
        .flatten()
}

/// A folder on another disk that the hub cache links to as a snapshot (`snapshots/<commit>
/// -> here`): that hub model at that revision. Only for folders that are not workspaces (no
/// sentinel) and lie outside the workspace home; looks at the links of `snapshots/` only.
fn linked_snapshot_at(canon: &Path, loc: &Locations) -> Option<ModelRef> {
    if fs::symlink_metadata(canon.join(crate::hash::SENTINEL_FILENAME)).is_ok()
        || loc.workspace_homes().any(|h| canon.starts_with(h))
    {
        return None;
    }
    for repo in fs::read_dir(&loc.hub_cache).ok()?.flatten() {
        let Ok(rd) = fs::read_dir(RepoDir(&repo.path()).snapshots()) else {
            continue;
        };
        for snap in rd.flatten() {
            if snap.file_type().is_ok_and(|t| t.is_symlink())
                && fs::canonicalize(snap.path()).is_ok_and(|c| c == canon)
            {
                return snapshot_model(&repo.path(), &snap.file_name());
            }
        }
    }
    None
}

fn snapshot_model(repo_dir: &Path, commit: &std::ffi::OsStr) -> Option<ModelRef> {
    let repo = HubRepo::load(repo_dir)?;
    let commit = commit.to_str()?;
    let idx = repo.snapshots.iter().position(|s| s.commit == commit)?;
    Some(ModelRef::hub(&repo, Some(idx)))
}

/// `a/./b/../c` → `a/c` without touching the disk (the path as the user typed it).
fn lexical_normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

enum Candidate {
    Workspace(super::WorkspaceDir),
    Hub(HubRepo),
}

impl Candidate {
    fn name(&self) -> &str {
        match self {
            Candidate::Workspace(w) => &w.name,
            Candidate::Hub(r) => &r.repo_id,
        }
    }

    fn into_model(self) -> ModelRef {
        match self {
            Candidate::Workspace(w) => w.into_model(),
            Candidate::Hub(repo) => ModelRef::hub(&repo, repo.current),
        }
    }
}

/// The candidates of an ambiguity, as the user can tell them apart: names, and the path of a
/// workspace whose name another candidate shares (the same folder name in two homes).
fn ambiguity(spec: &str, hits: &[Candidate]) -> ResolveError {
    let mut matches: Vec<String> = hits
        .iter()
        .map(|c| match c {
            Candidate::Workspace(w) if hits.iter().filter(|o| o.name() == w.name).count() > 1 => {
                w.path.to_string_lossy().into_owned()
            }
            other => other.name().to_string(),
        })
        .collect();
    matches.sort();
    ResolveError::Ambiguous {
        spec: spec.to_string(),
        matches,
    }
}

/// The candidates named exactly `name`: none, one, or an ambiguity.
fn take_exact(
    cands: &mut Vec<Candidate>,
    name: &str,
    spec: &str,
) -> Result<Option<Candidate>, ResolveError> {
    let mut hits: Vec<Candidate> = Vec::new();
    let mut i = 0;
    while i < cands.len() {
        if cands[i].name() == name {
            hits.push(cands.remove(i));
        } else {
            i += 1;
        }
    }
    // Workspaces come first (ADR-022's search order); only between them can a name tie.
    if hits.iter().any(|c| matches!(c, Candidate::Workspace(_))) {
        hits.retain(|c| matches!(c, Candidate::Workspace(_)));
    }
    match hits.len() {
        0 => Ok(None),
        1 => Ok(hits.pop()),
        _ => Err(ambiguity(spec, &hits)),
    }
}

/// [`resolve`] for an argument that names a workspace (`convert`'s source, `archive`,
/// `push`): a bare name that is a folder relative to the current one is that folder, as if
/// written `./NAME` — mlx-knife convert.py's rule for bare names ("the workspace home first,
/// then the path") — unless a workspace has exactly that name. A hub model (a workspace
/// argument never is one), a model whose name only contains it (the catalog's partial
/// match), or a name that is ambiguous never wins over the folder: the folder is the one
/// reading that names one workspace exactly.
pub fn resolve_workspace_arg(spec: &str, loc: &Locations) -> Result<ModelRef, ResolveError> {
    if is_explicit_path(spec) || spec.trim().is_empty() || !Path::new(spec).is_dir() {
        return resolve(spec, loc);
    }
    // A hub model is never a workspace argument: even its exact name (or the
    // `mlx-community/` one) leaves the folder the one reading that can be meant.
    match resolve_with(spec, loc, false) {
        Ok(m) if m.source == super::Source::Workspace => Ok(m),
        _ => resolve_path(&format!("./{spec}"), loc),
    }
}

/// Resolve a name (optionally `name@rev`) or an explicit path to one model.
pub fn resolve(spec: &str, loc: &Locations) -> Result<ModelRef, ResolveError> {
    resolve_with(spec, loc, true)
}

/// [`resolve`]; `partial`: a name no model has exactly may match one whose name contains it
/// (case-insensitively).
fn resolve_with(spec: &str, loc: &Locations, partial: bool) -> Result<ModelRef, ResolveError> {
    let not_found = |hint: Option<String>| ResolveError::NotFound {
        spec: spec.to_string(),
        hint,
    };
    if spec.trim().is_empty() {
        return Err(not_found(Some("empty name".into())));
    }
    if is_explicit_path(spec) {
        return resolve_path(spec, loc);
    }
    // The mount names a hub org that collides with a workspace `<org>@hub` (and an org-less
    // hub model `<name>@hub`): those names mean "the hub cache only".
    let (hub_only, unaliased) = if let Some((org, rest)) = spec.split_once("@hub/") {
        (true, format!("{org}/{rest}"))
    } else if let Some(n) = spec.strip_suffix("@hub") {
        (true, n.to_string())
    } else {
        (false, spec.to_string())
    };
    let mut cands: Vec<Candidate> = Vec::new();
    if !hub_only {
        cands.extend(
            scan_all_workspaces(loc)
                .into_iter()
                .map(Candidate::Workspace),
        );
    }
    cands.extend(scan_hub(&loc.hub_cache).into_iter().map(Candidate::Hub));
    // A name that itself holds an `@` (any folder name on disk may) is found whole first.
    if unaliased.contains('@')
        && let Some(c) = take_exact(&mut cands, &unaliased, spec)?
    {
        return Ok(c.into_model());
    }
    let (name, rev) = match unaliased.rsplit_once('@') {
        Some((n, r)) => (n, Some(r)),
        None => (unaliased.as_str(), None),
    };
    if name.trim().is_empty() || rev.is_some_and(|r| r.trim().is_empty()) {
        return Err(not_found(None));
    }
    if rev.is_some() {
        // Revisions are the hub cache's: workspaces have none.
        cands.retain(|c| matches!(c, Candidate::Hub(_)));
    }

    let expanded = (!name.contains('/')).then(|| format!("mlx-community/{name}"));
    let mut exact = take_exact(&mut cands, name, spec)?;
    if exact.is_none()
        && let Some(e) = &expanded
    {
        exact = take_exact(&mut cands, e, spec)?;
    }
    let chosen = match exact {
        Some(c) => c,
        None => {
            let low = name.to_lowercase();
            let mut hits: Vec<Candidate> = cands
                .into_iter()
                .filter(|c| partial && c.name().to_lowercase().contains(&low))
                .collect();
            match hits.len() {
                0 => {
                    let mut hints = loc.home_problems();
                    // A path written without `./` (`ws/model`, `mnt/org/name`) is a name.
                    if Path::new(spec).exists() {
                        hints.insert(
                            0,
                            format!("{spec} is a path here: write ./{spec} to mean it"),
                        );
                    }
                    let hint = (!hints.is_empty()).then(|| hints.join("; "));
                    return Err(not_found(hint));
                }
                1 => hits.swap_remove(0),
                _ => return Err(ambiguity(spec, &hits)),
            }
        }
    };
    match chosen {
        Candidate::Workspace(w) => Ok(w.into_model()),
        Candidate::Hub(repo) => {
            let Some(rev) = rev else {
                return Ok(ModelRef::hub(&repo, repo.current));
            };
            pick_revision(&repo, rev, spec).map(|i| ModelRef::hub(&repo, Some(i)))
        }
    }
}

/// `@rev`: a prefix of a snapshot commit, or a ref name under `refs/`.
fn pick_revision(repo: &HubRepo, rev: &str, spec: &str) -> Result<usize, ResolveError> {
    let low = rev.to_lowercase();
    let hits: Vec<usize> = repo
        .snapshots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.commit.starts_with(&low))
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => {
            if let Some(i) = repo.snapshot_for_ref(rev) {
                return Ok(i);
            }
            let cached = || {
                repo.snapshots
                    .iter()
                    .map(|s| format!("{}@{}", repo.repo_id, short_rev(&s.commit)))
                    .collect()
            };
            // A ref that exists but names a commit that is not cached (an interrupted update),
            // or that missing commit itself: say so, not "not found".
            let named = repo.ref_target(rev);
            let missing = named.or_else(|| {
                repo.missing_main
                    .clone()
                    .filter(|c| c.starts_with(&low))
                    .map(|c| (String::from("main"), c))
            });
            if let Some((ref_name, commit)) = missing {
                return Err(ResolveError::RefNotCached {
                    name: repo.repo_id.clone(),
                    rev: ref_name,
                    commit,
                    cached: cached(),
                });
            }
            Err(ResolveError::HashNotFound {
                name: repo.repo_id.clone(),
                rev: rev.to_string(),
                available: repo
                    .snapshots
                    .iter()
                    .map(|s| short_rev(&s.commit).to_string())
                    .collect(),
            })
        }
        _ => {
            let mut matches: Vec<String> = hits
                .iter()
                .map(|&i| format!("{}@{}", repo.repo_id, repo.snapshots[i].commit))
                .collect();
            matches.sort();
            Err(ResolveError::Ambiguous {
                spec: spec.to_string(),
                matches,
            })
        }
    }
}

/// A model listed by `list PATTERN` with its display name (workspaces only).
pub struct Listed {
    pub model: ModelRef,
    pub display_name: Option<String>,
}

/// `list [PATTERN]`: everything, a case-insensitive substring filter on names, or for an
/// explicit path the workspace itself, the workspaces inside a folder, or a name prefix.
pub fn list(pattern: Option<&str>, loc: &Locations) -> Vec<Listed> {
    let pattern = pattern.map(str::trim).filter(|p| !p.is_empty());
    if let Some(p) = pattern
        && is_explicit_path(p)
    {
        return list_paths(p, loc);
    }
    let mut out = list_in_scan_order(pattern, loc);
    out.sort_by(|a, b| a.model.name.cmp(&b.model.name));
    out
}

/// [`list`] of a name pattern (or of everything) before its sort by name: workspaces in
/// search order, then the hub cache — the order of [`super::all_models`].
pub fn list_in_scan_order(pattern: Option<&str>, loc: &Locations) -> Vec<Listed> {
    let low = pattern.map(str::to_lowercase);
    let keep = |n: &str| low.as_ref().is_none_or(|l| n.to_lowercase().contains(l));
    let mut out = Vec::new();
    let workspaces = scan_all_workspaces(loc);
    // The same name in two homes: each is shown by its path, so the two can be told apart.
    let dups = super::duplicate_names(&workspaces);
    for w in workspaces {
        if keep(&w.name) {
            let dn = if dups.contains(&w.name) {
                w.path.to_string_lossy().into_owned()
            } else {
                w.name.clone()
            };
            out.push(Listed {
                model: w.into_model(),
                display_name: Some(dn),
            });
        }
    }
    for repo in scan_hub(&loc.hub_cache) {
        if keep(&repo.repo_id) {
            out.push(Listed {
                model: ModelRef::hub(&repo, repo.current),
                display_name: None,
            });
        }
    }
    out
}

fn list_paths(pattern: &str, loc: &Locations) -> Vec<Listed> {
    let p = expand_user(pattern);
    let absolute = pattern.starts_with('/');
    let ws = |path: PathBuf, shown: String| {
        let canon = fs::canonicalize(&path).unwrap_or(path);
        let short = canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let display = if absolute {
            canon.to_string_lossy().into_owned()
        } else {
            shown
        };
        // Inside an mlxfs mount, a folder stands for the model it shows.
        let model = mounted_model_path(&canon)
            .and_then(|b| resolve_path(&b.to_string_lossy(), loc).ok())
            .unwrap_or_else(|| ModelRef::workspace(canon, short));
        Listed {
            model,
            display_name: Some(display),
        }
    };
    if p.is_dir() && has_config(&p) {
        let name = fs::canonicalize(&p)
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| pattern.to_string());
        return vec![ws(p, name)];
    }
    let (dir, prefix) = if p.is_dir() {
        (p.clone(), String::new())
    } else {
        let prefix = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        let parent = if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent
        };
        (parent, prefix)
    };
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let path = e.path();
            (name.starts_with(&prefix) && path.is_dir() && has_config(&path))
                .then_some((name, path))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(n, path)| ws(path, n)).collect()
}
