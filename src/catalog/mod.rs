//! The catalog core: where models live (hub cache, workspace home, explicit paths), the model
//! record of each, and name resolution. No FUSE, Python or HTTP here.

pub mod capability;
pub mod config;
pub mod detect;
pub mod fleet;
pub mod health;
pub mod inventory;
pub mod loader_files;
pub mod mlx_lm_types;
pub mod record;
pub mod resolve;
pub mod runtime_cache;
pub mod safetensors_header;
pub mod shards;
pub mod target;
pub mod verdict;

use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::env;
use crate::text::short_rev;

/// Where to look for models, read once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    /// The hub cache folder (`…/hub`); it may not exist.
    pub hub_cache: PathBuf,
    /// `MLXK_WORKSPACE_HOME`, resolved, when set and a folder.
    pub workspace_home: Option<PathBuf>,
    /// Set but unusable workspace home: (value, why), for messages.
    pub workspace_home_problem: Option<(String, String)>,
    /// `MLXK_WORKSPACE_HOME` as set, `~` expanded, whether or not the folder exists (`clone`
    /// creates it on demand).
    pub workspace_home_set: Option<PathBuf>,
    /// `MLXK_MODEL_PATH`: further workspace homes (`:`-separated, as `PATH`), searched in
    /// order after the workspace home (ADR-022's "future" multi-path search). Resolved
    /// folders only, each once, never the workspace home again.
    pub model_path: Vec<PathBuf>,
    /// Entries of `MLXK_MODEL_PATH` that are unusable: (value, why), for messages.
    pub model_path_problems: Vec<(String, String)>,
}

fn expand_tilde(s: &str, home: Option<&str>) -> PathBuf {
    match (s.strip_prefix('~'), home) {
        (Some(rest), Some(h)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{h}{rest}"))
        }
        _ => PathBuf::from(s),
    }
}

