//! The workspace sentinel `.mlxk_workspace.json`: reading, the in-memory clean check, and the
//! two writers — `write_managed` (a new managed workspace) and `recalc` (which keeps unknown
//! keys in place) — both atomic.

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use super::{
    DEFAULT_EXCLUDE_PATTERNS, Excludes, HASH_ALGORITHM_V2, HashError, IndexEntry,
    SENTINEL_FILENAME, WalkItem, compute_v2, hash_file, resolve_root, walk,
};

/// A parsed sentinel. Keys keep their file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentinel {
    pub raw: Map<String, Value>,
}

/// The result of looking for a sentinel.
#[derive(Debug, Clone, PartialEq)]
pub enum SentinelRead {
    Missing,
    /// The file exists but is unreadable, not JSON, or not a JSON object.
    Invalid(String),
    Present(Sentinel),
}

impl SentinelRead {
    pub fn sentinel(&self) -> Option<&Sentinel> {
        match self {
            SentinelRead::Present(s) => Some(s),
            _ => None,
        }
    }
}

/// Read `<ws>/.mlxk_workspace.json` without writing anything.
pub fn read(ws: &Path) -> SentinelRead {
    let p = ws.join(SENTINEL_FILENAME);
    // The workspace's own file: a link (to anywhere) is not read.
    let bytes = match crate::sys::read_file_nofollow(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SentinelRead::Missing,
        Err(e) => return SentinelRead::Invalid(format!("cannot read sentinel: {e}")),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(raw)) => SentinelRead::Present(Sentinel { raw }),
        Ok(_) => SentinelRead::Invalid("sentinel is not a JSON object".into()),
        Err(e) => SentinelRead::Invalid(format!("sentinel is not valid JSON: {e}")),
    }
}

impl Sentinel {
    fn str_field(&self, k: &str) -> Option<&str> {
        self.raw.get(k).and_then(Value::as_str)
    }
    /// `managed` is exactly `true`.
    pub fn managed(&self) -> bool {
        self.raw.get("managed") == Some(&Value::Bool(true))
    }
    pub fn source_repo(&self) -> Option<&str> {
        self.str_field("source_repo")
    }
    pub fn content_hash(&self) -> Option<&str> {
        self.str_field("content_hash")
    }
    pub fn hash_modified(&self) -> Option<&str> {
        self.str_field("hash_modified")
    }
    pub fn operation(&self) -> Option<&str> {
        self.str_field("operation")
    }
    pub fn created_at(&self) -> Option<&str> {
        self.str_field("created_at")
    }
    /// Stored exclude patterns when they are a list of strings; `Err` when the list holds other
    /// values; `None` when absent or not a list (then the defaults apply).
    pub fn exclude_patterns(&self) -> Result<Option<Vec<String>>, String> {
        match self.raw.get("exclude_patterns") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| "exclude_patterns holds a non-string value".to_string()),
            _ => Ok(None),
        }
    }
    fn effective_excludes(&self) -> Result<Excludes, String> {
        Ok(match self.exclude_patterns()? {
            Some(p) => Excludes::new(&p),
            None => Excludes::default_list(),
        })
    }
}

/// Check a `file_index` path before any file-system operation (ADR-025 §3).
pub fn validate_index_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.contains('\0') {
        return Err(format!("NUL byte in path: {p:?}"));
    }
    if p.contains('\\') {
        return Err(format!("non-POSIX separator in path: {p:?}"));
    }
    if p.starts_with('/') {
        return Err(format!("absolute path: {p:?}"));
    }
    if p.chars().nth(1) == Some(':') {
        return Err(format!("drive prefix in path: {p:?}"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("'..' component in path: {p:?}"));
    }
    Ok(())
}

/// A stored index row: (path, size, mtime_ns, sha).
type StoredEntry = (String, Option<u64>, Option<i64>, Option<String>);

/// Stored index entries, validated: `Err` says why the index cannot be trusted.
fn stored_index(s: &Sentinel) -> Result<Vec<StoredEntry>, Unknown> {
    let Some(Value::Array(items)) = s.raw.get("file_index") else {
        return Err(Unknown::NoFileIndex);
    };
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let Value::Object(e) = it else {
            return Err(Unknown::BadIndexEntry(None));
        };
        let path = e
            .get("path")
            .and_then(Value::as_str)
            .ok_or(Unknown::BadIndexEntry(None))?;
        validate_index_path(path).map_err(|why| Unknown::BadIndexEntry(Some(why)))?;
        out.push((
            path.to_string(),
            e.get("size").and_then(Value::as_u64),
            e.get("mtime_ns").and_then(Value::as_i64),
            e.get("sha").and_then(Value::as_str).map(str::to_string),
        ));
    }
    Ok(out)
}

