//! File integrity of one model folder: mlx-knife's `_check_snapshot_health` (same order, same
//! reason strings), plus what mlx-knife crashes on — dangling links, links that leave the model,
//! unreadable folders, non-UTF-8 names — each reported as this model's reason.
//!
//! What a loader reads decides ([`Opened`]: the files of [`loader_files`] and the shards an
//! index names, and the folders those lie in). What no loader reads is a warning of the record
//! ([`warnings`]), never a reason: a folder it cannot enter (Meta's `original/` of `.pth`
//! files, mode 644), a link that leads nowhere inside such a folder, an LFS pointer left for a
//! file no loader opens (`git lfs pull --include "*.safetensors"`), a name that is not UTF-8,
//! a FIFO. A link that leads out of the model stays a reason wherever it is (the mount hides
//! it; a model's files never lead out of it).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

use super::config::Config;
use super::detect::detect_vision;
use super::inventory::{Entry, Inventory, LinkState};
use super::loader_files;
use super::safetensors_header::safetensors_problem;
use super::shards::shard_numbers;
pub use super::verdict::Health;
use crate::sys::FileKind;

/// How the reason for an index that names shards which are not there begins (mlx-knife's
/// words; mlxfs's fix names `mlxfs convert`).
pub const INDEX_MISMATCH: &str = "Index/shard mismatch (mlx-vlm #624)";

/// A check in progress: `Ok(message)` when healthy, `Err(reason)` otherwise.
type Check = Result<String, String>;

/// Is the entry a Git LFS pointer (its first 100 bytes, read by the walk:
/// [`Entry::lfs_pointer`])?
fn is_lfs_pointer(e: &Entry) -> bool {
    e.lfs_pointer
}

/// Is the entry a partial-download marker by mlx-knife's rule (a file whose name, lowercased,
/// ends `.partial` or `.tmp` or holds `partial`)?
fn is_partial_marker(e: &Entry) -> bool {
    let n = e.name.to_lowercase();
    e.is_file && (n.ends_with(".partial") || n.ends_with(".tmp") || n.contains("partial"))
}

/// Is the entry a weight file by mlx-knife's rule (`*.safetensors`, `*.bin`, `*.gguf`)?
fn is_weight_name(e: &Entry) -> bool {
    e.name.ends_with(".safetensors") || e.name.ends_with(".bin") || e.name.ends_with(".gguf")
}

fn list(names: &[String]) -> String {
    names.join(", ")
}

/// Check a model folder (mlx-knife health.py `_check_snapshot_health`, same order and reason
/// strings, plus the link, name and header checks above). `config` is the parse result of its
/// `config.json`.
pub fn check(root: &Path, inv: &Inventory, config: &Config) -> Health {
    match check_inner(root, inv, config) {
        Ok(message) => Health::Healthy(message),
        Err(reason) => Health::Unhealthy(reason),
    }
}