/// Python's `os.path.expandvars` (POSIX): `$NAME` and `${NAME}` become the variable's value;
/// unknown variables (and a lone `$`) stay as written. huggingface_hub applies it to
/// `HF_HOME` and `HF_HUB_CACHE` (constants.py).
pub fn expand_vars(s: &str, get: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(j) => (&b[..j], j + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
                .map_or(after.len(), |(j, _)| j);
            (&after[..n], n)
        };
        match (!name.is_empty()).then(|| get(name)).flatten() {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..i + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

impl Locations {
    /// From the process environment.
    pub fn from_env() -> Locations {
        Locations::from_vars(env::var)
    }

    /// From any variable source; an empty variable counts as unset.
    ///
    /// The hub cache is found as huggingface_hub's constants.py finds it: `HF_HUB_CACHE`, else
    /// the older `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, where `HF_HOME` defaults to
    /// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (`~` and `$VAR` expanded).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Locations {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        // Python's expanduser: HOME, else the password database (never a relative `~`).
        let home = Some(crate::sys::home_dir(var(env::HOME)));
        let expand = |s: &str| expand_tilde(&expand_vars(s, &var), home.as_deref());
        let hub_cache = if let Some(c) = var(env::HF_HUB_CACHE) {
            expand(&c)
        } else if let Some(c) = var(env::HUGGINGFACE_HUB_CACHE) {
            expand(&c)
        } else {
            hf_home_with(&var, home.as_deref()).join("hub")
        };
        let mut workspace_home = None;
        let mut workspace_home_problem = None;
        let mut workspace_home_set = None;
        if let Some(w) = var(env::MLXK_WORKSPACE_HOME) {
            let p = expand_tilde(&w, home.as_deref());
            workspace_home_set = Some(p.clone());
            match fs::canonicalize(&p) {
                Ok(r) if r.is_dir() => match unlistable(&r) {
                    None => workspace_home = Some(r),
                    Some(why) => workspace_home_problem = Some((w, why)),
                },
                Ok(_) => workspace_home_problem = Some((w, "not a folder".into())),
                Err(e) => workspace_home_problem = Some((w, e.to_string())),
            }
        }
        let mut model_path: Vec<PathBuf> = Vec::new();
        let mut model_path_problems = Vec::new();
        if let Some(mp) = var(env::MLXK_MODEL_PATH) {
            for entry in mp.split(':').filter(|e| !e.trim().is_empty()) {
                let p = expand_tilde(&expand_vars(entry, &var), home.as_deref());
                match fs::canonicalize(&p) {
                    Ok(r) if r.is_dir() => {
                        if let Some(why) = unlistable(&r) {
                            model_path_problems.push((entry.to_string(), why));
                        } else if workspace_home.as_ref() != Some(&r) && !model_path.contains(&r) {
                            model_path.push(r);
                        }
                    }
                    Ok(_) => model_path_problems.push((entry.to_string(), "not a folder".into())),
                    Err(e) => model_path_problems.push((entry.to_string(), e.to_string())),
                }
            }
        }
        Locations {
            hub_cache,
            workspace_home,
            workspace_home_problem,
            workspace_home_set,
            model_path,
            model_path_problems,
        }
    }

    /// Every workspace home in search order: `MLXK_WORKSPACE_HOME`, then `MLXK_MODEL_PATH`'s.
    /// The folders searched, each canonicalised now (a path that does not resolve stays as
    /// it is), as a live mount's `catalog.json` names them: a mount answers only a reader
    /// whose own sources are the same folders. `None` when a path is not plain UTF-8 (two
    /// such paths could print alike).
    /// The source folders as this process spells them (`status.json`'s `sources`): records
    /// print paths under these, so two processes whose sources are the same folders spelled
    /// differently print different paths.
    pub fn sources(&self) -> serde_json::Value {
        serde_json::json!({
            "hub_cache": self.hub_cache.to_string_lossy(),
            "workspace_home": self.workspace_home.as_ref().map(|p| p.to_string_lossy()),
            "model_path": self.model_path.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
        })
    }

    pub fn canonical_sources(&self) -> Option<serde_json::Value> {
        let one = |p: &Path| {
            fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .into_os_string()
                .into_string()
                .ok()
                .filter(|s| !s.contains('\u{fffd}'))
        };
        let homes: Option<Vec<String>> = self.model_path.iter().map(|p| one(p)).collect();
        Some(serde_json::json!({
            "hub_cache": one(&self.hub_cache)?,
            "workspace_home": match &self.workspace_home {
                Some(w) => Some(one(w)?),
                None => None,
            },
            "model_path": homes?,
        }))
    }

    pub fn workspace_homes(&self) -> impl Iterator<Item = &Path> {
        self.workspace_home
            .iter()
            .chain(self.model_path.iter())
            .map(PathBuf::as_path)
    }

    /// Why the search is narrower than configured, one line per unusable home (for warnings
    /// and "not found" hints).
    pub fn home_problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .workspace_home_problem
            .iter()
            .map(|(v, why)| format!("{}={v} is unusable: {why}", env::MLXK_WORKSPACE_HOME))
            .collect();
        out.extend(
            self.model_path_problems
                .iter()
                .map(|(v, why)| format!("{} entry {v} is unusable: {why}", env::MLXK_MODEL_PATH)),
        );
        out
    }
}

/// Why the folder `p` cannot be listed (a workspace home this user may not read: said, never
/// searched as if empty), or `None`.
fn unlistable(p: &Path) -> Option<String> {
    fs::read_dir(p)
        .err()
        .map(|e| format!("cannot be read ({})", io_reason(&e)))
}

/// `HF_HOME` as huggingface_hub computes it (constants.py): the variable (`~` and `$VAR`
/// expanded), else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home_with(var: &impl Fn(&str) -> Option<String>, home: Option<&str>) -> PathBuf {
    let raw = var(env::HF_HOME).unwrap_or_else(|| {
        let cache = var(env::XDG_CACHE_HOME).unwrap_or_else(|| "~/.cache".to_string());
        format!("{}/huggingface", cache.trim_end_matches('/'))
    });
    expand_tilde(&expand_vars(&raw, var), home)
}

/// The Hugging Face home of this process's environment (see [`Locations::from_vars`]).
pub fn hf_home() -> PathBuf {
    let home = crate::sys::home_dir(env::var(env::HOME));
    hf_home_with(&env::var, Some(&home))
}

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

