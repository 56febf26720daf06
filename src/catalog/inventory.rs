//! One walk of a model folder, shared by health, size and detection.
//!
//! Symlinked directories are not descended (as Python's `rglob`); every link is resolved once,
//! so a dangling link or one that leaves the model's folders is recorded, never fatal. OS
//! junk names (`._*` sidecars, `.DS_Store`, …: [`crate::osjunk`]) are not model files: they
//! are skipped (not in sizes, health or detection) and counted in [`Inventory::junk`].

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use crate::hash::resolve_link;
use crate::sys::FileKind;

/// What a symlink turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    NotALink,
    /// Target exists inside one of the model's own folders ([`crate::catalog::ModelRef::link_roots`]).
    Inside,
    /// Target does not exist.
    Dangling,
    /// Target exists but is outside every one of the model's own folders.
    Escapes,
}

/// One entry below a model folder.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the model folder, `/`-separated (lossy for non-UTF-8 names).
    pub rel: String,
    pub name: String,
    pub path: PathBuf,
    pub link: LinkState,
    /// Followed type and size (None when dangling or unreadable).
    pub is_file: bool,
    pub is_dir: bool,
    pub size: u64,
    /// What the entry is, a link followed (`None`: a link that leads nowhere, or an entry
    /// that could not be looked at). From `stat`: nothing is opened to learn it.
    pub kind: Option<FileKind>,
    /// A regular file of the model that a loader opens ([`crate::catalog::loader_files`]) and
    /// this process cannot read: why (`Permission denied`). Found during the walk (the open of
    /// a file it reads anyway, else `faccessat` for the effective user); `None` when it can,
    /// or when it was not asked.
    pub read_error: Option<String>,
    /// True for entries under the workspace's `.hf_cache/` (runtime artifacts).
    pub in_hf_cache: bool,
    pub non_utf8: bool,
    /// A file of 42 to 199 bytes whose first 100 bytes hold Git LFS's pointer marker
    /// (mlx-knife health.py: an LFS pointer left where the file should be). Read during the
    /// walk; false for links that leave the model and for the runtime cache.
    pub lfs_pointer: bool,
    /// A `.safetensors` file of the model itself (not empty, not through a link that leaves
    /// it, not in the runtime cache) whose header the walk found sound
    /// ([`crate::catalog::safetensors_header::safetensors_problem`]): `Some(None)`. `None`: not read by
    /// the walk, or a problem that health confirms by path.
    pub safetensors_header: Option<Option<&'static str>>,
}

/// All entries of a model folder.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub entries: Vec<Entry>,
    /// Folders that could not be read, or read but not entered (a folder whose mode has `r`
    /// but not `x` lists its names, and nothing in it can be opened): relative paths, `.` for
    /// the model folder itself.
    pub unreadable: Vec<String>,
    /// Why the model folder itself cannot be read or entered (`cannot be entered (Permission
    /// denied)`); `None` when the walk read it, or when it does not exist.
    pub root_problem: Option<String>,
    /// OS junk entries skipped (relative paths; folders are not descended).
    pub junk: Vec<String>,
    /// Folders where another file system is mounted (relative paths): not descended, so a
    /// walk never wanders onto another disk, or into a FUSE mount (mlxfs's own included).
    pub other_fs: Vec<String>,
    /// The model folder's modification time (seconds since the epoch), when the walk opened
    /// it (`None`: not walked, or not a readable folder).
    pub root_mtime: Option<i64>,
    /// Did the walk open the model folder (then its top-level entries are all here)?
    pub walked: bool,
}

