//! Ctrl-C, SIGTERM and SIGHUP for the commands that run Python (`run`, `convert`), wherever
//! the work is: importing, loading a model, processing a prompt, generating, or blocked in a
//! read that never returns (a FIFO where a file should be, a network disk that went away).
//!
//! The first signal asks the work to stop, three ways at once: [`STOP`] is set (read between
//! tokens and between tensors), the embedded interpreter gets a `KeyboardInterrupt` (raised at
//! its next bytecode, and a system call it is blocked in returns `EINTR`: the handler is
//! installed without `SA_RESTART`), and a Python subprocess gets SIGINT (forwarded by
//! `runtime::subprocess`). The Python code answers with an `interrupted` result.
//!
//! A *watched* job (see [`watch`]) that has not ended `grace` after the signal is abandoned:
//! the registered `on_abandon` hook says so (the command's last words: a note, a JSON
//! envelope), a Python subprocess is killed, and the process ends at once with status 130
//! ([`crate::sys::exit_now`]: no C library destructor runs, so none can hang). A second signal
//! (more than 250 ms after the first: tools and terminals deliver one stop twice) ends the
//! process at once the same way, watched or not.
//!
//! Everything a signal handler does here is async-signal-safe: atomics, `write(2)` to a pipe,
//! `kill(2)`, `_exit(2)`, and CPython's `PyErr_SetInterruptEx` (documented as safe to call
//! from a C signal handler).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Set by the first SIGINT/SIGTERM/SIGHUP: generation stops after the current token, a
/// conversion between two tensors.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The running Python subprocess (0: none), killed when the work is abandoned.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// The write end of the watchdog's pipe (-1: no watchdog yet).
static WAKE: AtomicI32 = AtomicI32::new(-1);

/// Whether the embedded interpreter can take a `KeyboardInterrupt` (set once its SIGINT
/// handler is Python's `default_int_handler`).
#[cfg(feature = "python")]
static PYTHON_INTERRUPTIBLE: AtomicBool = AtomicBool::new(false);

/// What the watchdog guards: how long a stop may take, and what to say when it gives up.
struct Watched {
    /// Tells one watch from the next.
    id: u64,
    since: Instant,
    grace: Duration,
    on_abandon: Box<dyn Fn() + Send + Sync>,
}

/// The job being watched (None: nothing to abandon; a signal only asks), and its changes.
static WATCHED: Mutex<Option<Watched>> = Mutex::new(None);
static WATCH_CHANGED: Condvar = Condvar::new();

/// The exit status of an interrupted command (128 + SIGINT, as a shell reports Ctrl-C),
/// whichever of the three signals came.
pub const INTERRUPTED_STATUS: i32 = 130;

/// How long `run` waits for Python to stop after Ctrl-C before it ends anyway.
pub const RUN_GRACE: Duration = Duration::from_secs(2);

/// Signals within this long of the first are the same stop delivered twice (`timeout -s TERM`
/// signals the command and then its process group; systemd and a closed terminal signal every
/// process of the group), not a second one.
const SAME_STOP_NS: u64 = 250_000_000;

/// When the first signal came (CLOCK_MONOTONIC, ns; 0: none yet).
static FIRST_NS: AtomicU64 = AtomicU64::new(0);

/// CLOCK_MONOTONIC in ns (clock_gettime(2) is async-signal-safe).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

extern "C" fn on_signal(_: libc::c_int) {
    let now = monotonic_ns().max(1);
    match FIRST_NS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => {}
        // The same stop again: already asked.
        Err(first) if now.saturating_sub(first) < SAME_STOP_NS => return,
        // A second signal: the user means it.
        Err(_) => abandon_now(),
    }
    STOP.store(true, Ordering::SeqCst);
    // A KeyboardInterrupt at the embedded interpreter's next bytecode (a system call it is
    // blocked in returns EINTR first: no SA_RESTART). PyErr_SetInterruptEx is
    // async-signal-safe and needs no GIL (CPython's documentation).
    #[cfg(feature = "python")]
    if PYTHON_INTERRUPTIBLE.load(Ordering::SeqCst) {
        // SAFETY: only once the interpreter is initialised (`python_interruptible`).
        unsafe { pyo3::ffi::PyErr_SetInterruptEx(libc::SIGINT) };
    }
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a static buffer to a pipe we own.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Kill the subprocess, if any, and end the process with [`INTERRUPTED_STATUS`] (from a
/// signal handler too: only async-signal-safe calls).
fn abandon_now() -> ! {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe; the pid is cleared before it is reaped.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    // Atomics and dup2(2): async-signal-safe.
    super::capture::give_back_stdio();
    let msg = b"mlxfs: interrupted\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(INTERRUPTED_STATUS)
    }
}

