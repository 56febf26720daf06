//! `model.safetensors.index.json` rebuilt from the shards' own headers, byte for byte as
//! mlx-knife's `rebuild_safetensors_index` writes it: the top-level `*.safetensors` files in
//! name order; with fewer than two there is no index to write. `metadata.total_size` is the
//! sum of the shards' file sizes; `weight_map` maps each tensor to its shard, shard by shard,
//! each shard's tensors in name order (what `safe_open(...).keys()` returns); `json.dumps(
//! indent=2)` and a newline; written to a temp file and renamed.

use serde_json::{Map, Value, json};
use std::fs;
use std::path::Path;

use super::{ConvertError, Result};
use crate::error::ErrorType;

/// The index file's name.
pub const INDEX: &str = "model.safetensors.index.json";

/// What a rebuild wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub shards: usize,
    pub tensors: usize,
    pub total_size: u64,
}

/// The top-level `*.safetensors` files of `dir` (regular files, or links to them), by name.
pub fn shard_names(dir: &Path) -> Result<Vec<String>> {
    let rd = fs::read_dir(dir)
        .map_err(|e| ConvertError::io(&e, &format!("reading {}", dir.display())))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.ends_with(".safetensors")
            && !crate::osjunk::is_os_junk(&e.file_name())
            && fs::metadata(e.path()).is_ok_and(|m| m.is_file())
        {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The tensor names of one safetensors file, sorted (its header, never its data).
pub fn tensor_names(path: &Path) -> std::result::Result<Vec<String>, String> {
    let header = crate::hash::read_safetensors_header(path)
        .ok_or_else(|| "not a safetensors file (a missing or corrupt header)".to_string())?;
    let v: Value =
        serde_json::from_slice(&header).map_err(|e| format!("its header is not JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("its header is not a JSON object".into());
    };
    let mut names: Vec<String> = m.keys().filter(|k| *k != "__metadata__").cloned().collect();
    names.sort();
    Ok(names)
}

/// The index text for the shards of `dir` (`None`: fewer than two shards).
pub fn build(dir: &Path) -> Result<Option<(String, Rebuilt)>> {
    let shards = shard_names(dir)?;
    if shards.len() < 2 {
        return Ok(None);
    }
    let mut weight_map = Map::new();
    let mut total_size = 0u64;
    for shard in &shards {
        let p = dir.join(shard);
        let size = fs::metadata(&p)
            .map_err(|e| ConvertError::io(&e, &format!("reading {}", p.display())))?
            .len();
        total_size = total_size.saturating_add(size);
        let names = tensor_names(&p).map_err(|why| {
            ConvertError::new(
                ErrorType::ConversionFailed,
                format!("Failed to read shard {shard}: {why}"),
            )
        })?;
        for key in names {
            if let Some(Value::String(first)) = weight_map.get(&key) {
                return Err(ConvertError::new(
                    ErrorType::ConversionFailed,
                    format!(
                        "Failed to read shard {shard}: Duplicate tensor key '{key}' found in multiple shards: {first} and {shard}"
                    ),
                ));
            }
            weight_map.insert(key, Value::from(shard.clone()));
        }
    }
    if weight_map.is_empty() {
        return Err(ConvertError::new(
            ErrorType::ConversionFailed,
            "No tensors found in shards - corrupted model?",
        ));
    }
    let rebuilt = Rebuilt {
        shards: shards.len(),
        tensors: weight_map.len(),
        total_size,
    };
    let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
    Ok(Some((
        crate::jsonfmt::to_python_json(&index) + "\n",
        rebuilt,
    )))
}

/// Rebuild `dir`'s index from its shards (atomically: temp file, rename). `None` when there
/// are fewer than two shards (a single-file model needs no index; one already there stays).
pub fn rebuild(dir: &Path) -> Result<Option<Rebuilt>> {
    let Some((text, rebuilt)) = build(dir)? else {
        return Ok(None);
    };
    let path = dir.join(INDEX);
    let tmp = dir.join(format!("{INDEX}.tmp"));
    let r =
        crate::sys::write_new(&tmp, text.as_bytes(), false).and_then(|_| fs::rename(&tmp, &path));
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(ConvertError::io(&e, &format!("writing {}", path.display())));
    }
    Ok(Some(rebuilt))
}
