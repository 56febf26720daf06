//! The model record: mlx-knife's model object plus mlxfs's `source`, `path` and `revision`.

use serde::Serialize;
use serde_json::Value;
use std::path::Path;

use super::detect::{self, Config};
use super::health;
use super::inventory::Inventory;
use super::{ModelRef, Source};
use crate::hash::sentinel::{self, Clean, SentinelRead};
use crate::timefmt;

/// One model, as `list --json` and `show --json` print it (field order is part of the format).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelRecord {
    pub name: String,
    pub hash: Option<String>,
    pub size_bytes: u64,
    pub last_modified: String,
    pub framework: String,
    pub model_type: String,
    pub capabilities: Vec<String>,
    pub context_length: Option<u64>,
    pub health: String,
    pub runtime_compatible: bool,
    pub reason: Option<String>,
    pub cached: bool,
    pub origin: Option<String>,
    pub content_hash: Option<String>,
    pub hash_modified: Option<String>,
    pub clean: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub source: &'static str,
    pub path: String,
    pub revision: Option<String>,
}

/// A record with what was learnt on the way (kept out of the JSON).
#[derive(Debug, Clone)]
pub struct Described {
    pub record: ModelRecord,
    pub health_message: String,
    pub clean: Option<Clean>,
    pub sentinel: Option<SentinelRead>,
    pub config: Config,
    pub model: ModelRef,
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn mtime_secs(p: &Path) -> i64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// Describe one model. Never fails: every problem ends up in `health`/`reason`.
pub fn describe(m: &ModelRef) -> Described {
    let boundary = m.repo_dir.as_deref().unwrap_or(&m.path);
    let inv = Inventory::scan(&m.path, boundary);
    let config = Config::load(&m.path);
    let cfg = config.object();
    let heur_name = m.short_name.as_str();
    let template = detect::has_chat_template(&m.path);
    let framework = detect::framework(heur_name, &m.path, &inv, cfg);
    let model_type = detect::model_type(heur_name, cfg, template);
    let caps = detect::capabilities(model_type, heur_name, &m.path, &inv, cfg, template);

    let health = match &m.problem {
        Some(p) => Err(p.clone()),
        None => health::check(&m.path, &inv, &config),
    };
    let (healthy, health_message) = match &health {
        Ok(msg) => (true, msg.clone()),
        Err(r) => (false, r.clone()),
    };
    let (runtime_compatible, reason) = match &health {
        Err(r) => (false, Some(r.clone())),
        Ok(_) => match detect::runtime(heur_name, &m.path, &inv, framework, cfg, &caps) {
            Ok(()) => (true, None),
            Err(r) => (false, Some(r)),
        },
    };

    let (mut origin, mut content_hash, mut hash_modified, mut clean, mut sent) =
        (None, None, None, None, None);
    if m.source == Source::Workspace {
        let read = sentinel::read(&m.path);
        if let Some(s) = read.sentinel() {
            origin = s.source_repo().map(str::to_string);
            content_hash = s.content_hash().map(str::to_string);
            hash_modified = s.hash_modified().map(str::to_string);
        }
        clean = Some(sentinel::clean_check(&m.path, &read));
        sent = Some(read);
    }

    let record = ModelRecord {
        name: m.name.clone(),
        hash: m.revision.clone().filter(|r| is_commit(r)),
        size_bytes: inv.total_size(),
        last_modified: timefmt::iso_utc(mtime_secs(&m.path)),
        framework: framework.to_string(),
        model_type: model_type.to_string(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        context_length: detect::context_length(cfg),
        health: if healthy { "healthy" } else { "unhealthy" }.to_string(),
        runtime_compatible,
        reason,
        cached: m.source == Source::Cache,
        origin,
        content_hash,
        hash_modified,
        clean: clean.as_ref().and_then(Clean::as_bool),
        display_name: None,
        source: m.source.as_str(),
        path: m.path.to_string_lossy().into_owned(),
        revision: m.revision.clone(),
    };
    Described {
        record,
        health_message,
        clean,
        sentinel: sent,
        config,
        model: m.clone(),
    }
}

/// The `data` of `list --json`: every matching model's record, `count`, `system` (null).
pub fn list_data(loc: &super::Locations, pattern: Option<&str>) -> Value {
    let listed = super::resolve::list(pattern, loc);
    let records = super::par_map(&listed, |l| {
        let mut r = describe(&l.model).record;
        r.display_name = l.display_name.clone();
        r
    });
    serde_json::json!({"models": records, "count": records.len(), "system": null})
}

/// The model object of `show --json` (the record plus `quantization` when the config has one).
pub fn show_model(d: &Described) -> Value {
    let mut model = serde_json::to_value(&d.record).unwrap_or(Value::Null);
    if let (Value::Object(o), Some(q)) = (&mut model, quantization(&d.config)) {
        o.insert("quantization".into(), q);
    }
    model
}

/// `quantization` of a config when it is an object (shown by `show`).
pub fn quantization(config: &Config) -> Option<Value> {
    config
        .object()
        .and_then(|c| c.get("quantization"))
        .filter(|q| q.is_object())
        .cloned()
}
