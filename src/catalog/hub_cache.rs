//! The Hugging Face hub cache: huggingface_hub's layout (`RepoKind`, `RepoDir`: the one
//! place that knows the folder names), its repo folders read as models (`HubRepo`: snapshots,
//! the current revision from `refs/main`, problems, the entries skipped and why) and the scan
//! of the whole cache (`scan_hub`).
//!
//! The layout, as huggingface_hub writes it (file_download.py; "Understand caching" in its
//! guides), under the hub cache (`HF_HUB_CACHE`, [`super::Locations::hub_cache`]):
//!
//! ```text
//! <hub cache>/
//! ├── .locks/
//! │   └── models--org--name/            the repo's lock files (`<blob>.lock`)
//! ├── models--org--name/                one repo: `models--`, `datasets--` or `spaces--`,
//! │   │                                 then the repo id with each `/` as `--`
//! │   ├── blobs/
//! │   │   ├── <hash>                    each file's bytes once, named by its etag (the
//! │   │   │                             git blob SHA-1, or the SHA-256 of an LFS file)
//! │   │   └── <hash>.incomplete         a download in progress (resumed from its length)
//! │   ├── refs/
//! │   │   ├── main                      text: the commit id (40 hex digits) of the ref
//! │   │   └── pr/1                      refs may nest
//! │   ├── snapshots/
//! │   │   └── <commit>/                 one revision: its files as relative links into
//! │   │       ├── config.json           blobs/ (`../../blobs/<hash>`, one `../` more per
//! │   │       └── sub/tokenizer.json    sub-folder); mlxfs stages one under a dot name
//! │   └── .no_exist/
//! │       └── <commit>/<file>           empty markers: files the hub said do not exist
//! ├── datasets--org--name/
//! └── spaces--org--name/
//! ```
//!
//! Each part may be a link to another disk (huggingface_hub's advice for freeing space): the
//! repo folder, `blobs/`, `snapshots/` or one snapshot. mlxfs reads `models--` folders as
//! models; the runtime-cache inspection (`runtime_cache.rs`) reads all three kinds.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::folders::{io_reason, is_link, too_wide, unusable_folder};
use crate::par::par_map_io;
use crate::text::short_rev;

/// What a hub repo is (huggingface_hub's `repo_type`), which names its folder in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    Model,
    Dataset,
    Space,
}

impl RepoKind {
    pub const ALL: [RepoKind; 3] = [RepoKind::Model, RepoKind::Dataset, RepoKind::Space];

    /// `model`, `dataset` or `space`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
            RepoKind::Space => "space",
        }
    }

    /// The start of the repo folder's name: `models--`, `datasets--`, `spaces--` (the repo
    /// type, an `s`, then huggingface_hub's `REPO_ID_SEPARATOR`).
    pub fn prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "models--",
            RepoKind::Dataset => "datasets--",
            RepoKind::Space => "spaces--",
        }
    }

    /// `org/name` → the repo folder's name (`models--org--name`).
    pub fn dir_name(self, repo_id: &str) -> String {
        format!("{}{}", self.prefix(), repo_id.replace('/', "--"))
    }

    /// A repo folder's name → its kind and repo id (`datasets--org--name` → `Dataset`,
    /// `org/name`: every `--` after the prefix becomes `/`, as mlx-knife does); `None` for a
    /// name of none of the three kinds.
    pub fn parse_dir_name(name: &str) -> Option<(RepoKind, String)> {
        RepoKind::ALL.into_iter().find_map(|k| {
            name.strip_prefix(k.prefix())
                .map(|rest| (k, rest.replace("--", "/")))
        })
    }

    /// Does this folder name start like a repo folder of any kind (bytes: any name on disk)?
    pub fn is_repo_dir_name(name: &[u8]) -> bool {
        RepoKind::ALL
            .iter()
            .any(|k| name.starts_with(k.prefix().as_bytes()))
    }
}

/// A repo folder of a hub cache (`<hub cache>/models--org--name`, drawn in the module's
/// documentation): the paths of its parts. Only paths: nothing is read, made or checked.
#[derive(Debug, Clone, Copy)]
pub struct RepoDir<'a>(pub &'a Path);

