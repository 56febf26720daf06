//! Framework, model_type, capabilities, context length and runtime compatibility, by
//! mlx-knife's rules (mlx-knife 2.0.8 `model_detection.py` and `runtime_compat.py`). Heuristics on names look at the model's own name
//! (`org/name`, or a workspace's folder name), never at parent folders.

use serde_json::{Map, Value};
use std::path::Path;

use super::config::{json_obj, model_type_str, py_str, truthy};
use super::inventory::Inventory;
use super::mlx_lm_types::{MODEL_REMAPPING, SUPPORTED_MODULES};
use super::shards::is_exact_shard_name;
use super::verdict::{Capability, Framework, ModelType};

const VISION_MODEL_TYPES: &[&str] = &[
    "llava",
    "llava_next",
    "pixtral",
    "qwen2_vl",
    "phi3_v",
    "mllama",
    "paligemma",
    "idefics",
    "smolvlm",
];
const STT_MODEL_TYPES: &[&str] = &["whisper", "vibevoice", "voxtral"];
const AUDIO_MODEL_TYPES: &[&str] = &[
    "gemma3n",
    "gemma3n_audio",
    "voxtral",
    "whisper",
    "vibevoice",
    "audio",
];
const EMBEDDER_ENCODER_TYPES: &[&str] = &["bert", "xlm-roberta", "modernbert", "nomic_bert"];
/// Modules of mlx_lm.models that exist but define no `Model` (importable, then fail).
const HELPER_MODULES: &[&str] = &[
    "activations",
    "base",
    "bitlinear_layers",
    "cache",
    "gated_delta",
    "mla",
    "pipeline",
    "rope_utils",
    "ssm",
    "switch_layers",
];
pub const MODEL_FILE_REASON: &str =
    "requires executing model-supplied code (config.json: model_file)";

/// README front matter: (tags, library_name).
fn front_matter(root: &Path, inv: &Inventory) -> Option<(Vec<String>, Option<String>)> {
    // Only a regular file is opened (what the walk found is never a FIFO opened to learn).
    if !inv.is_file_at(root, "README.md") {
        return None;
    }
    let bytes = crate::sys::read_file(&root.join("README.md")).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    if lines.next()?.trim() != "---" {
        return None;
    }
    let block: Vec<&str> = lines.take_while(|l| l.trim() != "---").collect();
    if block.is_empty() {
        return None;
    }
    let unquote = |s: &str| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
    let mut tags = Vec::new();
    let mut library = None;
    let mut in_tags = false;
    for raw in block {
        let s = raw.trim();
        if s.is_empty() {
            continue;
        }
        let low = s.to_lowercase();
        if low.starts_with("library_name:") {
            library = Some(unquote(s.split_once(':').map_or("", |x| x.1)));
            in_tags = false;
        } else if low.starts_with("tags:") && s.contains('[') && s.contains(']') {
            let inside = s.split_once('[').map_or("", |x| x.1);
            let inside = inside.rsplit_once(']').map_or("", |x| x.0);
            tags.extend(inside.split(',').map(unquote).filter(|t| !t.is_empty()));
            in_tags = false;
        } else if low.starts_with("tags:") {
            in_tags = true;
        } else if in_tags {
            if let Some(rest) = s.strip_prefix('-') {
                let v = unquote(rest.trim_start_matches('-'));
                if !v.is_empty() {
                    tags.push(v);
                }
            } else {
                in_tags = false;
            }
        }
    }
    Some((tags, library))
}

/// `MLX`, `GGUF`, `PyTorch` or `Unknown`, in mlx-knife's order of evidence.
pub fn framework(
    name: &str,
    root: &Path,
    inv: &Inventory,
    cfg: Option<&Map<String, Value>>,
) -> Framework {
    if name.contains("mlx-community/") {
        return Framework::Mlx;
    }
    if let Some((tags, lib)) = front_matter(root, inv)
        && (tags.iter().any(|t| t.to_lowercase() == "mlx")
            || lib.is_some_and(|l| l.to_lowercase() == "mlx"))
    {
        return Framework::Mlx;
    }
    if cfg.is_some_and(|c| c.contains_key("quantization")) {
        return Framework::Mlx;
    }
    let files = || inv.entries.iter().filter(|e| !e.in_hf_cache);
    if files().any(|e| e.name.ends_with(".gguf")) {
        return Framework::Gguf;
    }
    if files().any(|e| {
        e.name.ends_with(".safetensors")
            || (e.name.starts_with("pytorch_model") && e.name.ends_with(".bin"))
    }) {
        return Framework::PyTorch;
    }
    Framework::Unknown
}

