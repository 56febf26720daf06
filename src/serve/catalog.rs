//! The catalog as `serve` shows it: every runnable model (healthy and runtime-compatible, as
//! `list`'s default view; mlx-knife serve.py) as an OpenAI model object, rebuilt at most every
//! [`FRESH_FOR`] so that a listing over 1,000 models does not describe them all per request,
//! and a request's `model` resolved by the catalog's own name rules — never a hub id or a path
//! from a request.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::record::{ModelRecord, describe};
use crate::catalog::resolve::{self, ResolveError};
use crate::catalog::{Locations, ModelRef, Source, WorkspaceDir, distinct_names, par_map};
use crate::error::ErrorType;

/// How long a listing is reused before the catalog is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// One model a client can use.
#[derive(Debug, Clone)]
pub struct Served {
    /// The id clients send: the workspace's folder name, or `org/name` for the hub cache.
    pub id: String,
    pub model: ModelRef,
    pub record: ModelRecord,
    /// The folder the worker loads: the model's own, or the mount folder it was named by
    /// (`--model MOUNT/PATH`: the weights are read through the mount).
    pub weights: std::path::PathBuf,
}

/// What identifies the files a worker loaded from a model folder, so that a changed model
/// gets a new worker: the folder itself (device and inode — a folder replaced by `mv`,
/// `restore` or a re-clone is another one) and each file at its top level that a loader reads
/// (weights, configuration, tokenizer and chat-template files: names ending in
/// [`LOADED_SUFFIXES`]; hidden ones such as `.hf_cache` and the sentinel are not the model's
/// files) with its device, inode, size, modification and change times, links followed (a hub
/// snapshot's files are its blobs). One `stat` per file, nothing read: a request pays a
/// readdir and a few stats. Equal values: the same files for a worker.
///
/// A hub model's `refs/main` that moves needs none of this: its new snapshot is another
/// folder, hence another worker. (The rule belongs with the catalog's other facts about a
/// model's files; it sits here until the core has a place for it.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilesId {
    folder: Option<(u64, u64)>,
    files: Vec<(String, FileStamp)>,
}

/// A file's identity and version, as `stat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The ends of the names a loader reads in a model folder (mlx-lm, mlx-vlm, mlx-whisper,
/// transformers' tokenizers and processors): weights (`.safetensors`, Whisper's `.npz`),
/// configuration and tokenizer JSON, chat templates (`.jinja`), SentencePiece and tiktoken
/// vocabularies, `merges.txt`/`vocab.txt`.
pub const LOADED_SUFFIXES: &[&str] = &[
    ".safetensors",
    ".npz",
    ".json",
    ".jinja",
    ".model",
    ".tiktoken",
    ".txt",
];

impl FilesId {
    /// The identity of `folder`'s files now (an unreadable folder or file counts as absent).
    pub fn of(folder: &std::path::Path) -> FilesId {
        use std::os::unix::fs::MetadataExt;
        let stamp = |m: &std::fs::Metadata| FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        };
        let Ok(meta) = std::fs::metadata(folder) else {
            return FilesId::default();
        };
        let mut files: Vec<(String, FileStamp)> = std::fs::read_dir(folder)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !LOADED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                    return None;
                }
                let m = std::fs::metadata(e.path()).ok()?;
                m.is_file().then(|| (name, stamp(&m)))
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        FilesId {
            folder: Some((meta.dev(), meta.ino())),
            files,
        }
    }
}

/// Why a request's `model` cannot be served.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: ErrorType,
    pub message: String,
    /// `ambiguous_match`: the candidates.
    pub matches: Vec<String>,
}

/// The served catalog, cached.
pub struct Catalog {
    loc: Locations,
    cache: Mutex<Option<(Instant, Vec<Served>)>>,
    /// Models given with `--model` (a workspace by path need not be under the workspace
    /// home): always listed, found by their id first.
    pinned: Mutex<Vec<Served>>,
}

/// Is this record a model `serve` offers (mlx-knife: the default `list` view, minus
/// embedders)?
fn servable(r: &ModelRecord) -> bool {
    r.health.as_str() == "healthy"
        && r.runtime_compatible
        && !r.capabilities.iter().any(|c| c.as_str() == "embeddings")
}

/// The id clients use: a workspace's folder name, `org/name` for a hub model's current
/// revision, `org/name@rev7` for another snapshot.
fn id_of(m: &ModelRef) -> String {
    match m.source {
        Source::Workspace => m.short_name.clone(),
        Source::Cache => m.spec(),
    }
}

impl Catalog {
    pub fn new(loc: Locations) -> Catalog {
        Catalog {
            loc,
            cache: Mutex::new(None),
            pinned: Mutex::new(Vec::new()),
        }
    }

