//! Running in the background: `mount --daemon` starts a detached copy of this process (its
//! stderr is the daemon log) and waits until the mount answers; the signal thread turns
//! SIGINT/SIGTERM/SIGHUP into a clean unmount.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::{MountError, MountErrorKind as K};
use super::probe::{absolute, mounted_fstype};
use crate::env;

/// Block SIGINT, SIGTERM and SIGHUP in this thread and every thread it spawns afterwards, and
/// return the set (for [`spawn_signal_thread`]).
pub fn block_signals() -> libc::sigset_t {
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

/// A thread that waits for one of the blocked signals, runs `on_signal` (the unmount) and
/// exits the process shortly after (a busy mount ends when its last file closes; we do not
/// wait for that).
pub fn spawn_signal_thread(
    set: libc::sigset_t,
    on_signal: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("mlxfs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on a set blocked in every thread.
            unsafe { libc::sigwait(&set, &mut sig) };
            on_signal();
            std::thread::sleep(Duration::from_millis(900));
            crate::sys::exit_now(0);
        })
        .map(|_| ())
}

/// Start a detached copy of this process that mounts, and wait until the mount answers.
/// Returns the daemon's pid.
pub fn daemonize(args: &[OsString], dir: &Path, log: &Path) -> Result<u32, MountError> {
    use std::os::unix::process::CommandExt;
    let failed = |m: String| MountError::new(K::MountFailed, m, None);
    let exe = std::env::current_exe().map_err(|e| failed(e.to_string()))?;
    if let Some(p) = log.parent() {
        let _ = fs::create_dir_all(p);
    }
    // A fresh file, never through a link planted where the log goes.
    let logf = crate::sys::write_new(log, b"", false)
        .map_err(|e| failed(format!("cannot write {}: {e}", log.display())))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args.iter().skip(1).filter(|a| *a != "--daemon"))
        .env(env::MLXFS_DAEMON_CHILD, "1")
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
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    let dir = absolute(dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log_text = fs::read_to_string(log).unwrap_or_default();
            return Err(failed(format!(
                "the mount daemon exited ({status}):\n{}",
                log_text.trim()
            )));
        }
        // The root answers from the first (partial) tree: the mount is up.
        if mounted_fstype(&dir).is_some_and(|t| t.starts_with("fuse")) && fs::metadata(&dir).is_ok()
        {
            return Ok(child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(failed(format!(
        "the mount at {} did not come up in 30 s; see {}",
        dir.display(),
        log.display()
    )))
}