/// How mlx-knife would load an embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedder {
    /// A causal LM used as an embedder (Qwen3-Embedding).
    Decoder,
    /// BERT.
    Encoder,
    /// Another encoder type mlx-knife knows but does not vendor.
    EncoderDeclared,
}

fn classify_embedder(cfg: Option<&Map<String, Value>>, name: &str) -> Option<Embedder> {
    let cfg = cfg?;
    let mt = cfg
        .get("model_type")
        .map(py_str)
        .unwrap_or_default()
        .to_lowercase();
    let archs: Vec<String> = match cfg.get("architectures") {
        Some(Value::Array(a)) => a.iter().map(|x| py_str(x).to_lowercase()).collect(),
        _ => Vec::new(),
    };
    let n = name.to_lowercase();
    let causal =
        archs.iter().any(|a| a.contains("forcausallm")) || mt == "qwen3" || mt == "mistral";
    if causal && (n.contains("embed") || n.contains("qwen3-embedding")) {
        return Some(Embedder::Decoder);
    }
    if mt == "bert" {
        return Some(Embedder::Encoder);
    }
    if EMBEDDER_ENCODER_TYPES.contains(&mt.as_str()) {
        return Some(Embedder::EncoderDeclared);
    }
    None
}

/// Does the model carry a chat template? A `chat_template.jinja`/`.json` file decides without
/// reading anything (it makes the model `chat`, which is all the template is used for);
/// otherwise a non-empty `chat_template` string in tokenizer_config.json, then tokenizer.json
/// (parsed only when its bytes contain the key: tokenizer.json is often many megabytes).
/// `inv` is the walk of `root` (existence is looked up there, not asked of the disk).
pub fn has_chat_template(root: &Path, inv: &Inventory) -> bool {
    inv.is_file_at(root, "chat_template.jinja")
        || inv.is_file_at(root, "chat_template.json")
        || chat_template(root, inv).is_some()
}

/// A non-empty `chat_template` string in tokenizer_config.json, then tokenizer.json.
pub fn chat_template(root: &Path, inv: &Inventory) -> Option<String> {
    for f in ["tokenizer_config.json", "tokenizer.json"] {
        if !inv.is_file_at(root, f) {
            continue;
        }
        let Ok(bytes) = crate::sys::read_file(&root.join(f)) else {
            continue;
        };
        if !bytes.windows(15).any(|w| w == b"\"chat_template\"") {
            continue;
        }
        if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&bytes)
            && let Some(Value::String(s)) = o.get("chat_template")
            && !s.trim().is_empty()
        {
            return Some(s.clone());
        }
    }
    None
}

/// `chat`, `base`, `embedding` or `audio`.
pub fn model_type(name: &str, cfg: Option<&Map<String, Value>>, template: bool) -> ModelType {
    if classify_embedder(cfg, name).is_some() {
        return ModelType::Embedding;
    }
    if let Some(mt) = cfg.and_then(model_type_str) {
        let mt = mt.to_lowercase();
        if mt == "chat" || VISION_MODEL_TYPES.contains(&mt.as_str()) {
            return ModelType::Chat;
        }
        if STT_MODEL_TYPES.iter().any(|t| mt.contains(t)) {
            return ModelType::Audio;
        }
    }
    // `template` already covers chat_template.jinja / chat_template.json (has_chat_template).
    if template {
        return ModelType::Chat;
    }
    let n = name.to_lowercase();
    if n.contains("instruct") || n.contains("chat") {
        return ModelType::Chat;
    }
    ModelType::Base
}

