//! The manifest, `mlxfs-archive.json`: the archive's first entry, describing every entry that
//! follows, in order. Its JSON has one canonical form (Python's `json.dumps(indent=2)` layout,
//! keys in a fixed order) and carries its own checksum (`manifest_sha256`, over the text with
//! that value set to 64 zeros), so a changed byte anywhere in it is noticed.
//!
//! The text has a fixed length for given paths, sizes and link targets (hashes are fixed-width
//! hex): the writer puts a manifest with zero hashes first, streams the files, and overwrites
//! it in place with the real one (a plain tar); a compressed archive hashes first instead.

use std::collections::HashSet;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{ArchiveError, ErrorKind, Result};
use crate::text::hex;

/// The manifest's entry name (the archive's first entry).
pub const MANIFEST_NAME: &str = "mlxfs-archive.json";
/// `format` of every mlxfs archive.
pub const FORMAT: &str = "mlxfs-archive";
/// The format version this mlxfs writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// A manifest larger than this is refused before it is read (about 50,000 entries fit).
pub const MANIFEST_MAX: u64 = 16 << 20;

/// The archive's table of contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub format_version: u64,
    pub mlxfs_version: String,
    /// The workspace's folder name (restore's default target name).
    pub name: String,
    /// The sentinel's content hash, present only when the workspace was clean.
    pub content_hash: Option<String>,
    pub source_repo: Option<String>,
    pub source_revision: Option<String>,
    /// Every entry after the manifest, in archive order (strictly ascending by path bytes).
    pub entries: Vec<Entry>,
}

/// One archived folder, file or link; `path` is relative, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        size: u64,
        sha256: [u8; 32],
        executable: bool,
    },
    /// A relative link that stays inside the workspace.
    Symlink {
        target: String,
    },
}

impl Kind {
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Dir => "a folder",
            Kind::File { .. } => "a file",
            Kind::Symlink { .. } => "a link",
        }
    }
}

