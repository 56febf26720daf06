//! `restore`: one archive → a workspace, verified, or nothing.
//!
//! [`open`] tells the compression by its first bytes, reads the manifest (its first entry)
//! and checks it; [`Opened::extract`] streams the entries into a fresh staging folder next to
//! the target, each header compared with the one mlxfs would write for the manifest's next
//! entry, each file hashed while it is written; then checks every file's sha256, where the
//! links really lead, the content hash against the sentinel and the clean check, and renames
//! the staging folder to the target. On any failure the staging folder is removed.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::manifest::{self, Entry, Kind, MANIFEST_MAX, MANIFEST_NAME, Manifest};
use super::pipe::{CHUNK, Hashing};
use super::tarfmt::{self, Found, ReadError, What};
use super::write::what;
use super::{ArchiveError, Compression, ErrorKind, Progress, Result, ZSTD_MAGIC};
use crate::hash::sentinel::{self, Clean, SentinelRead};
use crate::hash::{self, Excludes};
use crate::staging::Staging;
use crate::text::one_line;

/// The largest zstd window restore accepts (2^24 = 16 MiB; mlxfs writes at most 8 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// An archive whose manifest was read and checked.
pub struct Opened {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub compression: Compression,
    /// Size of the archive file.
    pub archive_bytes: u64,
    reader: Box<dyn Read + Send>,
    /// Content-hash v2 `sha` of each restored file, by its path in the staging folder.
    v2: HashMap<PathBuf, Option<String>>,
}

/// What was restored.
#[derive(Debug, Clone)]
pub struct Restored {
    pub target: PathBuf,
    pub manifest: Manifest,
    pub compression: Compression,
    /// The content hash, checked against the sentinel (`None`: the archive has none).
    pub content_hash: Option<String>,
}

/// A read error of the archive stream: the OS's own errors are I/O, anything else (a zstd
/// frame that does not decode, a checksum) means the archive is damaged.
fn stream_err(e: io::Error) -> ArchiveError {
    if e.raw_os_error().is_some() {
        ArchiveError::io(&e, "reading the archive")
    } else {
        ArchiveError::invalid(format!("The archive is damaged: {e}"))
    }
}

fn header_err(e: ReadError, at: &str) -> ArchiveError {
    match e {
        ReadError::Truncated => {
            ArchiveError::invalid(format!("The archive is truncated: it ends {at}"))
        }
        ReadError::Garbled(why) => ArchiveError::invalid(format!("The archive is damaged: {why}")),
        ReadError::Io(e) => stream_err(e),
    }
}

/// Open `archive` and read its manifest.
pub fn open(archive: &Path) -> Result<Opened> {
    let f = crate::sys::open_regular(archive)
        .map_err(|e| ArchiveError::io(&e, &format!("opening {}", archive.display())))?;
    let archive_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut br = BufReader::with_capacity(CHUNK, f);
    let head = br.fill_buf().map_err(stream_err)?;
    let (compression, mut reader): (Compression, Box<dyn Read + Send>) =
        if head.starts_with(&ZSTD_MAGIC) {
            let sealed = BufReader::with_capacity(CHUNK, super::seal::Reader::new(br));
            let mut d = zstd::stream::read::Decoder::with_buffer(sealed).map_err(stream_err)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(stream_err)?;
            (Compression::Zstd, Box::new(d))
        } else {
            (Compression::None, Box::new(br))
        };
    let not_ours = |why: &str| {
        ArchiveError::invalid(format!(
            "{} is not an mlxfs archive: {why}",
            archive.display()
        ))
        .hint("`mlxfs restore` reads archives written by `mlxfs archive`.")
    };
    let found = match tarfmt::read_header(&mut reader) {
        Ok(Some(f)) => f,
        Ok(None) => return Err(not_ours("it is empty")),
        Err(ReadError::Io(e)) => return Err(stream_err(e)),
        Err(_) => return Err(not_ours("it does not start with a tar header")),
    };
    if found.path != MANIFEST_NAME.as_bytes() {
        return Err(not_ours(&format!(
            "its first entry is '{}', not {MANIFEST_NAME}",
            found.path_lossy()
        )));
    }
    if found.size > MANIFEST_MAX {
        return Err(ArchiveError::invalid(format!(
            "The archive's manifest is {} bytes, more than the {MANIFEST_MAX} mlxfs reads",
            found.size
        )));
    }
    let expected = tarfmt::header_bytes(
        MANIFEST_NAME,
        What::File {
            size: found.size,
            executable: false,
        },
    );
    if found.raw != expected {
        return Err(ArchiveError::invalid(
            "The header of the archive's manifest is not the one mlxfs writes (altered archive)",
        ));
    }
    let mut text = vec![0u8; found.size as usize];
    tarfmt::read_full(&mut reader, &mut text).map_err(|e| header_err(e, "inside its manifest"))?;
    read_padding(&mut reader, found.size, MANIFEST_NAME)?;
    let manifest = Manifest::parse(&text)?;
    Ok(Opened {
        path: archive.to_path_buf(),
        manifest,
        compression,
        archive_bytes,
        reader,
        v2: HashMap::new(),
    })
}