fn check_inner(root: &Path, inv: &Inventory, config: &Config) -> Check {
    if let Some(why) = &inv.root_problem {
        return Err(format!("The model folder {why}"));
    }
    if !(inv.walked || root.is_dir()) {
        return Err("Model path does not exist".into());
    }
    let cfg = match config {
        Config::Missing => return Err("config.json missing".into()),
        Config::Invalid => return Err("config.json contains invalid JSON".into()),
        Config::NotRegular(kind) => {
            return Err(format!("config.json is {kind}, not a regular file"));
        }
        Config::Unreadable(why) => return Err(format!("config.json cannot be read ({why})")),
        Config::Parsed(Value::Object(m)) if !m.is_empty() => m,
        Config::Parsed(_) => return Err("config.json is empty or invalid".into()),
    };

    // What mlx-knife cannot survive: report it here, for this model only.
    let entries: Vec<&Entry> = inv.model_entries().collect();
    let opened = Opened::of(inv);
    let dangling: Vec<String> = entries
        .iter()
        .filter(|e| e.link == LinkState::Dangling && !opened.ignores(&e.rel))
        .map(|e| e.rel.clone())
        .collect();
    if !dangling.is_empty() {
        return Err(format!("Dangling symlinks: {}", list(&dangling)));
    }
    let escaping: Vec<String> = entries
        .iter()
        .filter(|e| e.link == LinkState::Escapes)
        .map(|e| e.rel.clone())
        .collect();
    if !escaping.is_empty() {
        return Err(format!(
            "Symlinks pointing outside the model folder: {}",
            list(&escaping)
        ));
    }
    // A folder that cannot be read or entered matters where a loader reads in it (the
    // template folder, a folder of shards the index names); any other is a warning.
    let unreadable: Vec<String> = model_unreadable(inv)
        .filter(|r| opened.reads_in(r))
        .cloned()
        .collect();
    if !unreadable.is_empty() {
        return Err(format!("Unreadable folders: {}", list(&unreadable)));
    }
    // Every file a loader opens must be a regular file this user can read: a FIFO would
    // block the loader's open() for ever, a device or folder fail it, a file it may not read
    // end in mlx's bare "Failed to open file".
    let unloadable: Vec<String> = entries
        .iter()
        .filter(|e| loader_files::is_loader_file(&e.rel))
        .filter_map(|e| unloadable(e))
        .collect();
    if !unloadable.is_empty() {
        return Err(unloadable.join("; "));
    }
    // A name that is not UTF-8 matters only where a loader opens the file (a stray file from
    // an unzipped Windows archive is a warning of the record: [`warnings`]).
    let non_utf8: Vec<String> = entries
        .iter()
        .filter(|e| e.non_utf8 && loader_files::is_loader_file(&e.rel))
        .map(|e| e.rel.clone())
        .collect();
    if !non_utf8.is_empty() {
        return Err(format!(
            "File names that are not valid UTF-8: {}",
            list(&non_utf8)
        ));
    }

    let any_suffix = |suf: &str| entries.iter().any(|e| e.name.ends_with(suf));
    let sft_index = inv
        .top("model.safetensors.index.json")
        .filter(|e| e.is_file || e.is_dir);
    let pt_index = inv
        .top("pytorch_model.bin.index.json")
        .filter(|e| e.is_file || e.is_dir);
    let chosen = if sft_index.is_some() && any_suffix(".safetensors") {
        sft_index
    } else if pt_index.is_some() && any_suffix(".bin") {
        pt_index
    } else {
        None
    };

    if let Some(index) = chosen {
        return check_indexed(root, inv, index, cfg);
    }

    // No index: top-level weights, else anywhere below.
    let is_weight = |e: &&Entry| is_weight_name(e);
    let mut weights: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| !e.rel.contains('/'))
        .filter(is_weight)
        .collect();
    if weights.is_empty() {
        weights = entries.iter().copied().filter(is_weight).collect();
    }
    let shards: Vec<(u32, u32, &Entry)> = weights
        .iter()
        .filter_map(|e| shard_numbers(&e.name).map(|(i, t)| (i, t, *e)))
        .collect();
    if let Some(reason) = shard_gaps(&shards) {
        return Err(reason);
    }
    if !shards.is_empty() {
        let empties: Vec<String> = shards
            .iter()
            .filter(|s| s.2.size == 0)
            .map(|s| s.2.name.clone())
            .collect();
        if !empties.is_empty() {
            return Err(format!("Empty shards: {}", list(&empties)));
        }
    }
    if weights.is_empty() {
        // They may lie in a folder that cannot be read (mlx-knife looks below for them).
        let closed: Vec<String> = model_unreadable(inv).cloned().collect();
        if !closed.is_empty() {
            return Err(format!("Unreadable folders: {}", list(&closed)));
        }
        return Err("No model weights found".into());
    }
    // (A download in progress of a file in a folder no loader reads keeps no loader from
    // opening the model: a warning.)
    if entries
        .iter()
        .any(|e| is_partial_marker(e) && !opened.ignores(&e.rel))
    {
        return Err("Partial download marker detected".into());
    }
    let empties: Vec<String> = weights
        .iter()
        .filter(|e| e.size == 0)
        .map(|e| e.name.clone())
        .collect();
    if !empties.is_empty() {
        return Err(format!("Empty weight files: {}", list(&empties)));
    }
    if !shards.is_empty() {
        return Err("Safetensors index missing for sharded model".into());
    }
    // mlx-knife scans every small file; a pointer left for a file no loader opens (a
    // repository's `original/` not pulled) is a warning.
    let lfs: Vec<String> = entries
        .iter()
        .filter(|e| {
            is_lfs_pointer(e) && (opened.file(&e.rel) || weights.iter().any(|w| w.rel == e.rel))
        })
        .map(|e| e.rel.clone())
        .collect();
    if !lfs.is_empty() {
        return Err(format!("LFS pointers instead of files: {}", list(&lfs)));
    }
    if let Some(problem) = check_safetensors_headers(&weights) {
        return Err(problem);
    }
    check_aux(root, inv, cfg)?;
    Ok("Model is healthy".into())
}

