//! Mounting: checks with clear errors (no /dev/fuse, no fusermount3, a missing, non-empty or
//! already mounted folder), clearing a stale mount left by a killed daemon, the fuser session,
//! and the threads around it (refresher, signals, readahead tuning).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use fuser::{Config, MountOption, Session, SessionACL};

use super::MlxFs;
use super::daemon::{block_signals, spawn_signal_thread};
use super::probe::{absolute, fuse_alive, is_disconnected, mounted_fstype};
use super::unmount::lazy_unmount;
use crate::catalog::Locations;
use crate::sys;
use crate::vfs::{DaemonInfo, ReadMode, Vfs};

/// What `mount` was asked to do.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub dir: PathBuf,
    pub allow_other: bool,
    pub passthrough: bool,
    pub threads: usize,
}

pub use super::error::{MountError, MountErrorKind};
use MountErrorKind as K;

fn clear_stale(dir: &Path) -> Result<(), MountError> {
    eprintln!(
        "mlxfs: {} is a stale mount (its daemon died); clearing it",
        dir.display()
    );
    lazy_unmount(dir).map_err(|e| {
        MountError::new(
            K::StaleMount,
            format!("cannot clear the stale mount at {}: {e}", dir.display()),
            Some("run `fusermount3 -uz DIR` (or `umount -l DIR` as root)"),
        )
    })
}

/// Check that `dir` can be mounted on (clearing a stale mount left by a killed daemon).
pub fn check_mountpoint(dir: &Path, loc: &Locations) -> Result<(), MountError> {
    let dir = absolute(dir);
    prepare_mountpoint(&dir)?;
    check_outside_sources(&dir, loc)
}

/// The mount point must lie outside the folders the mount shows, and they outside it: a
/// mount inside the workspace home (or a model folder, or the hub cache) is found by the
/// daemon's own walk, which then waits on its own mount — and so does every `list` of that
/// home, unkillably, until the connection is aborted. Paths are compared resolved (links
/// followed) where they exist, else as written made absolute.
fn check_outside_sources(dir: &Path, loc: &Locations) -> Result<(), MountError> {
    let real = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| absolute(p));
    let mnt = real(dir);
    let roots = std::iter::once(loc.hub_cache.as_path()).chain(loc.workspace_homes());
    for root in roots {
        let r = real(root);
        let what = if mnt.starts_with(&r) {
            "inside"
        } else if r.starts_with(&mnt) {
            "above"
        } else {
            continue;
        };
        return Err(MountError::new(
            K::MountpointInSources,
            format!(
                "{} is {what} {}, a folder the mount shows: the daemon would read its own mount",
                dir.display(),
                root.display()
            ),
            Some("mount on a folder outside the hub cache and the workspace homes"),
        ));
    }
    Ok(())
}

