//! Unmounting: `umount2` as root, else `fusermount3 -u` (written once, here), and lazily
//! (detach now, gone when the last open file closes) when the mount is busy or stale.

use std::io;
use std::path::Path;

use super::error::{MountError, MountErrorKind as K};
use super::probe::{absolute, mounted_fstype};
use crate::sys;

/// How `umount` went.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    Clean,
    /// Busy: detached now, gone when the last open file closes.
    Lazy,
}

/// `umount2(dir, flags)` as root, else `fusermount3 -u [-z] -- dir`.
fn unmount(dir: &Path, lazy: bool) -> io::Result<()> {
    if sys::is_root() {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
            return Ok(());
        }
        if !lazy {
            return Err(io::Error::last_os_error());
        }
    }
    let bin = sys::find_in_path("fusermount3")
        .or_else(|| sys::find_in_path("fusermount"))
        .ok_or_else(|| io::Error::other("fusermount3 not found"))?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(dir).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Detach a mount at once, even when busy (lazy unmount).
pub fn lazy_unmount(dir: &Path) -> io::Result<()> {
    unmount(dir, true)
}

/// `mlxfs umount DIR`: a normal unmount, or a lazy one when the mount is busy or stale.
pub fn umount(dir: &Path) -> Result<Unmounted, MountError> {
    let dir = absolute(dir);
    let Some(fstype) = mounted_fstype(&dir) else {
        return Err(MountError::new(
            K::NotMounted,
            format!("{} is not a mount point", dir.display()),
            None,
        ));
    };
    if !fstype.starts_with("fuse") {
        return Err(MountError::new(
            K::NotMlxfs,
            format!("{} is a {fstype} mount, not an mlxfs one", dir.display()),
            None,
        ));
    }
    match unmount(&dir, false) {
        Ok(()) => Ok(Unmounted::Clean),
        Err(_) => lazy_unmount(&dir).map(|_| Unmounted::Lazy).map_err(|e| {
            MountError::new(
                K::UnmountFailed,
                format!("cannot unmount {}: {e}", dir.display()),
                Some("try `fusermount3 -uz DIR` or, as root, `umount -l DIR`"),
            )
        }),
    }
}
