//! `archive`: a workspace → one file.
//!
//! [`Plan::new`] walks the workspace (no link followed; links that leave it, FIFOs, devices and
//! names that are not UTF-8 refused; OS junk left out) and decides whether the archive may
//! carry the sentinel's content hash (only for a clean workspace). [`write`] streams it into a
//! temp file next to the output and renames that into place at the end: an interrupted or
//! failed archive leaves nothing. A plain tar is written in one pass (the manifest with zero
//! hashes first, overwritten in place at the end); `zstd` hashes first and compresses in a
//! second pass, which must see the same bytes.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

use super::manifest::{self, Entry, FORMAT_VERSION, Kind, MANIFEST_NAME, Manifest};
use super::pipe::Hashing;
use super::tarfmt::{self, What};
use super::{ArchiveError, Compression, ErrorKind, Progress, Result};
use crate::hash::sentinel::{self, Clean};
use crate::hash::stream::FileSums;
use crate::hash::{self, Excludes};
use crate::text::one_line;

/// How to write.
#[derive(Debug, Clone)]
pub struct Options {
    pub compression: Compression,
    /// zstd level (1–19).
    pub zstd_level: i32,
    /// zstd worker threads (0: compress on the calling thread). Output is the same for every
    /// value ≥ 1, and differs from 0's.
    pub zstd_threads: u32,
    /// Archive a workspace that is not clean (the manifest then has no content hash).
    pub allow_dirty: bool,
    /// Replace an existing output file.
    pub force: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            compression: Compression::None,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            zstd_threads: 0,
            allow_dirty: false,
            force: false,
        }
    }
}

/// zstd's own default level: fast, and weights barely compress at any level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// The highest level accepted (above it zstd needs windows of up to 128 MiB to decompress).
pub const MAX_ZSTD_LEVEL: i32 = 19;

impl Options {
    /// Times the file data is read (a compressed archive is hashed before it is written).
    pub fn passes(&self) -> u64 {
        match self.compression {
            Compression::None => 1,
            Compression::Zstd => 2,
        }
    }
}

/// What will be archived.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workspace, resolved.
    pub root: PathBuf,
    /// The manifest with zero hashes (the real ones are known once the files are read).
    pub manifest: Manifest,
    /// Why the workspace is not clean (then the archive carries no content hash).
    pub dirty: Option<String>,
    /// OS junk left out (relative paths).
    pub skipped: Vec<String>,
    excludes: Excludes,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Archived {
    pub path: PathBuf,
    /// Size of the archive file.
    pub archive_bytes: u64,
    pub manifest: Manifest,
    pub compression: Compression,
}

fn unarchivable(rel: &str, why: &str) -> ArchiveError {
    ArchiveError::new(
        ErrorKind::Unarchivable,
        format!("Cannot archive '{}': {why}", one_line(rel)),
    )
    .hint("An archive holds folders, regular files and links that stay inside the workspace; move or remove this entry and run the command again.")
}

impl Plan {
    /// Walk the workspace at `ws` and check that it can be archived (`allow_dirty`: even when
    /// its files do not match the sentinel's content hash, or it has none).
    pub fn new(ws: &Path, allow_dirty: bool) -> Result<Plan> {
        let root = fs::canonicalize(ws)
            .map_err(|e| ArchiveError::io(&e, &format!("reading {}", ws.display())))?;
        let name = ws
            .file_name()
            .or_else(|| root.file_name())
            .and_then(|n| n.to_str())
            .ok_or_else(|| unarchivable(&ws.to_string_lossy(), "its folder name is not UTF-8"))?
            .to_string();
        let read = sentinel::read(&root);
        let s = read.sentinel();
        let excludes = match s.map(|s| s.exclude_patterns()) {
            Some(Ok(Some(p))) => Excludes::new(&p),
            _ => Excludes::default_list(),
        };
        let (content_hash, dirty) = match sentinel::clean_check(&root, &read) {
            Clean::Clean { stored: Some(h) } => (Some(h), None),
            Clean::Clean { stored: None } => {
                (None, Some("its sentinel has no content hash".to_string()))
            }
            Clean::Modified { .. } => (
                None,
                Some("its files differ from the content hash in its sentinel".to_string()),
            ),
            Clean::Unknown { why, .. } => (None, Some(why.to_string())),
        };
        if let Some(why) = &dirty
            && !allow_dirty
        {
            return Err(ArchiveError::new(
                ErrorKind::Modified,
                format!("Workspace '{}' is not clean: {why}", one_line(&name)),
            )
            .hint(format!(
                "Pin its current state first (`mlxfs show {} --recalc-hash`, for a managed workspace), or archive it as it is with --allow-dirty (the archive then carries no content hash).",
                crate::text::shell_quote(&ws.to_string_lossy())
            )));
        }
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        let mut w = Walk {
            excludes: &excludes,
            out: &mut entries,
            skipped: &mut skipped,
        };
        walk_dir(&mut w, &root, "", false)?;
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        skipped.sort();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            mlxfs_version: env!("CARGO_PKG_VERSION").to_string(),
            name,
            content_hash,
            source_repo: s.and_then(|s| s.source_repo()).map(str::to_string),
            source_revision: s
                .and_then(|s| s.raw.get("source_revision"))
                .and_then(|v| v.as_str())
                .map(str::to_string),
            entries,
        };
        manifest.validate()?;
        Ok(Plan {
            root,
            manifest,
            dirty,
            skipped,
            excludes,
        })
    }
}

