//! Mount and unmount: checks with clear errors, stale-mount recovery, signals, and the
//! session loop.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{Config, MountOption, Session, SessionACL};

use super::MlxFs;
use crate::catalog::Locations;
use crate::vfs::{DaemonInfo, Vfs};

/// What `mount` was asked to do.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub dir: PathBuf,
    pub allow_other: bool,
    pub passthrough: bool,
    pub threads: usize,
}

/// A mount or unmount failure with what to do about it.
#[derive(Debug, Clone)]
pub struct MountError {
    pub kind: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl MountError {
    fn new(kind: &'static str, message: impl Into<String>, hint: Option<&str>) -> MountError {
        MountError {
            kind,
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin".into(), "/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The file-system type mounted at `dir` (`fuse`, `fuse.mlxfs`, …), from /proc/self/mountinfo.
pub fn mounted_fstype(dir: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mp = left.split(' ').nth(4)?;
        if unescape_mountinfo(mp) == want {
            found = right.split(' ').next().map(str::to_string);
        }
    }
    found
}

/// Absolute form of `dir` without following a (possibly dead) mount at its end.
fn absolute(dir: &Path) -> PathBuf {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(dir)
    };
    match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .join(n),
        _ => abs,
    }
}

/// Detach a mount at once, even when busy (lazy unmount).
pub fn lazy_unmount(dir: &Path) -> io::Result<()> {
    if is_root() {
        let c =
            std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
    }
    let bin = find_in_path("fusermount3").or_else(|| find_in_path("fusermount"));
    let Some(bin) = bin else {
        return Err(io::Error::other("fusermount3 not found"));
    };
    let out = std::process::Command::new(bin)
        .args(["-u", "-z", "--"])
        .arg(dir)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// How `umount` went.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    Clean,
    /// Busy: detached now, gone when the last open file closes.
    Lazy,
}

/// `mlxfs umount DIR`: a normal unmount, or a lazy one when the mount is busy or stale.
pub fn umount(dir: &Path) -> Result<Unmounted, MountError> {
    let dir = absolute(dir);
    let Some(fstype) = mounted_fstype(&dir) else {
        return Err(MountError::new(
            "not_mounted",
            format!("{} is not a mount point", dir.display()),
            None,
        ));
    };
    if !fstype.starts_with("fuse") {
        return Err(MountError::new(
            "not_mlxfs",
            format!("{} is a {fstype} mount, not an mlxfs one", dir.display()),
            None,
        ));
    }
    let plain = if is_root() {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|e| MountError::new("invalid_path", e.to_string(), None))?;
        // SAFETY: c is a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(c.as_ptr(), 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    } else {
        match find_in_path("fusermount3").or_else(|| find_in_path("fusermount")) {
            Some(bin) => match std::process::Command::new(bin)
                .args(["-u", "--"])
                .arg(&dir)
                .output()
            {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(io::Error::other(
                    String::from_utf8_lossy(&o.stderr).trim().to_string(),
                )),
                Err(e) => Err(e),
            },
            None => Err(io::Error::other("fusermount3 not found")),
        }
    };
    match plain {
        Ok(()) => Ok(Unmounted::Clean),
        Err(_) => lazy_unmount(&dir).map(|_| Unmounted::Lazy).map_err(|e| {
            MountError::new(
                "unmount_failed",
                format!("cannot unmount {}: {e}", dir.display()),
                Some("try `fusermount3 -uz DIR` or, as root, `umount -l DIR`"),
            )
        }),
    }
}

/// Does the file system at `dir` answer? `statfs` always reaches a FUSE daemon (no cache), so a
/// dead daemon shows as ENOTCONN even where cached attributes still make `stat` succeed.
fn fuse_alive(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct with a valid NUL-terminated path.
    let rc = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st)
    };
    let err = io::Error::last_os_error().raw_os_error();
    !(rc != 0 && matches!(err, Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)))
}