/// Why a workspace's clean state cannot be told. `Display` states the fact; [`Unknown::fix`]
/// says when recomputing the hash (`show --recalc-hash`) is the remedy — the adapters word
/// that for their users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// No `.mlxk_workspace.json`.
    NoSentinel,
    /// The sentinel cannot be read, is not JSON, or not a JSON object.
    BadSentinel(String),
    /// A sentinel without a v2 content hash (written by mlx-knife ≤ 2.0.5, or by hand).
    NotV2,
    /// A v2 sentinel without a `file_index` list.
    NoFileIndex,
    /// A `file_index` entry that is not an object, has no path, or a path that would leave
    /// the workspace (the reason, when there is one).
    BadIndexEntry(Option<String>),
    /// `exclude_patterns` holds something that is not a string.
    BadExcludes(String),
    /// The workspace itself cannot be walked (the error).
    Unreadable(String),
    /// A sentinel without `"managed": true` whose hash is missing or unusable: only a managed
    /// workspace's hash is kept (`--recalc-hash` refuses the others).
    NotManaged,
}

/// What recomputing the hash would do for an [`Unknown`] state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Write a v2 hash where there is none.
    Upgrade,
    /// Rewrite a damaged file index.
    Rebuild,
}

impl Unknown {
    /// When `show --recalc-hash` is the remedy.
    pub fn fix(&self) -> Option<Fix> {
        match self {
            Unknown::NotV2 => Some(Fix::Upgrade),
            Unknown::NoFileIndex | Unknown::BadIndexEntry(_) => Some(Fix::Rebuild),
            _ => None,
        }
    }
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unknown::NoSentinel => write!(f, "no sentinel ({SENTINEL_FILENAME})"),
            Unknown::BadSentinel(why) | Unknown::BadExcludes(why) | Unknown::Unreadable(why) => {
                f.write_str(why)
            }
            Unknown::NotV2 => f.write_str("sentinel has no v2 content hash"),
            Unknown::NotManaged => f.write_str(
                "not a managed workspace (its sentinel has no \"managed\": true), so it has no \
                 kept content hash",
            ),
            Unknown::NoFileIndex => f.write_str("workspace sentinel has no file_index"),
            Unknown::BadIndexEntry(None) => {
                f.write_str("workspace sentinel has invalid file path entry")
            }
            Unknown::BadIndexEntry(Some(why)) => {
                write!(f, "workspace sentinel has invalid file path entry ({why})")
            }
        }
    }
}

/// The outcome of the clean check.
#[derive(Debug, Clone, PartialEq)]
pub enum Clean {
    /// Every file matches the stored index.
    Clean { stored: Option<String> },
    /// Something differs; `computed` is today's hash (None when it cannot be computed).
    Modified {
        computed: Option<String>,
        stored: Option<String>,
        why_unhashable: Option<String>,
    },
    /// No way to tell (no v2 sentinel, corrupt index, …).
    Unknown {
        why: Unknown,
        stored: Option<String>,
    },
}

impl Clean {
    /// The `clean` field of the model record.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Clean::Clean { .. } => Some(true),
            Clean::Modified { .. } => Some(false),
            Clean::Unknown { .. } => None,
        }
    }
}

