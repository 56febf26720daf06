//! The model record: mlx-knife's model object plus mlxfs's `source`, `path` and `revision`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

use super::config::Config;
use super::detect;
use super::health;
use super::inventory::Inventory;
use super::verdict::{Capability, Framework, Health, HealthStatus, ModelType};
use super::{ModelRef, Source};
use crate::hash::sentinel::{self, Clean, SentinelRead};
use crate::{mountprobe, sys, text, timefmt};

/// One model, as `list --json` and `show --json` print it (field order is part of the format).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelRecord {
    pub name: String,
    pub hash: Option<String>,
    pub size_bytes: u64,
    pub last_modified: String,
    pub framework: Framework,
    pub model_type: ModelType,
    pub capabilities: Vec<Capability>,
    pub context_length: Option<u64>,
    pub health: HealthStatus,
    pub runtime_compatible: bool,
    pub reason: Option<String>,
    pub cached: bool,
    pub origin: Option<String>,
    pub content_hash: Option<String>,
    pub hash_modified: Option<String>,
    pub clean: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub source: Source,
    pub path: String,
    pub revision: Option<String>,
    /// What is odd about the model without making it unhealthy (e.g. an entry the mount's
    /// virtual `.mlxfs` folder hides); only present when there is something to say.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

/// A record with what was learnt on the way (kept out of the JSON).
#[derive(Debug, Clone)]
pub struct Described {
    pub record: ModelRecord,
    /// The health verdict with mlx-knife's message or the reason.
    pub health: Health,
    pub clean: Option<Clean>,
    pub sentinel: Option<SentinelRead>,
    pub config: Config,
    pub model: ModelRef,
    /// The one walk of the model's files the record was built from (`show --files` lists it).
    pub inventory: Inventory,
}

/// `last_modified` when the model folder's time cannot be read (its parent cannot be entered):
/// mlx-knife's own value for that case (`common.py`: an error gives the epoch). The field is a
/// timestamp string in mlx-knife's format, never null; the human forms print `-` for it.
pub const LAST_MODIFIED_UNKNOWN: &str = "1970-01-01T00:00:00Z";

/// Is a record's `last_modified` the value for a time that could not be read
/// ([`LAST_MODIFIED_UNKNOWN`])?
pub fn last_modified_known(last_modified: &str) -> bool {
    last_modified != LAST_MODIFIED_UNKNOWN
}

/// The folder's time; for a link that leads nowhere (or in a loop), the link's own; `None`
/// when neither can be read.
fn mtime_secs(p: &Path) -> Option<i64> {
    std::fs::metadata(p)
        .or_else(|_| std::fs::symlink_metadata(p))
        .and_then(|m| m.modified())
        .ok()
        .map(sys::epoch_secs)
}

/// Could the model's files be read at all: its folder walked and entered, its `config.json`
/// a regular file this user may read? Otherwise its type and capabilities are not known, and
/// the record says `unknown` and `[]` instead of mlx-knife's defaults for a model without
/// hints (`base`, `["text-generation"]`).
fn files_readable(inv: &Inventory, config: &Config) -> bool {
    inv.walked
        && inv.root_problem.is_none()
        && !matches!(config, Config::Unreadable(_) | Config::NotRegular(_))
}

/// Entries the mount cannot show because its virtual `.mlxfs` folder takes their name.
fn meta_dir_warning(inv: &Inventory) -> Option<String> {
    inv.top(mountprobe::META_DIR).map(|e| {
        format!(
            "{} ({}) is hidden in mlxfs mounts: the mount's virtual {} folder takes its name",
            mountprobe::META_DIR,
            if e.is_dir { "a folder" } else { "a file" },
            mountprobe::META_DIR
        )
    })
}

/// OS junk skipped in the model's files (`._*` sidecars, `.DS_Store`, …), named up to three.
fn junk_warning(inv: &Inventory) -> Option<String> {
    let n = inv.junk.len();
    (n > 0).then(|| {
        let mut names: Vec<&str> = inv.junk.iter().take(3).map(String::as_str).collect();
        if n > 3 {
            names.push("…");
        }
        format!(
            "ignored {n} OS junk {} (not model files): {}",
            if n == 1 { "entry" } else { "entries" },
            names.join(", ")
        )
    })
}