impl Inventory {
    /// Walk `root`. Links must resolve inside one of `roots`, real (canonical) folders: the
    /// model's own ([`crate::catalog::ModelRef::link_roots`]).
    ///
    /// Every folder is read through an open descriptor and its entries are looked at relative
    /// to it (one path component for the kernel to walk). A hub snapshot's links are matched
    /// against the inodes of the repo's `blobs/` ([`LinkRoots::blobs`]): one followed `stat`
    /// per link, no `readlink`. The first 100 bytes of each small file (42 to 199 bytes)
    /// are read on the way, for mlx-knife's LFS-pointer scan ([`Entry::lfs_pointer`]).
    pub fn scan(root: &Path, roots: &crate::catalog::LinkRoots) -> Inventory {
        let mut inv = Inventory::default();
        // Walk from the resolved root: every folder reached is then resolved too (symlinked
        // folders are not descended), so a link resolves from its parent without a full
        // realpath of each path component.
        let root = match roots.real_path_of(root) {
            Some(real) => real.to_path_buf(),
            None => crate::sys::real_path(root).unwrap_or_else(|_| root.to_path_buf()),
        };
        let root_fd = match open_dir(rustix::fs::CWD, &root) {
            Ok(fd) => fd,
            Err(e) => {
                inv.unreadable.push(".".into());
                if e.kind() != std::io::ErrorKind::NotFound {
                    inv.root_problem = Some(format!(
                        "cannot be read ({})",
                        crate::catalog::io_reason(&e)
                    ));
                }
                return inv;
            }
        };
        inv.walked = true;
        let root_st = root_fd.stat().ok();
        let dev = root_st.as_ref().map(|st| Meta::from_stat(st).dev);
        inv.root_mtime = root_st.as_ref().map(mtime_secs);
        let mut blobs = roots.blobs().map(|b| BlobIndex::Unread(b.to_path_buf()));
        let mut links = Links::default();
        let mut stack = vec![(Some(root_fd), root, String::new(), false)];
        while let Some((fd, dir, prefix, in_cache)) = stack.pop() {
            let mut fd = match fd.map_or_else(|| open_dir(rustix::fs::CWD, &dir), Ok) {
                Ok(fd) => fd,
                Err(_) => {
                    inv.unreadable.push(if prefix.is_empty() {
                        ".".into()
                    } else {
                        prefix
                    });
                    continue;
                }
            };
            // A folder whose mode has `r` but not `x` lists its names, and nothing in it can
            // be looked at or opened: the first `lstat` in it fails with EACCES (that of a
            // plain entry below, or of a link that seemed to lead nowhere), and the folder is
            // unreadable, none of its entries kept.
            let names = read_names(&mut fd);
            let unenterable = |inv: &mut Inventory, e: &std::io::Error, prefix: String| {
                if prefix.is_empty() {
                    inv.root_problem = Some(if e.kind() == std::io::ErrorKind::PermissionDenied {
                        "cannot be entered (Permission denied)".to_string()
                    } else {
                        format!("cannot be read ({})", crate::catalog::io_reason(e))
                    });
                }
                inv.unreadable.push(if prefix.is_empty() {
                    ".".into()
                } else {
                    prefix
                });
            };
            let names = match names {
                Ok(names) => names,
                Err(e) => {
                    unenterable(&mut inv, &e, prefix);
                    continue;
                }
            };
            let (entries_before, junk_before) = (inv.entries.len(), inv.junk.len());
            for (os_name, kind) in names {
                let non_utf8 = os_name.to_str().is_none();
                let name = os_name.to_string_lossy().into_owned();
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if crate::osjunk::is_os_junk(&os_name) {
                    inv.junk.push(rel);
                    continue;
                }
                let path = dir.join(&os_name);
                let mut plain_stat = None;
                let kind = match kind {
                    FileType::Unknown => match stat_at(&fd, &os_name, false) {
                        Ok(st) => {
                            plain_stat = Some(st);
                            FileType::from_raw_mode(st.st_mode)
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                            inv.entries.truncate(entries_before);
                            inv.junk.truncate(junk_before);
                            unenterable(&mut inv, &e, prefix.clone());
                            break;
                        }
                        Err(_) => continue,
                    },
                    k => k,
                };
                let in_hf_cache = in_cache || (prefix.is_empty() && name == ".hf_cache");
                let (link, md) = if kind == FileType::Symlink {
                    match blob_link(&mut blobs, &fd, &os_name) {
                        Some(md) => (LinkState::Inside, Some(md)),
                        None => match links.follow(&dir, &path) {
                            // A link that seems to lead nowhere may sit in a folder that
                            // cannot be entered: its own `lstat` tells (dangling links are
                            // rare, so this costs nothing in the common case).
                            (_, None) => match stat_at(&fd, &os_name, false) {
                                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                                    inv.entries.truncate(entries_before);
                                    inv.junk.truncate(junk_before);
                                    unenterable(&mut inv, &e, prefix.clone());
                                    break;
                                }
                                _ => (LinkState::Dangling, None),
                            },
                            (target, Some(md)) => {
                                let md = Meta::of(&md);
                                if target.is_some_and(|t| roots.contains(&t)) {
                                    (LinkState::Inside, Some(md))
                                } else {
                                    (LinkState::Escapes, Some(md))
                                }
                            }
                        },
                    }
                } else {
                    let st = match plain_stat.map_or_else(|| stat_at(&fd, &os_name, false), Ok) {
                        Ok(st) => Some(Meta::from_stat(&st)),
                        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                            inv.entries.truncate(entries_before);
                            inv.junk.truncate(junk_before);
                            unenterable(&mut inv, &e, prefix.clone());
                            break;
                        }
                        Err(_) => None,
                    };
                    (LinkState::NotALink, st)
                };
                let is_dir = md.as_ref().is_some_and(|m| m.is_dir);
                let is_file = md.as_ref().is_some_and(|m| m.is_file);
                let size = md.as_ref().map_or(0, |m| m.size);
                let file_kind = md.as_ref().map(|m| m.kind);
                if is_dir && link == LinkState::NotALink {
                    if dev.is_some() && md.as_ref().map(|m| m.dev) != dev {
                        inv.other_fs.push(rel.clone());
                    } else {
                        // Opened when its turn comes (one descriptor open at a time).
                        stack.push((None, path.clone(), rel.clone(), in_hf_cache));
                    }
                }
                // Only files of the model itself are read (never through a link that leaves
                // it, nor the runtime cache, which health does not scan).
                let own = is_file
                    && !in_hf_cache
                    && matches!(link, LinkState::NotALink | LinkState::Inside);
                let loader = own && crate::catalog::loader_files::is_loader_file(&rel);
                // A safetensors file is opened once for both its header and the LFS scan; of
                // a file a loader opens that is not opened here, the kernel is asked whether
                // this user may read it (`faccessat`: nothing opened).
                let mut read_error = None;
                let (lfs_pointer, safetensors_header) =
                    if own && size > 0 && name.ends_with(".safetensors") {
                        match read_safetensors_at(&fd, &os_name, size) {
                            Ok(found) => found,
                            Err(e) => {
                                read_error = Some(crate::catalog::io_reason(&e));
                                (false, None)
                            }
                        }
                    } else if own && may_hold_lfs_marker(size) {
                        match read_prefix_at(&fd, &os_name, 100) {
                            Ok(b) => (has_lfs_marker(&b), None),
                            Err(e) => {
                                read_error = Some(crate::catalog::io_reason(&e));
                                (false, None)
                            }
                        }
                    } else {
                        // (`config.json` is read whole by the record: its reason comes from
                        // that read.)
                        if loader
                            && rel != "config.json"
                            && let Err(e) = fd
                                .fd()
                                .map_err(std::io::Error::from)
                                .and_then(|d| crate::sys::can_read_at(d, &os_name))
                        {
                            read_error = Some(crate::catalog::io_reason(&e));
                        }
                        (false, None)
                    };
                if !loader {
                    read_error = None;
                }
                inv.entries.push(Entry {
                    rel,
                    name,
                    path,
                    link,
                    is_file,
                    is_dir,
                    size,
                    kind: file_kind,
                    read_error,
                    in_hf_cache,
                    non_utf8,
                    lfs_pointer,
                    safetensors_header,
                });
            }
        }
        inv.entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        inv.junk.sort();
        inv
    }

    /// Entries that count for health (everything but `.hf_cache/`).
    pub fn model_entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| !e.in_hf_cache)
    }

    /// Top-level entry by name.
    pub fn top(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.rel == name)
    }

    /// Does a top-level regular file (links followed) with this name exist?
    pub fn has_file(&self, name: &str) -> bool {
        self.top(name).is_some_and(|e| e.is_file)
    }

    /// Is `root/name` a regular file (links followed), as `Path::is_file`: answered by the
    /// walk when there was one (no `stat`), else by a `stat`.
    pub fn is_file_at(&self, root: &Path, name: &str) -> bool {
        if self.walked {
            self.has_file(name)
        } else {
            root.join(name).is_file()
        }
    }

    /// Does `root/name` exist (links followed), as `Path::exists`: answered by the walk when
    /// there was one, else by a `stat`.
    pub fn exists_at(&self, root: &Path, name: &str) -> bool {
        if self.walked {
            self.top(name)
                .is_some_and(|e| e.link != LinkState::Dangling)
        } else {
            root.join(name).exists()
        }
    }

    /// Σ sizes of files (links followed), as mlx-knife's `size_bytes`.
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.is_file)
            .fold(0u64, |n, e| n.saturating_add(e.size))
    }
}

