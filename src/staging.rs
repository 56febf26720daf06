//! One all-or-nothing writer: build beside the target, under a lock, then one rename.
//!
//! `convert`, `clone`, `pull` and `restore` all write this way (design.md: a new workspace or
//! cache repo appears whole or not at all). The one rule, for all four:
//!
//! - **Name**: `<parent of the target>/.mlxfs-<op>-<id>/`, `id` the first 16 hex digits of
//!   the sha256 of a key the writer chooses (the target path; for `clone` the repo spec and
//!   the target; for `pull` the repo id), so running the same command again finds it. The
//!   catalog hides such folders ([`is_staging_name`]).
//! - **Layout**: `lock` (held while a writer works in the folder), `model/` (what becomes the
//!   target), and whatever else the writer keeps beside it (partial downloads, a resume note).
//! - **Lock**: one writer per folder; a second one gets [`StageError::Busy`].
//! - **Leftovers**: what an earlier run left is the next run's to resume or remove (the
//!   writer decides: [`Staging::create`]'s `resume`); a writer that never resumes (`restore`)
//!   also removes, with [`sweep`], such folders of other targets that no one holds.
//! - **Publish**: `model/` is renamed to the target — replacing an empty folder there, else
//!   with `rename_noreplace` — and the rest of the folder is removed.
//! - **Failure**: the folder is removed when the [`Staging`] is dropped, unless the writer
//!   [kept](Staging::keep) it to resume.
//!
//! The shape follows uv's `uv-fs/src/locked_file.rs`: the lock is a file the value owns, and
//! dropping the value releases it.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The prefix of every staging folder's name.
pub const PREFIX: &str = ".mlxfs-";

const LOCK: &str = "lock";

/// Is `name` a staging folder — mlxfs's (`.mlxfs-…`, see the module docs) or mlx-knife's
/// (`.mlxk2_temp_…`)? Such a folder is never a workspace.
pub fn is_staging_name(name: &str) -> bool {
    name.starts_with(PREFIX) || name.starts_with(".mlxk2_temp_")
}

/// The staging folder of writer `op` for `target`, named from `key`:
/// `<parent>/.mlxfs-<op>-<first 16 hex digits of sha256(key)>` (`/` when `target` has no
/// parent).
pub fn path_for(target: &Path, op: &str, key: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let id = crate::text::hex(&Sha256::digest(key.as_bytes()));
    target
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{PREFIX}{op}-{}", &id[..16]))
}

/// Why a staging folder could not be had.
#[derive(Debug)]
pub enum StageError {
    /// Another process holds its lock (the same command is running).
    Busy,
    /// A local I/O error; the string says what was being done ("creating …").
    Io(io::Error, String),
}

impl StageError {
    /// The writer's own error: `busy()` for [`StageError::Busy`], `io(error, what)` (its
    /// classifier, [`crate::error::io_type`]) for an I/O error.
    pub fn into_error<E>(
        self,
        busy: impl FnOnce() -> E,
        io: impl FnOnce(&io::Error, &str) -> E,
    ) -> E {
        match self {
            StageError::Busy => busy(),
            StageError::Io(e, what) => io(&e, &what),
        }
    }
}

/// A locked staging folder (see the module docs); removed when dropped unless kept, and
/// after [`publish`](Staging::publish).
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    target: PathBuf,
    _lock: fs::File,
    keep: bool,
    published: bool,
}

impl Staging {
    /// Lock the staging folder of `op` for `target` ([`path_for`] with `key`), creating it.
    /// When an earlier run left something there, `resume(folder)` says whether to keep it:
    /// true keeps everything and the second value is true; false removes all but the lock.
    /// `model/` is not created: the writer makes it (with the mode it needs) unless resumed.
    pub fn create(
        target: &Path,
        op: &str,
        key: &str,
        resume: impl FnOnce(&Path) -> bool,
    ) -> Result<(Staging, bool), StageError> {
        let dir = path_for(target, op, key);
        let lock = lock(&dir, true)?.ok_or(StageError::Busy)?;
        let left = fs::read_dir(&dir)
            .map_err(|e| StageError::Io(e, format!("reading {}", dir.display())))?
            .flatten()
            .any(|e| e.file_name() != LOCK);
        let resumed = left && resume(&dir);
        if left && !resumed {
            // Whatever a killed or failed run left: it is ours (same key), and we hold it.
            for e in fs::read_dir(&dir)
                .map_err(|e| StageError::Io(e, format!("reading {}", dir.display())))?
                .flatten()
                .filter(|e| e.file_name() != LOCK)
            {
                let p = e.path();
                let r = match e.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                    _ => fs::remove_file(&p),
                };
                r.map_err(|e| StageError::Io(e, format!("removing {}", p.display())))?;
            }
        }
        let st = Staging {
            dir,
            target: target.to_path_buf(),
            _lock: lock,
            keep: false,
            published: false,
        };
        Ok((st, resumed))
    }

    /// The staging folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `model/`: what [`publish`](Staging::publish) makes the target.
    pub fn model(&self) -> PathBuf {
        self.dir.join("model")
    }

    /// Keep the folder when dropped without publishing (the same command resumes from it).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The one step that makes the result visible: rename `model/` to the target (replacing
    /// an empty folder there; otherwise with `rename_noreplace`, so nothing that appeared
    /// meanwhile is overwritten). The rest of the staging folder is removed on drop. On an
    /// error nothing moved, and the folder is removed on drop unless kept.
    pub fn publish(&mut self) -> io::Result<()> {
        let model = self.model();
        if fs::symlink_metadata(&self.target).is_ok() {
            // An empty folder (checked by the writer): replaced atomically.
            fs::rename(&model, &self.target)?;
        } else {
            crate::sys::rename_noreplace(&model, &self.target)?;
        }
        self.published = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.published || !self.keep {
            let _ = fs::remove_dir_all(&self.dir); // still under the lock
        }
    }
}