/// One snapshot of a hub model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// The snapshot folder's name: a commit id as huggingface_hub writes it, but any UTF-8
    /// name found on disk (never cut by byte index: see [`crate::text::short_rev`]).
    pub commit: String,
    pub path: PathBuf,
    pub mtime: SystemTime,
    /// Is the snapshot's entry in `snapshots/` a link (a snapshot moved to another disk)?
    pub linked: bool,
}

/// A `models--org--name` folder of the hub cache.
#[derive(Debug, Clone, Hash)]
pub struct HubRepo {
    pub repo_id: String,
    pub dir: PathBuf,
    /// Snapshots sorted newest first.
    pub snapshots: Vec<Snapshot>,
    /// Index into `snapshots` of the current revision (refs/main, else the newest).
    pub current: Option<usize>,
    /// Set when `snapshots/` is missing or empty: mlx-knife's reason string (or why the
    /// folder cannot be read as a model).
    pub problem: Option<String>,
    /// Entries of `snapshots/` that are not used, with why (not UTF-8, not a folder).
    pub ignored: Vec<String>,
    /// `refs/main` names this commit, but no snapshot of it is cached (an interrupted
    /// update): the current revision is missing, `current` is `None`.
    pub missing_main: Option<String>,
    /// The folder's real path, when the scan that found it knew its parent's real path and
    /// neither the folder, its `blobs/` nor its `snapshots/` is a link (the common layout:
    /// [`ModelRef::link_roots`] then needs no system call).
    pub real_dir: Option<PathBuf>,
}

/// `models--org--name` → `org/name` (every `--` becomes `/`, as mlx-knife does).
pub fn repo_id_from_dir(dir: &str) -> Option<String> {
    dir.strip_prefix("models--").map(|r| r.replace("--", "/"))
}

/// Is this `hub/` entry name a model folder (`models--*`, not mlx-knife's test sentinel)?
fn is_model_dir_name(name: &[u8]) -> bool {
    name.starts_with(b"models--")
        && !name
            .windows(b"TEST-CACHE-SENTINEL".len())
            .any(|w| w == b"TEST-CACHE-SENTINEL")
}

/// `org/name` → `models--org--name`.
pub fn dir_from_repo_id(repo: &str) -> String {
    if repo.starts_with("models--") {
        repo.to_string()
    } else {
        format!("models--{}", repo.replace('/', "--"))
    }
}

/// What `refs/<name>` holds.
enum Ref {
    Missing,
    /// A full commit id (40 hex digits, lower-cased), as huggingface_hub writes it.
    Commit(String),
    /// Anything else (kept to match a snapshot folder of exactly that name; never echoed).
    Invalid(String),
}

fn read_ref(dir: &Path, name: &str) -> Ref {
    let bytes = crate::sys::read_small(&dir.join("refs").join(name), 4096);
    let Ok(s) = bytes.and_then(|b| {
        String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }) else {
        return Ref::Missing;
    };
    let s = s.trim();
    let low = s.to_ascii_lowercase();
    if crate::text::is_commit(&low) {
        Ref::Commit(low)
    } else if s.is_empty() {
        Ref::Missing
    } else {
        Ref::Invalid(s.to_string())
    }
}

impl HubRepo {
    /// Read one `models--…` folder (`None` only when the name does not start with `models--`;
    /// every other problem becomes `problem`: a name that is not UTF-8 is listed by its lossy
    /// form with that reason, so nothing in the cache is left out silently).
    ///
    /// The folder itself, `snapshots/`, each snapshot and `blobs/` may be links to another
    /// disk (huggingface_hub's advice for freeing space): they are followed. A link that
    /// leads nowhere (a disk not attached) is the model's problem, or an ignored snapshot.
    pub fn load(dir: &Path) -> Option<HubRepo> {
        Self::load_in(dir, None)
    }