/// mlx-knife's `is_workspace_clean`, computed in memory: mtime drift with equal content counts as
/// clean but is never written back (reads never write).
pub fn clean_check(ws: &Path, read: &SentinelRead) -> Clean {
    let s = match read {
        SentinelRead::Present(s) => s,
        SentinelRead::Missing => {
            return Clean::Unknown {
                why: Unknown::NoSentinel,
                stored: None,
            };
        }
        SentinelRead::Invalid(why) => {
            return Clean::Unknown {
                why: Unknown::BadSentinel(why.clone()),
                stored: None,
            };
        }
    };
    let stored = s.content_hash().map(str::to_string);
    // What `--recalc-hash` would fix, it fixes for managed workspaces only: for the others
    // the reason says so (rather than a hint that leads to a refusal).
    let managed = s.managed();
    let unknown = |why: Unknown| Clean::Unknown {
        why: if why.fix().is_some() && !managed {
            Unknown::NotManaged
        } else {
            why
        },
        stored: stored.clone(),
    };
    if s.raw.get("hash_algorithm").and_then(Value::as_str) != Some(HASH_ALGORITHM_V2) {
        return unknown(Unknown::NotV2);
    }
    let index = match stored_index(s) {
        Ok(i) => i,
        Err(why) => return unknown(why),
    };
    let excludes = match s.effective_excludes() {
        Ok(e) => e,
        Err(why) => return unknown(Unknown::BadExcludes(why)),
    };
    let root = match resolve_root(ws) {
        Ok(r) => r,
        Err(e) => return unknown(Unknown::Unreadable(e.to_string())),
    };
    let items = match walk(&root, &excludes) {
        Ok(i) => i,
        Err(e) => return unknown(Unknown::Unreadable(e.to_string())),
    };
    let indexed: HashMap<&str, usize> = index
        .iter()
        .enumerate()
        .map(|(i, e)| (e.0.as_str(), i))
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut dirty = false;
    for item in &items {
        let rel = item.rel();
        let Some(&i) = indexed.get(rel) else {
            dirty = true;
            break;
        };
        seen.insert(index[i].0.as_str());
        let (_, size, mtime, sha) = &index[i];
        match item {
            WalkItem::Symlink { outcome, .. } => {
                if outcome.as_ref().ok() != sha.as_ref() {
                    dirty = true;
                }
            }
            WalkItem::File { path, rel } => {
                let Ok(md) = fs::metadata(path) else {
                    dirty = true;
                    continue;
                };
                // Same size and mtime: unchanged without reading; mtime drift: compare content.
                if Some(md.len()) != *size
                    || (Some(crate::sys::mtime_ns(&md)) != *mtime
                        && hash_file(path, rel).ok().as_ref() != sha.as_ref())
                {
                    dirty = true;
                }
            }
        }
        if dirty {
            break;
        }
    }
    if !dirty && seen.len() != indexed.len() {
        dirty = true;
    }
    if !dirty {
        return Clean::Clean { stored };
    }
    match compute_v2(&root, &excludes) {
        Ok((h, _)) => Clean::Modified {
            computed: Some(h),
            stored,
            why_unhashable: None,
        },
        Err(e) => Clean::Modified {
            computed: None,
            stored,
            why_unhashable: Some(e.to_string()),
        },
    }
}