/// Are the weights whole without the index: the top-level safetensors files read as
/// safetensors, and shard-named ones (`model-00001-of-00003.safetensors`) form a complete
/// set? mlx-lm's loader reads every `model*.safetensors` and never the index, so a model whose
/// only fault is a stale index ([`INDEX_MISMATCH`]) loads when this holds.
pub fn weights_complete_without_index(inv: &Inventory) -> bool {
    let weights: Vec<&Entry> = inv
        .model_entries()
        .filter(|e| !e.rel.contains('/') && e.name.ends_with(".safetensors") && e.size > 0)
        .collect();
    let shards: Vec<(u32, u32, &Entry)> = weights
        .iter()
        .filter_map(|e| shard_numbers(&e.name).map(|(i, t)| (i, t, *e)))
        .collect();
    !weights.is_empty()
        && shard_gaps(&shards).is_none()
        && check_safetensors_headers(&weights).is_none()
}

fn shard_gaps(shards: &[(u32, u32, &Entry)]) -> Option<String> {
    if shards.is_empty() {
        return None;
    }
    let totals: BTreeSet<u32> = shards.iter().map(|s| s.1).collect();
    if totals.len() != 1 {
        return Some("Inconsistent shard totals detected".into());
    }
    let total = *totals.iter().next().unwrap_or(&0);
    let present: BTreeSet<u32> = shards.iter().map(|s| s.0).collect();
    if (1..=total).any(|i| !present.contains(&i)) {
        return Some(format!(
            "Missing shards by pattern: {}/{} present",
            present.len(),
            total
        ));
    }
    None
}

fn check_indexed(
    root: &Path,
    inv: &Inventory,
    index: &Entry,
    cfg: &serde_json::Map<String, Value>,
) -> Check {
    let invalid = || Err("Invalid index file".to_string());
    let Ok(bytes) = crate::sys::read_file(&index.path) else {
        return invalid();
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return invalid();
    };
    let Value::Object(obj) = v else {
        return invalid();
    };
    let wm = match obj.get("weight_map") {
        Some(Value::Object(m)) if !m.is_empty() => m,
        _ => return Err("Empty or invalid weight_map in index".into()),
    };
    let mut referenced = BTreeSet::new();
    for v in wm.values() {
        let Some(s) = v.as_str() else {
            return Err("Empty or invalid weight_map in index".into());
        };
        referenced.insert(s.to_string());
    }
    // A shard path must stay inside the model folder.
    let outside: Vec<String> = referenced
        .iter()
        .filter(|r| r.starts_with('/') || r.split('/').any(|c| c == ".."))
        .cloned()
        .collect();
    if !outside.is_empty() {
        return Err(format!(
            "Index references files outside the model folder: {}",
            outside.join(", ")
        ));
    }
    let find = |r: &str| {
        inv.entries
            .iter()
            .find(|e| e.rel == r && !e.in_hf_cache && e.kind.is_some())
    };
    let missing: Vec<String> = referenced
        .iter()
        .filter(|r| find(r).is_none())
        .cloned()
        .collect();
    if !missing.is_empty() {
        let actual = inv
            .entries
            .iter()
            .filter(|e| !e.rel.contains('/') && e.name.ends_with(".safetensors"))
            .count();
        if actual > 0 {
            return Err(format!(
                "{INDEX_MISMATCH}. Index references {} shards but found {} different files. Fix: mlxfs convert <model> <output> --repair-index",
                referenced.len(),
                actual
            ));
        }
        return Err(format!("Missing weight shards: {}", missing.join(", ")));
    }
    let files: Vec<&Entry> = referenced.iter().filter_map(|r| find(r)).collect();
    // The shards the index names are opened by the loader wherever they lie (a sub-folder
    // included), and a name that is not UTF-8 cannot be one the index names.
    let unloadable: Vec<String> = files.iter().filter_map(|e| unloadable(e)).collect();
    if !unloadable.is_empty() {
        return Err(unloadable.join("; "));
    }
    let empty: Vec<String> = files
        .iter()
        .filter(|e| e.size == 0)
        .map(|e| e.rel.clone())
        .collect();
    if !empty.is_empty() {
        return Err(format!("Empty weight shards: {}", empty.join(", ")));
    }
    let lfs: Vec<String> = files
        .iter()
        .filter(|e| is_lfs_pointer(e))
        .map(|e| e.rel.clone())
        .collect();
    if !lfs.is_empty() {
        return Err(format!("LFS pointers instead of files: {}", lfs.join(", ")));
    }
    if let Some(problem) = check_safetensors_headers(&files) {
        return Err(problem);
    }
    check_aux(root, inv, cfg)?;
    Ok("Multi-file model complete".into())
}