    /// [`HubRepo::load`] for a folder whose parent's real path is `real_parent` (a scan of the
    /// hub cache resolves it once): a plain layout then gets [`HubRepo::real_dir`].
    pub fn load_in(dir: &Path, real_parent: Option<&Path>) -> Option<HubRepo> {
        let os_name = dir.file_name()?;
        let name = os_name.to_string_lossy();
        let repo_id = repo_id_from_dir(&name)?;
        let mut repo = HubRepo {
            repo_id,
            dir: dir.to_path_buf(),
            snapshots: Vec::new(),
            current: None,
            problem: None,
            ignored: Vec::new(),
            missing_main: None,
            real_dir: None,
        };
        if os_name.to_str().is_none() {
            repo.problem =
                Some("Folder name is not valid UTF-8: rename the model folder".to_string());
            return Some(repo);
        }
        // A plain folder (the common case: one `lstat`) is usable and not too wide.
        let plain = fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
        if !plain && let Some(why) = unusable_folder(dir).or_else(|| too_wide(dir, dir.parent())) {
            repo.problem = Some(why);
            return Some(repo);
        }
        let blobs = dir.join("blobs");
        let blobs_linked = is_link(&blobs);
        if blobs_linked && let Some(why) = unusable_folder(&blobs) {
            repo.problem = Some(format!("blobs/: {why}"));
            return Some(repo);
        }
        let snaps = dir.join("snapshots");
        if let Some(parent) = real_parent
            && plain
            && !blobs_linked
            && !is_link(&snaps)
        {
            repo.real_dir = Some(parent.join(os_name));
        }
        let rd = match fs::read_dir(&snaps) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                repo.problem = Some(match unusable_folder(&snaps) {
                    Some(why) if is_link(&snaps) => format!("snapshots/: {why}"),
                    _ => "No snapshots directory found".into(),
                });
                return Some(repo);
            }
            Err(e) => {
                repo.problem = Some(match fs::symlink_metadata(&snaps) {
                    // Not even `snapshots/` can be looked at: the repo folder lists its names
                    // but cannot be entered (mode `r` without `x`).
                    Err(e2) if e2.kind() == std::io::ErrorKind::PermissionDenied => {
                        format!("cannot be entered ({})", io_reason(&e2))
                    }
                    _ => format!("Cannot read snapshots/: {}", io_reason(&e)),
                });
                return Some(repo);
            }
        };
        for e in rd.flatten() {
            let os_name = e.file_name();
            let Ok(ft) = e.file_type() else { continue };
            // Dot names are snapshots still being assembled (`mlxfs pull` stages them).
            if os_name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let shown = os_name.to_string_lossy();
            // A snapshot folder moved elsewhere and linked back is followed.
            let md = if ft.is_symlink() {
                match unusable_folder(&e.path()) {
                    Some(why) => {
                        repo.ignored.push(format!("snapshots/{shown}: {why}"));
                        continue;
                    }
                    None => fs::metadata(e.path()).ok(),
                }
            } else if ft.is_dir() {
                match e.metadata() {
                    Ok(md) => Some(md),
                    // `snapshots/` lists its names but cannot be entered (mode `r` without
                    // `x`): no snapshot in it can be read.
                    Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                        repo.problem = Some(format!(
                            "snapshots/ cannot be entered ({})",
                            io_reason(&err)
                        ));
                        repo.snapshots.clear();
                        return Some(repo);
                    }
                    Err(_) => None,
                }
            } else {
                repo.ignored
                    .push(format!("snapshots/{shown}: not a folder"));
                continue;
            };
            let Some(commit) = os_name.to_str().map(str::to_string) else {
                repo.ignored
                    .push(format!("snapshots/{shown}: name is not valid UTF-8"));
                continue;
            };
            let mtime = md
                .and_then(|m| m.modified().ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            repo.snapshots.push(Snapshot {
                commit,
                path: e.path(),
                mtime,
                linked: ft.is_symlink(),
            });
        }
        repo.snapshots
            .sort_by(|a, b| b.mtime.cmp(&a.mtime).then(a.commit.cmp(&b.commit)));
        if repo.snapshots.is_empty() {
            repo.problem = Some(match repo.ignored.first() {
                Some(why) => format!("No usable snapshot: {why}"),
                None => "No snapshots found".into(),
            });
            return Some(repo);
        }
        // refs/main names the current revision; one that is not cached is said, never
        // replaced by an older snapshot.
        match read_ref(dir, "main") {
            Ref::Commit(c) => match repo.snapshots.iter().position(|s| s.commit == c) {
                Some(i) => repo.current = Some(i),
                None => repo.missing_main = Some(c),
            },
            Ref::Invalid(name) => match repo.snapshots.iter().position(|s| s.commit == name) {
                Some(i) => repo.current = Some(i),
                None => {
                    repo.ignored
                        .push("refs/main: not a commit id (the newest snapshot is current)".into());
                    repo.current = Some(0);
                }
            },
            Ref::Missing => repo.current = Some(0),
        }
        Some(repo)
    }

    /// Why the current revision cannot be used when `refs/main` names a commit that is not
    /// cached, naming the cached snapshots by the names that still reach them.
    pub fn missing_main_problem(&self) -> Option<String> {
        let c = self.missing_main.as_ref()?;
        let cached: Vec<String> = self
            .snapshots
            .iter()
            .map(|s| format!("{}@{}", self.repo_id, short_rev(&s.commit)))
            .collect();
        Some(format!(
            "Current revision {} (refs/main) is not in the cache; cached: {}. \
             `mlxfs pull {}` fetches it",
            short_rev(c),
            cached.join(", "),
            self.repo_id
        ))
    }

    /// The commit a ref (branch/tag name under `refs/`) points at, when it has a snapshot.
    pub fn snapshot_for_ref(&self, name: &str) -> Option<usize> {
        let (_, c) = self.ref_target(name)?;
        self.snapshots.iter().position(|s| s.commit == c)
    }

    /// `(ref name, commit)` of a ref under `refs/`, cached or not (`None` for names that could
    /// leave `refs/`, and for a ref that does not hold a commit id: its text is never used).
    pub fn ref_target(&self, name: &str) -> Option<(String, String)> {
        if name.is_empty()
            || name.split('/').any(|p| p == ".." || p == ".")
            || name.starts_with('/')
        {
            return None;
        }
        match read_ref(&self.dir, name) {
            Ref::Commit(c) => Some((name.to_string(), c)),
            Ref::Invalid(c) if self.snapshots.iter().any(|s| s.commit == c) => {
                Some((name.to_string(), c))
            }
            _ => None,
        }
    }
}