/// The workspace walk: every entry, OS junk left out where the content hash does not count it.
struct Walk<'a> {
    excludes: &'a Excludes,
    out: &'a mut Vec<Entry>,
    skipped: &'a mut Vec<String>,
}

/// Every entry below `root/rel` (`rel` empty or ending in a name), depth first.
/// `unhashed`: `rel` lies in a folder the content hash excludes (`.hf_cache/`, …).
fn walk_dir(w: &mut Walk<'_>, root: &Path, rel: &str, unhashed: bool) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let rd = fs::read_dir(&dir)
        .map_err(|e| ArchiveError::io(&e, &format!("reading {}", dir.display())))?;
    for ent in rd {
        let ent = ent.map_err(|e| ArchiveError::io(&e, &format!("reading {}", dir.display())))?;
        let os_name = ent.file_name();
        let lossy = os_name.to_string_lossy();
        let child_lossy = join(rel, &lossy);
        let ft = ent
            .file_type()
            .map_err(|e| ArchiveError::io(&e, &format!("reading {}", ent.path().display())))?;
        let nfc_name: String = lossy.nfc().collect();
        // The content hash's own exclusions, as its walk applies them (hash::walk).
        let excluded = unhashed
            || if ft.is_dir() {
                w.excludes.dir_excluded(&nfc_name)
            } else {
                w.excludes.file_excluded(&nfc_name)
            };
        // OS junk is left out only where the content hash does not count it: a file the
        // hash covers is part of the workspace, and leaving it out would make the restored
        // copy fail its own hash check.
        if crate::osjunk::is_os_junk(&os_name) && excluded {
            w.skipped.push(child_lossy);
            continue;
        }
        let Some(name) = os_name.to_str() else {
            return Err(unarchivable(&child_lossy, "the name is not UTF-8"));
        };
        let child = join(rel, name);
        if ft.is_symlink() {
            let t = fs::read_link(ent.path())
                .map_err(|e| ArchiveError::io(&e, &format!("reading the link {child}")))?;
            let Some(target) = t.to_str() else {
                return Err(unarchivable(&child, "the link's target is not UTF-8"));
            };
            let inside = manifest::link_stays_inside(&child, target)
                && hash::resolve_link(&dir, Path::new(target)).is_some_and(|r| r.starts_with(root));
            if !inside {
                return Err(unarchivable(
                    &child,
                    &format!(
                        "the link leads out of the workspace (-> {}); restore would refuse it",
                        one_line(target)
                    ),
                ));
            }
            w.out.push(Entry {
                path: child,
                kind: Kind::Symlink {
                    target: target.to_string(),
                },
            });
        } else if ft.is_dir() {
            w.out.push(Entry {
                path: child.clone(),
                kind: Kind::Dir,
            });
            walk_dir(w, root, &child, excluded)?;
        } else if ft.is_file() {
            let md = ent
                .metadata()
                .map_err(|e| ArchiveError::io(&e, &format!("reading {child}")))?;
            w.out.push(Entry {
                path: child,
                kind: Kind::File {
                    size: md.len(),
                    sha256: [0; 32],
                    executable: md.mode() & 0o111 != 0,
                },
            });
        } else {
            return Err(unarchivable(
                &child,
                "it is a FIFO, a socket or a device, not a file",
            ));
        }
    }
    Ok(())
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// The header of an entry of the manifest.
pub fn what(e: &Entry) -> What<'_> {
    match &e.kind {
        Kind::Dir => What::Dir,
        Kind::File {
            size, executable, ..
        } => What::File {
            size: *size,
            executable: *executable,
        },
        Kind::Symlink { target } => What::Symlink { target },
    }
}

