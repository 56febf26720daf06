//! Thin, safe wrappers over the few operating-system calls mlxfs needs in more than one place
//! (file-system type, free space, PATH lookup, root check) and time arithmetic that cannot
//! overflow on whatever timestamps a disk holds.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `f_type` of a FUSE file system (linux/magic.h).
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The file-system type (`statfs` `f_type`) holding `p`. A FUSE file system whose daemon died
/// answers `ENOTCONN` (statfs is never served from the kernel's caches).
pub fn fs_type(p: &Path) -> io::Result<i64> {
    let c = c_path(p)?;
    // SAFETY: statfs into a zeroed struct with a valid NUL-terminated path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.f_type as i64)
    }
}

/// Free bytes for unprivileged writers on the file system holding `p`.
pub fn free_space(p: &Path) -> Option<u64> {
    let c = c_path(p).ok()?;
    // SAFETY: statvfs into a zeroed struct with a valid NUL-terminated path.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The most [`read_file`] reads (256 MiB: config, tokenizer and index files are far smaller).
pub const READ_FILE_MAX: u64 = 256 << 20;

/// Refuse what is not a regular file, and switch a descriptor opened non-blocking back to
/// blocking reads.
fn regular_blocking(f: std::fs::File) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // SAFETY: fcntl on a descriptor we own, clearing O_NONBLOCK for ordinary reads.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// Open `p` (links followed) without blocking on a FIFO, and only when it is a regular file:
/// the file, still non-blocking (which changes nothing for a regular file's reads), and its
/// size. One `open` and one `fstat`: this is on the path of every file `list` reads.
fn open_nonblocking(p: &Path) -> io::Result<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(p)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((f, md.len()))
}

/// Clear `O_NONBLOCK` on a descriptor.
fn set_blocking(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own, clearing O_NONBLOCK.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 && fl & libc::O_NONBLOCK != 0 {
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
}

/// Append up to `limit` bytes of `f` to `buf`; a file system that answers a non-blocking read
/// with `EAGAIN` is switched to blocking reads and asked again.
fn read_up_to(f: &mut std::fs::File, limit: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Read;
    let start = buf.len();
    loop {
        let left = limit.saturating_sub((buf.len() - start) as u64);
        match (&mut *f).take(left).read_to_end(buf) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => set_blocking(f),
            Err(e) => return Err(e),
        }
    }
}

/// Open `p` for reading without blocking on a FIFO, and only when it is a regular file (links
/// followed); the descriptor is switched back to blocking reads.
pub fn open_regular(p: &Path) -> io::Result<std::fs::File> {
    let (f, _) = open_nonblocking(p)?;
    set_blocking(&f);
    Ok(f)
}

/// The canonical path of `p`, as `std::fs::canonicalize` (realpath(3)): links followed, no
/// `.`, `..` or doubled `/`. Read as the kernel's name of an `O_PATH` descriptor
/// (`/proc/self/fd/N`): three system calls whatever the depth, where realpath(3) costs a
/// `readlink` per path component. Falls back to `fs::canonicalize` where `/proc` does not answer
/// with a plain absolute path (not mounted, or a folder removed meanwhile: `… (deleted)`).
///
/// Errors: those of opening `p` (`NotFound`, `PermissionDenied`, …), as `fs::canonicalize`.
#[cfg(target_os = "linux")]
pub fn real_path(p: &Path) -> io::Result<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    let flags = rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC;
    let fd = rustix::fs::open(p, flags, rustix::fs::Mode::empty())?;
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(t) if t.is_absolute() && !t.as_os_str().as_bytes().ends_with(b" (deleted)") => Ok(t),
        _ => std::fs::canonicalize(p),
    }
}

/// The canonical path of `p`, as `std::fs::canonicalize` (elsewhere than Linux, that is
/// what it is).
#[cfg(not(target_os = "linux"))]
pub fn real_path(p: &Path) -> io::Result<std::path::PathBuf> {
    std::fs::canonicalize(p)
}

