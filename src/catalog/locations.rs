//! Where to look for models, read once from the environment: the hub cache as
//! huggingface_hub finds it (`HF_HUB_CACHE`, `HF_HOME`, …), the workspace home
//! (`MLXK_WORKSPACE_HOME`) and the further homes of `MLXK_MODEL_PATH`, with `~` and `$VAR`
//! expanded as Python does.

use std::fs;
use std::path::{Path, PathBuf};

use super::folders::io_reason;
use crate::env;

/// Where to look for models, read once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    /// The hub cache folder (`…/hub`); it may not exist.
    pub hub_cache: PathBuf,
    /// `MLXK_WORKSPACE_HOME`, resolved, when set and a folder.
    pub workspace_home: Option<PathBuf>,
    /// Set but unusable workspace home: (value, why), for messages.
    pub workspace_home_problem: Option<(String, String)>,
    /// `MLXK_WORKSPACE_HOME` as set, `~` expanded, whether or not the folder exists (`clone`
    /// creates it on demand).
    pub workspace_home_set: Option<PathBuf>,
    /// `MLXK_MODEL_PATH`: further workspace homes (`:`-separated, as `PATH`), searched in
    /// order after the workspace home (ADR-022's "future" multi-path search). Resolved
    /// folders only, each once, never the workspace home again.
    pub model_path: Vec<PathBuf>,
    /// Entries of `MLXK_MODEL_PATH` that are unusable: (value, why), for messages.
    pub model_path_problems: Vec<(String, String)>,
}

fn expand_tilde(s: &str, home: Option<&str>) -> PathBuf {
    match (s.strip_prefix('~'), home) {
        (Some(rest), Some(h)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{h}{rest}"))
        }
        _ => PathBuf::from(s),
    }
}

