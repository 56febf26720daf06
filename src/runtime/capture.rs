//! What the Python side writes outside its event channel. Libraries print to stdout and stderr
//! whatever they like — transformers asks "Do you wish to run the custom code? [y/N] " with no
//! newline — so mlxfs's stdout never carries it: each stream goes through a [`Tee`] that keeps
//! its last [`TAIL_BYTES`] (shown when the run fails) and, for stderr only, passes it on live
//! to mlxfs's stderr (warnings and progress bars appear as they happen). Tokens reach mlxfs's
//! real stdout through [`Stdout`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Bytes of each stream kept (the last ones).
pub const TAIL_BYTES: usize = 64 * 1024;
/// Lines of each stream an error shows (the last ones).
pub const TAIL_LINES: usize = 20;
/// How long the end of a run waits for a stream to close after Python is done with it (a
/// process Python started may still hold it open; it must not hold mlxfs up).
const DRAIN_WAIT: Duration = Duration::from_millis(500);

/// The last bytes of a stream.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    /// Bytes dropped from the front.
    dropped: bool,
}

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        if self.bytes.len() > 2 * TAIL_BYTES {
            let cut = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..cut);
            self.dropped = true;
        }
    }

    /// The last [`TAIL_LINES`] lines of the last [`TAIL_BYTES`] bytes, as text (invalid UTF-8
    /// replaced), without their newlines; a line cut by the byte limit is left out, a last
    /// line without a newline is kept.
    fn lines(&self) -> Vec<String> {
        let start = self.bytes.len().saturating_sub(TAIL_BYTES);
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        let mut lines: Vec<&str> = text.split('\n').collect();
        if (self.dropped || start > 0) && lines.len() > 1 {
            lines.remove(0);
        }
        if lines.last() == Some(&"") {
            lines.pop();
        }
        let skip = lines.len().saturating_sub(TAIL_LINES);
        lines[skip..].iter().map(|l| l.to_string()).collect()
    }
}

/// What the Python side wrote to its stdout and stderr: the last [`TAIL_LINES`] lines of
/// each, raw (a caller that prints them escapes them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Captured {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }

    /// `{"stdout": [lines], "stderr": [lines]}`: the `python_output` field of a run's error.
    pub fn json(&self) -> Value {
        json!({"stdout": self.stdout, "stderr": self.stderr})
    }
}

/// A thread reading a stream to its end, keeping its tail and, when given somewhere to
/// forward to, writing every byte there as it comes.
pub struct Tee {
    tail: Arc<Mutex<Tail>>,
    thread: JoinHandle<()>,
}

impl Tee {
    pub fn spawn(
        name: &str,
        mut from: impl Read + Send + 'static,
        mut forward: Option<File>,
    ) -> io::Result<Tee> {
        let tail = Arc::new(Mutex::new(Tail::default()));
        let t = tail.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut buf = vec![0u8; 8192];
                let mut open_line = false;
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    // A closed stderr stops the forwarding, never the reading (Python would
                    // block on a full pipe).
                    if let Some(f) = &mut forward
                        && f.write_all(&buf[..n]).is_err()
                    {
                        forward = None;
                    }
                    open_line = buf[n - 1] != b'\n';
                    t.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
                }
                // mlxfs's own lines that follow start on a line of their own.
                if let (Some(f), true) = (&mut forward, open_line) {
                    let _ = f.write_all(b"\n");
                }
            })?;
        Ok(Tee { tail, thread })
    }

    /// The lines kept, once the stream ended (or after a short wait: what arrives later is
    /// still forwarded, not kept).
    pub fn finish(self) -> Vec<String> {
        let deadline = Instant::now() + DRAIN_WAIT;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).lines()
    }
}

/// A new descriptor for mlxfs's stderr, to forward a child's stderr to.
pub fn stderr_copy() -> Option<File> {
    io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(File::from)
}

/// The descriptor of mlxfs's real stdout: 1, except while [`Redirect`] holds fd 1.
static STDOUT_FD: AtomicI32 = AtomicI32::new(libc::STDOUT_FILENO);
/// The same for stderr.
static STDERR_FD: AtomicI32 = AtomicI32::new(libc::STDERR_FILENO);