/// At most the first `n` bytes of `p` (fewer when it is shorter). Opened without blocking
/// and read at most `n` bytes, so a FIFO or a device cannot stall or flood it; callers check
/// that it is a regular file when that matters.
pub fn read_prefix(p: &Path, n: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(p)?;
    // One read, as for any small file (a regular file answers it whole).
    use std::io::Read;
    let mut buf = vec![0u8; n];
    let got = match f.read(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            set_blocking(&f);
            f.read(&mut buf)?
        }
        r => r?,
    };
    buf.truncate(got);
    Ok(buf)
}

/// Open the regular file at the absolute, already resolved path `p` for reading, following no
/// symlink in any of its components (`openat2` with `RESOLVE_NO_SYMLINKS`; `O_NOFOLLOW` on
/// the last component where the kernel lacks it) and never blocking on a FIFO. What the mount
/// serves: a link or FIFO planted after the tree was built is refused, not followed.
pub fn open_resolved(p: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let c = c_path(p)?;
    // SAFETY: open_how is plain data; zeroed is its "no flags" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid path and an open_how of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just gave us, owned from here on.
        let f = unsafe { std::fs::File::from_raw_fd(fd as i32) };
        return regular_blocking(f);
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) {
        return Err(e);
    }
    open_nofollow(p, std::fs::OpenOptions::new().read(true))
}

/// Open `p` as `opts` say, never through a link at its last component and never waiting on a
/// FIFO; anything but a regular file is an error (a blocking descriptor is returned).
fn open_nofollow(p: &Path, opts: &mut std::fs::OpenOptions) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = opts
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(p)?;
    regular_blocking(f)
}

/// Open (creating it when missing) a lock file for `flock`, never through a link and never
/// waiting on a FIFO: anything but a regular file at `p` is an error.
pub fn open_lock_file(p: &Path) -> io::Result<std::fs::File> {
    open_nofollow(
        p,
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
    )
}

/// An existing lock file, opened to probe it: never through a link, never a FIFO.
pub fn open_existing_lock(p: &Path) -> io::Result<std::fs::File> {
    open_nofollow(p, std::fs::OpenOptions::new().read(true))
}

/// Read a file that must be a regular file and not a link (a sentinel is the workspace's own
/// file: a link to somewhere else is not read).
pub fn read_file_nofollow(p: &Path) -> io::Result<Vec<u8>> {
    if std::fs::symlink_metadata(p)?.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a link, not a file",
        ));
    }
    read_file(p)
}

/// The home folder: `HOME`, else the user's entry in the password database (as Python's
/// `expanduser` does), else `/`.
pub fn home_dir(home_var: Option<String>) -> String {
    if let Some(h) = home_var.filter(|h| !h.is_empty()) {
        return h;
    }
    // SAFETY: getpwuid_r into buffers we own; the result points into `buf`.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        ) == 0
            && !out.is_null()
            && !pw.pw_dir.is_null()
        {
            let dir = std::ffi::CStr::from_ptr(pw.pw_dir)
                .to_string_lossy()
                .into_owned();
            if dir.starts_with('/') {
                return dir;
            }
        }
    }
    "/".into()
}

/// Read a whole file that must be a regular file (links followed) of at most
/// [`READ_FILE_MAX`] bytes. Anything else on disk is an error, never a hang: a FIFO named
/// `config.json` is not waited on, a link to `/dev/zero` is not read forever, a device is not
/// touched.
pub fn read_file(p: &Path) -> io::Result<Vec<u8>> {
    let (mut f, len) = open_nonblocking(p)?;
    if len > READ_FILE_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {READ_FILE_MAX} bytes"),
        ));
    }
    // Room for the size fstat gave (a file that grew meanwhile is read up to the cap).
    let mut buf = Vec::with_capacity(len as usize + 1);
    read_up_to(&mut f, READ_FILE_MAX, &mut buf)?;
    Ok(buf)
}

/// A small file read in one `read`: up to `max - 1` bytes, without the `fstat` and the
/// end-of-file read of [`read_file`]. Opened non-blocking (a FIFO answers at once); what
/// fills all `max` bytes (a larger file, a device) is read again by [`read_file`], so the
/// answer is always `read_file`'s. For the hub's `refs/*` (41 bytes).
pub fn read_small(p: &Path, max: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(p)?;
    let mut buf = vec![0u8; max];
    match f.read(&mut buf) {
        Ok(n) if n < max && n > 0 => {
            buf.truncate(n);
            Ok(buf)
        }
        // Empty (a FIFO, an empty file), full, or not readable at once: the careful way.
        _ => read_file(p),
    }
}

