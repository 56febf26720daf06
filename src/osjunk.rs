//! The one list of operating-system junk names: files and folders that macOS and Windows
//! file managers probe for or leave behind (AppleDouble `._*` sidecars on exFAT and network
//! drives, `.DS_Store`, Spotlight and Trash folders, `Thumbs.db`, `desktop.ini`, …).
//!
//! They are never model files. The catalog's walk of a model skips them (so health,
//! detection, `show --files` and sizes never see them, and a record's warnings count them),
//! the mount hides them and answers lookups of them with a fast ENOENT, `push` never uploads
//! them. The content hash keeps mlx-knife's own exclude patterns (`.DS_Store`, `._*`,
//! `Thumbs.db`, …) so hashes stay comparable with mlx-knife's.

use std::ffi::OsStr;

/// Is `name` (one path component) an OS junk name?
pub fn is_os_junk(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b.starts_with(b"._")
        || matches!(
            b,
            b".DS_Store"
                | b".Spotlight-V100"
                | b".Trashes"
                | b".fseventsd"
                | b".TemporaryItems"
                | b".VolumeIcon.icns"
                | b".metadata_never_index"
                | b".metadata_never_index_unless_rootfs"
                | b".hidden"
                | b".localized"
                | b".apdisk"
                | b"Icon\r"
                | b"Thumbs.db"
                | b"desktop.ini"
                | b"autorun.inf"
                | b"$RECYCLE.BIN"
        )
}
