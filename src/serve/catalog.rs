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
use crate::catalog::{Locations, ModelRef, Source, WorkspaceDir, distinct_names};
use crate::error::ErrorType;
use crate::par::par_map;

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
/// Every `details` field is present (Ollama clients read them as strings) and true:
/// `format` the weights' file format (`safetensors`, or `npz` for mlx-whisper's weights),
/// `family`/`families` the architecture (config.json `model_type`, as Ollama's `llama`,
/// `qwen2`), `parameter_size` counted from the safetensors headers in Ollama's notation
/// (`4.0B`, `494.03M`; empty when the weights do not say), `quantization_level` from
/// [`quantization_level`]. `digest` is the model's commit or content hash (empty when it has
/// neither). Reads the config and the safetensors headers: call off the async threads.
pub fn ollama_tag(s: &Served) -> Value {
    let cfg = crate::catalog::config::Config::load(&s.weights);
    let cfg = cfg.object();
    let family = cfg
        .and_then(crate::catalog::config::model_type_str)
        .unwrap_or_default()
        .to_string();
    let w = WeightsFacts::of(&s.weights, quant(cfg).map(|q| q.1));
    json!({
        "name": s.id,
        "model": s.id,
        "modified_at": s.record.last_modified,
        "size": s.record.size_bytes,
        "digest": s.record.hash.clone().or(s.record.content_hash.clone()).unwrap_or_default(),
        "details": {
            "parent_model": "",
            "format": w.format.unwrap_or_default(),
            "family": family,
            "families": if family.is_empty() { vec![] } else { vec![family.clone()] },
            "parameter_size": w.params.map(human_number).unwrap_or_default(),
            "quantization_level": quantization_level(cfg, w.dtype.as_deref()),
        },
    })
}

/// `(mode, bits)` of config.json's `quantization` (mlx-lm's; `quantization_config` as
/// transformers writes it otherwise): mode `affine` unless it says another.
fn quant(cfg: Option<&serde_json::Map<String, Value>>) -> Option<(String, u64)> {
    let q = cfg?
        .get("quantization")
        .or_else(|| cfg?.get("quantization_config"))?;
    let bits = q.get("bits").and_then(Value::as_u64)?;
    let mode = q.get("mode").and_then(Value::as_str).unwrap_or("affine");
    Some((mode.to_string(), bits))
}

/// Ollama's `quantization_level` for an MLX model (Ollama writes GGUF's `Q4_0`, `Q4_K_M`,
/// `F16`; an MLX model has none of those): `4bit`, `8bit`, … for mlx's affine quantization
/// (as mlx-community names its models), the mode's name upper-cased for the floating-point
/// formats (`MXFP4`, `NVFP4`, `MXFP8`), from config.json's `quantization`; unquantized, the
/// dtype most of the weights are stored in (`F32`, `F16`, `BF16`: the safetensors headers'
/// names, which are also GGUF's), else config.json's `torch_dtype`; empty when nothing says.
pub fn quantization_level(
    cfg: Option<&serde_json::Map<String, Value>>,
    weights_dtype: Option<&str>,
) -> String {
    if let Some((mode, bits)) = quant(cfg) {
        return if mode == "affine" {
            format!("{bits}bit")
        } else {
            mode.to_ascii_uppercase()
        };
    }
    if let Some(d) = weights_dtype {
        return d.to_string();
    }
    match cfg
        .and_then(|c| c.get("torch_dtype").or_else(|| c.get("dtype")))
        .and_then(Value::as_str)
    {
        Some("float32") => "F32".into(),
        Some("float16") => "F16".into(),
        Some("bfloat16") => "BF16".into(),
        _ => String::new(),
    }
}

/// Ollama's way of writing a parameter count (its `format.HumanNumber`): `8B`, `1.5B`,
/// `494.03M`, `135M`, `12K`, `999`.
pub fn human_number(n: u64) -> String {
    let f = n as f64;
    let whole = |x: f64| x == x.floor();
    if n >= 1_000_000_000 {
        let x = f / 1e9;
        if whole(x) {
            format!("{x:.0}B")
        } else {
            format!("{x:.1}B")
        }
    } else if n >= 1_000_000 {
        let x = f / 1e6;
        if whole(x) {
            format!("{x:.0}M")
        } else {
            format!("{x:.2}M")
        }
    } else if n >= 1_000 {
        format!("{:.0}K", f / 1e3)
    } else {
        n.to_string()
    }
}

/// What a model's weight files say of themselves.
#[derive(Debug, Default, PartialEq)]
struct WeightsFacts {
    /// `safetensors` or `npz`.
    format: Option<&'static str>,
    /// Parameters, from the safetensors headers: each tensor's elements; a quantized matrix
    /// (a `U32` tensor with `.scales` beside it) holds 32/bits parameters per element, and its
    /// scales and biases are not parameters.
    params: Option<u64>,
    /// The floating-point dtype holding most elements (`F32`, `F16`, `BF16`, …).
    dtype: Option<String>,
}