/// The zero bytes after `size` bytes of data of `name`.
fn read_padding(r: &mut dyn Read, size: u64, name: &str) -> Result<()> {
    let mut pad = [0u8; tarfmt::BLOCK];
    let n = tarfmt::padding(size);
    match tarfmt::read_full(r, &mut pad[..n]) {
        Ok(_) if n == 0 => Ok(()),
        Ok(true) => {
            if pad[..n].iter().all(|&b| b == 0) {
                Ok(())
            } else {
                Err(ArchiveError::invalid(format!(
                    "The padding after '{}' is not zeros (altered archive)",
                    one_line(name)
                )))
            }
        }
        Ok(false) | Err(ReadError::Truncated) => Err(ArchiveError::invalid(format!(
            "The archive is truncated: it ends after '{}'",
            one_line(name)
        ))),
        Err(e) => Err(header_err(e, "")),
    }
}

impl Opened {
    /// Restore into `target` (checked by the caller: absent or an empty folder, its parent
    /// a folder). The staging folder `.mlxfs-restore-<id>/` ([`crate::staging`], named from
    /// the target) goes next to it; its `model/` becomes the target.
    pub fn extract(mut self, target: &Path, progress: &dyn Progress) -> Result<Restored> {
        let (mut stage, _) =
            Staging::create(target, "restore", &target.to_string_lossy(), |_| false).map_err(
                |e| {
                    let busy = format!("Another restore into {} is running", target.display());
                    e.into_error(
                        || ArchiveError::new(ErrorKind::Target, busy),
                        ArchiveError::io,
                    )
                },
            )?;
        let model = stage.model();
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&model)
            .map_err(|e| ArchiveError::io(&e, &format!("creating {}", model.display())))?;
        let root = fs::canonicalize(&model)
            .map_err(|e| ArchiveError::io(&e, &format!("reading {}", model.display())))?;
        self.unpack(&root, progress)?;
        let content_hash = self.verify(&root)?;
        stage.publish().map_err(|e| {
            ArchiveError::io(&e, &format!("moving the workspace to {}", target.display()))
        })?;
        Ok(Restored {
            target: target.to_path_buf(),
            manifest: self.manifest,
            compression: self.compression,
            content_hash,
        })
    }

    /// Every entry into `root`, checked against the manifest as it streams.
    fn unpack(&mut self, root: &Path, progress: &dyn Progress) -> Result<()> {
        let m = &self.manifest;
        let r = &mut self.reader;
        let v2 = &mut self.v2;
        let hashing = Hashing::new();
        for (i, e) in m.entries.iter().enumerate() {
            if progress.cancelled() {
                return Err(ArchiveError::interrupted());
            }
            let at = format!("before '{}'", one_line(&e.path));
            let found = match tarfmt::read_header(r.as_mut()) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    return Err(ArchiveError::invalid(format!(
                        "The archive is truncated: it ends before '{}' ({} of its {} entries missing)",
                        one_line(&e.path),
                        m.entries.len() - i,
                        m.entries.len()
                    )));
                }
                Err(err) => return Err(header_err(err, &at)),
            };
            if found.raw != tarfmt::header_bytes(&e.path, what(e)) {
                return Err(mismatch(&found, m, i));
            }
            let dest = root.join(&e.path);
            let made =
                |err: io::Error| ArchiveError::io(&err, &format!("creating {}", dest.display()));
            match &e.kind {
                // Parents are folders made here (the manifest lists a folder before what it
                // holds, and every path once); the last component is never followed.
                Kind::Dir => fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&dest)
                    .map_err(made)?,
                Kind::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &dest).map_err(made)?
                }
                Kind::File {
                    size, executable, ..
                } => {
                    let mut f = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(if *executable { 0o755 } else { 0o644 })
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&dest)
                        .map_err(made)?;
                    let base = e.path.rsplit('/').next().unwrap_or(&e.path).as_bytes();
                    let write_err = |err: io::Error| {
                        ArchiveError::io(&err, &format!("writing {}", dest.display()))
                    };
                    let n = hashing.copy(
                        i,
                        base,
                        *size,
                        r.as_mut(),
                        &mut f,
                        progress,
                        &stream_err,
                        &write_err,
                    )?;
                    if n < *size {
                        return Err(ArchiveError::invalid(format!(
                            "The archive is truncated: '{}' has {n} of its {size} bytes",
                            one_line(&e.path)
                        )));
                    }
                    read_padding(r.as_mut(), *size, &e.path)?;
                }
            }
        }
        match tarfmt::read_header(r.as_mut()) {
            Ok(None) => {}
            Ok(Some(found)) => return Err(mismatch(&found, m, m.entries.len())),
            Err(err) => return Err(header_err(err, "where its end marker should be")),
        }
        let mut end = [0u8; tarfmt::BLOCK];
        match tarfmt::read_full(r.as_mut(), &mut end) {
            Ok(true) if end.iter().all(|&b| b == 0) => {}
            Ok(true) => {
                return Err(ArchiveError::invalid("The archive's end marker is damaged"));
            }
            Ok(false) | Err(ReadError::Truncated) => {
                return Err(ArchiveError::invalid(
                    "The archive is truncated: its end marker is cut short",
                ));
            }
            Err(err) => return Err(header_err(err, "")),
        }
        let mut probe = [0u8; 1];
        match r.read(&mut probe) {
            Ok(0) => {}
            Ok(_) => {
                return Err(ArchiveError::invalid(
                    "The archive has data after its end (altered archive)",
                ));
            }
            Err(e) => return Err(stream_err(e)),
        }
        for (i, s) in hashing.finish() {
            if let Some(Entry {
                path,
                kind: Kind::File { size, sha256, .. },
            }) = m.entries.get(i)
                && (s.len != *size || s.sha256 != *sha256)
            {
                return Err(ArchiveError::invalid(format!(
                    "'{}' does not match the sha256 in the manifest: the archive is damaged or altered",
                    one_line(path)
                )));
            }
            v2.insert(root.join(&m.entries[i].path), s.v2);
        }
        Ok(())
    }
}