fn is_link(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Why `p` cannot be used as a folder, or `None` when it is one (links followed). A link
/// is named with its target, so a model on a disk that is not attached says so.
pub fn unusable_folder(p: &Path) -> Option<String> {
    let target = || {
        fs::read_link(p)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match fs::metadata(p) {
        Ok(m) if m.is_dir() => None,
        Ok(_) if is_link(p) => Some(format!("a link to {}, which is not a folder", target())),
        Ok(_) => Some("not a folder".into()),
        Err(e) if is_link(p) && e.raw_os_error() == Some(libc::ELOOP) => Some(format!(
            "a link to {}, which leads back to itself (a link loop)",
            target()
        )),
        Err(e) if is_link(p) => Some(format!(
            "a link to {}, which cannot be reached ({}): is its disk attached?",
            target(),
            io_reason(&e)
        )),
        Err(e) => Some(format!("cannot be read ({})", io_reason(&e))),
    }
}

/// The home folder, once per process (from `HOME`, else the password database).
fn home_real() -> &'static Path {
    static HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let h = PathBuf::from(crate::sys::home_dir(env::var(env::HOME)));
        fs::canonicalize(&h).unwrap_or(h)
    })
}

/// Is `real` (a canonical folder) too wide to stand for one model's folder: `/`, a folder
/// that holds the home folder, or one that holds `holder` (the folder the link sits in: the
/// hub cache, the workspace home, a repo folder)?
fn holds_too_much(real: &Path, holder: Option<&Path>) -> bool {
    real.parent().is_none()
        || home_real().starts_with(real)
        || holder.is_some_and(|h| h.starts_with(real))
}

/// For a link `p` (sitting in `holder`): why its target is not followed when it is too wide
/// (see [`holds_too_much`]); `None` for anything else.
fn too_wide(p: &Path, holder: Option<&Path>) -> Option<String> {
    if !is_link(p) {
        return None;
    }
    let real = fs::canonicalize(p).ok()?;
    let holder = holder.map(|h| fs::canonicalize(h).unwrap_or_else(|_| h.to_path_buf()));
    holds_too_much(&real, holder.as_deref()).then(|| {
        format!(
            "a link to {}, which holds far more than one model (the disk's root, a home \
             folder or the folder the link is in): not followed",
            real.display()
        )
    })
}

