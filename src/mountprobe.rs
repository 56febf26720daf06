//! Is this folder inside an mlxfs mount? The one place that knows the mount's on-disk
//! protocol (the `.mlxfs/` folder of virtual files), shared by the catalog (a path inside a
//! mount resolves to the model it shows), the virtual tree (which builds that folder) and the
//! FUSE adapter (which waits for it when it starts a daemon).

use std::path::{Path, PathBuf};

use crate::sys;

/// The folder of virtual files at the root of a mount and in every model folder of it.
pub const META_DIR: &str = ".mlxfs";

/// Is `dir` on a FUSE file system (any FUSE daemon, answering or not)?
pub fn is_fuse(dir: &Path) -> bool {
    sys::fs_type(dir).is_ok_and(|t| t == sys::FUSE_SUPER_MAGIC)
}

/// For a model folder inside an mlxfs mount (a FUSE file system whose `.mlxfs/model.json`
/// names the model), the backing folder it shows (the record's `path`). `None` for anything
/// else, including a model.json that is not the record's JSON.
pub fn mounted_model_path(dir: &Path) -> Option<PathBuf> {
    if !is_fuse(dir) {
        return None;
    }
    let bytes = sys::read_file(&dir.join(META_DIR).join("model.json")).ok()?;
    let rec: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    rec["path"]
        .as_str()
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
}