/// Git LFS's pointer marker (a pointer file's first line).
pub const LFS_MARKER: &[u8] = b"version https://git-lfs.github.com/spec/v1";

/// Can a file of `size` bytes be an LFS pointer by mlx-knife's rule (under 200 bytes, health.py)?
/// One shorter than the marker cannot hold it and is not opened.
pub fn may_hold_lfs_marker(size: u64) -> bool {
    size < 200 && size >= LFS_MARKER.len() as u64
}

/// What the walk keeps of a `stat`.
struct Meta {
    is_dir: bool,
    is_file: bool,
    kind: FileKind,
    size: u64,
    dev: u64,
}

impl Meta {
    // The `stat` field types differ by platform (`dev_t` is 32 bits on macOS).
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &rustix::fs::Stat) -> Meta {
        let kind = FileType::from_raw_mode(st.st_mode);
        Meta {
            is_dir: kind == FileType::Directory,
            is_file: kind == FileType::RegularFile,
            kind: FileKind::from_mode(st.st_mode as u32),
            size: st.st_size as u64,
            dev: st.st_dev as u64,
        }
    }

    fn of(md: &fs::Metadata) -> Meta {
        Meta {
            is_dir: md.is_dir(),
            is_file: md.is_file(),
            kind: FileKind::of(md),
            size: md.len(),
            dev: md.dev(),
        }
    }
}