/// An I/O error without the "(os error N)" tail.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Every `models--*` folder of the hub cache, sorted by repo id. Hidden: mlx-knife's test
/// sentinel caches. A missing cache is simply empty.
pub fn scan_hub(hub: &Path) -> Vec<HubRepo> {
    let Ok(rd) = fs::read_dir(hub) else {
        return Vec::new();
    };
    // Folders and links (a model moved to another disk): `HubRepo::load` says what is wrong
    // with a link that leads nowhere or a `models--…` entry that is not a folder.
    let dirs: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| is_model_dir_name(e.file_name().as_encoded_bytes()))
        .map(|e| e.path())
        .collect();
    // Each load reads `refs/` and lists `snapshots/`: cold, that is disk latency, so many loads
    // are kept in flight.
    let real_hub = crate::sys::real_path(hub).ok();
    let mut repos: Vec<HubRepo> = par_map_io(&dirs, |d| HubRepo::load_in(d, real_hub.as_deref()))
        .into_iter()
        .flatten()
        .collect();
    repos.sort_by(|a, b| a.repo_id.cmp(&b.repo_id).then_with(|| a.dir.cmp(&b.dir)));
    repos
}

/// A workspace found under the workspace home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceDir {
    /// Folder name (the name users type; lossy when not UTF-8).
    pub name: String,
    /// `home/name` (not resolved further).
    pub path: PathBuf,
    /// A folder name that is not UTF-8 cannot be typed or hashed: reported, not hidden.
    pub problem: Option<String>,
}

impl WorkspaceDir {
    pub fn into_model(self) -> ModelRef {
        let mut m = ModelRef::workspace(self.path, self.name);
        m.problem = self.problem;
        m
    }
}

/// Staging folders of clones in progress (mlxfs's and mlx-knife's): never a workspace.
pub fn is_staging_name(name: &str) -> bool {
    name.starts_with(".mlxfs-") || name.starts_with(".mlxk2_temp_")
}

/// Is `p` a model folder (holds a `config.json`, even a dangling link)?
pub fn has_config(p: &Path) -> bool {
    fs::symlink_metadata(p.join("config.json")).is_ok()
}

/// Direct sub-folders of the workspace home with a `config.json`, sorted by name. A linked
/// entry (a workspace moved to another disk) is followed wherever it leads; a link that leads
/// nowhere, or a folder that cannot be read, is listed with that problem — it may be a
/// workspace whose disk is not attached. Other entries (files, folders without a
/// `config.json`) are not models and are not listed.
/// The workspaces of every home ([`Locations::workspace_homes`]), home by home in search
/// order, each home's by name. The same name may occur in two homes: callers that pick by
/// name must treat that as ambiguous ([`duplicate_names`]), never take the first.
pub fn scan_all_workspaces(loc: &Locations) -> Vec<WorkspaceDir> {
    let mut out = Vec::new();
    for home in loc.workspace_homes() {
        out.extend(scan_workspaces(home));
    }
    out
}

/// Workspace names that occur more than once across the homes.
pub fn duplicate_names(ws: &[WorkspaceDir]) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    ws.iter()
        .filter(|w| !seen.insert(w.name.as_str()))
        .map(|w| w.name.clone())
        .collect()
}

/// The name that tells a workspace apart when its folder name occurs in two homes
/// (`MLXK_MODEL_PATH`): `<name>@<home folder name>` for every one of them (no home wins), with
/// `-<n>` (the home's place in the search order) added if that still collides; `None` for a
/// name that is unique. The mount's root entries and `serve`'s model ids use it.
pub fn distinct_names(workspaces: &[WorkspaceDir]) -> Vec<Option<String>> {
    let dups = duplicate_names(workspaces);
    let home_of = |w: &WorkspaceDir| w.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut homes: Vec<PathBuf> = Vec::new();
    for w in workspaces {
        let h = home_of(w);
        if !homes.contains(&h) {
            homes.push(h);
        }
    }
    let label = |h: &Path| {
        h.file_name()
            .map_or_else(|| "root".to_string(), |n| n.to_string_lossy().into_owned())
    };
    let mut names: Vec<Option<String>> = workspaces
        .iter()
        .map(|w| {
            dups.contains(&w.name)
                .then(|| format!("{}@{}", w.name, label(&home_of(w))))
        })
        .collect();
    let clashes: Vec<bool> = (0..names.len())
        .map(|i| names[i].is_some() && (0..names.len()).any(|j| j != i && names[j] == names[i]))
        .collect();
    for (i, w) in workspaces.iter().enumerate() {
        if clashes[i] {
            let n = homes.iter().position(|h| *h == home_of(w)).unwrap_or(0) + 1;
            if let Some(s) = &mut names[i] {
                s.push_str(&format!("-{n}"));
            }
        }
    }
    names
}