fn clear_stale(dir: &Path) -> Result<(), MountError> {
    eprintln!(
        "mlxfs: {} is a stale mount (its daemon died); clearing it",
        dir.display()
    );
    lazy_unmount(dir).map_err(|e| {
        MountError::new(
            "stale_mount",
            format!("cannot clear the stale mount at {}: {e}", dir.display()),
            Some("run `fusermount3 -uz DIR` (or `umount -l DIR` as root)"),
        )
    })
}

/// Check that `dir` can be mounted on (clearing a stale mount left by a killed daemon).
pub fn check_mountpoint(dir: &Path) -> Result<(), MountError> {
    prepare_mountpoint(&absolute(dir))
}

/// Check `dir` is a usable mount point; clear a stale mount left by a killed daemon.
fn prepare_mountpoint(dir: &Path) -> Result<(), MountError> {
    if mounted_fstype(dir).is_some_and(|t| t.starts_with("fuse")) && !fuse_alive(dir) {
        clear_stale(dir)?;
        return prepare_mountpoint(dir);
    }
    match fs::metadata(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            clear_stale(dir)?;
            return prepare_mountpoint(dir);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MountError::new(
                "mountpoint_missing",
                format!("{} does not exist", dir.display()),
                Some("create it first: mkdir -p DIR"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(MountError::new(
                "permission_denied",
                format!("cannot access {}: {e}", dir.display()),
                None,
            ));
        }
        Err(e) => {
            return Err(MountError::new(
                "mountpoint_error",
                format!("{}: {e}", dir.display()),
                None,
            ));
        }
        Ok(md) if !md.is_dir() => {
            return Err(MountError::new(
                "mountpoint_not_dir",
                format!("{} is not a folder", dir.display()),
                None,
            ));
        }
        Ok(_) => {}
    }
    if let Some(t) = mounted_fstype(dir) {
        return Err(MountError::new(
            "already_mounted",
            format!("{} is already a mount point ({t})", dir.display()),
            Some("unmount it first: mlxfs umount DIR"),
        ));
    }
    let mut rd = fs::read_dir(dir).map_err(|e| {
        MountError::new(
            "permission_denied",
            format!("cannot read {}: {e}", dir.display()),
            None,
        )
    })?;
    if rd.next().is_some() {
        return Err(MountError::new(
            "mountpoint_not_empty",
            format!("{} is not empty", dir.display()),
            Some("mount on an empty folder (mlxfs never hides files under a mount)"),
        ));
    }
    Ok(())
}

fn kernel_supports_passthrough() -> bool {
    let Ok(rel) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut it = rel
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (6, 9)
}

/// Block SIGINT/SIGTERM in this thread (and every thread it spawns), and return a thread that
/// waits for them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask manipulation on a zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Raise the mount's readahead to 1 MiB (root only) so reads through the daemon arrive as
/// large requests; the kernel offers 128 KiB by default and fuser can only lower it. Runs on
/// its own thread: the `stat` it needs is answered by the workers once the session runs.
fn spawn_tuning(dir: PathBuf) {
    if !is_root() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("mlxfs-tune".into())
        .spawn(move || {
            use std::os::unix::fs::MetadataExt;
            let Ok(md) = fs::metadata(&dir) else { return };
            let dev = md.dev();
            let (major, minor) = (libc::major(dev), libc::minor(dev));
            let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
            let _ = fs::write(knob, "1024");
        });
}

/// Mount and serve until unmounted or signalled. Prints a line once the mount is ready.
pub fn mount(loc: Locations, opts: &MountOptions) -> Result<(), MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::new(
            "fuse_unavailable",
            "/dev/fuse does not exist",
            Some("load the FUSE module (modprobe fuse) and install fuse3 (apt-get install fuse3)"),
        ));
    }
    if !is_root() && find_in_path("fusermount3").is_none() && find_in_path("fusermount").is_none() {
        return Err(MountError::new(
            "fusermount_missing",
            "fusermount3 is not installed",
            Some("install fuse3 (apt-get install fuse3), or mount as root"),
        ));
    }
    let dir = absolute(&opts.dir);
    prepare_mountpoint(&dir)?;

    let passthrough = Arc::new(AtomicBool::new(
        opts.passthrough && is_root() && kernel_supports_passthrough(),
    ));
    let mode = |p: bool| if p { "passthrough" } else { "daemon" }.to_string();
    let vfs = Arc::new(Vfs::new(
        loc,
        DaemonInfo {
            mountpoint: dir.clone(),
            read_mode: mode(passthrough.load(Ordering::Relaxed)),
            mounted_at: SystemTime::now(),
        },
    ));
    let models = vfs.tree().models.len();
    let sigset = block_signals();

    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("mlxfs".into()),
        MountOption::Subtype("mlxfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    cfg.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    cfg.n_threads = Some(opts.threads.max(1));
    cfg.clone_fd = true;

    let fs = MlxFs::new(vfs.clone(), passthrough.clone());
    let mut session = Session::new(fs, &dir, &cfg).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => MountError::new(
            "permission_denied",
            format!("not allowed to mount on {}: {e}", dir.display()),
            Some("check that you own DIR and can open /dev/fuse; --allow-other needs user_allow_other in /etc/fuse.conf"),
        ),
        _ => MountError::new("mount_failed", format!("cannot mount on {}: {e}", dir.display()), None),
    })?;
    // init has run: the kernel may have refused passthrough.
    vfs.info
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .read_mode = mode(passthrough.load(Ordering::Relaxed));

    let stop = Arc::new(AtomicBool::new(false));
    let refresher = super::watch::spawn(vfs.clone(), session.notifier(), stop.clone())
        .map_err(|e| MountError::new("mount_failed", e.to_string(), None))?;
    let mut unmounter = session.unmount_callable();
    let sig_dir = dir.clone();
    std::thread::Builder::new()
        .name("mlxfs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on the set blocked above.
            unsafe { libc::sigwait(&sigset, &mut sig) };
            if unmounter.unmount().is_err() {
                let _ = lazy_unmount(&sig_dir);
            }
            // Busy mounts end when their last file closes; do not wait for that.
            std::thread::sleep(Duration::from_millis(900));
            std::process::exit(0);
        })
        .map_err(|e| MountError::new("mount_failed", e.to_string(), None))?;

    spawn_tuning(dir.clone());
    eprintln!(
        "mlxfs: {models} models mounted at {} (reads: {}); Ctrl-C or `mlxfs umount {}` to unmount",
        dir.display(),
        mode(passthrough.load(Ordering::Relaxed)),
        dir.display()
    );
    let res = session.run();
    stop.store(true, Ordering::Relaxed);
    let _ = refresher.join();
    res.map_err(|e| MountError::new("session_failed", e.to_string(), None))
}