/// Modification time in seconds since the epoch.
#[allow(clippy::unnecessary_cast)]
fn mtime_secs(st: &rustix::fs::Stat) -> i64 {
    st.st_mtime as i64
}

/// Open folder `path` (relative to `at`) for reading its entries; a link is not followed.
fn open_dir<Fd: AsFd>(at: Fd, path: &Path) -> std::io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    Ok(Dir::new(rustix::fs::openat(
        at,
        path,
        flags,
        Mode::empty(),
    )?)?)
}

/// `stat` of entry `name` of the open folder `dir` (`follow`: through a link).
fn stat_at(dir: &Dir, name: &OsStr, follow: bool) -> std::io::Result<rustix::fs::Stat> {
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    Ok(rustix::fs::statat(dir.fd()?, name, flags)?)
}

/// The names and types (`d_type`; `Unknown` where the file system gives none) of the open
/// folder's entries, without `.` and `..`.
fn read_names(dir: &mut Dir) -> std::io::Result<Vec<(OsString, FileType)>> {
    let mut out = Vec::new();
    for_each_entry(dir, |name, kind, _| out.push((name.to_os_string(), kind)))?;
    Ok(out)
}

/// Call `f(name, type, inode)` for each entry of the open folder but `.` and `..`. On Linux
/// the entries are read with `getdents64` into one 32 KiB buffer (a model folder or a
/// `blobs/` takes one call and the end-of-folder call); elsewhere through `readdir`.
fn for_each_entry(dir: &mut Dir, mut f: impl FnMut(&OsStr, FileType, u64)) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 * 1024];
        let mut rd = rustix::fs::RawDir::new(dir.fd()?, &mut buf);
        while let Some(e) = rd.next() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                f(OsStr::from_bytes(name), e.file_type(), e.ino());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    while let Some(e) = dir.read() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            f(OsStr::from_bytes(name), e.file_type(), e.ino());
        }
    }
    Ok(())
}

/// Does a file's beginning hold the LFS pointer marker (in its first 100 bytes)?
fn has_lfs_marker(prefix: &[u8]) -> bool {
    let head = &prefix[..prefix.len().min(100)];
    head.windows(LFS_MARKER.len()).any(|w| w == LFS_MARKER)
}

