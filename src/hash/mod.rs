//! Content hash v2, byte-compatible with mlx-knife 2.0.6+ (ADR-025), and the workspace sentinel.
//!
//! The recipe (mlx-knife 2.0.6+ `workspace.py`, ADR-025): walk the resolved workspace root depth
//! first, entries of each folder in NFC order; symlinks are always recorded (never followed, never
//! excluded) as a fingerprint of their target relative to the root, and a link whose target leaves
//! the root makes the whole hash fail; directories matching a `dir/` pattern are pruned; regular
//! files matching a file pattern are skipped. A file's `sha` is the SHA-256 of its safetensors JSON
//! header (tensor data never read), of `name \0 size` for other files above 1 GiB, or of its whole
//! content. The aggregate is SHA-256 over `path \0 sha` of the entries sorted by path.

pub mod fnmatch;
pub mod sentinel;
pub mod stream;

use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

use fnmatch::Pattern;

/// Name of the workspace sentinel file.
pub const SENTINEL_FILENAME: &str = ".mlxk_workspace.json";
/// `hash_algorithm` value of the current recipe.
pub const HASH_ALGORITHM_V2: &str = "v2";
/// Files other than safetensors above this size are hashed by name and size only.
pub const CATCHALL_FULL_READ_CAP: u64 = 1024 * 1024 * 1024;
/// A safetensors header length above this is treated as corrupt.
pub const SAFETENSORS_HEADER_MAX: u64 = 100 * 1024 * 1024;

/// mlx-knife's default exclude list (workspace.py `DEFAULT_EXCLUDE_PATTERNS`), in its order.
pub const DEFAULT_EXCLUDE_PATTERNS: &[&str] = &[
    ".hf_cache/",
    ".mlxk_workspace.json",
    ".git/",
    ".github/",
    "__pycache__/",
    ".vscode/",
    ".idea/",
    ".ipynb_checkpoints/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".tox/",
    "node_modules/",
    ".venv/",
    "venv/",
    "*.lock",
    "*.tmp",
    "*.log",
    "*.bak",
    ".DS_Store",
    "._*",
    ".Spotlight-V100/",
    ".Trashes/",
    ".fseventsd/",
    ".TemporaryItems/",
    ".apdisk",
    "Icon\r",
    "Thumbs.db",
    "desktop.ini",
    "$RECYCLE.BIN/",
    "System Volume Information/",
    "*~",
    ".*.swp",
    ".*.swo",
];

/// Why a content hash could not be computed. Each one is a property of the workspace, not a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    NoConfig,
    SymlinkEscapes { link: String, target: String },
    SymlinkLoop { link: String },
    CorruptSafetensors { path: String },
    NonUtf8Name { path: String },
    Io { path: String, message: String },
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::NoConfig => write!(f, "no config.json in workspace"),
            HashError::SymlinkEscapes { link, target } => {
                write!(f, "symlink {link} points outside the workspace ({target})")
            }
            HashError::SymlinkLoop { link } => write!(f, "symlink loop at {link}"),
            HashError::CorruptSafetensors { path } => {
                write!(f, "corrupt safetensors header in {path}")
            }
            HashError::NonUtf8Name { path } => write!(f, "file name is not valid UTF-8: {path}"),
            HashError::Io { path, message } => write!(f, "cannot read {path}: {message}"),
        }
    }
}

impl std::error::Error for HashError {}

/// Exclude patterns split into directory-name and file-name patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    dirs: Vec<Pattern>,
    files: Vec<Pattern>,
}

impl Excludes {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Excludes {
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            match p.strip_suffix('/') {
                Some(d) => dirs.push(Pattern::new(d)),
                None => files.push(Pattern::new(p)),
            }
        }
        Excludes { dirs, files }
    }

    pub fn default_list() -> Excludes {
        Excludes::new(DEFAULT_EXCLUDE_PATTERNS)
    }

    pub fn dir_excluded(&self, nfc_name: &str) -> bool {
        self.dirs.iter().any(|p| p.matches(nfc_name))
    }

    pub fn file_excluded(&self, nfc_name: &str) -> bool {
        self.files.iter().any(|p| p.matches(nfc_name))
    }
}

/// One entry of the sentinel's `file_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha: String,
}

/// What the walk yields for one non-excluded entry.
#[derive(Debug)]
pub enum WalkItem {
    /// A regular file (not a link); `path` is its real location.
    File { rel: String, path: PathBuf },
    /// A symlink: `Ok(fingerprint)` when it stays inside the root, `Err` otherwise.
    Symlink {
        rel: String,
        outcome: Result<String, HashError>,
    },
}