/// Python's `os.path.expandvars` (POSIX): `$NAME` and `${NAME}` become the variable's value;
/// unknown variables (and a lone `$`) stay as written. huggingface_hub applies it to
/// `HF_HOME` and `HF_HUB_CACHE` (constants.py).
pub fn expand_vars(s: &str, get: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(j) => (&b[..j], j + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
                .map_or(after.len(), |(j, _)| j);
            (&after[..n], n)
        };
        match (!name.is_empty()).then(|| get(name)).flatten() {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..i + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

impl Locations {
    /// From the process environment.
    pub fn from_env() -> Locations {
        Locations::from_vars(env::var)
    }

    /// From any variable source; an empty variable counts as unset.
    ///
    /// The hub cache is found as huggingface_hub's constants.py finds it: `HF_HUB_CACHE`, else
    /// the older `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, where `HF_HOME` defaults to
    /// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (`~` and `$VAR` expanded).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Locations {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        // Python's expanduser: HOME, else the password database (never a relative `~`).
        let home = Some(crate::sys::home_dir(var(env::HOME)));
        let expand = |s: &str| expand_tilde(&expand_vars(s, &var), home.as_deref());
        let hub_cache = if let Some(c) = var(env::HF_HUB_CACHE) {
            expand(&c)
        } else if let Some(c) = var(env::HUGGINGFACE_HUB_CACHE) {
            expand(&c)
        } else {
            hf_home_with(&var, home.as_deref()).join("hub")
        };
        let mut workspace_home = None;
        let mut workspace_home_problem = None;
        let mut workspace_home_set = None;
        if let Some(w) = var(env::MLXK_WORKSPACE_HOME) {
            let p = expand_tilde(&w, home.as_deref());
            workspace_home_set = Some(p.clone());
            match fs::canonicalize(&p) {
                Ok(r) if r.is_dir() => match unlistable(&r) {
                    None => workspace_home = Some(r),
                    Some(why) => workspace_home_problem = Some((w, why)),
                },
                Ok(_) => workspace_home_problem = Some((w, "not a folder".into())),
                Err(e) => workspace_home_problem = Some((w, e.to_string())),
            }
        }
        let mut model_path: Vec<PathBuf> = Vec::new();
        let mut model_path_problems = Vec::new();
        if let Some(mp) = var(env::MLXK_MODEL_PATH) {
            for entry in mp.split(':').filter(|e| !e.trim().is_empty()) {
                let p = expand_tilde(&expand_vars(entry, &var), home.as_deref());
                match fs::canonicalize(&p) {
                    Ok(r) if r.is_dir() => {
                        if let Some(why) = unlistable(&r) {
                            model_path_problems.push((entry.to_string(), why));
                        } else if workspace_home.as_ref() != Some(&r) && !model_path.contains(&r) {
                            model_path.push(r);
                        }
                    }
                    Ok(_) => model_path_problems.push((entry.to_string(), "not a folder".into())),
                    Err(e) => model_path_problems.push((entry.to_string(), e.to_string())),
                }
            }
        }
        Locations {
            hub_cache,
            workspace_home,
            workspace_home_problem,
            workspace_home_set,
            model_path,
            model_path_problems,
        }
    }

    /// The source folders as this process spells them (`status.json`'s `sources`): records
    /// print paths under these, so two processes whose sources are the same folders spelled
    /// differently print different paths.
    pub fn sources(&self) -> serde_json::Value {
        serde_json::json!({
            "hub_cache": self.hub_cache.to_string_lossy(),
            "workspace_home": self.workspace_home.as_ref().map(|p| p.to_string_lossy()),
            "model_path": self.model_path.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
        })
    }

    /// The folders searched, each canonicalised now (a path that does not resolve stays as
    /// it is), as a live mount's `catalog.json` names them: a mount answers only a reader
    /// whose own sources are the same folders. `None` when a path is not plain UTF-8 (two
    /// such paths could print alike).
    pub fn canonical_sources(&self) -> Option<serde_json::Value> {
        let one = |p: &Path| {
            fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .into_os_string()
                .into_string()
                .ok()
                .filter(|s| !s.contains('\u{fffd}'))
        };
        let homes: Option<Vec<String>> = self.model_path.iter().map(|p| one(p)).collect();
        Some(serde_json::json!({
            "hub_cache": one(&self.hub_cache)?,
            "workspace_home": match &self.workspace_home {
                Some(w) => Some(one(w)?),
                None => None,
            },
            "model_path": homes?,
        }))
    }

    /// Every workspace home in search order: `MLXK_WORKSPACE_HOME`, then `MLXK_MODEL_PATH`'s.
    pub fn workspace_homes(&self) -> impl Iterator<Item = &Path> {
        self.workspace_home
            .iter()
            .chain(self.model_path.iter())
            .map(PathBuf::as_path)
    }

    /// Why the search is narrower than configured, one line per unusable home (for warnings
    /// and "not found" hints).
    pub fn home_problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .workspace_home_problem
            .iter()
            .map(|(v, why)| format!("{}={v} is unusable: {why}", env::MLXK_WORKSPACE_HOME))
            .collect();
        out.extend(
            self.model_path_problems
                .iter()
                .map(|(v, why)| format!("{} entry {v} is unusable: {why}", env::MLXK_MODEL_PATH)),
        );
        out
    }
}

/// Why the folder `p` cannot be listed (a workspace home this user may not read: said, never
/// searched as if empty), or `None`.
fn unlistable(p: &Path) -> Option<String> {
    fs::read_dir(p)
        .err()
        .map(|e| format!("cannot be read ({})", io_reason(&e)))
}

/// `HF_HOME` as huggingface_hub computes it (constants.py): the variable (`~` and `$VAR`
/// expanded), else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home_with(var: &impl Fn(&str) -> Option<String>, home: Option<&str>) -> PathBuf {
    let raw = var(env::HF_HOME).unwrap_or_else(|| {
        let cache = var(env::XDG_CACHE_HOME).unwrap_or_else(|| "~/.cache".to_string());
        format!("{}/huggingface", cache.trim_end_matches('/'))
    });
    expand_tilde(&expand_vars(&raw, var), home)
}

/// The Hugging Face home of this process's environment (see [`Locations::from_vars`]).
pub fn hf_home() -> PathBuf {
    let home = crate::sys::home_dir(env::var(env::HOME));
    hf_home_with(&env::var, Some(&home))
}