impl RepoDir<'_> {
    /// The folder of the file contents, each named by its etag.
    pub const BLOBS: &'static str = "blobs";
    /// The folder of the refs (`refs/main`: a commit id).
    pub const REFS: &'static str = "refs";
    /// The folder of the revisions, one folder each, named by the commit id.
    pub const SNAPSHOTS: &'static str = "snapshots";
    /// The folder of the markers of files the hub said do not exist, by commit.
    pub const NO_EXIST: &'static str = ".no_exist";
    /// The name ending of a blob still being downloaded.
    pub const INCOMPLETE: &'static str = ".incomplete";
    /// The folder of the hub cache that holds each repo's lock files.
    pub const LOCKS: &'static str = ".locks";

    /// `blobs/`.
    pub fn blobs(self) -> PathBuf {
        self.0.join(Self::BLOBS)
    }

    /// `blobs/<hash>`.
    pub fn blob(self, hash: impl AsRef<Path>) -> PathBuf {
        self.blobs().join(hash)
    }

    /// `blobs/<hash>.incomplete`: the partial download of that blob.
    pub fn incomplete_blob(self, hash: &str) -> PathBuf {
        self.blobs().join(format!("{hash}{}", Self::INCOMPLETE))
    }

    /// `refs/`.
    pub fn refs(self) -> PathBuf {
        self.0.join(Self::REFS)
    }

    /// `refs/<name>` (`name` may hold `/`: `pr/1`).
    pub fn ref_file(self, name: &str) -> PathBuf {
        self.refs().join(name)
    }

    /// `snapshots/`.
    pub fn snapshots(self) -> PathBuf {
        self.0.join(Self::SNAPSHOTS)
    }

    /// `snapshots/<commit>`.
    pub fn snapshot(self, commit: impl AsRef<Path>) -> PathBuf {
        self.snapshots().join(commit)
    }

    /// `.no_exist/<commit>`.
    pub fn no_exist(self, commit: impl AsRef<Path>) -> PathBuf {
        self.0.join(Self::NO_EXIST).join(commit)
    }

    /// `<hub>/.locks/<folder>`: the lock folder of repo folder `folder` of the hub cache
    /// `hub`.
    pub fn locks_in(hub: &Path, folder: impl AsRef<Path>) -> PathBuf {
        hub.join(Self::LOCKS).join(folder)
    }

    /// The link a snapshot's file at `path` (`/`-separated, inside the snapshot) holds to its
    /// blob: `../../blobs/<hash>`, with one `../` more per folder of `path`.
    pub fn blob_link(path: &str, hash: &str) -> String {
        let depth = path.matches('/').count();
        format!("{}../../{}/{hash}", "../".repeat(depth), Self::BLOBS)
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
    /// [`super::ModelRef::link_roots`] then needs no system call).
    pub real_dir: Option<PathBuf>,
}

/// `models--org--name` → `org/name` (every `--` becomes `/`, as mlx-knife does).
pub fn repo_id_from_dir(dir: &str) -> Option<String> {
    match RepoKind::parse_dir_name(dir)? {
        (RepoKind::Model, id) => Some(id),
        _ => None,
    }
}

/// Is this `hub/` entry name a model folder (`models--*`, not mlx-knife's test sentinel)?
fn is_model_dir_name(name: &[u8]) -> bool {
    name.starts_with(RepoKind::Model.prefix().as_bytes())
        && !name
            .windows(b"TEST-CACHE-SENTINEL".len())
            .any(|w| w == b"TEST-CACHE-SENTINEL")
}

/// `org/name` → `models--org--name`.
pub fn dir_from_repo_id(repo: &str) -> String {
    if repo.starts_with(RepoKind::Model.prefix()) {
        repo.to_string()
    } else {
        RepoKind::Model.dir_name(repo)
    }
}

/// The refs under `refs/` (nested names such as `pr/1` included): (name, content trimmed).
pub fn refs_of(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![(RepoDir(dir).refs(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push((e.path(), format!("{name}/")));
            } else if ft.is_file()
                && let Ok(s) = crate::sys::read_text(&e.path())
            {
                out.push((name, s.trim().to_string()));
            }
        }
    }
    out.sort();
    out
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
    let bytes = crate::sys::read_small(&RepoDir(dir).ref_file(name), 4096);
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
        let blobs = RepoDir(dir).blobs();
        let blobs_linked = is_link(&blobs);
        if blobs_linked && let Some(why) = unusable_folder(&blobs) {
            repo.problem = Some(format!("blobs/: {why}"));
            return Some(repo);
        }
        let snaps = RepoDir(dir).snapshots();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_folder_names_round_trip() {
        for k in RepoKind::ALL {
            let name = k.dir_name("org/name");
            assert!(RepoKind::is_repo_dir_name(name.as_bytes()));
            assert_eq!(
                RepoKind::parse_dir_name(&name),
                Some((k, "org/name".into()))
            );
        }
        assert_eq!(RepoKind::Model.dir_name("org/name"), "models--org--name");
        assert_eq!(repo_id_from_dir("datasets--org--name"), None);
        assert_eq!(dir_from_repo_id("models--org--name"), "models--org--name");
    }

    #[test]
    fn repo_parts_are_where_huggingface_hub_puts_them() {
        let r = RepoDir(Path::new("/hub/models--o--n"));
        assert_eq!(
            r.snapshot("abc"),
            Path::new("/hub/models--o--n/snapshots/abc")
        );
        assert_eq!(r.ref_file("pr/1"), Path::new("/hub/models--o--n/refs/pr/1"));
        assert_eq!(
            r.incomplete_blob("e1"),
            Path::new("/hub/models--o--n/blobs/e1.incomplete")
        );
        assert_eq!(
            RepoDir::locks_in(Path::new("/hub"), "models--o--n"),
            Path::new("/hub/.locks/models--o--n")
        );
        assert_eq!(
            RepoDir::blob_link("a/b/c.json", "e1"),
            "../../../../blobs/e1"
        );
        assert_eq!(RepoDir::blob_link("config.json", "e1"), "../../blobs/e1");
    }
}