/// [`read_file`] as UTF-8 text.
pub fn read_text(p: &Path) -> io::Result<String> {
    String::from_utf8(read_file(p)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Write `bytes` to a fresh file at `p` (for a temp file that is renamed into place next):
/// whatever is at `p` is removed first, and the file is created with `O_EXCL | O_NOFOLLOW`, so
/// a link planted there is never written through. `sync` flushes it to disk.
pub fn write_new(p: &Path, bytes: &[u8], sync: bool) -> io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    Ok(f)
}

/// Rename `from` to `to` unless `to` exists (`renameat2` with `RENAME_NOREPLACE`; where the
/// file system lacks it, a check and a plain rename). `AlreadyExists` when something is there.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (a, b) = (c_path(from)?, c_path(to)?);
    // SAFETY: renameat2 with two valid NUL-terminated paths relative to the current folder.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(e);
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::from(io::ErrorKind::AlreadyExists));
    }
    std::fs::rename(from, to)
}

/// Is a process with this id still running (or at least present)? `false` only when the
/// kernel says there is none (ESRCH); a pid we may not signal counts as alive.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 checks existence and permission only.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// What a directory entry is, as `stat` tells it (the `S_IFMT` bits of `st_mode`): found
/// without opening it, so a FIFO or a device is never opened to learn what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Folder,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Link,
    Other,
}

impl FileKind {
    /// The kind of a `st_mode`.
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Folder,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFLNK => FileKind::Link,
            _ => FileKind::Other,
        }
    }

    /// The kind of a file's metadata (as `stat` or `lstat` gave it).
    pub fn of(md: &std::fs::Metadata) -> FileKind {
        FileKind::from_mode(md.mode())
    }

    /// The kind in words, with its article (`a FIFO`, `a folder`), for messages such as
    /// "tokenizer.json is a FIFO, not a regular file".
    pub fn words(self) -> &'static str {
        match self {
            FileKind::File => "a regular file",
            FileKind::Folder => "a folder",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Link => "a link",
            FileKind::Other => "a special file",
        }
    }
}

/// May this process read the file `name` of the open folder `dir` (a link followed)? The
/// kernel's own permission check for the effective user (`faccessat(R_OK, AT_EACCESS)`: modes,
/// ACLs, capabilities, security modules), without opening anything. `Err` carries why not
/// (`Permission denied`, …).
pub fn can_read_at<Fd: std::os::fd::AsFd>(dir: Fd, name: &std::ffi::OsStr) -> io::Result<()> {
    use rustix::fs::{Access, AtFlags};
    Ok(rustix::fs::accessat(
        dir,
        name,
        Access::READ_OK,
        AtFlags::EACCESS,
    )?)
}

/// Is this process running as root (effective uid 0)?
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The first executable file named `bin` in `PATH`, then in the usual system folders.
pub fn find_in_path(bin: &str) -> Option<PathBuf> {
    crate::env::var_os(crate::env::PATH)
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.is_absolute())
        .chain(["/usr/local/bin".into(), "/usr/bin".into(), "/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A file's mtime in nanoseconds since the epoch, as Python's `st_mtime_ns` (saturating: a
/// timestamp centuries away can not overflow).
pub fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

/// Seconds since the epoch, negative before 1970, saturating at the `i64` range.
pub fn epoch_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// End the process now with `code`, stdout and stderr flushed, without running C library
/// destructors (`_exit(2)`, not `exit(3)`): nothing of mlxfs's needs them, and a library the
/// embedded Python loaded can hang in its own (OpenBLAS's thread shutdown at `_dl_fini` joins
/// worker threads that may never answer: `run` hung after printing its answer, 3 of 20 runs on
/// a loaded machine).
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit(2) ends the process; it never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn epoch_secs_never_wraps() {
        assert_eq!(epoch_secs(UNIX_EPOCH + Duration::from_secs(5)), 5);
        assert_eq!(epoch_secs(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }
}
