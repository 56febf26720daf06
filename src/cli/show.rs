//! `mlxfs show MODEL`.

use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value};

use super::output::{CliError, Output, hash7, humanize_size};
use crate::catalog::config::{Config, py_str};
use crate::catalog::record::{Described, describe, last_modified_known, show_model};
use crate::catalog::runtime_cache::{self, RuntimeCache};
use crate::catalog::verdict::Health;
use crate::catalog::{Locations, Source, detect, resolve};
use crate::hash::sentinel::{self, Clean};
use crate::text::one_line;
use crate::{hints, timefmt};

#[derive(Args, Debug)]
#[command(after_help = "\
--recalc-hash recomputes a managed workspace's content hash (v2) and rewrites its
sentinel atomically; it is the only form of `show` that writes. Every other read is
side-effect free: a workspace's clean state is computed in memory.

`show` also reports the model's runtime cache (a workspace's .hf_cache, a hub model's
per-model folder under mlxfs's state directory): what `run` downloaded there, and whether
it is ready for offline runs (`runtime_cache` in JSON). A broken runtime cache never makes
the model unhealthy.")]
pub struct ShowArgs {
    /// A model name (`org/name`, `name@rev`) or a path
    pub model: String,
    /// List the model's files
    #[arg(long, conflicts_with = "config")]
    pub files: bool,
    /// Print config.json
    #[arg(long)]
    pub config: bool,
    /// Recompute and store a managed workspace's content hash (writes the sentinel)
    #[arg(long)]
    pub recalc_hash: bool,
}

/// One entry of `files` (mlx-knife's shape: the size already formatted).
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    pub name: String,
    pub size: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The `data` of `show --json` (mlx-knife's keys in its order, then mlxfs's).
#[derive(Debug, Clone, Serialize)]
pub struct ShowData {
    /// The record plus `quantization`.
    pub model: Value,
    /// The sentinel as stored (null without one).
    pub workspace_metadata: Value,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hash_updated: bool,
    /// A modified workspace: today's content hash (null when it cannot be computed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computed_content_hash: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_unknown_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    pub metadata: Value,
    /// mlxfs: the model's runtime cache (what `run` downloaded into its isolated cache) with
    /// its offline-readiness verdict; separate from the model's health.
    pub runtime_cache: RuntimeCache,
}

fn file_type(name: &str) -> &'static str {
    if name == "config.json" {
        "config"
    } else if name.ends_with(".safetensors") || name.ends_with(".bin") || name.ends_with(".gguf") {
        "weights"
    } else if name.to_lowercase().contains("tokenizer") {
        "tokenizer"
    } else if name.ends_with(".json") {
        "config"
    } else if name == "README.md" {
        "readme"
    } else {
        "other"
    }
}

fn files(d: &Described) -> Vec<FileEntry> {
    d.inventory
        .entries
        .iter()
        .filter(|e| e.is_file)
        .map(|e| FileEntry {
            name: e.name.clone(),
            size: humanize_size(e.size),
            kind: file_type(&e.name),
        })
        .collect()
}

fn metadata(d: &Described) -> Value {
    let Some(c) = d.config.object() else {
        return Value::Null;
    };
    let mut m = Map::new();
    if let Some(v) = c.get("model_type") {
        m.insert("model_type".into(), v.clone());
    }
    if let Some(a) = c
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        m.insert("architecture".into(), a.clone());
    }
    if let Some(b) = c.get("quantization_config").and_then(|q| q.get("bits")) {
        let bits = b.as_str().map_or_else(|| b.to_string(), str::to_string);
        m.insert("quantization".into(), Value::from(format!("{bits}bit")));
    }
    if let Some(n) = detect::context_length(Some(c)) {
        m.insert("context_length".into(), Value::from(n));
    }
    for k in [
        "vocab_size",
        "hidden_size",
        "num_attention_heads",
        "num_hidden_layers",
    ] {
        if let Some(v) = c.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    if m.is_empty() {
        Value::Null
    } else {
        Value::Object(m)
    }
}

pub fn run(a: &ShowArgs, loc: &Locations) -> Result<Output, CliError> {
    let m = resolve::resolve(&a.model, loc)?;
    let mut hash_updated = false;
    let mut warnings = Vec::new();
    if a.recalc_hash {
        if m.source == Source::Workspace {
            match sentinel::recalc(&m.path) {
                Ok(_) => hash_updated = true,
                Err(e) => warnings.push(format!("hash not updated: {e}")),
            }
        } else {
            warnings.push("--recalc-hash applies to workspaces only; hub snapshots are pinned by their commit".into());
        }
    }
    let d = describe(&m);
    let workspace_metadata = match d.sentinel.as_ref().and_then(|s| s.sentinel()) {
        Some(s) => Value::Object(s.raw.clone()),
        None => Value::Null,
    };
    let (files, config, metadata) = if a.files {
        (Some(files(&d)), None, Value::Null)
    } else if a.config {
        let c = match &d.config {
            Config::Parsed(v) => v.clone(),
            _ => Value::Null,
        };
        (None, Some(c), Value::Null)
    } else {
        (None, None, metadata(&d))
    };
    let data = ShowData {
        model: show_model(&d),
        workspace_metadata,
        hash_updated,
        computed_content_hash: match &d.clean {
            Some(Clean::Modified { computed, .. }) => Some(computed.clone()),
            _ => None,
        },
        clean_unknown_reason: match &d.clean {
            Some(Clean::Unknown { why, .. }) => Some(hints::clean_unknown(why, &m.spec())),
            _ => None,
        },
        files,
        config,
        metadata,
        runtime_cache: runtime_cache::inspect(&m.isolated_cache()),
    };
    for w in warnings {
        crate::note!("show: Warning: {w}");
    }
    let human = render(&d, &data);
    Ok(Output::new(data, human))
}