impl Opened {
    /// After every byte was checked: links lead where the manifest said (inside), the
    /// sentinel's content hash is the manifest's and the files', the workspace is clean. Sets
    /// the files' times from the sentinel's file index (the clean check compares them).
    fn verify(&self, root: &Path) -> Result<Option<String>> {
        let m = &self.manifest;
        for e in &m.entries {
            if let Kind::Symlink { target } = &e.kind {
                let dir = match e.path.rsplit_once('/') {
                    Some((p, _)) => root.join(p),
                    None => root.to_path_buf(),
                };
                if !hash::resolve_link(&dir, Path::new(target)).is_some_and(|t| t.starts_with(root))
                {
                    return Err(ArchiveError::invalid(format!(
                        "The archive holds a link '{}' -> '{}' that leads out of the workspace; refused",
                        one_line(&e.path),
                        one_line(target)
                    )));
                }
            }
        }
        let read = sentinel::read(root);
        // Without a verified content hash the sentinel's file index may describe other bytes
        // (an --allow-dirty archive, a forged sentinel): its times are left alone, so the
        // clean check compares the files themselves.
        let Some(claimed) = &m.content_hash else {
            return Ok(None);
        };
        let s = match &read {
            SentinelRead::Present(s) => s,
            _ => {
                return Err(ArchiveError::invalid(
                    "The manifest has a content hash, but the archive holds no readable sentinel",
                ));
            }
        };
        if s.content_hash() != Some(claimed.as_str()) {
            return Err(ArchiveError::invalid(format!(
                "The manifest's content hash {claimed} is not the sentinel's ({})",
                s.content_hash().unwrap_or("none")
            )));
        }
        let excludes = match s.exclude_patterns() {
            Ok(Some(p)) => Excludes::new(&p),
            _ => Excludes::default_list(),
        };
        let computed = hash::compute_v2_with(root, &excludes, &|p| self.v2.get(p).cloned())
            .map(|(h, _)| h)
            .map_err(|e| {
                ArchiveError::invalid(format!("The restored files cannot be hashed: {e}"))
            })?;
        if &computed != claimed {
            return Err(ArchiveError::invalid(format!(
                "The restored files hash to {computed}, not to the sentinel's {claimed}"
            )));
        }
        // The files are the ones the index describes: their recorded times make the restored
        // workspace clean without hashing it again.
        set_times(root, m, s.raw.get("file_index"));
        match sentinel::clean_check(root, &read) {
            Clean::Clean { .. } => Ok(Some(computed)),
            other => Err(ArchiveError::invalid(format!(
                "The restored workspace is not clean against its own sentinel ({})",
                match other {
                    Clean::Unknown { why, .. } => why.to_string(),
                    _ => "its file index does not match the files".to_string(),
                }
            ))),
        }
    }
}

