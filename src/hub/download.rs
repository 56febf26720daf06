//! Resumable, verified downloads of remote files to local paths.
//!
//! Each file goes to a partial path first. A partial file left by an earlier run is continued
//! with a ranged request from its length. A writer thread per file writes and hashes while the
//! network side reads, so hashing overlaps the transfer; the finished file must match the
//! hub's object id (sha256 for LFS files, the git blob id otherwise) before it is renamed to
//! its final path. Transient failures (network, 5xx, stalls past the read timeout) are retried
//! from where the bytes stopped.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::client::{Ctx, RemoteFile, from_hf};
use super::progress::Progress;
use super::{ErrorKind, Hub, HubError, Result};

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Job {
    pub file: RemoteFile,
    /// Where the bytes accumulate (kept between runs).
    pub partial: PathBuf,
    /// Where the verified file ends up.
    pub dest: PathBuf,
    /// A lock file to hold (flock) while this file is written, shared with other tools.
    pub lock: Option<PathBuf>,
}

/// How many files download at once (huggingface_hub's default is 8).
pub const WORKERS: usize = 8;

/// `MLXFS_HUB_RETRIES` (default 3): retries of a transiently failed download.
fn retries() -> u32 {
    crate::env::var(crate::env::MLXFS_HUB_RETRIES)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(3)
}

/// Download every job (already complete destinations are skipped), `WORKERS` at a time.
pub fn fetch_all(
    hub: &Hub,
    repo: &str,
    commit: &str,
    jobs: &[Job],
    progress: &dyn Progress,
) -> Result<()> {
    let live = Arc::new(AtomicUsize::new(0));
    let res = hub.rt.block_on(async {
        let mut s = futures::stream::iter(jobs.iter())
            .map(|j| fetch_one(hub, repo, commit, j, progress, &live))
            .buffer_unordered(WORKERS);
        while let Some(r) = s.next().await {
            r?;
        }
        Ok(())
    });
    // Writer threads of cancelled downloads finish their last chunk; wait so callers may
    // clean up after a failure without racing them.
    for _ in 0..250 {
        if live.load(Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    res
}

/// A held lock (released when dropped).
pub(crate) struct Held(#[allow(dead_code)] Option<File>);

fn open_lock(path: &Path) -> Result<File> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)
            .map_err(|e| HubError::io(&e, &format!("creating {}", p.display())))?;
    }
    crate::sys::open_lock_file(path)
        .map_err(|e| HubError::io(&e, &format!("opening lock {}", path.display())))
}

/// Take the lock if nobody holds it (an exclusive `flock`, as huggingface_hub's `filelock`).
fn try_lock(f: &File) -> bool {
    f.try_lock().is_ok()
}

/// Wait for the lock.
fn wait_lock(f: &File) -> bool {
    f.lock().is_ok()
}

/// Hold an exclusive flock on `path` (created if missing), waiting while another process has
/// it. Blocking: for use outside the download runtime.
pub(crate) fn lock(path: &Path, progress: &dyn Progress) -> Result<Held> {
    let f = open_lock(path)?;
    if !try_lock(&f) {
        progress.note(&format!(
            "waiting for another process holding {}",
            path.display()
        ));
        if !wait_lock(&f) {
            return Err(HubError::new(
                ErrorKind::Io,
                format!("cannot lock {}", path.display()),
            ));
        }
    }
    Ok(Held(Some(f)))
}

/// [`lock`] for a download task: the wait happens on a blocking thread, so the other
/// downloads keep streaming meanwhile.
async fn lock_async(path: &Path, progress: &dyn Progress) -> Result<Held> {
    let f = open_lock(path)?;
    if try_lock(&f) {
        return Ok(Held(Some(f)));
    }
    progress.note(&format!(
        "waiting for another download holding {}",
        path.display()
    ));
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || wait_lock(&f).then_some(f))
        .await
        .ok()
        .flatten()
        .map(|f| Held(Some(f)))
        .ok_or_else(|| HubError::new(ErrorKind::Io, format!("cannot lock {shown}")))
}