/// The temp file next to `out` while it is written; removed unless [`TempOut::keep`] renames it.
struct TempOut {
    path: PathBuf,
    done: bool,
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Check that the archive may be written to `out`: its folder exists and is not inside the
/// workspace, and it does not exist unless `force`.
pub fn check_out(plan: &Plan, out: &Path, force: bool) -> Result<()> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let real_parent = fs::canonicalize(parent).map_err(|_| {
        ArchiveError::new(
            ErrorKind::Target,
            format!("The folder of {} does not exist", out.display()),
        )
        .hint("Create it first, or give another output path.")
    })?;
    if real_parent.starts_with(&plan.root) {
        return Err(ArchiveError::new(
            ErrorKind::Target,
            format!("{} is inside the workspace it archives", out.display()),
        )
        .hint("Write the archive somewhere outside the workspace."));
    }
    match fs::symlink_metadata(out) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => Err(ArchiveError::new(
            ErrorKind::Target,
            format!("{} is a folder", out.display()),
        )),
        Ok(_) if force => Ok(()),
        Ok(_) => Err(ArchiveError::new(
            ErrorKind::Target,
            format!("{} already exists", out.display()),
        )
        .hint("Give another name, or --force to replace it.")),
    }
}

/// Write the archive of `plan` to `out` (checked with [`check_out`]).
pub fn write(plan: &Plan, out: &Path, opts: &Options, progress: &dyn Progress) -> Result<Archived> {
    check_out(plan, out, opts.force)?;
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp_path = out.with_file_name(format!(".{file_name}.mlxfs-tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp_path);
    let file = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp_path)
        .map_err(|e| ArchiveError::io(&e, &format!("creating {}", tmp_path.display())))?;
    let mut tmp = TempOut {
        path: tmp_path,
        done: false,
    };
    let wio = |e: io::Error| ArchiveError::io(&e, &format!("writing {}", out.display()));
    let placeholder = plan.manifest.to_bytes();
    let manifest = match opts.compression {
        Compression::None => {
            let mut w = BufWriter::with_capacity(256 << 10, file);
            let sums = stream(plan, &placeholder, &mut w, progress)?;
            let m = finalize(plan, &sums)?;
            let bytes = m.to_bytes();
            assert_eq!(
                bytes.len(),
                placeholder.len(),
                "the manifest has a fixed length"
            );
            let mut f = w.into_inner().map_err(|e| wio(e.into_error()))?;
            f.seek(SeekFrom::Start(tarfmt::BLOCK as u64)).map_err(wio)?;
            f.write_all(&bytes).map_err(wio)?;
            f.sync_all().map_err(wio)?;
            m
        }
        Compression::Zstd => {
            let sums = stream(plan, &placeholder, &mut io::sink(), progress)?;
            let m = finalize(plan, &sums)?;
            let w = super::seal::Writer::new(BufWriter::with_capacity(256 << 10, file));
            let mut enc = zstd::stream::write::Encoder::new(w, opts.zstd_level).map_err(wio)?;
            enc.include_checksum(true).map_err(wio)?;
            if opts.zstd_threads > 0 {
                enc.multithread(opts.zstd_threads).map_err(wio)?;
            }
            let again = stream(plan, &m.to_bytes(), &mut enc, progress)?;
            if again
                .iter()
                .map(|(i, s)| (i, s.sha256))
                .ne(sums.iter().map(|(i, s)| (i, s.sha256)))
            {
                return Err(changed(&plan.manifest.name));
            }
            let w = enc.finish().and_then(|w| w.seal()).map_err(wio)?;
            let f = w.into_inner().map_err(|e| wio(e.into_error()))?;
            f.sync_all().map_err(wio)?;
            m
        }
    };
    let archive_bytes = fs::metadata(&tmp.path).map(|m| m.len()).unwrap_or(0);
    if opts.force {
        fs::rename(&tmp.path, out)
    } else {
        crate::sys::rename_noreplace(&tmp.path, out)
    }
    .map_err(|e| ArchiveError::io(&e, &format!("moving the archive to {}", out.display())))?;
    tmp.done = true;
    Ok(Archived {
        path: out.to_path_buf(),
        archive_bytes,
        manifest,
        compression: opts.compression,
    })
}

fn changed(name: &str) -> ArchiveError {
    ArchiveError::new(
        ErrorKind::Modified,
        format!(
            "Workspace '{}' changed while it was archived",
            one_line(name)
        ),
    )
    .hint("Run the command again when nothing writes to the workspace.")
}

/// Write the whole tar stream (with `manifest` as its first entry) to `w`; the sums of every
/// file by entry number.
fn stream(
    plan: &Plan,
    manifest: &[u8],
    w: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<Vec<(usize, FileSums)>> {
    let wio = |e: io::Error| ArchiveError::io(&e, "writing the archive");
    let zeros = [0u8; tarfmt::BLOCK];
    let manifest_header = tarfmt::header_bytes(
        MANIFEST_NAME,
        What::File {
            size: manifest.len() as u64,
            executable: false,
        },
    );
    debug_assert_eq!(manifest_header.len(), tarfmt::BLOCK);
    w.write_all(&manifest_header).map_err(wio)?;
    w.write_all(manifest).map_err(wio)?;
    w.write_all(&zeros[..tarfmt::padding(manifest.len() as u64)])
        .map_err(wio)?;
    let hashing = Hashing::new();
    let name = &plan.manifest.name;
    for (i, e) in plan.manifest.entries.iter().enumerate() {
        if progress.cancelled() {
            return Err(ArchiveError::interrupted());
        }
        let path = plan.root.join(&e.path);
        match &e.kind {
            Kind::Dir => {}
            Kind::Symlink { target } => {
                if fs::read_link(&path).ok().as_deref() != Some(Path::new(target)) {
                    return Err(changed(name));
                }
            }
            Kind::File { size, .. } => {
                // Every component a real folder, the file a regular file (never a FIFO).
                let mut f = crate::sys::open_resolved(&path).map_err(|err| {
                    if err.kind() == io::ErrorKind::NotFound {
                        changed(name)
                    } else {
                        ArchiveError::io(&err, &format!("reading {}", one_line(&e.path)))
                    }
                })?;
                let now = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                if now != *size {
                    return Err(changed(name));
                }
                w.write_all(&tarfmt::header_bytes(&e.path, what(e)))
                    .map_err(wio)?;
                let base = e.path.rsplit('/').next().unwrap_or(&e.path).as_bytes();
                let read_err = |err: io::Error| {
                    ArchiveError::io(&err, &format!("reading {}", one_line(&e.path)))
                };
                let n = hashing.copy(i, base, *size, &mut f, w, progress, &read_err, &wio)?;
                let mut probe = [0u8; 1];
                if n != *size || f.read(&mut probe).map_err(wio)? != 0 {
                    return Err(changed(name));
                }
                w.write_all(&zeros[..tarfmt::padding(*size)]).map_err(wio)?;
                continue;
            }
        }
        w.write_all(&tarfmt::header_bytes(&e.path, what(e)))
            .map_err(wio)?;
    }
    w.write_all(&tarfmt::END).map_err(wio)?;
    w.flush().map_err(wio)?;
    Ok(hashing.finish())
}

/// The manifest with the files' hashes; when it carries a content hash, the files read must
/// have that content hash (nothing changed since the clean check).
fn finalize(plan: &Plan, sums: &[(usize, FileSums)]) -> Result<Manifest> {
    let mut m = plan.manifest.clone();
    let mut v2: HashMap<PathBuf, Option<String>> = HashMap::new();
    for (i, s) in sums {
        if let Some(Entry {
            path,
            kind: Kind::File { sha256, .. },
        }) = m.entries.get_mut(*i)
        {
            *sha256 = s.sha256;
            v2.insert(plan.root.join(path.as_str()), s.v2.clone());
        }
    }
    if let Some(claimed) = &m.content_hash {
        let computed = hash::compute_v2_with(&plan.root, &plan.excludes, &|p| v2.get(p).cloned())
            .map(|(h, _)| h)
            .map_err(|e| {
                ArchiveError::new(
                    ErrorKind::Modified,
                    format!(
                        "Cannot verify the content hash of '{}': {e}",
                        one_line(&m.name)
                    ),
                )
            })?;
        if &computed != claimed {
            return Err(ArchiveError::new(
                ErrorKind::Modified,
                format!(
                    "The files of '{}' do not match the content hash in its sentinel ({claimed}; they hash to {computed})",
                    one_line(&m.name)
                ),
            )
            .hint("A file was edited keeping its size and time, or changed while it was archived. Re-pin the hash (`mlxfs show WS --recalc-hash`) or use --allow-dirty."));
        }
    }
    Ok(m)
}
