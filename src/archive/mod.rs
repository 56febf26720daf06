//! `archive` / `restore`: one reproducible file per workspace, and its verified way back.
//!
//! The format is a plain tar (GNU headers; `--zstd` wraps it in one zstd stream), written by
//! mlxfs in one canonical form and read back only in that form:
//!
//! - the first entry is the manifest `mlxfs-archive.json` ([`manifest::Manifest`]): format
//!   version, mlxfs version, the workspace's name, content hash (only when the workspace is
//!   clean), source repo and revision, and every entry that follows — folders, files (size,
//!   sha256, executable bit) and links (their target) — in the order they follow;
//! - then the workspace's folders, files and links in byte order of their paths, `.hf_cache/`
//!   and the sentinel included, OS junk (`.DS_Store`, `._*`, …) left out;
//! - every header normalised: mtime 0, uid/gid 0, no user or group name, mode 0755 for
//!   folders and executables, 0644 for other files, 0777 for links; paths over 100 bytes in
//!   GNU long-name entries; no PAX headers; the archive ends with two zero blocks.
//!
//! So the same workspace always gives the same bytes, and restore can demand exactly those
//! bytes: each header must be the one mlxfs would write for the manifest's next entry, file
//! data must have the manifest's size and sha256, padding must be zeros, nothing may follow
//! the end. Any other archive — `..` or absolute paths, links that leave the workspace,
//! devices, hard links, duplicate or unlisted entries, a manifest that lies, a truncated file,
//! one flipped byte — is refused with an error naming what is wrong, before anything is
//! renamed into place. Restore writes only into a staging folder it created next to the
//! target (never through a link: parents are folders it made, files are created with
//! `O_EXCL | O_NOFOLLOW`), checks the content hash against the sentinel, and renames.
//!
//! Both directions stream with fixed buffers: the bytes of a file are read once, written, and
//! hashed on a second thread ([`pipe`]) while the next chunk is read.
//!
//! Layering: a core module — it knows files and the `hash` module, never the CLI; progress
//! and Ctrl-C come in through [`Progress`].

pub mod manifest;
mod pipe;
pub mod read;
pub mod tarfmt;
pub mod write;

use std::io;

use crate::error::{Diagnostic, ErrorType};

pub use manifest::Manifest;
pub use read::{Restored, open};
pub use write::{Archived, Options, Plan};

/// How the tar stream is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar (the default: weights barely compress).
    None,
    /// One zstd stream (with its checksum) around the tar.
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }
}

/// The first bytes of a zstd frame: restore tells compression by these, never by the name.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Receives progress and answers "stop?" (Ctrl-C); called once per chunk.
pub trait Progress: Sync {
    /// `n` more bytes of file data were archived or restored.
    fn advance(&self, _n: u64) {}
    /// Stop as soon as possible (what was written is removed).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Shows nothing, never stops.
pub struct Silent;
impl Progress for Silent {}

/// What went wrong, by what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not an mlxfs archive, a damaged one, or a hostile one.
    Invalid,
    /// An archive of a newer format than this mlxfs reads.
    Unsupported,
    /// The workspace does not match its sentinel's content hash (or has none).
    Modified,
    /// The workspace holds something an archive cannot carry (a FIFO, a device, a link that
    /// leaves it, a name that is not UTF-8).
    Unarchivable,
    /// The output file or the restore target is in the way.
    Target,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    DiskFull,
    Permission,
    Io,
}

/// An error of `archive` or `restore`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ArchiveError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

/// The advice of a `disk_full` ([`ArchiveError::io`]).
const DISK_FULL_HINT: &str = "Free some space, or write somewhere else, and run the command again.";
/// The kinds of `disk_full`, `permission_denied` and `io_error` ([`crate::error::io_type`]).
const IO_KINDS: [ErrorKind; 3] = [ErrorKind::DiskFull, ErrorKind::Permission, ErrorKind::Io];

impl ArchiveError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ArchiveError {
        ArchiveError {
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, h: impl Into<String>) -> ArchiveError {
        self.hint = Some(h.into());
        self
    }
    /// A refused archive: `what` is wrong with it.
    pub fn invalid(what: impl Into<String>) -> ArchiveError {
        ArchiveError::new(ErrorKind::Invalid, what).hint(
            "The archive is damaged, altered, or was not written by `mlxfs archive`; nothing was restored.",
        )
    }
    /// Classify a local I/O error ([`crate::error::io_type`]); `what` says what was being
    /// done.
    pub fn io(e: &io::Error, what: &str) -> ArchiveError {
        let (kind, message, hint) = crate::error::io_type(e, what, DISK_FULL_HINT, IO_KINDS);
        ArchiveError {
            kind,
            message,
            hint,
        }
    }
    pub fn interrupted() -> ArchiveError {
        ArchiveError::new(
            ErrorKind::Interrupted,
            "Interrupted: nothing was left behind",
        )
    }
}