fn video_preprocessor(m: &Map<String, Value>) -> bool {
    m.get("processor_class").and_then(Value::as_str) == Some("AutoVideoProcessor")
        || m.contains_key("temporal_patch_size")
}

/// Vision capability from config, then from processor files.
pub fn detect_vision(inv: &Inventory, cfg: &Map<String, Value>) -> bool {
    if matches!(cfg.get("vision_config"), Some(Value::Object(m)) if !m.is_empty()) {
        return true;
    }
    if model_type_str(cfg)
        .is_some_and(|mt| VISION_MODEL_TYPES.contains(&mt.to_lowercase().as_str()))
    {
        return true;
    }
    if truthy(cfg.get("image_processor")) {
        return true;
    }
    if let Some(Value::Object(p)) = cfg.get("preprocessor_config") {
        return !video_preprocessor(p);
    }
    if inv.top("video_preprocessor_config.json").is_some() {
        return false;
    }
    let names = [
        "preprocessor_config.json",
        "processor_config.json",
        "image_processor_config.json",
    ];
    if inv
        .entries
        .iter()
        .any(|e| !e.in_hf_cache && names.contains(&e.name.as_str()))
    {
        if let Some(top) = inv.top("preprocessor_config.json")
            && let Some(p) = json_obj(&top.path)
            && video_preprocessor(&p)
        {
            return false;
        }
        return true;
    }
    false
}

fn whisper_preprocessor(root: &Path, inv: &Inventory) -> bool {
    if !inv.exists_at(root, "preprocessor_config.json") {
        return false;
    }
    json_obj(&root.join("preprocessor_config.json"))
        .and_then(|p| {
            p.get("feature_extractor_type")
                .and_then(Value::as_str)
                .map(str::to_lowercase)
        })
        .is_some_and(|f| f.contains("whisper"))
}

fn detect_audio(root: &Path, inv: &Inventory, cfg: &Map<String, Value>) -> bool {
    if matches!(cfg.get("audio_config"), Some(Value::Object(m)) if !m.is_empty()) {
        return true;
    }
    if let Some(mt) = model_type_str(cfg) {
        let mt = mt.to_lowercase();
        if AUDIO_MODEL_TYPES.iter().any(|t| mt.contains(t)) {
            return true;
        }
    }
    whisper_preprocessor(root, inv)
}

/// Has the name a Whisper variant without the translate task (`.en`, turbo)?
fn whisper_no_translate(name: &str) -> bool {
    let n = name.to_lowercase();
    let ends_ok = |rest: &str| rest.is_empty() || rest.starts_with(['-', '_', '.', '/']);
    for (i, _) in n.match_indices("whisper-") {
        let tail = &n[i + 8..];
        for size in ["tiny", "base", "small", "medium"] {
            if let Some(rest) = tail.strip_prefix(size).and_then(|r| r.strip_prefix(".en"))
                && ends_ok(rest)
            {
                return true;
            }
        }
        // whisper-[a-z0-9.-]*turbo([-_./]|$)
        let run: String = tail
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-')
            .collect();
        for (j, _) in run.match_indices("turbo") {
            if ends_ok(&tail[j + 5..]) {
                return true;
            }
        }
    }
    false
}

/// The capability list, in mlx-knife's order.
pub fn capabilities(
    mtype: ModelType,
    name: &str,
    root: &Path,
    inv: &Inventory,
    cfg: Option<&Map<String, Value>>,
    template: bool,
) -> Vec<Capability> {
    if mtype == ModelType::Embedding {
        return vec![Capability::Embeddings];
    }
    if mtype == ModelType::Audio {
        let mut caps = vec![Capability::Audio];
        if cfg
            .and_then(model_type_str)
            .is_some_and(|m| m.to_lowercase() == "whisper")
            && !whisper_no_translate(name)
        {
            caps.push(Capability::AudioTranslateEn);
        }
        return caps;
    }
    let mut caps = vec![Capability::TextGeneration];
    let n = name.to_lowercase();
    if mtype == ModelType::Chat || n.contains("instruct") || n.contains("chat") || template {
        caps.push(Capability::Chat);
    }
    let empty = Map::new();
    let c = cfg.unwrap_or(&empty);
    if detect_vision(inv, c) {
        caps.push(Capability::Vision);
    }
    if detect_audio(root, inv, c) {
        caps.push(Capability::Audio);
    }
    caps
}

