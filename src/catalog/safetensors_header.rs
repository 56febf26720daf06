//! The header check of a `.safetensors` file: health's "Corrupt safetensors files" reason,
//! read by the catalog walk ([`super::inventory`]) in the same open as the LFS scan where it
//! can, and by [`super::health`] for what the walk did not read.

use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// A safetensors file must start with a sane header that fits in the file and whose tensors
/// end within it: catches truncated downloads that keep a plausible size.
pub fn safetensors_problem(path: &Path, size: u64) -> Option<&'static str> {
    let mut f = crate::sys::open_regular(path).ok()?;
    safetensors_problem_in(&mut f, size)
}

/// [`safetensors_problem`] of a file of `size` bytes open at its start.
pub fn safetensors_problem_in(f: &mut impl Read, size: u64) -> Option<&'static str> {
    let mut prefix = [0u8; 8];
    if f.read_exact(&mut prefix).is_err() {
        return Some("shorter than its 8-byte header length");
    }
    let n = u64::from_le_bytes(prefix);
    if n == 0 || n > crate::hash::SAFETENSORS_HEADER_MAX {
        return Some("absurd header length");
    }
    if 8 + n > size {
        return Some("truncated header");
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return Some("truncated header");
    }
    let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&header) else {
        return Some("header is not a JSON object");
    };
    let data_len = size - 8 - n;
    for (k, v) in &h {
        if k == "__metadata__" {
            continue;
        }
        let end = v
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(Value::as_u64);
        match end {
            Some(end) if end <= data_len => {}
            Some(_) => return Some("truncated tensor data"),
            None => return Some("tensor without data_offsets"),
        }
    }
    None
}