/// Start a detached copy of this process that mounts, and wait until the mount answers.
pub fn daemonize(args: &[OsString], dir: &Path, log: &Path) -> Result<u32, MountError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .map_err(|e| MountError::new("mount_failed", e.to_string(), None))?;
    if let Some(p) = log.parent() {
        let _ = fs::create_dir_all(p);
    }
    let logf = fs::File::create(log).map_err(|e| {
        MountError::new(
            "mount_failed",
            format!("cannot write {}: {e}", log.display()),
            None,
        )
    })?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args.iter().skip(1).filter(|a| *a != "--daemon"))
        .env("MLXFS_DAEMON_CHILD", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(logf);
    // SAFETY: setsid is async-signal-safe; it detaches the child from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| MountError::new("mount_failed", e.to_string(), None))?;
    let dir = absolute(dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log_text = fs::read_to_string(log).unwrap_or_default();
            return Err(MountError::new(
                "mount_failed",
                format!("the mount daemon exited ({status}):\n{}", log_text.trim()),
                None,
            ));
        }
        if mounted_fstype(&dir).is_some()
            && fs::metadata(dir.join(crate::vfs::META_DIR).join("status.json")).is_ok()
        {
            return Ok(child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(MountError::new(
        "mount_failed",
        format!(
            "the mount at {} did not come up in 30 s; see {}",
            dir.display(),
            log.display()
        ),
        None,
    ))
}
