//! The Hugging Face hub cache: its repo folders read as models (`HubRepo`: snapshots, the
//! current revision from `refs/main`, problems, the entries skipped and why) and the scan of
//! the whole cache (`scan_hub`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::folders::{io_reason, is_link, too_wide, unusable_folder};
use crate::par::par_map_io;
use crate::text::short_rev;

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
    /// [`super::ModelRef::link_roots`] then needs no system call).
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