impl WalkItem {
    pub fn rel(&self) -> &str {
        match self {
            WalkItem::File { rel, .. } | WalkItem::Symlink { rel, .. } => rel,
        }
    }
}

fn nfc(s: &str) -> String {
    s.nfc().collect()
}

fn sha_hex(d: impl AsRef<[u8]>) -> String {
    format!("sha256:{}", crate::text::hex(d.as_ref()))
}

/// Walk a (resolved) workspace root as mlx-knife's `_walk_workspace` does.
///
/// Unreadable sub-folders are skipped (as mlx-knife does); a name that is not UTF-8 is an error,
/// since the hash is defined over UTF-8 paths.
pub fn walk(root: &Path, excludes: &Excludes) -> Result<Vec<WalkItem>, HashError> {
    let mut out = Vec::new();
    // (directory, NFC parts of its path relative to root)
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, parts)) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(_) => continue,
        };
        let mut entries: Vec<(String, fs::DirEntry)> = Vec::new();
        for e in rd.flatten() {
            let raw = e.file_name();
            let Some(name) = raw.to_str() else {
                return Err(HashError::NonUtf8Name {
                    path: e.path().to_string_lossy().into_owned(),
                });
            };
            entries.push((nfc(name), e));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, entry) in entries {
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(_) => continue,
            };
            let mut rel_parts = parts.clone();
            rel_parts.push(name.clone());
            let path = entry.path();
            if ft.is_symlink() {
                let rel = rel_parts.join("/");
                let outcome = classify_symlink(&dir, &path, root, &rel);
                out.push(WalkItem::Symlink { rel, outcome });
            } else if ft.is_dir() {
                if !excludes.dir_excluded(&name) {
                    stack.push((path, rel_parts));
                }
            } else if ft.is_file() && !excludes.file_excluded(&name) {
                out.push(WalkItem::File {
                    rel: rel_parts.join("/"),
                    path,
                });
            }
        }
    }
    Ok(out)
}

/// Fingerprint of a symlink (found in the resolved folder `dir`) whose target, resolved like
/// Python's `Path.resolve(strict=False)`, lies inside `root`:
/// `sha256("SYMLINK\0" + target relative to root)`.
pub fn classify_symlink(
    dir: &Path,
    link: &Path,
    root: &Path,
    rel: &str,
) -> Result<String, HashError> {
    let target = fs::read_link(link).map_err(|e| HashError::Io {
        path: rel.to_string(),
        message: e.to_string(),
    })?;
    let target = resolve_link(dir, &target).ok_or_else(|| HashError::SymlinkLoop {
        link: rel.to_string(),
    })?;
    match target.strip_prefix(root) {
        Ok(inside) => {
            let rel_target = if inside.as_os_str().is_empty() {
                OsString::from(".")
            } else {
                inside.as_os_str().to_os_string()
            };
            let mut h = Sha256::new();
            h.update(b"SYMLINK\x00");
            h.update(rel_target.as_bytes());
            Ok(sha_hex(h.finalize()))
        }
        Err(_) => Err(HashError::SymlinkEscapes {
            link: rel.to_string(),
            target: target.to_string_lossy().into_owned(),
        }),
    }
}

/// Resolve a symlink found in the already-resolved folder `parent` whose `readlink` is
/// `target`, as `realpath` would (only the target's own components are looked at).
/// `None` on a symlink loop.
pub fn resolve_link(parent: &Path, target: &Path) -> Option<PathBuf> {
    let mut seen = Vec::new();
    let (resolved, ok) = join_realpath(parent.to_path_buf(), target.as_os_str(), &mut seen, 0);
    ok.then_some(resolved)
}

fn join_realpath(
    mut path: PathBuf,
    rest: &OsStr,
    seen: &mut Vec<(PathBuf, Option<PathBuf>)>,
    depth: usize,
) -> (PathBuf, bool) {
    if depth > 64 {
        return (path, false);
    }
    for comp in Path::new(rest).components() {
        match comp {
            Component::RootDir => path = PathBuf::from("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                path.pop();
            }
            Component::Normal(name) => {
                let newpath = path.join(name);
                let is_link = fs::symlink_metadata(&newpath)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(false);
                if !is_link {
                    path = newpath;
                    continue;
                }
                if let Some((_, done)) = seen.iter().find(|(k, _)| *k == newpath) {
                    match done {
                        Some(r) => {
                            path = r.clone();
                            continue;
                        }
                        None => return (newpath, false),
                    }
                }
                let Ok(target) = fs::read_link(&newpath) else {
                    path = newpath;
                    continue;
                };
                seen.push((newpath.clone(), None));
                let (res, ok) = join_realpath(path.clone(), target.as_os_str(), seen, depth + 1);
                if !ok {
                    return (res, false);
                }
                if let Some(slot) = seen.iter_mut().find(|(k, _)| *k == newpath) {
                    slot.1 = Some(res.clone());
                }
                path = res;
            }
        }
    }
    if path.as_os_str().is_empty() {
        path = PathBuf::from("/");
    }
    (path, true)
}