/// Check `dir` is a usable mount point; clear a stale mount left by a killed daemon.
fn prepare_mountpoint(dir: &Path) -> Result<(), MountError> {
    if mounted_fstype(dir).is_some_and(|t| t.starts_with("fuse")) && !fuse_alive(dir) {
        clear_stale(dir)?;
        return prepare_mountpoint(dir);
    }
    match fs::metadata(dir) {
        Err(e) if is_disconnected(&e) => {
            clear_stale(dir)?;
            return prepare_mountpoint(dir);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MountError::new(
                K::MountpointMissing,
                format!("{} does not exist", dir.display()),
                Some("create it first: mkdir -p DIR"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(MountError::new(
                K::PermissionDenied,
                format!("cannot access {}: {e}", dir.display()),
                None,
            ));
        }
        Err(e) => {
            return Err(MountError::new(
                K::MountpointError,
                format!("{}: {e}", dir.display()),
                None,
            ));
        }
        Ok(md) if !md.is_dir() => {
            return Err(MountError::new(
                K::MountpointNotDir,
                format!("{} is not a folder", dir.display()),
                None,
            ));
        }
        Ok(_) => {}
    }
    if let Some(t) = mounted_fstype(dir) {
        return Err(MountError::new(
            K::AlreadyMounted,
            format!("{} is already a mount point ({t})", dir.display()),
            Some("unmount it first: mlxfs umount DIR"),
        ));
    }
    let mut rd = fs::read_dir(dir).map_err(|e| {
        MountError::new(
            K::PermissionDenied,
            format!("cannot read {}: {e}", dir.display()),
            None,
        )
    })?;
    if rd.next().is_some() {
        return Err(MountError::new(
            K::MountpointNotEmpty,
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

/// Raise the mount's readahead to 1 MiB (root only) so reads through the daemon arrive as
/// large requests; the kernel offers 128 KiB by default and fuser can only lower it. Runs on
/// its own thread: the `stat` it needs is answered by the workers once the session runs.
fn spawn_tuning(dir: PathBuf) {
    if !sys::is_root() {
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
            K::FuseUnavailable,
            "/dev/fuse does not exist",
            Some("load the FUSE module (modprobe fuse) and install fuse3 (apt-get install fuse3)"),
        ));
    }
    if !sys::is_root()
        && sys::find_in_path("fusermount3").is_none()
        && sys::find_in_path("fusermount").is_none()
    {
        return Err(MountError::new(
            K::FusermountMissing,
            "fusermount3 is not installed",
            Some("install fuse3 (apt-get install fuse3), or mount as root"),
        ));
    }
    let dir = absolute(&opts.dir);
    prepare_mountpoint(&dir)?;
    check_outside_sources(&dir, &loc)?;

    // Why every file will be read through the daemon, when so (status.json `read_mode_why`).
    let no_passthrough = if !opts.passthrough {
        Some("--no-passthrough".to_string())
    } else if !sys::is_root() {
        Some("passthrough needs CAP_SYS_ADMIN: the daemon does not run as root".to_string())
    } else if !kernel_supports_passthrough() {
        Some("the kernel is older than Linux 6.9 (no FUSE passthrough)".to_string())
    } else {
        None
    };
    let passthrough = Arc::new(AtomicBool::new(no_passthrough.is_none()));
    let mode = |p: bool| {
        if p {
            ReadMode::Passthrough
        } else {
            ReadMode::Daemon
        }
    };
    // Names down to the model folders only: the root answers as soon as the mount is up;
    // the refresher builds the full tree first thing (requests below the root wait for it).
    let vfs = Arc::new(Vfs::new_partial(
        loc,
        DaemonInfo {
            mountpoint: dir.clone(),
            read_mode: mode(passthrough.load(Ordering::Relaxed)),
            mounted_at: SystemTime::now(),
            refresh_error: None,
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
            K::PermissionDenied,
            format!("not allowed to mount on {}: {e}", dir.display()),
            Some("check that you own DIR and can open /dev/fuse; --allow-other needs user_allow_other in /etc/fuse.conf"),
        ),
        _ => MountError::new(K::MountFailed, format!("cannot mount on {}: {e}", dir.display()), None),
    })?;
    // init has run: the kernel may have refused passthrough.
    let granted = passthrough.load(Ordering::Relaxed);
    vfs.set_read_mode(
        mode(granted),
        no_passthrough.or_else(|| {
            (!granted).then(|| "the kernel did not grant FUSE passthrough at init".to_string())
        }),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let notifier = session.notifier();
    let sink: crate::vfs::watch::Sink =
        Box::new(move |changes| send_invalidations(&notifier, changes));
    let refresher = crate::vfs::watch::spawn(vfs.clone(), sink, stop.clone())
        .map_err(|e| MountError::new(K::MountFailed, e.to_string(), None))?;
    let mut unmounter = session.unmount_callable();
    let sig_dir = dir.clone();
    spawn_signal_thread(sigset, move || {
        if unmounter.unmount().is_err() {
            let _ = lazy_unmount(&sig_dir);
        }
    })
    .map_err(|e| MountError::new(K::MountFailed, e.to_string(), None))?;

    spawn_tuning(dir.clone());
    let shown = crate::text::one_line(&dir.to_string_lossy()).into_owned();
    eprintln!(
        "mlxfs: {models} {} mounted at {shown} (reads: {}); Ctrl-C or `mlxfs umount {}` to unmount",
        if models == 1 { "model" } else { "models" },
        mode(passthrough.load(Ordering::Relaxed)).as_str(),
        crate::text::shell_quote(&shown)
    );
    let res = session.run();
    stop.store(true, Ordering::Relaxed);
    // The refresher sees `stop` within a quarter second; never wait on it much longer (a
    // rescan in progress is dropped with the process).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !refresher.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    res.map_err(|e| MountError::new(K::SessionFailed, e.to_string(), None))
}

/// Send the kernel what a refresh changed (the refresher's sink). Errors (e.g. ENOENT for
/// names the kernel never cached) are expected and ignored.
fn send_invalidations(notifier: &fuser::Notifier, changes: &[crate::vfs::Invalidation]) {
    use crate::vfs::Invalidation;
    use fuser::INodeNo;
    for c in changes {
        let _ = match c {
            Invalidation::Entry { parent, name } => notifier.inval_entry(INodeNo(*parent), name),
            Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
        };
    }
}