impl Diagnostic for ArchiveError {
    fn error_type(&self) -> ErrorType {
        match self.kind {
            ErrorKind::Invalid => ErrorType::InvalidArchive,
            ErrorKind::Unsupported => ErrorType::UnsupportedArchive,
            ErrorKind::Modified => ErrorType::WorkspaceModified,
            ErrorKind::Unarchivable => ErrorType::Unarchivable,
            ErrorKind::Target => ErrorType::InvalidTargetError,
            ErrorKind::Interrupted => ErrorType::Interrupted,
            ErrorKind::DiskFull => ErrorType::DiskFull,
            ErrorKind::Permission => ErrorType::PermissionDenied,
            ErrorKind::Io => ErrorType::IoError,
        }
    }
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

pub type Result<T> = std::result::Result<T, ArchiveError>;

/// The zstd skippable frame mlxfs appends to a compressed archive: magic, length, a tag and
/// the SHA-256 of every byte before it. zstd's own checksum covers the content only; this
/// covers the frames themselves (a flipped bit in a window size or an unused header bit
/// decodes to the same bytes, and would otherwise go unnoticed). Decoders skip it.
pub mod seal {
    use sha2::{Digest, Sha256};
    use std::io::{self, Read, Write};

    /// `0x184D2A5E`: a skippable frame's magic (little-endian on disk).
    const MAGIC: u32 = 0x184D_2A5E;
    const TAG: &[u8; 12] = b"mlxfs-sha256";
    /// The whole frame: magic, size, tag, digest.
    pub const LEN: usize = 8 + TAG.len() + 32;

    /// The frame sealing `digest`.
    pub fn frame(digest: &[u8; 32]) -> [u8; LEN] {
        let mut f = [0u8; LEN];
        f[..4].copy_from_slice(&MAGIC.to_le_bytes());
        f[4..8].copy_from_slice(&((TAG.len() + 32) as u32).to_le_bytes());
        f[8..20].copy_from_slice(TAG);
        f[20..].copy_from_slice(digest);
        f
    }

    /// Hashes what it writes.
    pub struct Writer<W: Write> {
        pub inner: W,
        sha: Sha256,
    }

    impl<W: Write> Writer<W> {
        pub fn new(inner: W) -> Writer<W> {
            Writer {
                inner,
                sha: Sha256::new(),
            }
        }
        /// Append the seal; the inner writer.
        pub fn seal(mut self) -> io::Result<W> {
            let d: [u8; 32] = self.sha.finalize_reset().into();
            self.inner.write_all(&frame(&d))?;
            Ok(self.inner)
        }
    }

    impl<W: Write> Write for Writer<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.sha.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    /// Passes every byte through, hashing all but the last [`LEN`]; at the end of the input
    /// those must be the seal of the rest, else the read fails (`InvalidData`).
    pub struct Reader<R: Read> {
        inner: R,
        sha: Sha256,
        tail: Vec<u8>,
        checked: bool,
    }

    impl<R: Read> Reader<R> {
        pub fn new(inner: R) -> Reader<R> {
            Reader {
                inner,
                sha: Sha256::new(),
                tail: Vec::with_capacity(2 * LEN),
                checked: false,
            }
        }
    }

    impl<R: Read> Read for Reader<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            if n == 0 {
                if !self.checked {
                    self.checked = true;
                    let d: [u8; 32] = self.sha.finalize_reset().into();
                    if self.tail[..] != frame(&d)[..] {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the compressed archive does not match its seal (a changed byte, or not written by mlxfs)",
                        ));
                    }
                }
                return Ok(0);
            }
            // Hash what is now certainly not part of the last LEN bytes.
            let data = &buf[..n];
            if data.len() >= LEN {
                self.sha.update(&self.tail);
                self.sha.update(&data[..data.len() - LEN]);
                self.tail.clear();
                self.tail.extend_from_slice(&data[data.len() - LEN..]);
            } else {
                self.tail.extend_from_slice(data);
                if self.tail.len() > LEN {
                    let k = self.tail.len() - LEN;
                    self.sha.update(&self.tail[..k]);
                    self.tail.drain(..k);
                }
            }
            Ok(n)
        }
    }
}

/// Remove what an archive or restore killed outright (SIGKILL, a power cut) left in `dir`:
/// restore staging folders no process holds ([`crate::staging::sweep`]) and archive temp
/// files `.<name>.mlxfs-tmp-<pid>` whose process is gone. Returns what was removed, for a
/// note.
pub fn sweep_leftovers(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut removed = crate::staging::sweep(dir, "restore");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let pid = if name.starts_with('.') {
            name.rsplit_once(".mlxfs-tmp-")
                .and_then(|(_, p)| p.parse::<i32>().ok())
        } else {
            None
        };
        let Some(pid) = pid else { continue };
        if pid == std::process::id() as i32 || crate::sys::pid_alive(pid) {
            continue;
        }
        let path = e.path();
        let gone = match e.file_type() {
            Ok(t) if t.is_file() => std::fs::remove_file(&path).is_ok(),
            _ => false,
        };
        if gone {
            removed.push(path);
        }
    }
    removed
}