impl Manifest {
    /// Regular files.
    pub fn files(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File { .. }))
            .count()
    }
    /// Bytes of file data.
    pub fn bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add)
    }

    fn json(&self, manifest_sha256: &str) -> Value {
        let mut m = Map::new();
        m.insert("format".into(), Value::from(FORMAT));
        m.insert("format_version".into(), Value::from(self.format_version));
        m.insert(
            "mlxfs_version".into(),
            Value::from(self.mlxfs_version.clone()),
        );
        m.insert("name".into(), Value::from(self.name.clone()));
        m.insert("content_hash".into(), opt(&self.content_hash));
        m.insert("source_repo".into(), opt(&self.source_repo));
        m.insert("source_revision".into(), opt(&self.source_revision));
        m.insert("files".into(), Value::from(self.files()));
        m.insert("bytes".into(), Value::from(self.bytes()));
        let entries = self
            .entries
            .iter()
            .map(|e| {
                let mut o = Map::new();
                o.insert("path".into(), Value::from(e.path.clone()));
                match &e.kind {
                    Kind::Dir => {
                        o.insert("type".into(), Value::from("dir"));
                    }
                    Kind::File {
                        size,
                        sha256,
                        executable,
                    } => {
                        o.insert("type".into(), Value::from("file"));
                        o.insert("size".into(), Value::from(*size));
                        o.insert("sha256".into(), Value::from(hex(sha256)));
                        o.insert("executable".into(), Value::from(*executable));
                    }
                    Kind::Symlink { target } => {
                        o.insert("type".into(), Value::from("symlink"));
                        o.insert("target".into(), Value::from(target.clone()));
                    }
                }
                Value::Object(o)
            })
            .collect();
        m.insert("entries".into(), Value::Array(entries));
        m.insert("manifest_sha256".into(), Value::from(manifest_sha256));
        Value::Object(m)
    }

    /// The manifest's `manifest_sha256`: SHA-256 of its text with that value set to zeros.
    fn self_sha(&self) -> String {
        let zero = "0".repeat(64);
        let text = crate::jsonfmt::to_python_json(&self.json(&zero)) + "\n";
        hex(&Sha256::digest(text.as_bytes()))
    }

    /// The canonical text (what the archive holds).
    pub fn to_bytes(&self) -> Vec<u8> {
        let sha = self.self_sha();
        (crate::jsonfmt::to_python_json(&self.json(&sha)) + "\n").into_bytes()
    }

    /// Parse and check a manifest: its own checksum and canonical form, a format this mlxfs
    /// reads, and entries that are safe to create (see [`Manifest::validate`]).
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let bad = |why: String| ArchiveError::invalid(format!("The archive's manifest {why}"));
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("is not valid JSON ({e})")))?;
        let o = v
            .as_object()
            .ok_or_else(|| bad("is not a JSON object".into()))?;
        if o.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(bad(format!("does not say \"format\": \"{FORMAT}\"")));
        }
        let version = o
            .get("format_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("has no format_version".into()))?;
        if version != FORMAT_VERSION {
            return Err(ArchiveError::new(
                ErrorKind::Unsupported,
                format!(
                    "The archive has format version {version}; this mlxfs reads version {FORMAT_VERSION}"
                ),
            )
            .hint("Restore it with the mlxfs version that wrote it (its manifest names it), or a newer one."));
        }
        let s = |k: &str| -> Result<String> {
            o.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("has no string \"{k}\"")))
        };
        let os = |k: &str| -> Result<Option<String>> {
            match o.get(k) {
                Some(Value::Null) => Ok(None),
                Some(Value::String(x)) => Ok(Some(x.clone())),
                _ => Err(bad(format!("has no \"{k}\" (a string or null)"))),
            }
        };
        let items = o
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("has no \"entries\" list".into()))?;
        let mut entries = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let e = it
                .as_object()
                .ok_or_else(|| bad(format!("entry {i} is not an object")))?;
            let path = e
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("entry {i} has no path")))?
                .to_string();
            let field = |k: &str| e.get(k);
            let kind = match field("type").and_then(Value::as_str) {
                Some("dir") => Kind::Dir,
                Some("file") => {
                    let size = field("size").and_then(Value::as_u64).ok_or_else(|| {
                        bad(format!(
                            "entry '{}' has no size",
                            crate::text::one_line(&path)
                        ))
                    })?;
                    let sha = field("sha256")
                        .and_then(Value::as_str)
                        .and_then(parse_sha)
                        .ok_or_else(|| {
                            bad(format!(
                                "entry '{}' has no valid sha256",
                                crate::text::one_line(&path)
                            ))
                        })?;
                    let executable =
                        field("executable")
                            .and_then(Value::as_bool)
                            .ok_or_else(|| {
                                bad(format!(
                                    "entry '{}' has no executable flag",
                                    crate::text::one_line(&path)
                                ))
                            })?;
                    Kind::File {
                        size,
                        sha256: sha,
                        executable,
                    }
                }
                Some("symlink") => Kind::Symlink {
                    target: field("target")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            bad(format!(
                                "link '{}' has no target",
                                crate::text::one_line(&path)
                            ))
                        })?
                        .to_string(),
                },
                other => {
                    return Err(ArchiveError::invalid(format!(
                        "The manifest lists '{}' as {}: an archive holds only folders, files and links",
                        crate::text::one_line(&path),
                        other.map_or("an entry without a type".to_string(), |t| format!(
                            "type \"{}\"",
                            crate::text::one_line(t)
                        ))
                    )));
                }
            };
            entries.push(Entry { path, kind });
        }
        let m = Manifest {
            format_version: version,
            mlxfs_version: s("mlxfs_version")?,
            name: s("name")?,
            content_hash: os("content_hash")?,
            source_repo: os("source_repo")?,
            source_revision: os("source_revision")?,
            entries,
        };
        let stored = s("manifest_sha256")?;
        if stored != m.self_sha() {
            return Err(bad(
                "does not match its own checksum (manifest_sha256): it was changed".into(),
            ));
        }
        if m.to_bytes() != bytes {
            return Err(bad(
                "is not in the form mlxfs writes (changed spacing, keys or counts)".into(),
            ));
        }
        m.validate()?;
        Ok(m)
    }

    /// Every entry safe to create below a fresh folder: a relative path of plain components
    /// (no `..`, no `.`, not absolute, no NUL), strictly ascending (so no duplicates), whose
    /// parent folder is an earlier entry; links relative and staying inside the workspace;
    /// hashes well-formed.
    pub fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name != "."
            && self.name != ".."
            && !self.name.contains(['/', '\0'])
            && !crate::staging::is_staging_name(&self.name);
        if !name_ok {
            return Err(ArchiveError::invalid(format!(
                "The manifest's workspace name '{}' is not a folder name",
                crate::text::one_line(&self.name)
            )));
        }
        if let Some(h) = &self.content_hash
            && h.strip_prefix("sha256:").and_then(parse_sha).is_none()
        {
            return Err(ArchiveError::invalid(format!(
                "The manifest's content hash '{}' is malformed",
                crate::text::one_line(h)
            )));
        }
        let mut dirs: HashSet<&str> = HashSet::new();
        let mut prev: Option<&str> = None;
        for e in &self.entries {
            let p = e.path.as_str();
            check_path(p)?;
            if let Some(q) = prev {
                if q == p {
                    return Err(ArchiveError::invalid(format!(
                        "The manifest lists '{}' twice (a duplicate entry)",
                        crate::text::one_line(p)
                    )));
                }
                if q.as_bytes() > p.as_bytes() {
                    return Err(ArchiveError::invalid(format!(
                        "The manifest's entries are not in order ('{}' after '{}')",
                        crate::text::one_line(p),
                        crate::text::one_line(q)
                    )));
                }
            }
            if let Some((parent, _)) = p.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return Err(ArchiveError::invalid(format!(
                    "The manifest lists '{}' without its folder '{}' (is '{}' a link or a file?)",
                    crate::text::one_line(p),
                    crate::text::one_line(parent),
                    crate::text::one_line(parent)
                )));
            }
            match &e.kind {
                Kind::Dir => {
                    dirs.insert(p);
                }
                Kind::Symlink { target } => check_link(p, target)?,
                Kind::File { .. } => {}
            }
            prev = Some(p);
        }
        Ok(())
    }
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::from(s.clone()))
}

