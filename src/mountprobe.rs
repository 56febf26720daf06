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

/// The root virtual file a `list`/`health` may be answered from: the catalog, rendered after
/// the daemon proved its tree current (see `vfs::live`).
pub const CATALOG_JSON: &str = "catalog.json";

/// The format of [`CATALOG_JSON`]; a reader refuses any other.
pub const CATALOG_FORMAT: u64 = 1;

/// Who computes an answer, as far as it can change one: the same program (the executable's
/// device, inode, size and mtime), the same user, groups and mount namespace. A mount's
/// answer is used only when its daemon's identity equals the reader's own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub version: String,
    pub program: Option<String>,
    pub euid: u32,
    pub egid: u32,
    pub groups: Vec<u32>,
    pub mount_namespace: Option<String>,
}

/// This process's [`Identity`].
pub fn identity() -> Identity {
    use std::os::unix::fs::MetadataExt;
    let program = std::fs::metadata("/proc/self/exe").ok().map(|m| {
        format!(
            "{}:{}:{}:{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        )
    });
    let mount_namespace = std::fs::read_link("/proc/self/ns/mnt")
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    // SAFETY: plain id getters; getgroups fills at most `n` entries of a buffer that large.
    let (euid, egid, mut groups) = unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut()).max(0);
        let mut g = vec![0 as libc::gid_t; n as usize];
        let got = libc::getgroups(n, g.as_mut_ptr());
        g.truncate(got.max(0) as usize);
        (libc::geteuid(), libc::getegid(), g)
    };
    groups.sort_unstable();
    groups.dedup();
    Identity {
        version: env!("CARGO_PKG_VERSION").to_string(),
        program,
        euid,
        egid,
        groups,
        mount_namespace,
    }
}
