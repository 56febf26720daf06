//! `mlxfs show MODEL`.

use clap::Args;
use serde_json::{Map, Value, json};

use super::output::{CliError, hash7, humanize_size};
use crate::catalog::inventory::Inventory;
use crate::catalog::record::{Described, describe, show_model};
use crate::catalog::{Locations, Source, detect, resolve};
use crate::hash::sentinel::{self, Clean};
use crate::timefmt;

#[derive(Args, Debug)]
#[command(after_help = "\
--recalc-hash recomputes a managed workspace's content hash (v2) and rewrites its
sentinel atomically; it is the only form of `show` that writes. Every other read is
side-effect free: a workspace's clean state is computed in memory.")]
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

fn size_str(n: u64) -> String {
    let f = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.1}GB", f / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1}MB", f / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}KB", f / 1e3)
    } else {
        format!("{n}B")
    }
}

fn files(d: &Described) -> Value {
    let m = &d.model;
    let inv = Inventory::scan(&m.path, m.repo_dir.as_deref().unwrap_or(&m.path));
    Value::Array(
        inv.entries
            .iter()
            .filter(|e| e.is_file)
            .map(|e| json!({"name": e.name, "size": size_str(e.size), "type": file_type(&e.name)}))
            .collect(),
    )
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

pub fn run(a: &ShowArgs, loc: &Locations) -> Result<Value, CliError> {
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
    let mut data = Map::new();
    data.insert("model".into(), show_model(&d));
    let ws_meta = match d.sentinel.as_ref().and_then(|s| s.sentinel()) {
        Some(s) => Value::Object(s.raw.clone()),
        None => Value::Null,
    };
    data.insert("workspace_metadata".into(), ws_meta);
    if hash_updated {
        data.insert("hash_updated".into(), Value::Bool(true));
    }
    if let Some(Clean::Modified { computed, .. }) = &d.clean {
        data.insert("computed_content_hash".into(), json!(computed));
    }
    if let Some(Clean::Unknown { why, .. }) = &d.clean {
        data.insert(
            "clean_unknown_reason".into(),
            Value::from(why.replace("<name>", &m.spec())),
        );
    }
    if a.files {
        data.insert("files".into(), files(&d));
        data.insert("metadata".into(), Value::Null);
    } else if a.config {
        data.insert(
            "config".into(),
            match &d.config {
                detect::Config::Parsed(v) => v.clone(),
                _ => Value::Null,
            },
        );
        data.insert("metadata".into(), Value::Null);
    } else {
        data.insert("metadata".into(), metadata(&d));
    }
    for w in warnings {
        eprintln!("show: Warning: {w}");
    }
    Ok(Value::Object(data))
}

fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        other => other.to_string(),
    }
}

pub fn render(data: &Value) -> String {
    let m = &data["model"];
    let st = |k: &str| m[k].as_str().unwrap_or("-").to_string();
    let h7 = hash7(m["hash"].as_str(), None);
    let mut out = vec![format!(
        "Model: {}{}",
        st("name"),
        if h7 != "-" {
            format!("@{h7}")
        } else {
            String::new()
        }
    )];
    let healthy = m["health"] == "healthy";
    let health = match (healthy, m["runtime_compatible"].as_bool()) {
        (true, Some(true)) => "healthy".to_string(),
        (true, Some(false)) => "healthy (files OK, runtime incompatible)".to_string(),
        _ => st("health"),
    };
    let caps: Vec<&str> = m["capabilities"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let quant = match (
        m["quantization"].get("bits"),
        m["quantization"].get("group_size"),
    ) {
        (Some(b), g) if !b.is_null() => format!(
            "{}-bit (group_size={})",
            py_str(b),
            g.map_or("None".into(), py_str)
        ),
        _ => "-".into(),
    };
    let modified = m["last_modified"]
        .as_str()
        .and_then(timefmt::parse_iso_utc)
        .map_or("-".into(), |t| timefmt::relative(t, timefmt::now_secs()));
    out.push(format!("Source: {}", st("source")));
    out.push(format!("Path: {}", st("path")));
    out.push(format!("Framework: {}", st("framework")));
    out.push(format!("Type: {}", st("model_type")));
    out.push(format!(
        "Capabilities: {}",
        if caps.is_empty() {
            "-".into()
        } else {
            caps.join(", ")
        }
    ));
    out.push(format!("Quantization: {quant}"));
    if let Some(n) = m["context_length"].as_u64() {
        out.push(format!("Context length: {n}"));
    }
    out.push(format!(
        "Size: {}",
        humanize_size(m["size_bytes"].as_u64().unwrap_or(0))
    ));
    out.push(format!("Modified: {modified}"));
    out.push(format!("Health: {health}"));
    if let Some(r) = m["reason"].as_str() {
        out.push(format!("Reason: {r}"));
    }
    if let Some(fs) = data["files"].as_array() {
        out.push(String::new());
        out.push("Files:".into());
        for f in fs {
            out.push(format!(
                "  - {} ({}, {})",
                f["name"].as_str().unwrap_or("?"),
                f["type"].as_str().unwrap_or("other"),
                f["size"].as_str().unwrap_or("?")
            ));
        }
    } else if let Some(c) = data["config"].as_object() {
        out.push(String::new());
        out.push("Config:".into());
        for (k, v) in c {
            out.push(format!("  {k}: {}", py_str(v)));
        }
    } else if let Some(md) = data["metadata"].as_object() {
        out.push(String::new());
        out.push("Metadata:".into());
        for (k, v) in md {
            out.push(format!("  {k}: {}", py_str(v)));
        }
    }
    if m["source"] == "workspace" {
        let ws = &data["workspace_metadata"];
        let g = |k: &str| ws[k].as_str().unwrap_or("-").to_string();
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
            out.push("  Managed: no (no sentinel)".into());
        }
        match m["clean"].as_bool() {
            Some(true) => out.push("  Clean: ✓".into()),
            Some(false) => {
                let now = data["computed_content_hash"]
                    .as_str()
                    .unwrap_or("cannot be computed");
                out.push(format!(
                    "  Clean: ✗ (modified since the hash was pinned; now {now})"
                ));
            }
            None => out.push(format!(
                "  Clean: — ({})",
                data["clean_unknown_reason"].as_str().unwrap_or("unknown")
            )),
        }
        if let Some(h) = ws["content_hash"].as_str() {
            out.push(format!("  Content Hash: {h}"));
            out.push(format!("  Hash Modified: {}", g("hash_modified")));
        }
    }
    if data["hash_updated"] == true {
        out.push(String::new());
        out.push("Hash recalculated and stored (workspace now marked as clean)".into());
    }
    out.join("\n")
}