/// 64 lowercase hex digits.
pub fn parse_sha(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Why `p` is not a safe relative entry path, if it is not.
pub fn unsafe_path(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        Some("an empty path")
    } else if p.contains('\0') {
        Some("a NUL byte in the path")
    } else if p.starts_with('/') {
        Some("an absolute path")
    } else if p.split('/').any(|c| c == "..") {
        Some("a '..' in the path")
    } else if p.split('/').any(|c| c.is_empty() || c == ".") {
        Some("an empty or '.' component in the path")
    } else {
        None
    }
}

fn check_path(p: &str) -> Result<()> {
    match unsafe_path(p) {
        Some(why) => Err(ArchiveError::invalid(format!(
            "The archive lists '{}': {why} could write outside the workspace; refused",
            crate::text::one_line(p)
        ))),
        None => Ok(()),
    }
}

/// Does a link at `path` with `target` stay inside the workspace, read lexically (relative,
/// never climbing above the root)? The real resolution is checked once the links exist.
pub fn link_stays_inside(path: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut at: Vec<&str> = path.split('/').collect();
    at.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() {
                    return false;
                }
            }
            c => at.push(c),
        }
    }
    true
}

fn check_link(p: &str, target: &str) -> Result<()> {
    if link_stays_inside(p, target) {
        Ok(())
    } else {
        Err(ArchiveError::invalid(format!(
            "The archive holds a link '{}' -> '{}' that leads out of the workspace; refused",
            crate::text::one_line(p),
            crate::text::one_line(target)
        )))
    }
}
