//! The workspace sentinel `.mlxk_workspace.json`: reading, the in-memory clean check, and the
//! one writer (`recalc`), which replaces the file atomically and keeps unknown keys in place.

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::Path;

use super::{
    DEFAULT_EXCLUDE_PATTERNS, Excludes, HASH_ALGORITHM_V2, HashError, IndexEntry,
    SENTINEL_FILENAME, WalkItem, compute_v2, hash_file, mtime_ns, resolve_root, walk,
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
    let bytes = match fs::read(&p) {
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

/// Stored index entries, validated: `Err` explains why the index cannot be trusted.
/// A stored index row: (path, size, mtime_ns, sha).
type StoredEntry = (String, Option<u64>, Option<i64>, Option<String>);

fn stored_index(s: &Sentinel) -> Result<Vec<StoredEntry>, String> {
    let Some(Value::Array(items)) = s.raw.get("file_index") else {
        return Err("workspace sentinel has no file_index — run `mlxfs show <name> --recalc-hash` to rebuild".into());
    };
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let Value::Object(e) = it else {
            return Err("workspace sentinel has invalid file path entry — run `mlxfs show <name> --recalc-hash` to rebuild".into());
        };
        let path = e.get("path").and_then(Value::as_str).ok_or_else(|| {
            "workspace sentinel has invalid file path entry — run `mlxfs show <name> --recalc-hash` to rebuild".to_string()
        })?;
        validate_index_path(path).map_err(|why| {
            format!("workspace sentinel has invalid file path entry ({why}) — run `mlxfs show <name> --recalc-hash` to rebuild")
        })?;
        out.push((
            path.to_string(),
            e.get("size").and_then(Value::as_u64),
            e.get("mtime_ns").and_then(Value::as_i64),
            e.get("sha").and_then(Value::as_str).map(str::to_string),
        ));
    }
    Ok(out)
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
    Unknown { why: String, stored: Option<String> },
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
                why: "no sentinel (.mlxk_workspace.json)".into(),
                stored: None,
            };
        }
        SentinelRead::Invalid(why) => {
            return Clean::Unknown {
                why: why.clone(),
                stored: None,
            };
        }
    };
    let stored = s.content_hash().map(str::to_string);
    let unknown = |why: String| Clean::Unknown {
        why,
        stored: stored.clone(),
    };
    if s.raw.get("hash_algorithm").and_then(Value::as_str) != Some(HASH_ALGORITHM_V2) {
        return unknown(
            "sentinel has no v2 content hash — run `mlxfs show <name> --recalc-hash` to upgrade it"
                .into(),
        );
    }
    let index = match stored_index(s) {
        Ok(i) => i,
        Err(why) => return unknown(why),
    };
    let excludes = match s.effective_excludes() {
        Ok(e) => e,
        Err(why) => return unknown(why),
    };
    let root = match resolve_root(ws) {
        Ok(r) => r,
        Err(e) => return unknown(e.to_string()),
    };
    let items = match walk(&root, &excludes) {
        Ok(i) => i,
        Err(e) => return unknown(e.to_string()),
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
                    || (Some(mtime_ns(&md)) != *mtime
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::timefmt::iso_utc_micros(now.as_secs() as i64, now.subsec_micros())
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
    raw.insert("hash_algorithm".into(), Value::from(HASH_ALGORITHM_V2));
    raw.insert("content_hash".into(), Value::from(hash.clone()));
    raw.insert("hash_modified".into(), Value::from(now_iso_utc()));
    raw.insert("exclude_patterns".into(), Value::from(patterns));
    raw.insert(
        "file_index".into(),
        Value::Array(index.iter().map(index_entry_json).collect()),
    );
    write_atomic(&root, &raw)?;
    Ok(hash)
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

/// Write `<ws>/.mlxk_workspace.json` as `json.dumps(indent=2) + "\n"` via a synced temp file.
pub fn write_atomic(ws: &Path, raw: &Map<String, Value>) -> std::io::Result<()> {
    let tmp = ws.join(format!("{SENTINEL_FILENAME}.tmp"));
    let text = crate::jsonfmt::to_python_json(raw) + "\n";
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, ws.join(SENTINEL_FILENAME))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}
