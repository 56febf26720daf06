//! A model's `config.json`, parsed once per record, and the JSON value rules mlx-knife's
//! Python code applies to it (`str()`, truthiness).

use serde_json::{Map, Value};
use std::path::Path;

/// The parse result of a model's `config.json`.
#[derive(Debug, Clone)]
pub enum Config {
    /// There is no `config.json`.
    Missing,
    /// It exists but is not JSON (too deeply nested counts as not JSON).
    Invalid,
    /// It exists but is not a regular file (links followed): what it is (`a FIFO`, `a
    /// folder`: [`crate::sys::FileKind::words`]).
    NotRegular(&'static str),
    /// A regular file that cannot be read (no permission, an I/O error): why.
    Unreadable(String),
    /// Any JSON value; [`Config::object`] is what the rules look at.
    Parsed(Value),
}

impl Config {
    /// [`Config::load`] where the walk of `root` already says what `config.json` is: what is
    /// not a regular file is never opened.
    pub fn load_walked(root: &Path, inv: &super::inventory::Inventory) -> Config {
        // A folder that lists its names but cannot be entered holds a `config.json` the walk
        // could not see: the open says why (never `Missing`).
        if inv.walked && inv.root_problem.is_none() {
            match inv.top("config.json") {
                None => return Config::Missing,
                Some(e) => match e.kind {
                    None => return Config::Missing,
                    Some(crate::sys::FileKind::File) => {}
                    Some(k) => return Config::NotRegular(k.words()),
                },
            }
        }
        Config::load(root)
    }

    /// Read and parse `<root>/config.json` (never fails: problems become `Missing`/`Invalid`).
    pub fn load(root: &Path) -> Config {
        match crate::sys::read_file(&root.join("config.json")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::Missing,
            // Not a regular file (opened non-blocking, never read): what it is.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                match std::fs::metadata(root.join("config.json")) {
                    Ok(md) => Config::NotRegular(crate::sys::FileKind::of(&md).words()),
                    Err(_) => Config::Invalid,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Config::Invalid,
            Err(e) => Config::Unreadable(super::io_reason(&e)),
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(v) => Config::Parsed(v),
                Err(_) => Config::Invalid,
            },
        }
    }

    /// The config when it is a JSON object (the only shape the rules use).
    pub fn object(&self) -> Option<&Map<String, Value>> {
        match self {
            Config::Parsed(Value::Object(m)) => Some(m),
            _ => None,
        }
    }
}

/// Python's `str()` of a JSON value, for messages (`True`, `None`, `4`, `text`).
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// Python's truthiness of a JSON value (`None`, `false`, `0`, `""`, `[]`, `{}` are false).
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Bool(true)) => true,
    }
}

/// `model_type` when it is a string.
pub fn model_type_str(cfg: &Map<String, Value>) -> Option<&str> {
    cfg.get("model_type").and_then(Value::as_str)
}

/// A JSON file that holds an object, or `None` (missing, unreadable, not JSON, not an object).
pub fn json_obj(p: &Path) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(&crate::sys::read_file(p).ok()?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}