/// First positive integer (or digit string) of the usual context keys, top level then
/// `text_config`.
pub fn context_length(cfg: Option<&Map<String, Value>>) -> Option<u64> {
    const KEYS: &[&str] = &[
        "max_position_embeddings",
        "n_positions",
        "context_length",
        "max_sequence_length",
        "seq_len",
    ];
    let pick = |m: &Map<String, Value>| {
        KEYS.iter().find_map(|k| match m.get(*k) {
            Some(Value::Number(n)) => n.as_u64().filter(|v| *v > 0),
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u64>().ok().filter(|v| *v > 0)
            }
            _ => None,
        })
    };
    let cfg = cfg?;
    pick(cfg).or_else(|| match cfg.get("text_config") {
        Some(Value::Object(t)) => pick(t),
        _ => None,
    })
}

/// mlx-lm's `_get_classes` against the static table.
fn mlx_lm_supports(mt: &Value) -> Result<(), String> {
    let t = py_str(mt);
    let module = MODEL_REMAPPING
        .iter()
        .find(|(k, _)| *k == t)
        .map_or(t.as_str(), |(_, v)| v);
    if SUPPORTED_MODULES.contains(&module) {
        Ok(())
    } else if HELPER_MODULES.contains(&module) {
        Err(format!(
            "module 'mlx_lm.models.{module}' has no attribute 'Model'"
        ))
    } else {
        Err(format!("Model type {module} not supported."))
    }
}

/// `check_runtime_compatibility` for text models.
fn text_runtime(inv: &Inventory, cfg: &Map<String, Value>) -> Result<(), String> {
    let top_st: Vec<&str> = inv
        .entries
        .iter()
        .filter(|e| !e.rel.contains('/') && e.name.ends_with(".safetensors"))
        .map(|e| e.name.as_str())
        .collect();
    let is_valid = |n: &str| n == "model.safetensors" || is_exact_shard_name(n);
    let is_legacy = |n: &str| {
        let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        n.strip_prefix("weights.")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .is_some_and(num)
            || n.strip_prefix("pytorch_model-")
                .and_then(|r| r.strip_suffix(".safetensors"))
                .is_some_and(num)
    };
    if !top_st.is_empty()
        && top_st.iter().any(|n| is_legacy(n))
        && !top_st.iter().any(|n| is_valid(n))
    {
        return Err("Legacy format not supported by mlx-lm".into());
    }
    if !matches!(cfg.get("model_file"), None | Some(Value::Null)) {
        return Err(MODEL_FILE_REASON.into());
    }
    match cfg.get("model_type") {
        None | Some(Value::Null) => Err("config.json missing model_type field".into()),
        Some(v) if !truthy(Some(v)) => Err("config.json missing model_type field".into()),
        Some(v) => mlx_lm_supports(v),
    }
}

/// Audio backend: true = mlx-audio (speech to text), false = mlx-vlm (multimodal).
fn audio_backend_is_stt(root: &Path, inv: &Inventory, cfg: &Map<String, Value>) -> Option<bool> {
    let mt = model_type_str(cfg).unwrap_or("").to_lowercase();
    if mt == "voxtral" {
        return Some(true);
    }
    if cfg.contains_key("audio_config")
        && matches!(cfg.get("vision_config"), Some(Value::Object(m)) if !m.is_empty())
    {
        return Some(false);
    }
    if mt.contains("whisper") || mt.contains("vibevoice") || whisper_preprocessor(root, inv) {
        return Some(true);
    }
    let dir = root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if ["whisper", "voxtral", "vibevoice"]
        .iter()
        .any(|k| dir.contains(k))
    {
        return Some(true);
    }
    if cfg.contains_key("audio_config") {
        return Some(false);
    }
    None
}

/// The keys of mlx-whisper's `ModelDimensions`, which its `config.json` holds.
const WHISPER_DIMS: &[&str] = &[
    "n_mels",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_vocab",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
];