/// Put mlxfs's real stdout and stderr back on fd 1 and 2 now, whatever [`Redirect`] is alive
/// (for the last words of a process that abandons an embedded run: `stop.rs`). Only atomics
/// and dup2(2): safe in a signal handler.
pub fn give_back_stdio() {
    for (saved, fd) in [
        (&STDOUT_FD, libc::STDOUT_FILENO),
        (&STDERR_FD, libc::STDERR_FILENO),
    ] {
        let from = saved.load(Ordering::SeqCst);
        if from != fd {
            // SAFETY: `from` is the saved copy, open while its Redirect lives (the process
            // ends right after this call).
            unsafe { libc::dup2(from, fd) };
        }
    }
}

/// mlxfs's own stdout while Python runs: generated text goes here, never through
/// `std::io::stdout()` (fd 1 is a capture pipe during an embedded run). Unbuffered.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: writes from a valid buffer to a descriptor this process owns (1, or the
        // saved copy that lives as long as the redirect that published it).
        let n = unsafe {
            libc::write(
                STDOUT_FD.load(Ordering::SeqCst),
                buf.as_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn dup2(from: &impl AsRawFd, to: libc::c_int) -> io::Result<()> {
    // SAFETY: both descriptors are open; dup2 replaces `to` atomically.
    if unsafe { libc::dup2(from.as_raw_fd(), to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// While alive, this process's fd 1 and fd 2 are pipes read by [`Tee`]s: what the embedded
/// interpreter and the C libraries it loads write there — `print`, `os.write(1, …)`, a C
/// `printf` — is captured, not mixed into mlxfs's output. Generated text still reaches the
/// real stdout through [`Stdout`] (a saved copy of fd 1); stderr is forwarded live to a saved
/// copy of fd 2. Redirecting the descriptors, not only Python's `sys.stdout`, is what catches
/// writes that bypass Python's objects. Process-wide: one embedded run at a time.
pub struct Redirect {
    saved_out: OwnedFd,
    saved_err: OwnedFd,
    out: Tee,
    err: Tee,
}

impl Redirect {
    pub fn start() -> io::Result<Redirect> {
        let _ = io::stdout().flush();
        let saved_out = io::stdout().as_fd().try_clone_to_owned()?;
        let saved_err = io::stderr().as_fd().try_clone_to_owned()?;
        let (out_r, out_w) = io::pipe()?;
        let (err_r, err_w) = io::pipe()?;
        let out = Tee::spawn("python-stdout", out_r, None)?;
        let err = Tee::spawn(
            "python-stderr",
            err_r,
            Some(File::from(saved_err.try_clone()?)),
        )?;
        dup2(&out_w, libc::STDOUT_FILENO)?;
        if let Err(e) = dup2(&err_w, libc::STDERR_FILENO) {
            let _ = dup2(&saved_out, libc::STDOUT_FILENO);
            return Err(e);
        }
        // fd 1 and 2 are now the only write ends mlxfs holds: restoring them ends the Tees.
        drop((out_w, err_w));
        STDOUT_FD.store(saved_out.as_raw_fd(), Ordering::SeqCst);
        STDERR_FD.store(saved_err.as_raw_fd(), Ordering::SeqCst);
        Ok(Redirect {
            saved_out,
            saved_err,
            out,
            err,
        })
    }

    /// Put fd 1 and 2 back and return what was captured.
    pub fn finish(self) -> Captured {
        STDOUT_FD.store(libc::STDOUT_FILENO, Ordering::SeqCst);
        STDERR_FD.store(libc::STDERR_FILENO, Ordering::SeqCst);
        let _ = dup2(&self.saved_out, libc::STDOUT_FILENO);
        let _ = dup2(&self.saved_err, libc::STDERR_FILENO);
        drop((self.saved_out, self.saved_err));
        Captured {
            stdout: self.out.finish(),
            stderr: self.err.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_and_an_unfinished_one() {
        let mut t = Tail::default();
        t.push(b"one\ntwo\nDo you wish? [y/N] ");
        assert_eq!(t.lines(), ["one", "two", "Do you wish? [y/N] "]);
        let mut t = Tail::default();
        for i in 0..100 {
            t.push(format!("line {i}\n").as_bytes());
        }
        let l = t.lines();
        assert_eq!(l.len(), TAIL_LINES);
        assert_eq!(l.last().unwrap(), "line 99");
    }

    #[test]
    fn a_long_stream_keeps_only_whole_lines_of_its_end() {
        let mut t = Tail::default();
        let long = "x".repeat(3 * TAIL_BYTES);
        t.push(long.as_bytes());
        t.push(b"\nlast\n");
        assert!(t.bytes.len() <= 2 * TAIL_BYTES + 8);
        assert_eq!(t.lines(), ["last"]);
    }
}