/// The human form of `show`.
pub fn render(d: &Described, data: &ShowData) -> String {
    let r = &d.record;
    let h7 = hash7(r.hash.as_deref(), None);
    let mut out = vec![format!(
        "Model: {}{}",
        one_line(&r.name),
        if h7 != "-" {
            format!("@{h7}")
        } else {
            String::new()
        }
    )];
    let health = match (&d.health, r.runtime_compatible) {
        (Health::Healthy(_), true) => "healthy",
        (Health::Healthy(_), false) => "healthy (files OK, runtime incompatible)",
        (Health::Unhealthy(_), _) => "unhealthy",
    };
    let caps: Vec<&str> = r.capabilities.iter().map(|c| c.as_str()).collect();
    let q = data.model.get("quantization");
    let quant = match (
        q.and_then(|q| q.get("bits")),
        q.and_then(|q| q.get("group_size")),
    ) {
        (Some(b), g) if !b.is_null() => format!(
            "{}-bit (group_size={})",
            py_str(b),
            g.map_or("None".into(), py_str)
        ),
        _ => "-".into(),
    };
    // What could not be read is not stated: `-` (the JSON keeps mlx-knife's values for it).
    let modified = timefmt::parse_iso_utc(&r.last_modified)
        .filter(|_| last_modified_known(&r.last_modified))
        .map_or("-".into(), |t| timefmt::relative(t, timefmt::now_secs()));
    let size = if d.inventory.walked && d.inventory.root_problem.is_none() {
        humanize_size(r.size_bytes)
    } else {
        "-".into()
    };
    out.push(format!("Source: {}", r.source.as_str()));
    out.push(format!("Path: {}", one_line(&r.path)));
    out.push(format!("Framework: {}", r.framework.as_str()));
    out.push(format!("Type: {}", r.model_type.as_str()));
    out.push(format!(
        "Capabilities: {}",
        if caps.is_empty() {
            "-".into()
        } else {
            caps.join(", ")
        }
    ));
    out.push(format!("Quantization: {}", one_line(&quant)));
    if let Some(n) = r.context_length {
        out.push(format!("Context length: {n}"));
    }
    out.push(format!("Size: {size}"));
    out.push(format!("Modified: {modified}"));
    out.push(format!("Health: {health}"));
    if let Some(reason) = &r.reason {
        out.push(format!("Reason: {}", one_line(reason)));
    }
    for w in &r.warnings {
        out.push(format!("Warning: {}", one_line(w)));
    }
    let listing = |title: &str, m: &Map<String, Value>, out: &mut Vec<String>| {
        out.push(String::new());
        out.push(title.into());
        for (k, v) in m {
            out.push(format!("  {}: {}", one_line(k), one_line(&py_str(v))));
        }
    };
    if let Some(fs) = &data.files {
        out.push(String::new());
        out.push("Files:".into());
        for f in fs {
            out.push(format!(
                "  - {} ({}, {})",
                one_line(&f.name),
                f.kind,
                f.size
            ));
        }
    } else if let Some(Value::Object(c)) = &data.config {
        listing("Config:", c, &mut out);
    } else if let Value::Object(md) = &data.metadata {
        listing("Metadata:", md, &mut out);
    }
    if r.source == Source::Workspace {
        let ws = &data.workspace_metadata;
        let g = |k: &str| one_line(ws[k].as_str().unwrap_or("-")).into_owned();
        out.push(String::new());
        out.push("Workspace:".into());
        if ws.is_object() {
            out.push(format!("  Source: {}", g("source_repo")));
            out.push(format!("  Operation: {}", g("operation")));
            out.push(format!("  Created: {}", g("created_at")));
            out.push(format!(
                "  Managed: {}",
                if ws["managed"] == true { "yes" } else { "no" }
            ));
        } else {
            out.push(match d.sentinel {
                Some(sentinel::SentinelRead::Invalid(_)) => {
                    "  Managed: no (unreadable sentinel)".into()
                }
                _ => "  Managed: no (no sentinel)".into(),
            });
        }
        match r.clean {
            Some(true) => out.push("  Clean: ✓".into()),
            Some(false) => {
                let now = data
                    .computed_content_hash
                    .clone()
                    .flatten()
                    .unwrap_or_else(|| "cannot be computed".into());
                out.push(format!(
                    "  Clean: ✗ (modified since the hash was pinned; now {})",
                    one_line(&now)
                ));
            }
            None => out.push(format!(
                "  Clean: — ({})",
                one_line(data.clean_unknown_reason.as_deref().unwrap_or("unknown"))
            )),
        }
        if ws["content_hash"].is_string() {
            out.push(format!("  Content Hash: {}", g("content_hash")));
            out.push(format!("  Hash Modified: {}", g("hash_modified")));
        }
    }
    out.push(String::new());
    out.push("Runtime cache:".into());
    out.extend(super::health::runtime_cache_lines(
        &data.runtime_cache,
        "",
        "  ",
    ));
    if data.hash_updated {
        out.push(String::new());
        out.push("Hash recalculated and stored (workspace now marked as clean)".into());
    }
    out.join("\n")
}
