//! What a folder or a link on disk can stand for: a folder that cannot be used (and why, a
//! link named with its target), a link too wide to be one model's folder, an I/O error as a
//! reason, and the small walk that counts or dates files.

use std::fs;
use std::path::{Path, PathBuf};

use crate::env;

pub(super) fn is_link(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Why `p` cannot be used as a folder, or `None` when it is one (links followed). A link
/// is named with its target, so a model on a disk that is not attached says so.
pub fn unusable_folder(p: &Path) -> Option<String> {
    let target = || {
        fs::read_link(p)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match fs::metadata(p) {
        Ok(m) if m.is_dir() => None,
        Ok(_) if is_link(p) => Some(format!("a link to {}, which is not a folder", target())),
        Ok(_) => Some("not a folder".into()),
        Err(e) if is_link(p) && e.raw_os_error() == Some(libc::ELOOP) => Some(format!(
            "a link to {}, which leads back to itself (a link loop)",
            target()
        )),
        Err(e) if is_link(p) => Some(format!(
            "a link to {}, which cannot be reached ({}): is its disk attached?",
            target(),
            io_reason(&e)
        )),
        Err(e) => Some(format!("cannot be read ({})", io_reason(&e))),
    }
}

/// The home folder, once per process (from `HOME`, else the password database).
fn home_real() -> &'static Path {
    static HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let h = PathBuf::from(crate::sys::home_dir(env::var(env::HOME)));
        fs::canonicalize(&h).unwrap_or(h)
    })
}

/// Is `real` (a canonical folder) too wide to stand for one model's folder: `/`, a folder
/// that holds the home folder, or one that holds `holder` (the folder the link sits in: the
/// hub cache, the workspace home, a repo folder)?
pub(super) fn holds_too_much(real: &Path, holder: Option<&Path>) -> bool {
    real.parent().is_none()
        || home_real().starts_with(real)
        || holder.is_some_and(|h| h.starts_with(real))
}

/// For a link `p` (sitting in `holder`): why its target is not followed when it is too wide
/// (see [`holds_too_much`]); `None` for anything else.
pub(super) fn too_wide(p: &Path, holder: Option<&Path>) -> Option<String> {
    if !is_link(p) {
        return None;
    }
    let real = fs::canonicalize(p).ok()?;
    let holder = holder.map(|h| fs::canonicalize(h).unwrap_or_else(|_| h.to_path_buf()));
    holds_too_much(&real, holder.as_deref()).then(|| {
        format!(
            "a link to {}, which holds far more than one model (the disk's root, a home \
             folder or the folder the link is in): not followed",
            real.display()
        )
    })
}

/// An I/O error without the "(os error N)" tail.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Every entry below the folders `dirs` with its own metadata (links are not followed,
/// folders that cannot be read are skipped): the small walks that only count or date files.
pub fn for_each_below(dirs: &[PathBuf], mut f: impl FnMut(&Path, &fs::Metadata)) {
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(md) = fs::symlink_metadata(&path) else {
                continue;
            };
            f(&path, &md);
            if md.is_dir() {
                stack.push(path);
            }
        }
    }
}
