//! The one tar form mlxfs writes (GNU headers, through the `tar` crate's `Header`), and a
//! reader of what an archive actually holds, for the checks and the error messages of restore.
//!
//! Canonical form of an entry: for a path (folders with a trailing `/`) or a link target over
//! 100 bytes, a GNU long-name (`L`) or long-link (`K`) entry first, named `././@LongLink`, holding
//! the name and a NUL; then the header: the path (cut at 100 bytes when a long name precedes),
//! mode 0755 (folders, executables) / 0644 (files) / 0777 (links), uid and gid 0, mtime 0, no
//! user or group name, the size (base-256 above 8 GiB, as GNU tar), the type, the link target.

use std::io::{self, Read};

use tar::{EntryType, Header};

/// Size of a tar block.
pub const BLOCK: usize = 512;
/// Long names (and long-name entries) mlxfs accepts when reading.
pub const LONG_NAME_MAX: u64 = 64 * 1024;

/// What an entry is, for its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What<'a> {
    Dir,
    File { size: u64, executable: bool },
    Symlink { target: &'a str },
}

/// Zero bytes after `n` bytes of data, up to the next block.
pub fn padding(n: u64) -> usize {
    ((BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64) as usize
}

fn long_entry(kind: u8, name: &[u8], out: &mut Vec<u8>) {
    let mut h = Header::new_gnu();
    let tag = b"././@LongLink";
    h.as_old_mut().name[..tag.len()].copy_from_slice(tag);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(name.len() as u64 + 1);
    h.set_entry_type(EntryType::new(kind));
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len() + padding(name.len() as u64 + 1), 0);
}

/// The canonical header bytes of an entry at `path` (before its data, if any).
pub fn header_bytes(path: &str, what: What<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK);
    let mut name = path.as_bytes().to_vec();
    if what == What::Dir {
        name.push(b'/');
    }
    if name.len() > 100 {
        long_entry(b'L', &name, &mut out);
    }
    let mut h = Header::new_gnu();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let (mode, size, kind) = match what {
        What::Dir => (0o755, 0, EntryType::Directory),
        What::File { size, executable } => (
            if executable { 0o755 } else { 0o644 },
            size,
            EntryType::Regular,
        ),
        What::Symlink { target } => {
            let t = target.as_bytes();
            if t.len() > 100 {
                // The long link goes before the long name, as GNU tar orders them.
                let mut with_link = Vec::new();
                long_entry(b'K', t, &mut with_link);
                with_link.extend_from_slice(&out);
                out = with_link;
            }
            let k = t.len().min(100);
            h.as_old_mut().linkname[..k].copy_from_slice(&t[..k]);
            (0o777, 0, EntryType::Symlink)
        }
    };
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out
}

/// The two zero blocks that end an archive.
pub const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// An entry's header as the archive holds it (whatever wrote it).
#[derive(Debug, Clone)]
pub struct Found {
    /// Every header byte read (long-name entries included): compared with the canonical form.
    pub raw: Vec<u8>,
    pub path: Vec<u8>,
    pub kind: EntryType,
    pub size: u64,
    pub link: Option<Vec<u8>>,
}

impl Found {
    pub fn path_lossy(&self) -> String {
        let p = String::from_utf8_lossy(&self.path);
        crate::text::one_line(p.trim_end_matches('/')).into_owned()
    }
    /// What kind of thing this is, in words.
    pub fn kind_words(&self) -> &'static str {
        match self.kind {
            EntryType::Regular | EntryType::Continuous => "a file",
            EntryType::Directory => "a folder",
            EntryType::Symlink => "a link",
            EntryType::Link => "a hard link",
            EntryType::Char => "a character device",
            EntryType::Block => "a block device",
            EntryType::Fifo => "a FIFO",
            EntryType::XHeader | EntryType::XGlobalHeader => "a PAX header",
            EntryType::GNUSparse => "a sparse file",
            _ => "an entry of an unknown type",
        }
    }
}

/// Why a read of header blocks stopped short.
#[derive(Debug)]
pub enum ReadError {
    /// The stream ended inside a header (or before one).
    Truncated,
    /// A header that is no header (bad checksum, a long name that is too long or repeated).
    Garbled(String),
    Io(io::Error),
}

/// Read exactly `buf.len()` bytes; `Ok(false)` when the stream ends before the first byte.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<bool, ReadError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ReadError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(true)
}

/// Read the next entry's header (with its long-name entries); `None` at a zero block (the end
/// of the archive). `Truncated` when the stream ends first.
pub fn read_header(r: &mut dyn Read) -> Result<Option<Found>, ReadError> {
    let mut raw = Vec::with_capacity(BLOCK);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    loop {
        let start = raw.len();
        raw.resize(start + BLOCK, 0);
        if !read_full(r, &mut raw[start..])? {
            return Err(ReadError::Truncated);
        }
        let block = &raw[start..];
        if start == 0 && block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let h = Header::from_byte_slice(block);
        let sum_ok = h.cksum().ok() == Some(checksum(block));
        if !sum_ok {
            return Err(ReadError::Garbled(
                "a header's checksum does not match (damaged archive)".into(),
            ));
        }
        let kind = h.entry_type();
        let size = h
            .entry_size()
            .map_err(|_| ReadError::Garbled("a header's size field is malformed".into()))?;
        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            let slot = if kind.is_gnu_longname() {
                &mut long_name
            } else {
                &mut long_link
            };
            if slot.is_some() || size > LONG_NAME_MAX {
                return Err(ReadError::Garbled(
                    "a long-name entry is repeated or too long".into(),
                ));
            }
            let padded = size as usize + padding(size);
            let at = raw.len();
            raw.resize(at + padded, 0);
            if !read_full(r, &mut raw[at..])? {
                return Err(ReadError::Truncated);
            }
            let mut name = raw[at..at + size as usize].to_vec();
            while name.last() == Some(&0) {
                name.pop();
            }
            *slot = Some(name);
            continue;
        }
        let path = long_name.unwrap_or_else(|| h.path_bytes().into_owned());
        let link = long_link.or_else(|| h.link_name_bytes().map(|l| l.into_owned()));
        return Ok(Some(Found {
            raw,
            path,
            kind,
            size,
            link,
        }));
    }
}

/// The tar checksum of a header block (the checksum field counted as spaces).
fn checksum(block: &[u8]) -> u32 {
    block[..148]
        .iter()
        .chain(&[b' '; 8])
        .chain(&block[156..])
        .map(|&b| u32::from(b))
        .sum()
}