/// Route SIGINT, SIGTERM and SIGHUP to this module's handler (again after the embedded
/// interpreter set up its own SIGINT handler), without `SA_RESTART`, and start the watchdog
/// thread once. Idempotent.
pub fn install() {
    // SAFETY: a zeroed sigaction with a handler that only does async-signal-safe things.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let Ok((r, w)) = std::io::pipe() else { return };
        use std::os::fd::IntoRawFd;
        WAKE.store(w.into_raw_fd(), Ordering::SeqCst);
        let _ = std::thread::Builder::new()
            .name("mlxfs-stop".into())
            .spawn(move || watchdog(r));
    });
}

fn watched() -> MutexGuard<'static, Option<Watched>> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watchdog: waits for the first signal, then gives each watched job its grace from the
/// signal (or from its start, for one that starts later): past it, the job is abandoned.
fn watchdog(mut wake: std::io::PipeReader) {
    use std::io::Read;
    let mut byte = [0u8; 1];
    loop {
        match wake.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
    let signalled = Instant::now();
    let mut w = watched();
    loop {
        let Some((id, deadline)) = w.as_ref().map(|j| (j.id, j.since.max(signalled) + j.grace))
        else {
            w = WATCH_CHANGED.wait(w).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        let now = Instant::now();
        if now < deadline {
            w = WATCH_CHANGED
                .wait_timeout(w, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        if let Some(j) = w.as_ref().filter(|j| j.id == id) {
            super::capture::give_back_stdio();
            (j.on_abandon)();
            abandon();
        }
    }
}

/// Give up on the work now (not from a signal handler): kill the subprocess and end the
/// process with [`INTERRUPTED_STATUS`], stdout and stderr flushed.
fn abandon() -> ! {
    let child = CHILD.swap(0, Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) on our child, not yet reaped (the pid is cleared before that).
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    crate::sys::exit_now(INTERRUPTED_STATUS)
}

/// While the returned guard lives, a signal that the work does not answer within `grace`
/// ends the process: `on_abandon` runs first (it must not wait for a lock the work may hold:
/// use `try_lock`), then [`INTERRUPTED_STATUS`]. Dropping the guard (the work ended) ends the
/// watch. Installs the handlers ([`install`]).
pub fn watch(grace: Duration, on_abandon: impl Fn() + Send + Sync + 'static) -> WatchGuard {
    install();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    *watched() = Some(Watched {
        id: NEXT.fetch_add(1, Ordering::Relaxed),
        since: Instant::now(),
        grace,
        on_abandon: Box::new(on_abandon),
    });
    WATCH_CHANGED.notify_all();
    WatchGuard(())
}

/// See [`watch`].
pub struct WatchGuard(());

impl Drop for WatchGuard {
    fn drop(&mut self) {
        *watched() = None;
        WATCH_CHANGED.notify_all();
    }
}

/// The Python subprocess now running (`Some(pid)`), or none (`None`, before it is reaped).
pub(super) fn set_child(pid: Option<u32>) {
    CHILD.store(
        pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
        Ordering::SeqCst,
    );
}

/// The embedded interpreter's SIGINT handler is Python's `default_int_handler` now: a signal
/// may raise `KeyboardInterrupt` in it. Our handlers are put back over Python's.
#[cfg(feature = "python")]
pub(super) fn python_interruptible() {
    PYTHON_INTERRUPTIBLE.store(true, Ordering::SeqCst);
    install();
}

/// Whether a stop signal came.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