pub fn scan_workspaces(home: &Path) -> Vec<WorkspaceDir> {
    let Ok(rd) = fs::read_dir(home) else {
        return Vec::new();
    };
    // One `config.json` lookup per entry: cold, disk latency, so many are kept in flight.
    let entries: Vec<fs::DirEntry> = rd.flatten().collect();
    let mut out: Vec<WorkspaceDir> = par_map_io(&entries, |e| {
        let os_name = e.file_name();
        let name = os_name.to_string_lossy().into_owned();
        if is_staging_name(&name) {
            return None;
        }
        let mut problem = os_name
            .to_str()
            .is_none()
            .then(|| "Folder name is not valid UTF-8: rename the workspace folder".to_string());
        let path = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_symlink() {
            match fs::metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return None,
                Err(_) => problem = unusable_folder(&path),
            }
        } else if !ft.is_dir() {
            return None;
        }
        let config = fs::symlink_metadata(path.join("config.json"));
        if problem.is_none()
            && let Err(e) = &config
        {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                // The folder lists its names (or not) but cannot be entered: it may hold a
                // model this user cannot use; said, never left out.
                problem = Some(match fs::read_dir(&path) {
                    Ok(_) => format!("cannot be entered ({})", io_reason(e)),
                    Err(e) => format!("cannot be read ({})", io_reason(&e)),
                });
            } else if let Err(e) = fs::read_dir(&path) {
                problem = Some(format!("cannot be read ({})", io_reason(&e)));
            }
        }
        (problem.is_some() || config.is_ok()).then_some(WorkspaceDir {
            name,
            path,
            problem,
        })
    })
    .into_iter()
    .flatten()
    .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
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
                (Some(rev), Some(parent)) if *parent == repo.join("snapshots") => {
                    Some((self.path.clone(), real_repo.join("snapshots").join(rev)))
                }
                _ => None,
            };
            return LinkRoots {
                roots: vec![(real_repo.clone(), false)],
                model,
                blobs: Some(real_repo.join("blobs")),
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
        let blobs = repo.join("blobs");
        let real_blobs = if linked(&blobs) {
            // A snapshot links to blobs, which sit directly in `blobs/`.
            add(&blobs, true)
        } else {
            Some(real_repo.join("blobs"))
        };
        let snaps = repo.join("snapshots");
        let mut model = None;
        if self.path != *repo {
            if linked(&snaps) || linked(&self.path) {
                let _ = add(&self.path, false);
            } else if let (Some(rev), true) = (
                self.path.file_name(),
                self.path.parent() == Some(snaps.as_path()),
            ) {
                // Neither `snapshots/` nor the snapshot is a link: it lies in the real repo.
                model = Some((self.path.clone(), real_repo.join("snapshots").join(rev)));
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

/// Every model of the catalog at its current revision: workspaces first (by name), then hub
/// models (by repo id).
pub fn all_models(loc: &Locations) -> Vec<ModelRef> {
    let mut out: Vec<ModelRef> = scan_all_workspaces(loc)
        .into_iter()
        .map(WorkspaceDir::into_model)
        .collect();
    for repo in scan_hub(&loc.hub_cache) {
        out.push(ModelRef::hub(&repo, repo.current));
    }
    out
}

/// Every entry below the folders `dirs` with its own metadata (links are not followed,
/// folders that cannot be read are skipped): the small walks that only count or date files.
pub fn for_each_below(dirs: &[PathBuf], mut f: impl FnMut(&Path, &fs::Metadata)) {
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(md) = fs::symlink_metadata(&path) else {
                continue;
            };
            f(&path, &md);
            if md.is_dir() {
                stack.push(path);
            }
        }
    }
}

/// Map `f` over `items` on a few threads, keeping order (model records are independent).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    par_map_on(threads, items, f)
}