/// Safetensors file `name` (`size` bytes) of the open folder: is it an LFS pointer (when
/// small enough to be one), and is its header sound (`Some(None)`; `None`: not opened, or a
/// problem, which health confirms by path).
/// `Err`: it cannot be opened (why).
fn read_safetensors_at(
    dir: &Dir,
    name: &OsStr,
    size: u64,
) -> std::io::Result<(bool, Option<Option<&'static str>>)> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir.fd()?, name, flags, Mode::empty())?;
    let mut file = std::fs::File::from(fd);
    if may_hold_lfs_marker(size) {
        // Small: read whole (under 200 bytes), then judge both from the bytes.
        let mut bytes = Vec::with_capacity(size as usize);
        use std::io::Read;
        if (&mut file).take(size).read_to_end(&mut bytes).is_err() {
            return Ok((false, None));
        }
        let header =
            crate::catalog::safetensors_header::safetensors_problem_in(&mut bytes.as_slice(), size);
        return Ok((has_lfs_marker(&bytes), sound(header)));
    }
    let header = crate::catalog::safetensors_header::safetensors_problem_in(&mut file, size);
    Ok((false, sound(header)))
}

/// A header found sound is kept; a problem is left for health to confirm by path, with a
/// blocking read (what it says is then exactly what it always said).
fn sound(problem: Option<&'static str>) -> Option<Option<&'static str>> {
    problem.is_none().then_some(None)
}

/// Up to `n` first bytes of the regular file `name` in the open folder (a link followed);
/// `None` when it cannot be opened or read. Opened non-blocking (a FIFO swapped in never
/// blocks the walk).
fn read_prefix_at(dir: &Dir, name: &OsStr, n: usize) -> std::io::Result<Vec<u8>> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir.fd()?, name, flags, Mode::empty())?;
    let mut buf = vec![0u8; n];
    let got = rustix::io::read(&fd, &mut buf)?;
    buf.truncate(got);
    Ok(buf)
}

/// A hub repo's `blobs/` by inode, read at the first link of a walk.
enum BlobIndex {
    /// Not read yet: the real `blobs/` folder.
    Unread(PathBuf),
    /// `blobs/` could not be read: links resolve the general way.
    Unreadable,
    /// The device of `blobs/`, the folder, and its regular files' names by inode.
    Read {
        dev: u64,
        dir: PathBuf,
        names: HashMap<u64, OsString>,
    },
}

impl BlobIndex {
    fn load(dir: &Path) -> BlobIndex {
        let read = || -> std::io::Result<BlobIndex> {
            let mut fd = open_dir(rustix::fs::CWD, dir)?;
            let dev = Meta::from_stat(&fd.stat()?).dev;
            let mut names = HashMap::new();
            for_each_entry(&mut fd, |name, kind, ino| {
                // A blob that is a link itself (or whose type the file system does not say)
                // is not matched: its links resolve the general way.
                if kind == FileType::RegularFile {
                    names.insert(ino, name.to_os_string());
                }
            })?;
            Ok(BlobIndex::Read {
                dev,
                dir: dir.to_path_buf(),
                names,
            })
        };
        read().unwrap_or(BlobIndex::Unreadable)
    }

    /// The device, folder and names by inode of `blobs/`, read at the first call; `None`
    /// when it cannot be read.
    fn read(&mut self) -> Option<(u64, &Path, &HashMap<u64, OsString>)> {
        if let BlobIndex::Unread(path) = self {
            *self = BlobIndex::load(path);
        }
        match self {
            BlobIndex::Read { dev, dir, names } => Some((*dev, dir.as_path(), &*names)),
            _ => None,
        }
    }
}

