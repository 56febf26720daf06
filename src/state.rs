//! mlxfs's own state folder: `$XDG_STATE_HOME/mlxfs`, else `~/.local/state/mlxfs` (daemon logs,
//! per-hub-model run caches, the remembered Python versions). Never the Hugging Face caches.

use std::path::PathBuf;

/// The state folder, or `None` when neither XDG_STATE_HOME nor HOME is set.
pub fn dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_STATE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".local/state")))
        .map(|d| d.join("mlxfs"))
}

/// The state folder, falling back to one in the temp folder.
pub fn dir_or_temp() -> PathBuf {
    dir().unwrap_or_else(|| std::env::temp_dir().join("mlxfs"))
}