impl WeightsFacts {
    /// The facts of the `.safetensors` files at the top of `folder` (links followed, only
    /// regular files read, only their headers), `bits` the quantization's.
    fn of(folder: &std::path::Path, bits: Option<u64>) -> WeightsFacts {
        let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(folder)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
            })
            .collect();
        names.sort();
        let safetensors: Vec<_> = names
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        if safetensors.is_empty() {
            let npz = names
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "npz"));
            return WeightsFacts {
                format: npz.then_some("npz"),
                ..WeightsFacts::default()
            };
        }
        let mut tensors: Vec<(String, String, u64)> = Vec::new();
        for p in safetensors {
            let Some(header) = safetensors_header(p) else {
                // A header that cannot be read: the count would be wrong, so there is none.
                return WeightsFacts {
                    format: Some("safetensors"),
                    ..WeightsFacts::default()
                };
            };
            for (name, t) in header {
                if name == "__metadata__" {
                    continue;
                }
                let dtype = t["dtype"].as_str().unwrap_or_default().to_string();
                let n = t["shape"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .map(|d| d.as_u64().unwrap_or(0))
                            .fold(1u64, u64::saturating_mul)
                    })
                    .unwrap_or(0);
                tensors.push((name, dtype, n));
            }
        }
        let names: std::collections::HashSet<&str> =
            tensors.iter().map(|(n, _, _)| n.as_str()).collect();
        let quantized = |base: &str| names.contains(format!("{base}.scales").as_str());
        let mut params = 0u64;
        let mut by_dtype: std::collections::BTreeMap<&str, u64> = Default::default();
        for (name, dtype, n) in &tensors {
            let base = name.rsplit_once('.').map_or(name.as_str(), |(b, _)| b);
            if (name.ends_with(".scales") || name.ends_with(".biases")) && quantized(base) {
                continue;
            }
            let count = match bits {
                Some(b) if dtype == "U32" && b > 0 && quantized(base) => n.saturating_mul(32) / b,
                _ => *n,
            };
            params = params.saturating_add(count);
            if matches!(
                dtype.as_str(),
                "F64" | "F32" | "F16" | "BF16" | "F8_E4M3" | "F8_E5M2"
            ) {
                *by_dtype.entry(dtype.as_str()).or_default() += n;
            }
        }
        WeightsFacts {
            format: Some("safetensors"),
            params: Some(params),
            dtype: by_dtype
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(d, _)| d.to_string()),
        }
    }
}

/// The JSON header of a `.safetensors` file (regular files only; at most the size mlxfs's
/// content hash reads).
fn safetensors_header(p: &std::path::Path) -> Option<serde_json::Map<String, Value>> {
    use std::io::Read;
    let mut f = crate::sys::open_regular(p).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n == 0 || n > crate::hash::SAFETENSORS_HEADER_MAX {
        return None;
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf).ok()?;
    match serde_json::from_slice(&buf).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_numbers_and_levels() {
        assert_eq!(human_number(8_000_000_000), "8B");
        assert_eq!(human_number(1_540_000_000), "1.5B");
        assert_eq!(human_number(494_032_768), "494.03M");
        assert_eq!(human_number(135_000_000), "135M");
        assert_eq!(human_number(12_345), "12K");
        assert_eq!(human_number(999), "999");
        let cfg = |v: Value| v.as_object().cloned();
        let level = |c: Value, d: Option<&str>| quantization_level(cfg(c).as_ref(), d);
        assert_eq!(
            level(
                json!({"quantization": {"group_size": 64, "bits": 4}}),
                Some("BF16")
            ),
            "4bit"
        );
        assert_eq!(
            level(
                json!({"quantization_config": {"bits": 8, "mode": "affine"}}),
                None
            ),
            "8bit"
        );
        assert_eq!(
            level(json!({"quantization": {"bits": 4, "mode": "mxfp4"}}), None),
            "MXFP4"
        );
        assert_eq!(
            level(json!({"torch_dtype": "bfloat16"}), Some("F16")),
            "F16"
        );
        assert_eq!(level(json!({"torch_dtype": "bfloat16"}), None), "BF16");
        assert_eq!(level(json!({}), None), "");
    }

    #[test]
    fn parameters_of_quantized_and_plain_weights() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, header: &str| {
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(header.as_bytes());
            std::fs::write(dir.path().join(name), b).unwrap();
        };
        // A 4-bit 64×128 matrix (64 × 16 u32), its scales and biases, and a BF16 norm.
        write(
            "model.safetensors",
            r#"{"l.weight":{"dtype":"U32","shape":[64,16],"data_offsets":[0,0]},
                "l.scales":{"dtype":"BF16","shape":[64,2],"data_offsets":[0,0]},
                "l.biases":{"dtype":"BF16","shape":[64,2],"data_offsets":[0,0]},
                "norm.weight":{"dtype":"BF16","shape":[128],"data_offsets":[0,0]},
                "__metadata__":{"format":"mlx"}}"#,
        );
        let w = WeightsFacts::of(dir.path(), Some(4));
        assert_eq!(w.params, Some(64 * 128 + 128));
        assert_eq!(w.format, Some("safetensors"));
        assert_eq!(w.dtype.as_deref(), Some("BF16"));
        // Unquantized: every element counts.
        write(
            "model.safetensors",
            r#"{"a":{"dtype":"F32","shape":[3,5],"data_offsets":[0,0]},"b":{"dtype":"F16","shape":[2],"data_offsets":[0,0]}}"#,
        );
        let w = WeightsFacts::of(dir.path(), None);
        assert_eq!((w.params, w.dtype.as_deref()), (Some(17), Some("F32")));
    }
}