/// Why a loader could not open the entry: it is not a regular file (links followed), or
/// this user may not read it (`None`: it can; a link that leads nowhere or out of the model
/// is reported as such before this).
fn unloadable(e: &Entry) -> Option<String> {
    match e.kind? {
        FileKind::File => match &e.read_error {
            Some(why) => Some(format!("{} cannot be read ({why})", e.rel)),
            // Not opened by the walk (a name only health knows is loaded: an index-named
            // shard in a sub-folder): opened now, non-blocking, nothing read.
            None if !loader_files::is_loader_file(&e.rel) => crate::sys::open_regular(&e.path)
                .err()
                .map(|err| format!("{} cannot be read ({})", e.rel, super::io_reason(&err))),
            None => None,
        },
        kind => Some(format!("{} is {}, not a regular file", e.rel, kind.words())),
    }
}

/// Folders of the model (not of its runtime cache) that could not be read or entered.
fn model_unreadable(inv: &Inventory) -> impl Iterator<Item = &String> {
    inv.unreadable
        .iter()
        .filter(|r| *r != ".hf_cache" && !r.starts_with(".hf_cache/"))
}

/// What the loaders read in a model folder: the files of [`loader_files`] and the shards the
/// index names (`model.safetensors.index.json`, and `pytorch_model.bin.index.json`, which
/// mlx-knife's health follows), wherever they lie.
pub struct Opened {
    shards: BTreeSet<String>,
}

impl Opened {
    /// The shard names of the model's index files (an index that cannot be read or parsed
    /// names none: health reports it).
    pub fn of(inv: &Inventory) -> Opened {
        let mut shards = BTreeSet::new();
        for index in [
            "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
        ] {
            let Some(e) = inv.top(index).filter(|e| e.is_file) else {
                continue;
            };
            let Ok(bytes) = crate::sys::read_file(&e.path) else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
                && let Some(Value::Object(wm)) = v.get("weight_map")
            {
                shards.extend(wm.values().filter_map(Value::as_str).map(str::to_string));
            }
        }
        Opened { shards }
    }

    /// Does a loader open the file at `rel` (`/`-separated, relative to the model folder)?
    pub fn file(&self, rel: &str) -> bool {
        loader_files::is_loader_file(rel) || self.shards.contains(rel)
    }

    /// Does a loader read anything in the folder `rel` (the template folder, or a folder
    /// holding a shard the index names)?
    pub fn reads_in(&self, rel: &str) -> bool {
        rel == "."
            || rel == loader_files::TEMPLATE_DIR
            || self
                .shards
                .iter()
                .any(|s| s.strip_prefix(rel).is_some_and(|t| t.starts_with('/')))
    }

    /// Does the entry at `rel` lie in a sub-folder no loader reads in (so nothing about it
    /// can stop the model from loading)?
    pub fn ignores(&self, rel: &str) -> bool {
        rel.rsplit_once('/')
            .is_some_and(|(folder, _)| !self.reads_in(folder))
    }
}