/// Read a safetensors header (without its 8-byte length prefix), or `None` when corrupt.
pub fn read_safetensors_header(path: &Path) -> Option<Vec<u8>> {
    let mut f = crate::sys::open_regular(path).ok()?;
    let mut prefix = [0u8; 8];
    f.read_exact(&mut prefix).ok()?;
    let n = u64::from_le_bytes(prefix);
    if n == 0 || n > SAFETENSORS_HEADER_MAX {
        return None;
    }
    // Never trust the length for the allocation: a lying header on a small file reads short.
    let mut header = Vec::with_capacity(n.min(1 << 20) as usize);
    f.take(n).read_to_end(&mut header).ok()?;
    if (header.len() as u64) < n {
        return None;
    }
    Some(header)
}

/// The `sha` of one regular file by its class (safetensors header / stat-only / full content).
pub fn hash_file(path: &Path, rel: &str) -> Result<String, HashError> {
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    if name.ends_with(b".safetensors") {
        return read_safetensors_header(path)
            .map(|h| sha_hex(Sha256::digest(&h)))
            .ok_or_else(|| HashError::CorruptSafetensors {
                path: rel.to_string(),
            });
    }
    let io = |e: std::io::Error| HashError::Io {
        path: rel.to_string(),
        message: e.to_string(),
    };
    let size = fs::metadata(path).map_err(io)?.len();
    if size > CATCHALL_FULL_READ_CAP {
        let mut h = Sha256::new();
        h.update(name);
        h.update(b"\x00");
        h.update(size.to_string().as_bytes());
        return Ok(sha_hex(h.finalize()));
    }
    let mut f = crate::sys::open_regular(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(sha_hex(h.finalize()))
}

/// The aggregate hash over an index (sorted by path here, as mlx-knife does).
pub fn aggregate(index: &[IndexEntry]) -> String {
    let mut refs: Vec<&IndexEntry> = index.iter().collect();
    refs.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for e in refs {
        h.update(e.path.as_bytes());
        h.update(b"\x00");
        h.update(e.sha.as_bytes());
    }
    sha_hex(h.finalize())
}

/// Resolve a workspace root as Python's `Path.resolve()` would for an existing folder.
pub fn resolve_root(ws: &Path) -> Result<PathBuf, HashError> {
    crate::sys::real_path(ws).map_err(|e| HashError::Io {
        path: ws.to_string_lossy().into_owned(),
        message: e.to_string(),
    })
}

/// Compute content hash v2 and the file index of a workspace.
pub fn compute_v2(ws: &Path, excludes: &Excludes) -> Result<(String, Vec<IndexEntry>), HashError> {
    compute_v2_with(ws, excludes, &|_| None)
}

/// [`compute_v2`], taking a file's `sha` from `known` (by the path the walk finds it at, below
/// the resolved root) when it has it — `Some(None)` for a file known to be unhashable — and
/// reading only the files it lacks: an archive hashes what it streams once, never twice.
pub fn compute_v2_with(
    ws: &Path,
    excludes: &Excludes,
    known: &dyn Fn(&Path) -> Option<Option<String>>,
) -> Result<(String, Vec<IndexEntry>), HashError> {
    let root = resolve_root(ws)?;
    if fs::metadata(root.join("config.json")).is_err() {
        return Err(HashError::NoConfig);
    }
    let mut index = Vec::new();
    for item in walk(&root, excludes)? {
        match item {
            WalkItem::File { rel, path } => {
                let sha = match known(&path) {
                    Some(Some(sha)) => sha,
                    Some(None) => return Err(HashError::CorruptSafetensors { path: rel }),
                    None => hash_file(&path, &rel)?,
                };
                let md = fs::metadata(&path).map_err(|e| HashError::Io {
                    path: rel.clone(),
                    message: e.to_string(),
                })?;
                index.push(IndexEntry {
                    path: rel,
                    size: md.len(),
                    mtime_ns: crate::sys::mtime_ns(&md),
                    sha,
                });
            }
            WalkItem::Symlink { rel, outcome } => {
                let sha = outcome?;
                index.push(IndexEntry {
                    path: rel,
                    size: 0,
                    mtime_ns: 0,
                    sha,
                });
            }
        }
    }
    index.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((aggregate(&index), index))
}