/// Lock `dir`'s lock file, creating `dir` first when `create`; `None` when another process
/// holds it. A [`sweep`] may remove the folder between its creation and the lock: then the
/// lock is taken again on the new folder.
fn lock(dir: &Path, create: bool) -> Result<Option<fs::File>, StageError> {
    let path = dir.join(LOCK);
    for _ in 0..8 {
        if create {
            fs::create_dir_all(dir)
                .map_err(|e| StageError::Io(e, format!("creating {}", dir.display())))?;
        }
        let f = match crate::sys::open_lock_file(&path) {
            Ok(f) => f,
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StageError::Io(e, "creating the staging lock".into())),
        };
        if f.try_lock().is_err() {
            return Ok(None);
        }
        let same = match (f.metadata(), fs::symlink_metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            return Ok(Some(f));
        }
    }
    Err(StageError::Io(
        io::Error::other("it was removed while being created"),
        format!("creating {}", dir.display()),
    ))
}

/// Remove the staging folders of `op` in `dir` that no process holds (what a run killed
/// outright — SIGKILL, a power cut — left), each under its lock; also those of mlxfs
/// versions that named them `.mlxfs-<op>-<pid>-<n>` without a lock. Only for a writer that
/// never keeps its folder to resume (`restore`). Returns what was removed, for a note.
pub fn sweep(dir: &Path, op: &str) -> Vec<PathBuf> {
    let prefix = format!("{PREFIX}{op}-");
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let ours = name.to_str().is_some_and(|n| n.starts_with(&prefix));
        if !ours || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        if let Ok(Some(_held)) = lock(&path, false)
            && fs::remove_dir_all(&path).is_ok()
        {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_per_op_and_key() {
        let t = Path::new("/a/b/target");
        let p = path_for(t, "convert", "/a/b/target");
        assert_eq!(p.parent(), Some(Path::new("/a/b")));
        let n = p.file_name().unwrap().to_str().unwrap();
        assert!(n.starts_with(".mlxfs-convert-") && n.len() == ".mlxfs-convert-".len() + 16);
        assert!(is_staging_name(n));
        assert_eq!(p, path_for(t, "convert", "/a/b/target"));
        assert_ne!(p, path_for(t, "convert", "other"));
    }

    #[test]
    fn lock_resume_publish_and_sweep() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("t");
        let (mut a, resumed) = Staging::create(&target, "x", "k", |_| true).unwrap();
        assert!(!resumed);
        assert!(matches!(
            Staging::create(&target, "x", "k", |_| true),
            Err(StageError::Busy)
        ));
        fs::create_dir(a.model()).unwrap();
        fs::write(a.model().join("f"), "1").unwrap();
        let dir = a.dir().to_path_buf();
        a.keep();
        drop(a);
        assert!(dir.join("model/f").exists(), "kept");
        let (b, resumed) = Staging::create(&target, "x", "k", |_| true).unwrap();
        assert!(resumed);
        drop(b);
        assert!(!dir.exists(), "removed when dropped");
        let (mut c, _) = Staging::create(&target, "x", "k", |_| false).unwrap();
        fs::create_dir(c.model()).unwrap();
        c.publish().unwrap();
        drop(c);
        assert!(target.is_dir() && !dir.exists());
        let (mut d, _) = Staging::create(&target, "x", "k", |_| false).unwrap();
        fs::create_dir(d.model()).unwrap();
        fs::write(target.join("g"), "").unwrap();
        assert!(d.publish().is_err(), "a non-empty target stays");
        let old = tmp.path().join(".mlxfs-x-123-0000abcd");
        fs::create_dir_all(old.join("y")).unwrap();
        assert_eq!(sweep(tmp.path(), "x"), vec![old], "the held one stays");
        drop(d);
        assert!(sweep(tmp.path(), "x").is_empty());
    }
}
