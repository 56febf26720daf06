//! One read of a file, two answers: its SHA-256 (an archive's manifest) and its content-hash v2
//! `sha` ([`super::hash_file`]'s class rules), fed chunk by chunk as the bytes stream past. An
//! archive is written and restored in one pass this way: nothing is read twice to hash it.

use sha2::{Digest, Sha256};

use super::{CATCHALL_FULL_READ_CAP, SAFETENSORS_HEADER_MAX, sha_hex};

/// Where a safetensors file's header hash stands.
enum Header {
    /// Collecting the 8-byte little-endian length.
    Prefix([u8; 8], usize),
    /// Hashing the header: bytes still to come.
    Body(Sha256, u64),
    Done(String),
    /// Too short, a zero or absurd length: [`super::hash_file`] fails on it.
    Corrupt,
}

/// Hashes one file's bytes as they stream past.
pub struct FileHasher {
    full: Sha256,
    header: Option<Header>,
    name: Vec<u8>,
    len: u64,
}

/// What [`FileHasher::finish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSums {
    /// SHA-256 of every byte.
    pub sha256: [u8; 32],
    /// Bytes seen.
    pub len: u64,
    /// The content hash v2 `sha` (`sha256:…`), `None` for a corrupt safetensors header.
    pub v2: Option<String>,
}

impl FileHasher {
    /// A hasher for a file whose last path component is `name` (its class depends on it).
    pub fn new(name: &[u8]) -> FileHasher {
        FileHasher {
            full: Sha256::new(),
            header: name
                .ends_with(b".safetensors")
                .then_some(Header::Prefix([0; 8], 0)),
            name: name.to_vec(),
            len: 0,
        }
    }

    pub fn update(&mut self, mut buf: &[u8]) {
        self.full.update(buf);
        self.len = self.len.saturating_add(buf.len() as u64);
        while !buf.is_empty() {
            match &mut self.header {
                Some(Header::Prefix(p, have)) => {
                    let n = (8 - *have).min(buf.len());
                    p[*have..*have + n].copy_from_slice(&buf[..n]);
                    *have += n;
                    buf = &buf[n..];
                    if *have == 8 {
                        let len = u64::from_le_bytes(*p);
                        self.header = Some(if len == 0 || len > SAFETENSORS_HEADER_MAX {
                            Header::Corrupt
                        } else {
                            Header::Body(Sha256::new(), len)
                        });
                    }
                }
                Some(Header::Body(h, left)) => {
                    let n = (*left).min(buf.len() as u64) as usize;
                    h.update(&buf[..n]);
                    *left -= n as u64;
                    buf = &buf[n..];
                    if *left == 0 {
                        let h = std::mem::take(h);
                        self.header = Some(Header::Done(sha_hex(h.finalize())));
                    }
                }
                _ => return,
            }
        }
    }

    pub fn finish(self) -> FileSums {
        let sha256: [u8; 32] = self.full.finalize().into();
        let v2 = match self.header {
            Some(Header::Done(s)) => Some(s),
            Some(_) => None,
            None if self.len > CATCHALL_FULL_READ_CAP => {
                let mut h = Sha256::new();
                h.update(&self.name);
                h.update(b"\x00");
                h.update(self.len.to_string().as_bytes());
                Some(sha_hex(h.finalize()))
            }
            None => Some(sha_hex(sha256)),
        };
        FileSums {
            sha256,
            len: self.len,
            v2,
        }
    }
}