/// Give each restored file the mtime its sentinel's file index records (only paths the
/// manifest lists as files: real folders made here, never a link).
fn set_times(root: &Path, m: &Manifest, index: Option<&Value>) {
    let Some(Value::Array(items)) = index else {
        return;
    };
    let files: HashMap<&str, ()> = m
        .entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::File { .. }))
        .map(|e| (e.path.as_str(), ()))
        .collect();
    for it in items {
        let (Some(p), Some(ns)) = (
            it.get("path").and_then(Value::as_str),
            it.get("mtime_ns").and_then(Value::as_i64),
        ) else {
            continue;
        };
        if !files.contains_key(p) || ns < 0 {
            continue;
        }
        let t = UNIX_EPOCH + Duration::from_nanos(ns as u64);
        if let Ok(f) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(root.join(p))
        {
            let _ = f.set_modified(t);
        }
    }
}

/// The error for an entry whose header is not the manifest's next one (`i`; `entries.len()`
/// past the end): the most telling of what is wrong with it.
fn mismatch(found: &Found, m: &Manifest, i: usize) -> ArchiveError {
    let shown = found.path_lossy();
    let Ok(p) = std::str::from_utf8(&found.path) else {
        return ArchiveError::invalid(format!(
            "The archive holds '{shown}', a name that is not UTF-8; refused"
        ));
    };
    let p = p.strip_suffix('/').unwrap_or(p);
    if let Some(why) = manifest::unsafe_path(p) {
        return ArchiveError::invalid(format!(
            "The archive holds '{shown}': {why} could write outside the workspace; refused"
        ));
    }
    use tar::EntryType as T;
    if !matches!(found.kind, T::Regular | T::Directory | T::Symlink) {
        return ArchiveError::invalid(format!(
            "The archive holds '{shown}', {}: a workspace archive holds only folders, files and links; refused",
            found.kind_words()
        ));
    }
    if found.kind == T::Symlink {
        let t = found
            .link
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if !manifest::link_stays_inside(p, &t) {
            return ArchiveError::invalid(format!(
                "The archive holds a link '{shown}' -> '{}' that leads out of the workspace; refused",
                one_line(&t)
            ));
        }
    }
    let expected = m.entries.get(i);
    match m
        .entries
        .binary_search_by(|e| e.path.as_bytes().cmp(p.as_bytes()))
    {
        Ok(j) if j < i => ArchiveError::invalid(format!(
            "The archive holds '{shown}' twice (a duplicate entry); refused"
        )),
        Err(_) => ArchiveError::invalid(format!(
            "The archive holds '{shown}', which its manifest does not list; refused"
        )),
        Ok(j) if j > i => ArchiveError::invalid(format!(
            "The archive holds '{shown}' where its manifest lists '{}' (entries missing or out of order)",
            expected.map_or(String::new(), |e| one_line(&e.path).into_owned())
        )),
        Ok(j) => {
            let e = &m.entries[j];
            let held = found.kind_words();
            match (&e.kind, found.kind) {
                (Kind::File { size, .. }, T::Regular) if *size != found.size => {
                    ArchiveError::invalid(format!(
                        "The manifest says '{shown}' has {size} bytes; the archive holds {}",
                        found.size
                    ))
                }
                (Kind::Dir, T::Directory)
                | (Kind::File { .. }, T::Regular)
                | (Kind::Symlink { .. }, T::Symlink) => ArchiveError::invalid(format!(
                    "The header of '{shown}' is not the one mlxfs writes for its manifest entry (altered archive)"
                )),
                (k, _) => ArchiveError::invalid(format!(
                    "The manifest says '{shown}' is {}; the archive holds {held}",
                    k.describe()
                )),
            }
        }
    }
}