/// What the record says about the model's files without making it unhealthy, each about
/// what no loader reads ([`Opened`]): names that are not UTF-8, special files (FIFOs, sockets,
/// devices), folders that cannot be read or entered, links that lead nowhere and partial
/// download markers inside folders no loader reads, LFS pointers left for files no loader
/// opens.
pub fn warnings(inv: &Inventory) -> Vec<String> {
    let mut out = Vec::new();
    let opened = Opened::of(inv);
    let closed: Vec<String> = model_unreadable(inv)
        .filter(|r| !opened.reads_in(r))
        .map(|r| crate::text::one_line(r).into_owned())
        .collect();
    if !closed.is_empty() {
        out.push(format!(
            "folders that cannot be read or entered (no loader reads in them): {}",
            list(&closed)
        ));
    }
    let named = |pick: &dyn Fn(&Entry) -> bool| -> Vec<String> {
        inv.model_entries()
            .filter(|e| pick(e))
            .map(|e| crate::text::one_line(&e.rel).into_owned())
            .collect()
    };
    let dangling = named(&|e| e.link == LinkState::Dangling && opened.ignores(&e.rel));
    if !dangling.is_empty() {
        out.push(format!(
            "links that lead nowhere (in folders no loader reads): {}",
            list(&dangling)
        ));
    }
    // (A top-level weight file mlx-knife counts is a reason whatever a loader opens.)
    let lfs = named(&|e| {
        is_lfs_pointer(e) && !opened.file(&e.rel) && (e.rel.contains('/') || !is_weight_name(e))
    });
    if !lfs.is_empty() {
        out.push(format!(
            "LFS pointers instead of files (no loader opens them): {}",
            list(&lfs)
        ));
    }
    let partial = named(&|e| is_partial_marker(e) && opened.ignores(&e.rel));
    if !partial.is_empty() {
        out.push(format!(
            "partial download markers (in folders no loader reads): {}",
            list(&partial)
        ));
    }
    let stray = |e: &&Entry| !opened.file(&e.rel);
    let non_utf8: Vec<String> = inv
        .model_entries()
        .filter(stray)
        .filter(|e| e.non_utf8)
        .map(|e| crate::text::one_line(&e.rel).into_owned())
        .collect();
    if !non_utf8.is_empty() {
        out.push(format!(
            "file names that are not valid UTF-8 (no loader opens them; the content hash \
             cannot include them): {}",
            list(&non_utf8)
        ));
    }
    for e in inv.model_entries().filter(stray) {
        if let Some(k) = e
            .kind
            .filter(|k| !matches!(k, FileKind::File | FileKind::Folder))
        {
            out.push(format!(
                "{} is {}, not a regular file (no loader opens it)",
                crate::text::one_line(&e.rel),
                k.words()
            ));
        }
    }
    out
}

fn check_safetensors_headers(files: &[&Entry]) -> Option<String> {
    let bad: Vec<String> = files
        .iter()
        .filter(|e| e.is_file && e.size > 0 && e.name.ends_with(".safetensors"))
        .filter_map(|e| {
            // Read by the walk where it could (a file of the model itself), else now.
            e.safetensors_header
                .unwrap_or_else(|| safetensors_problem(&e.path, e.size))
                .map(|why| format!("{} ({why})", e.rel))
        })
        .collect();
    if bad.is_empty() {
        None
    } else {
        Some(format!("Corrupt safetensors files: {}", bad.join(", ")))
    }
}

/// `root/name` parsed as JSON: `None` when it does not exist (looked up in the walk).
fn read_json_file(root: &Path, inv: &Inventory, name: &str) -> Option<Result<Value, ()>> {
    if !inv.exists_at(root, name) {
        return None;
    }
    if !inv.is_file_at(root, name) {
        return Some(Err(()));
    }
    Some(
        crate::sys::read_file(&root.join(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(()),
    )
}

fn check_aux(
    root: &Path,
    inv: &Inventory,
    cfg: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    if detect_vision(inv, cfg) {
        let name = if inv.exists_at(root, "preprocessor_config.json") {
            "preprocessor_config.json"
        } else if inv.exists_at(root, "processor_config.json") {
            "processor_config.json"
        } else {
            return Err(
                "Vision model missing preprocessor_config.json or processor_config.json".into(),
            );
        };
        match read_json_file(root, inv, name) {
            Some(Ok(Value::Object(_))) => {}
            Some(Ok(_)) => return Err(format!("{name} invalid")),
            _ => return Err(format!("{name} invalid JSON")),
        }
    }
    match read_json_file(root, inv, "tokenizer_config.json") {
        None => {}
        Some(Err(())) => return Err("tokenizer_config.json contains invalid JSON".into()),
        Some(Ok(Value::Object(_))) if !inv.exists_at(root, "tokenizer.json") => {
            return Err("tokenizer_config.json present but tokenizer.json missing".into());
        }
        Some(Ok(Value::Object(_))) => {}
        Some(Ok(_)) => return Err("tokenizer_config.json exists but invalid".into()),
    }
    Ok(())
}