/// Why `recalc` did not write.
#[derive(Debug, thiserror::Error)]
pub enum RecalcError {
    #[error("not a managed workspace (no sentinel with \"managed\": true)")]
    NotManaged,
    #[error("cannot compute the content hash: {0}")]
    Hash(#[from] HashError),
    #[error("{0}")]
    BadSentinel(String),
    #[error("cannot write the sentinel: {0}")]
    Write(#[from] std::io::Error),
}

/// Current UTC time as mlx-knife writes it: `2026-04-20T10:30:00.123456Z` (no fraction at 0 µs).
pub fn now_iso_utc() -> String {
    let t = std::time::SystemTime::now();
    let micros = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros());
    crate::timefmt::iso_utc_micros(crate::sys::epoch_secs(t), micros)
}

/// `show --recalc-hash`: recompute the v2 hash and index and rewrite the sentinel atomically
/// (temp file + rename). Only `hash_algorithm, content_hash, hash_modified, exclude_patterns,
/// file_index` change; every other key keeps its value and position.
pub fn recalc(ws: &Path) -> Result<String, RecalcError> {
    let root = resolve_root(ws)?;
    let s = match read(&root) {
        SentinelRead::Present(s) if s.managed() => s,
        SentinelRead::Invalid(why) => return Err(RecalcError::BadSentinel(why)),
        _ => return Err(RecalcError::NotManaged),
    };
    let patterns: Vec<String> = match s.exclude_patterns().map_err(RecalcError::BadSentinel)? {
        Some(p) => p,
        None => DEFAULT_EXCLUDE_PATTERNS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let (hash, index) = compute_v2(&root, &Excludes::new(&patterns))?;
    let mut raw = s.raw;
    let modified = Some(now_iso_utc());
    insert_hash_keys(&mut raw, &hash, modified, Value::from(patterns), &index);
    write_atomic(&root, &raw)?;
    Ok(hash)
}

/// The content-hash keys in mlx-knife's `update_workspace_hash` order: `hash_algorithm,
/// content_hash, hash_modified, exclude_patterns, file_index`; a key `s` already holds keeps
/// its position. `modified: None` leaves `hash_modified` out (a clone's sentinel has it
/// earlier).
fn insert_hash_keys(
    s: &mut Map<String, Value>,
    hash: &str,
    modified: Option<String>,
    patterns: Value,
    index: &[IndexEntry],
) {
    s.insert("hash_algorithm".into(), Value::from(HASH_ALGORITHM_V2));
    s.insert("content_hash".into(), Value::from(hash));
    if let Some(m) = modified {
        s.insert("hash_modified".into(), Value::from(m));
    }
    s.insert("exclude_patterns".into(), patterns);
    s.insert(
        "file_index".into(),
        Value::Array(index.iter().map(index_entry_json).collect()),
    );
}

/// Where a new managed workspace came from (the sentinel's provenance keys).
#[derive(Debug, Clone)]
pub struct Provenance<'a> {
    /// `org/name` of the hub repo (or the source workspace).
    pub source_repo: &'a str,
    /// The commit it was made from.
    pub source_revision: &'a str,
    /// `clone` (and, later, `convert`).
    pub operation: &'a str,
}

/// Write the sentinel of a new managed workspace, as mlx-knife writes it after a clone: its
/// keys in its order, then the content hash v2, the default excludes and the file index when
/// `hashed` has them (a workspace whose files cannot be hashed gets no hash, as in
/// mlx-knife). Atomic ([`write_atomic`]). Besides [`recalc`], the only writer of sentinels.
pub fn write_managed(
    ws: &Path,
    p: &Provenance,
    hashed: Option<&(String, Vec<IndexEntry>)>,
) -> std::io::Result<()> {
    let now = now_iso_utc();
    let mut s = Map::new();
    s.insert(
        "mlxk_version".into(),
        Value::from(concat!("mlxfs-", env!("CARGO_PKG_VERSION"))),
    );
    s.insert("created_at".into(), Value::from(now.clone()));
    s.insert("source_repo".into(), Value::from(p.source_repo));
    s.insert("source_revision".into(), Value::from(p.source_revision));
    s.insert("managed".into(), Value::Bool(true));
    s.insert("operation".into(), Value::from(p.operation));
    s.insert("hash_modified".into(), Value::from(now));
    if let Some((content_hash, index)) = hashed {
        let patterns = Value::from(DEFAULT_EXCLUDE_PATTERNS.to_vec());
        insert_hash_keys(&mut s, content_hash, None, patterns, index);
    }
    write_atomic(ws, &s)
}

/// Write the sentinel of a workspace made by `convert`, in mlx-knife's key order for it:
/// `mlxk_version, created_at, source_repo, source_revision, managed, operation: "convert"`,
/// then `extra` (mlx-knife's `mode` and `quantization`, mlxfs's conversion parameters), then
/// the content hash keys as `update_workspace_hash` appends them (`hash_algorithm,
/// content_hash, hash_modified, exclude_patterns, file_index`). Atomic ([`write_atomic`]).
pub fn write_converted(
    ws: &Path,
    source_repo: &Value,
    source_revision: &Value,
    extra: &[(&str, Value)],
    hashed: Option<&(String, Vec<IndexEntry>)>,
) -> std::io::Result<()> {
    let now = now_iso_utc();
    let mut s = Map::new();
    s.insert(
        "mlxk_version".into(),
        Value::from(concat!("mlxfs-", env!("CARGO_PKG_VERSION"))),
    );
    s.insert("created_at".into(), Value::from(now.clone()));
    s.insert("source_repo".into(), source_repo.clone());
    s.insert("source_revision".into(), source_revision.clone());
    s.insert("managed".into(), Value::Bool(true));
    s.insert("operation".into(), Value::from("convert"));
    for (k, v) in extra {
        s.insert((*k).to_string(), v.clone());
    }
    if let Some((content_hash, index)) = hashed {
        let patterns = Value::from(DEFAULT_EXCLUDE_PATTERNS.to_vec());
        insert_hash_keys(&mut s, content_hash, Some(now), patterns, index);
    }
    write_atomic(ws, &s)
}

/// One `file_index` entry in mlx-knife's key order.
pub fn index_entry_json(e: &IndexEntry) -> Value {
    let mut m = Map::new();
    m.insert("path".into(), Value::from(e.path.clone()));
    m.insert("size".into(), Value::from(e.size));
    m.insert("mtime_ns".into(), Value::from(e.mtime_ns));
    m.insert("sha".into(), Value::from(e.sha.clone()));
    Value::Object(m)
}

/// Write `<ws>/.mlxk_workspace.json` as `json.dumps(indent=2) + "\n"` via a synced temp file
/// (created fresh, never through a link found in the workspace), then one rename.
pub fn write_atomic(ws: &Path, raw: &Map<String, Value>) -> std::io::Result<()> {
    let tmp = ws.join(format!("{SENTINEL_FILENAME}.tmp"));
    let text = crate::jsonfmt::to_python_json(raw) + "\n";
    let res = crate::sys::write_new(&tmp, text.as_bytes(), true)
        .and_then(|_| fs::rename(&tmp, ws.join(SENTINEL_FILENAME)));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}
