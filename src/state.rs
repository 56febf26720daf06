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

/// The state folder, falling back to `mlxfs-<uid>` in the temp folder ($TMPDIR) — a folder of
/// this user's own (mode 0700): in a shared temp folder, one that another user made, or a
/// link, is not used (then `dir_or_temp` is the home's, or `/`-based, as a last resort).
pub fn dir_or_temp() -> PathBuf {
    if let Some(d) = dir() {
        return d;
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let d = std::env::temp_dir().join(format!("mlxfs-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&d);
    match std::fs::symlink_metadata(&d) {
        Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0 => d,
        _ => PathBuf::from(crate::sys::home_dir(None)).join(".local/state/mlxfs"),
    }
}