    /// Keep `s` listed and resolvable by its id (a `--model` preload).
    pub fn pin(&self, s: Served) {
        let mut p = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|x| x.id != s.id);
        p.push(s);
    }

    pub fn locations(&self) -> &Locations {
        &self.loc
    }

    /// Every servable model, sorted by id (workspaces and hub models together).
    pub fn models(&self) -> Vec<Served> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, list)) = cache.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return list.clone();
        }
        let listed = resolve::list(None, &self.loc);
        let refs: Vec<ModelRef> = listed.into_iter().map(|l| l.model).collect();
        // The same workspace name in two homes: each gets the mount's `<name>@<home>` id.
        let ws: Vec<WorkspaceDir> = refs
            .iter()
            .filter(|m| m.source == Source::Workspace)
            .map(|m| WorkspaceDir {
                name: m.short_name.clone(),
                path: m.path.clone(),
                problem: None,
            })
            .collect();
        let mut distinct = distinct_names(&ws).into_iter();
        let ids: Vec<String> = refs
            .iter()
            .map(|m| match m.source {
                Source::Workspace => distinct.next().flatten().unwrap_or_else(|| id_of(m)),
                Source::Cache => id_of(m),
            })
            .collect();
        let pairs: Vec<(&ModelRef, &String)> = refs.iter().zip(&ids).collect();
        let mut out: Vec<Served> = par_map(&pairs, |(m, id)| {
            let d = describe(m);
            servable(&d.record).then(|| Served {
                id: (*id).clone(),
                weights: m.path.clone(),
                model: (*m).clone(),
                record: d.record,
            })
        })
        .into_iter()
        .flatten()
        .collect();
        let pinned = self
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        out.retain(|s| !pinned.iter().any(|p| p.id == s.id));
        out.extend(pinned);
        out.sort_by(|a, b| a.id.cmp(&b.id));
        *cache = Some((Instant::now(), out.clone()));
        out
    }

    /// The model a request names, by the catalog's rules (exact, then an unambiguous
    /// substring), and only when it is servable.
    pub fn resolve(&self, spec: &str) -> Result<Served, Refusal> {
        if resolve::is_explicit_path(spec) {
            return Err(Refusal {
                kind: ErrorType::ModelNotFound,
                message: format!(
                    "'{spec}' is a path: requests name models of the catalog (GET /v1/models)"
                ),
                matches: Vec::new(),
            });
        }
        if let Some(p) = self
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|p| p.id == spec)
        {
            return Ok(p.clone());
        }
        // An id only `/v1/models` gives (a workspace name shared by two homes).
        if spec.contains('@')
            && let Some(s) = self
                .models()
                .into_iter()
                .find(|s| s.id == spec && s.model.source == Source::Workspace)
        {
            return Ok(s);
        }
        let m = resolve::resolve(spec, &self.loc).map_err(|e| Refusal {
            kind: e.error_type(),
            message: e.to_string(),
            matches: match e {
                // A workspace named in two homes comes as its path: clients get its id
                // instead (`<name>@<home>`), never a path of the server's disk.
                ResolveError::Ambiguous { matches, .. } => {
                    let served = self.models();
                    let mut ids: Vec<String> = matches
                        .into_iter()
                        .filter_map(|m| {
                            if resolve::is_explicit_path(&m) {
                                let p = std::path::Path::new(&m);
                                served
                                    .iter()
                                    .find(|s| s.model.path == p)
                                    .map(|s| s.id.clone())
                            } else {
                                Some(m)
                            }
                        })
                        .collect();
                    ids.sort();
                    ids
                }
                _ => Vec::new(),
            },
        })?;
        let weights = m.path.clone();
        check(m, weights)
    }
}

/// `m` as a served model, when it is healthy and runnable (`weights`: the folder its worker
/// loads).
pub fn check(m: ModelRef, weights: std::path::PathBuf) -> Result<Served, Refusal> {
    let d = describe(&m);
    let refuse = |kind, what: String| Refusal {
        kind,
        message: what,
        matches: Vec::new(),
    };
    if d.record.health.as_str() != "healthy" {
        return Err(refuse(
            ErrorType::ModelUnhealthy,
            format!(
                "{} is unhealthy: {}",
                id_of(&m),
                d.record.reason.unwrap_or_default()
            ),
        ));
    }
    if !d.record.runtime_compatible {
        return Err(refuse(
            ErrorType::ModelIncompatible,
            format!(
                "{} cannot run with mlx-lm: {}",
                id_of(&m),
                d.record.reason.unwrap_or_default()
            ),
        ));
    }
    Ok(Served {
        id: id_of(&m),
        weights,
        model: m,
        record: d.record,
    })
}

/// Seconds since the epoch of a record's `last_modified` (`created` of the model object).
fn created(r: &ModelRecord) -> i64 {
    crate::timefmt::parse_iso_utc(&r.last_modified).unwrap_or(0)
}

/// The OpenAI model object, with mlx-knife's fields (`owned_by`, `permission`,
/// `context_length`, `loaded`) and mlxfs's (`capabilities`, `source`).
pub fn model_object(s: &Served, loaded: &BTreeSet<String>) -> Value {
    json!({
        "id": s.id,
        "object": "model",
        "created": created(&s.record),
        "owned_by": match s.model.source {
            Source::Workspace => "workspace",
            Source::Cache => "mlxfs",
        },
        "permission": [],
        "context_length": s.record.context_length,
        "loaded": loaded.contains(&s.id),
        "capabilities": s.record.capabilities,
        "source": s.record.source,
    })
}

/// Ollama's `/api/tags` entry for a model (name, model, modified_at, size, digest, details).
pub fn ollama_tag(s: &Served) -> Value {
    json!({
        "name": s.id,
        "model": s.id,
        "modified_at": s.record.last_modified,
        "size": s.record.size_bytes,
        "digest": s.record.hash.clone().or(s.record.content_hash.clone()).unwrap_or_default(),
        "details": {
            "format": "mlx",
            "family": s.record.model_type,
            "parameter_size": "",
            "quantization_level": "",
        },
    })
}
