//! What is mounted where, and whether it still answers: `/proc/self/mountinfo` for the mount
//! table, `statfs` (through [`crate::sys::fs_type`]) for a daemon that died.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Undo mountinfo's octal escapes (`\040` for a space, …) of a mount point field.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// The file-system type mounted at `dir` (`fuse`, `fuse.mlxfs`, …), from /proc/self/mountinfo
/// (the last mount at that point wins).
pub fn mounted_fstype(dir: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.as_os_str().as_encoded_bytes();
    let mut found = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = left.split(' ').nth(4) else {
            continue;
        };
        if unescape_mountinfo(mp) == want {
            found = right.split(' ').next().map(str::to_string);
        }
    }
    found
}

/// Does the file system at `dir` answer? `statfs` always reaches a FUSE daemon (no cache), so a
/// dead daemon shows as ENOTCONN even where cached attributes still make `stat` succeed.
pub fn fuse_alive(dir: &Path) -> bool {
    match crate::sys::fs_type(dir) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        ),
    }
}

/// Absolute form of `dir` without following a (possibly dead) mount at its end. A link at
/// its end is resolved (the kernel mounts on, and mountinfo names, the folder it leads to).
pub fn absolute(dir: &Path) -> PathBuf {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    if fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink())
        && let Ok(target) = fs::canonicalize(&abs)
    {
        return target;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .join(n),
        _ => abs,
    }
}

/// Was `e` the kernel's "this FUSE daemon is gone"?
pub fn is_disconnected(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTCONN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), b"/a b");
        assert_eq!(unescape_mountinfo("/x\\\\"), b"/x\\\\");
        assert_eq!(unescape_mountinfo("/tail\\04"), b"/tail\\04");
        assert_eq!(unescape_mountinfo("/é\\011"), "/é\t".as_bytes());
    }
}