/// Most threads of [`par_map_io`]: a cold listing waits on the disk, one small file at a time
/// per thread, so many more requests in flight than cores pay (issue 15 §1,
/// docs/PERFORMANCE.md).
pub const IO_THREADS: usize = 64;

/// [`par_map`] for work that mostly waits on file-system metadata and small reads (scanning
/// and describing models), keeping order. It starts on two threads per core and grows
/// towards [`IO_THREADS`] while the work waits on the disk: a worker whose last chunk blocked
/// at least once per item (voluntary context switches, `getrusage(RUSAGE_THREAD)`) starts
/// one more. Warm, the work stays on few threads (64 threads cost ~8% more time on 2 cores
/// than 4); cold, the pool reaches many requests in flight within a few chunks. Where the
/// thread's switches cannot be read (not Linux), it runs on [`IO_THREADS`] threads.
pub fn par_map_io<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = IO_THREADS.min(items.len() / 2).max(1);
    if max == 1 || items.len() < 8 {
        return items.iter().map(&f).collect();
    }
    if voluntary_switches().is_none() {
        return par_map_on(IO_THREADS, items, f);
    }
    let pool = Pool {
        items,
        f: &f,
        // Small chunks: a blocked chunk is seen (and answered) early.
        chunk: items.len().div_ceil(max * 4),
        next: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        max,
        parts: std::sync::Mutex::new(Vec::new()),
    };
    let start = (2 * cores).clamp(1, max);
    std::thread::scope(|s| {
        for _ in 0..start {
            pool.spawn(s);
        }
    });
    let mut parts = pool.parts.into_inner().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        parts.iter().map(|p| p.1.len()).sum::<usize>(),
        items.len(),
        "catalog worker panicked"
    );
    parts.sort_by_key(|p| p.0);
    parts.into_iter().flat_map(|p| p.1).collect()
}

/// The shared state of one [`par_map_io`].
struct Pool<'a, T, R, F> {
    items: &'a [T],
    f: &'a F,
    chunk: usize,
    next: AtomicUsize,
    started: AtomicUsize,
    max: usize,
    /// Each chunk's results, by its first index.
    parts: std::sync::Mutex<Vec<(usize, Vec<R>)>>,
}

impl<'a, T: Sync, R: Send, F: Fn(&T) -> R + Sync> Pool<'a, T, R, F> {
    /// Start one more worker, unless there are [`Pool::max`] already.
    fn spawn<'s>(&'s self, s: &'s std::thread::Scope<'s, '_>) {
        if self.started.fetch_add(1, Ordering::Relaxed) >= self.max {
            return;
        }
        s.spawn(move || self.work(s));
    }

    fn work<'s>(&'s self, s: &'s std::thread::Scope<'s, '_>) {
        let mut mine = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let start = i * self.chunk;
            if start >= self.items.len() {
                break;
            }
            let end = (start + self.chunk).min(self.items.len());
            let before = voluntary_switches();
            mine.push((start, self.items[start..end].iter().map(self.f).collect()));
            if let (Some(b), Some(a)) = (before, voluntary_switches())
                && a.saturating_sub(b) >= (end - start) as u64
            {
                self.spawn(s);
            }
        }
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.extend(mine);
    }
}

/// The calling thread's voluntary context switches so far (it blocked: on the disk, or on a
/// lock); `None` where they cannot be read.
fn voluntary_switches() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getrusage fills the struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        (rc == 0).then(|| u64::try_from(ru.ru_nvcsw).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// [`par_map`] on `threads` threads whatever the core count (at most one per two items).
pub fn par_map_on<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len() / 2).max(1);
    if threads == 1 || items.len() < 8 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads * 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut parts: Vec<(usize, Vec<R>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let start = i * chunk;
                        if start >= items.len() {
                            break;
                        }
                        let end = (start + chunk).min(items.len());
                        mine.push((start, items[start..end].iter().map(&f).collect()));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("catalog worker panicked"))
            .collect()
    });
    parts.sort_by_key(|p| p.0);
    parts.into_iter().flat_map(|p| p.1).collect()
}