/// Link `name` in the open folder `dir`, when it leads to a regular file that is a direct
/// entry of the repo's `blobs/` (same device and inode): the followed metadata. `None`: not a
/// hub model, or the link leads elsewhere (or nowhere) — resolve it the general way. A file
/// reached another way that is a hard link of a blob counts as that blob (it is the same file).
fn blob_link(blobs: &mut Option<BlobIndex>, dir: &Dir, name: &OsStr) -> Option<Meta> {
    let (dev, _, names) = blobs.as_mut()?.read()?;
    let st = stat_at(dir, name, true).ok()?;
    let md = Meta::from_stat(&st);
    #[allow(clippy::unnecessary_cast)]
    let ino = st.st_ino as u64;
    (md.is_file && md.dev == dev && names.contains_key(&ino)).then_some(md)
}

/// A hub repo's `blobs/`, for walks that go by path (the mount's tree): a snapshot link is
/// matched to its blob by the inode a followed `stat` gives (no `readlink`, which on ext4
/// reads a data block for a target as long as `../../blobs/<sha256>`). Read at the first
/// link; a link that matches no blob is for [`Links::follow`].
pub struct Blobs(BlobIndex);

impl Blobs {
    /// The blobs of a hub model's roots (`None`: not a hub model).
    pub fn of(roots: &crate::catalog::LinkRoots) -> Option<Blobs> {
        roots
            .blobs()
            .map(|b| Blobs(BlobIndex::Unread(b.to_path_buf())))
    }

    /// Link `path`, when it leads to a regular file that is a direct entry of `blobs/` (same
    /// device and inode): that entry's path and the followed metadata. A file that is a hard
    /// link of a blob counts as that blob (it is the same file), as in [`Inventory::scan`].
    pub fn follow(&mut self, path: &Path) -> Option<(PathBuf, fs::Metadata)> {
        let (dev, dir, names) = self.0.read()?;
        let md = fs::metadata(path).ok()?;
        let name = names
            .get(&md.ino())
            .filter(|_| md.is_file() && md.dev() == dev)?;
        Some((dir.join(name), md))
    }
}

/// Following the links of one walk. A hub snapshot's links all lead to the same `blobs/`
/// folder: once a folder is known not to be a link it is not looked at again, and the last
/// component's `lstat` is the followed metadata when it is not a link itself, so a link costs
/// a `readlink` and one `lstat` instead of a followed `stat`, a `readlink` and an `lstat` per
/// target component (issue 15 §1).
#[derive(Default)]
pub struct Links {
    /// Real folders (not links) met so far.
    real_dirs: HashSet<PathBuf>,
}

impl Links {
    /// Link `path` found in the resolved folder `dir`: where it leads (as
    /// [`resolve_link`]: `None` on a loop) and the metadata of what it leads to (as
    /// `fs::metadata(path)`: `None` when dangling).
    pub fn follow(&mut self, dir: &Path, path: &Path) -> (Option<PathBuf>, Option<fs::Metadata>) {
        let Ok(target) = fs::read_link(path) else {
            return (None, fs::metadata(path).ok());
        };
        if let Some(found) = self.fast(dir, &target) {
            return found;
        }
        (resolve_link(dir, &target), fs::metadata(path).ok())
    }

    /// The common case: a relative target of `..` and names whose folders are real and whose
    /// last component is not a link. `None` when the case does not apply (then the caller
    /// resolves the general way).
    fn fast(
        &mut self,
        dir: &Path,
        target: &Path,
    ) -> Option<(Option<PathBuf>, Option<fs::Metadata>)> {
        let comps: Vec<Component> = target.components().collect();
        let (last, folders) = comps.split_last()?;
        let Component::Normal(last) = last else {
            return None;
        };
        let mut at = dir.to_path_buf();
        for c in folders {
            match c {
                Component::ParentDir => {
                    if !at.pop() {
                        return None;
                    }
                }
                Component::CurDir => {}
                Component::Normal(n) => {
                    at.push(n);
                    if !self.real_dirs.contains(&at) {
                        let md = fs::symlink_metadata(&at).ok()?;
                        if !md.is_dir() {
                            return None;
                        }
                        self.real_dirs.insert(at.clone());
                    }
                }
                _ => return None,
            }
        }
        at.push(last);
        match fs::symlink_metadata(&at) {
            Ok(md) if md.file_type().is_symlink() => None,
            Ok(md) => Some((Some(at), Some(md))),
            // Nothing there: the link dangles (resolve_link still names the place).
            Err(_) => Some((Some(at), None)),
        }
    }
}