async fn fetch_one(
    hub: &Hub,
    repo: &str,
    commit: &str,
    job: &Job,
    progress: &dyn Progress,
    live: &Arc<AtomicUsize>,
) -> Result<()> {
    let f = &job.file;
    let complete = || fs::metadata(&job.dest).is_ok_and(|m| m.is_file() && m.len() == f.size);
    if complete() {
        progress.advance(f.size);
        return Ok(());
    }
    let _held = match &job.lock {
        Some(l) => lock_async(l, progress).await?,
        None => Held(None),
    };
    // Someone else may have finished it while we waited.
    if complete() {
        progress.advance(f.size);
        return Ok(());
    }
    if let Some(p) = job.partial.parent() {
        fs::create_dir_all(p)
            .map_err(|e| HubError::io(&e, &format!("creating {}", p.display())))?;
    }
    let mut attempt = 0;
    let mut counted = 0u64;
    loop {
        let r = attempt_one(hub, repo, commit, job, progress, live, &mut counted).await;
        match r {
            Ok(()) => break,
            Err(e) if e.kind.transient() && attempt < retries() => {
                attempt += 1;
                progress.note(&format!(
                    "{}: {} — retrying ({attempt}/{})",
                    f.path,
                    e.message,
                    retries()
                ));
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(4))).await;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(p) = job.dest.parent() {
        fs::create_dir_all(p)
            .map_err(|e| HubError::io(&e, &format!("creating {}", p.display())))?;
    }
    fs::rename(&job.partial, &job.dest)
        .map_err(|e| HubError::io(&e, &format!("moving {} into place", f.path)))?;
    Ok(())
}

/// The hub's object id of a file's bytes, computed as they stream: sha256 for LFS files, the
/// git blob id (`sha1("blob <size>\0" + bytes)`) otherwise. The listing guarantees that a
/// `RemoteFile`'s etag has this form, so every download is verified.
pub(crate) enum ObjectId {
    Sha256(Sha256),
    Git(Sha1),
}

impl ObjectId {
    pub(crate) fn new(lfs: bool, size: u64) -> ObjectId {
        if lfs {
            ObjectId::Sha256(Sha256::new())
        } else {
            let mut h = Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            ObjectId::Git(h)
        }
    }
    pub(crate) fn update(&mut self, b: &[u8]) {
        match self {
            ObjectId::Sha256(h) => h.update(b),
            ObjectId::Git(h) => h.update(b),
        }
    }
    pub(crate) fn finish(self) -> String {
        match self {
            ObjectId::Sha256(h) => super::hex(&h.finalize()),
            ObjectId::Git(h) => super::hex(&h.finalize()),
        }
    }
}

/// Write + hash on a thread: seeds the hash with the bytes already in `partial`, then appends
/// every chunk it receives. Returns the final length and digest.
fn spawn_writer(
    partial: PathBuf,
    file: RemoteFile,
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    ready: tokio::sync::oneshot::Sender<()>,
    live: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<std::io::Result<(u64, String)>> {
    live.fetch_add(1, Ordering::SeqCst);
    std::thread::spawn(move || {
        let r = (|| {
            // Never through a link: a partial file is ours or huggingface_hub's, a link
            // planted in its place is refused (ELOOP) rather than written through.
            let out = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&partial)?;
            let mut have = out.metadata()?.len();
            if have > file.size {
                out.set_len(0)?;
                have = 0;
            }
            let mut h = ObjectId::new(file.lfs, file.size);
            if have > 0 {
                let mut r = File::open(&partial)?.take(have);
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            // Only now may the request start: a long re-hash of a big partial must not
            // leave a response unread past the read timeout.
            let _ = ready.send(());
            let mut len = have;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
            loop {
                // Batch writes while chunks queue up; flush whenever the network is behind,
                // so the partial file on disk is as long as what was received.
                let chunk = match rx.try_recv() {
                    Ok(c) => c,
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                        w.flush()?;
                        match rx.blocking_recv() {
                            Some(c) => c,
                            None => break,
                        }
                    }
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
                };
                w.write_all(&chunk)?;
                h.update(&chunk);
                len += chunk.len() as u64;
            }
            w.flush()?;
            Ok((len, h.finish()))
        })();
        live.fetch_sub(1, Ordering::SeqCst);
        r
    })
}

async fn attempt_one(
    hub: &Hub,
    repo: &str,
    commit: &str,
    job: &Job,
    progress: &dyn Progress,
    live: &Arc<AtomicUsize>,
    counted: &mut u64,
) -> Result<()> {
    let f = &job.file;
    let mut have = fs::metadata(&job.partial).map(|m| m.len()).unwrap_or(0);
    if have > f.size {
        have = 0; // the writer truncates
    }
    // Bytes found on disk count as progress once.
    if have > *counted {
        progress.advance(have - *counted);
        *counted = have;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let writer = spawn_writer(job.partial.clone(), f.clone(), rx, ready_tx, live.clone());
    let ctx = Ctx {
        repo,
        rev: Some(commit),
        path: Some(&f.path),
    };
    let net: Result<()> = async {
        if have >= f.size || ready_rx.await.is_err() {
            return Ok(()); // nothing to fetch, or the writer failed (reported below)
        }
        let (owner, name) = repo.split_once('/').unwrap_or(("", repo));
        let r = hub.client.model(owner, name);
        let (_, mut stream) = r
            .download_file_stream()
            .filename(f.path.clone())
            .revision(commit.to_string())
            .range(have..f.size)
            .send()
            .await
            .map_err(|e| from_hf(e, &ctx, hub))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| from_hf(e, &ctx, hub))?;
            let n = chunk.len() as u64;
            if tx.send(chunk).await.is_err() {
                break; // the writer failed; its error is reported below
            }
            progress.advance(n);
            *counted += n;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| HubError::new(ErrorKind::Io, format!("writer task: {e}")))?
        .map_err(|_| HubError::new(ErrorKind::Io, "writer thread panicked"))?;
    let (len, digest) =
        written.map_err(|e| HubError::io(&e, &format!("writing {}", job.partial.display())))?;
    net?;
    if len != f.size {
        return Err(HubError::new(
            ErrorKind::Network,
            format!("{}: the hub sent {} of {} bytes", f.path, len, f.size),
        )
        .hint("Run the same command again to resume."));
    }
    if digest != f.etag {
        let (want, d) = (&f.etag, &digest);
        let _ = fs::remove_file(&job.partial);
        *counted = 0;
        return Err(HubError::new(
            ErrorKind::Integrity,
            format!(
                "{}: downloaded bytes do not match the hub's id {want} (got {d}); the partial file was removed",
                f.path
            ),
        )
        .hint("Run the same command again to download the file afresh."));
    }
    Ok(())
}