/// Describe one model. Never fails: every problem ends up in `health`/`reason`.
pub fn describe(m: &ModelRef) -> Described {
    // A hub model with no usable snapshot is not walked: its folder is the repo folder (or
    // wherever a broken link leads), whose files are not this model's.
    let inv = if m.source == Source::Cache && m.problem.is_some() && m.revision.is_none() {
        Inventory::default()
    } else {
        Inventory::scan(&m.path, &m.link_roots())
    };
    let config = Config::load_walked(&m.path, &inv);
    let cfg = config.object();
    let heur_name = m.short_name.as_str();
    let template = detect::has_chat_template(&m.path, &inv);
    let framework = detect::framework(heur_name, &m.path, &inv, cfg);
    let (model_type, caps) = if files_readable(&inv, &config) {
        let model_type = detect::model_type(heur_name, cfg, template);
        let caps = detect::capabilities(model_type, heur_name, &m.path, &inv, cfg, template);
        (model_type, caps)
    } else {
        (ModelType::Unknown, Vec::new())
    };

    let health = match &m.problem {
        Some(p) => Health::Unhealthy(p.clone()),
        None => health::check(&m.path, &inv, &config),
    };
    let (runtime_compatible, reason) = match &health {
        Health::Unhealthy(r) => (false, Some(r.clone())),
        Health::Healthy(_) => {
            match detect::runtime(heur_name, &m.path, &inv, framework, cfg, &caps) {
                Ok(()) => (true, None),
                Err(r) => (false, Some(r)),
            }
        }
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
        hash: m.revision.clone().filter(|r| text::is_commit(r)),
        size_bytes: inv.total_size(),
        last_modified: inv
            .root_mtime
            .or_else(|| mtime_secs(&m.path))
            .map_or_else(|| LAST_MODIFIED_UNKNOWN.to_string(), timefmt::iso_utc),
        framework,
        model_type,
        capabilities: caps,
        context_length: detect::context_length(cfg),
        health: health.status(),
        runtime_compatible,
        reason,
        cached: m.source == Source::Cache,
        origin,
        content_hash,
        hash_modified,
        clean: clean.as_ref().and_then(Clean::as_bool),
        display_name: None,
        source: m.source,
        path: m.path.to_string_lossy().into_owned(),
        revision: m.revision.clone(),
        warnings: meta_dir_warning(&inv)
            .into_iter()
            .chain(m.ignored.iter().map(|i| format!("ignored {i}")))
            .chain(junk_warning(&inv))
            .chain(health::warnings(&inv))
            .chain(inv.other_fs.iter().map(|d| {
                format!("{d}/: another file system is mounted there; not read as part of the model")
            }))
            .chain(match &sent {
                Some(sentinel::SentinelRead::Invalid(why)) => Some(format!(
                    "{}: {why}; the workspace counts as unmanaged (mlx-knife's rule)",
                    crate::hash::SENTINEL_FILENAME
                )),
                _ => None,
            })
            .collect(),
    };
    Described {
        record,
        health,
        clean,
        sentinel: sent,
        config,
        model: m.clone(),
        inventory: inv,
    }
}

/// Would `--force` help this model run: a healthy model labelled `PyTorch` only because it
/// lacks MLX markers, with safetensors weights (mlx-lm reads those, not `.bin` files)?
pub fn forcible(d: &Described) -> bool {
    d.health.reason().is_none()
        && d.record.framework == Framework::PyTorch
        && d.inventory
            .entries
            .iter()
            .any(|e| e.is_file && e.name.ends_with(".safetensors"))
}

/// The runtime verdict the model would get were it labelled MLX: every check but the
/// framework's (a forced run of a `PyTorch`-labelled checkpoint).
pub fn runtime_as_mlx(d: &Described) -> Result<(), String> {
    let m = &d.model;
    detect::runtime(
        &m.short_name,
        &m.path,
        &d.inventory,
        Framework::Mlx,
        d.config.object(),
        &d.record.capabilities,
    )
}

/// The runtime verdict the model would get were it healthy (a forced run of a model whose
/// only fault is a stale index).
pub fn runtime_if_healthy(d: &Described) -> Result<(), String> {
    let m = &d.model;
    detect::runtime(
        &m.short_name,
        &m.path,
        &d.inventory,
        d.record.framework,
        d.config.object(),
        &d.record.capabilities,
    )
}

/// Is the model unhealthy only because its index names shards that are not there, while its
/// weights are whole (mlx-lm, which reads the shards and not the index, loads it)?
pub fn stale_index_only(d: &Described) -> bool {
    d.health
        .reason()
        .is_some_and(|r| r.starts_with(health::INDEX_MISMATCH))
        && health::weights_complete_without_index(&d.inventory)
}

/// The `data` of `list --json` (mlx-knife's keys in its order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListData {
    /// Every matching model's record, workspaces first.
    pub models: Vec<ModelRecord>,
    pub count: usize,
    /// mlx-knife's system facts; always null here.
    pub system: Option<()>,
}

/// `list [PATTERN]`: every matching model's record (described on up to [`crate::par::IO_THREADS`]
/// threads: cold, describing waits on the disk, not on the cores).
pub fn list(loc: &super::Locations, pattern: Option<&str>) -> ListData {
    let listed = super::resolve::list(pattern, loc);
    list_of(&listed)
}

/// The records of models already listed (in their order).
pub fn list_of(listed: &[super::resolve::Listed]) -> ListData {
    let models = crate::par::par_map_io(listed, |l| {
        let mut r = describe(&l.model).record;
        r.display_name = l.display_name.clone();
        r
    });
    ListData {
        count: models.len(),
        models,
        system: None,
    }
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
