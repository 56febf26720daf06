//! mlxfs's own state folder: `$XDG_STATE_HOME/mlxfs`, else `~/.local/state/mlxfs` (daemon logs,
//! per-hub-model run caches, the remembered Python versions). Never the Hugging Face caches.

use std::path::PathBuf;

use crate::env;

/// The state folder, or `None` when neither XDG_STATE_HOME nor HOME is set (a relative
/// value counts as unset: the XDG rule).
pub fn dir() -> Option<PathBuf> {
    let var = |k: &str| {
        env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    var(env::XDG_STATE_HOME)
        .or_else(|| var(env::HOME).map(|h| h.join(".local/state")))
        .map(|d| d.join("mlxfs"))
}

/// The state folder, falling back to one in the temp folder.
pub fn dir_or_temp() -> PathBuf {
    dir().unwrap_or_else(|| std::env::temp_dir().join("mlxfs"))
}
