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

/// An mlxfs mount as mountinfo shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlxfsMount {
    pub dir: PathBuf,
    /// Who mounted it (`user_id=`): only that user's reads reach the daemon.
    pub user_id: Option<u32>,
    /// Its device number (`major:minor`): a file read there must carry it (not a file of
    /// another file system mounted over it).
    pub dev: Option<u64>,
}

/// Every mlxfs mount in a mountinfo text.
pub fn mlxfs_mounts_in(info: &str) -> Vec<MlxfsMount> {
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut left = left.split(' ');
        let (Some(devno), Some(mp)) = (left.nth(2), left.nth(1)) else {
            continue;
        };
        // `fuse.mlxfs` through fusermount3; `fuse` with the source `mlxfs` when root mounts
        // directly (the kernel keeps no subtype then).
        let mut right = right.split(' ');
        let (fstype, source) = (right.next(), right.next());
        if !(fstype == Some("fuse.mlxfs") || fstype == Some("fuse") && source == Some("mlxfs")) {
            continue;
        }
        let user_id = right.next().and_then(|opts| {
            opts.split(',')
                .find_map(|o| o.strip_prefix("user_id="))
                .and_then(|v| v.parse().ok())
        });
        let dev = devno.split_once(':').and_then(|(ma, mi)| {
            let (ma, mi) = (ma.parse::<u32>().ok()?, mi.parse::<u32>().ok()?);
            Some(libc::makedev(ma, mi) as u64)
        });
        use std::os::unix::ffi::OsStringExt;
        out.push(MlxfsMount {
            dir: PathBuf::from(std::ffi::OsString::from_vec(unescape_mountinfo(mp))),
            user_id,
            dev,
        });
    }
    out
}

/// The type and mount point of the file system with device number `dev`, from a mountinfo
/// text (the first mount of it: a bind mount shows the same device again). A FUSE file system
/// mounted without a subtype (`fuse`, as root mounts it) is named with its source:
/// `fuse (mlxfs)`.
pub fn device_mount_in(info: &str, dev: u64) -> Option<(String, PathBuf)> {
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut left = left.split(' ');
        if left.nth(2)? != want {
            return None;
        }
        let mp = left.nth(1)?;
        let mut right = right.split(' ');
        let fstype = match (right.next()?, right.next()) {
            (t @ ("fuse" | "fuseblk"), Some(source)) => format!("{t} ({source})"),
            (t, _) => t.to_string(),
        };
        use std::os::unix::ffi::OsStringExt;
        Some((
            fstype,
            PathBuf::from(std::ffi::OsString::from_vec(unescape_mountinfo(mp))),
        ))
    })
}

/// [`device_mount_in`] of this process's mount table.
pub fn device_mount(dev: u64) -> Option<(String, PathBuf)> {
    device_mount_in(&fs::read_to_string("/proc/self/mountinfo").ok()?, dev)
}

/// The mlxfs mounts this process sees (see [`mlxfs_mounts_in`]).
pub fn mlxfs_mounts() -> Vec<MlxfsMount> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|i| mlxfs_mounts_in(&i))
        .unwrap_or_default()
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
    fn mlxfs_mounts_found() {
        let info = "\
36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
40 36 0:50 / /tmp/a\\040b ro,nosuid,nodev,noatime - fuse.mlxfs mlxfs ro,user_id=1000,group_id=1000,default_permissions
41 36 0:51 / /tmp/other ro - fuse.sshfs host: ro,user_id=0,group_id=0
42 36 0:52 / /tmp/c rw shared:7 - fuse.mlxfs mlxfs rw,group_id=0
44 36 0:54 / /tmp/e ro - fuse mlxfs ro,user_id=0,group_id=0,default_permissions
45 36 0:55 / /tmp/f ro - fuse other ro,user_id=0,group_id=0,default_permissions
garbage line
43 36 0:53 / /tmp/d ro - fuse.mlxfs mlxfs ro,user_id=notanumber
";
        let m = |d: &str, user_id, minor: u32| MlxfsMount {
            dir: PathBuf::from(d),
            user_id,
            dev: Some(libc::makedev(0, minor) as u64),
        };
        assert_eq!(
            mlxfs_mounts_in(info),
            vec![
                m("/tmp/a b", Some(1000), 50),
                m("/tmp/c", None, 52),
                m("/tmp/e", Some(0), 54),
                m("/tmp/d", None, 53),
            ]
        );
    }

    #[test]
    fn a_device_finds_its_mount() {
        let info = "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:52 / /tmp/a\\040b ro,nosuid - fuse mlxfs ro,user_id=0\n\
                    41 36 0:52 / /tmp/bind rw - fuse mlxfs ro,user_id=0\n";
        let dev = libc::makedev(0, 52) as u64;
        assert_eq!(
            device_mount_in(info, dev),
            Some(("fuse (mlxfs)".to_string(), PathBuf::from("/tmp/a b")))
        );
        assert_eq!(
            device_mount_in(info, libc::makedev(98, 0) as u64),
            Some(("ext3".to_string(), PathBuf::from("/mnt1")))
        );
        assert_eq!(device_mount_in(info, libc::makedev(0, 53) as u64), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), b"/a b");
        assert_eq!(unescape_mountinfo("/x\\\\"), b"/x\\\\");
        assert_eq!(unescape_mountinfo("/tail\\04"), b"/tail\\04");
        assert_eq!(unescape_mountinfo("/é\\011"), "/é\t".as_bytes());
    }
}