/// Is the folder a Whisper checkpoint in mlx-whisper's layout (the `mlx-community/whisper-*`
/// conversions): `config.json` with the model's dimensions and `weights.safetensors` (or
/// `weights.npz`)? Err names what is missing.
pub fn whisper_layout(root: &Path) -> Result<(), String> {
    let cfg = json_obj(&root.join("config.json")).unwrap_or_default();
    let missing: Vec<&str> = WHISPER_DIMS
        .iter()
        .copied()
        .filter(|k| !cfg.get(*k).is_some_and(Value::is_u64))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "config.json lacks mlx-whisper's dimensions ({})",
            missing.join(", ")
        ));
    }
    if !root.join("weights.safetensors").is_file() && !root.join("weights.npz").is_file() {
        return Err("no weights.safetensors or weights.npz".into());
    }
    Ok(())
}

/// `runtime_compatible` and its reason for a healthy model.
pub fn runtime(
    name: &str,
    root: &Path,
    inv: &Inventory,
    fw: Framework,
    cfg: Option<&Map<String, Value>>,
    caps: &[Capability],
) -> Result<(), String> {
    if fw != Framework::Mlx {
        return Err(format!("Incompatible framework: {}", fw.as_str()));
    }
    let empty = Map::new();
    let c = cfg.unwrap_or(&empty);
    if !matches!(c.get("model_file"), None | Some(Value::Null)) {
        return Err(MODEL_FILE_REASON.into());
    }
    if caps.contains(&Capability::Audio)
        && let Some(stt) = audio_backend_is_stt(root, inv, c)
    {
        if stt {
            let mt = model_type_str(c).unwrap_or("");
            let low = mt.to_lowercase();
            if c.get("model_type").is_some_and(Value::is_string)
                && !(low.contains("whisper") || low.contains("vibevoice"))
            {
                return Err(format!(
                    "Model type '{mt}' not supported (supported: whisper, vibevoice)"
                ));
            }
            if inv.top("tekken.json").is_some() && inv.top("tokenizer.json").is_none() {
                return Err("Voxtral tekken.json tokenizer not supported by mlx-audio".into());
            }
            return Ok(());
        }
        return text_runtime(inv, c);
    }
    if caps.contains(&Capability::Vision) {
        return text_runtime(inv, c);
    }
    if caps.contains(&Capability::Embeddings) {
        return match classify_embedder(cfg, name) {
            Some(Embedder::Decoder | Embedder::Encoder) => Ok(()),
            _ => Err(format!(
                "Embedding encoder not vendored: {} — use bge/e5 or Qwen3-Embedding",
                c.get("model_type")
                    .map(py_str)
                    .unwrap_or_default()
                    .to_lowercase()
            )),
        };
    }
    text_runtime(inv, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whisper_variants() {
        assert!(whisper_no_translate("mlx-community/whisper-tiny.en-mlx"));
        assert!(whisper_no_translate("org/whisper-large-v3-turbo"));
        assert!(!whisper_no_translate("mlx-community/whisper-large-v3-mlx"));
        assert!(!whisper_no_translate("org/whisper-tiny.english"));
    }

    #[test]
    fn mlx_lm_table() {
        assert!(mlx_lm_supports(&Value::from("llama")).is_ok());
        assert!(mlx_lm_supports(&Value::from("mistral")).is_ok());
        assert_eq!(
            mlx_lm_supports(&Value::from("foo")).unwrap_err(),
            "Model type foo not supported."
        );
        assert_eq!(
            mlx_lm_supports(&Value::from("base")).unwrap_err(),
            "module 'mlx_lm.models.base' has no attribute 'Model'"
        );
    }

    #[test]
    fn context_keys() {
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"n_positions": 0, "seq_len": "2048", "text_config": {"max_position_embeddings": 9}}"#).unwrap();
        assert_eq!(context_length(Some(&c)), Some(2048));
        let c: Map<String, Value> = serde_json::from_str(
            r#"{"max_position_embeddings": true, "text_config": {"max_position_embeddings": 9}}"#,
        )
        .unwrap();
        assert_eq!(context_length(Some(&c)), Some(9));
    }
}
