//! mlxfs's own state folder: `$XDG_STATE_HOME/mlxfs`, else `~/.local/state/mlxfs` (daemon logs,
//! the run caches of hub models and of workspaces this user cannot write, the remembered Python
//! versions). Never the shared Hugging Face caches.

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
/// link, is not used (then it is the home's, or `/`-based, as a last resort). Never creates
/// anything: for the readers (`list`, `show`, the mount), which only look at what is there
/// (a fallback folder not made yet holds nothing).
pub fn dir_or_temp() -> PathBuf {
    fallback(false)
}

/// [`dir_or_temp`], first making the temp fallback (mode 0700) when it is the one: for the
/// writers (`run`, `serve`, `mount --daemon`'s log) before they write below it.
pub fn create_dir_or_temp() -> PathBuf {
    fallback(true)
}

fn fallback(create: bool) -> PathBuf {
    if let Some(d) = dir() {
        return d;
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    // A relative $TMPDIR would make the folder depend on the current one (readers, writers
    // and the mount would each find another): it is not taken.
    let temp = Some(std::env::temp_dir())
        .filter(|t| t.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let d = temp.join(format!("mlxfs-{uid}"));
    if create {
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&d);
    }
    match std::fs::symlink_metadata(&d) {
        Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0 => d,
        // Not made yet: the readers name the folder a writer would make (so both agree),
        // which is this one only where making it can succeed.
        Err(e)
            if !create
                && e.kind() == std::io::ErrorKind::NotFound
                && rustix::fs::access(
                    &temp,
                    rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
                )
                .is_ok()
                && temp.is_dir() =>
        {
            d
        }
        _ => PathBuf::from(crate::sys::home_dir(None)).join(".local/state/mlxfs"),
    }
}
