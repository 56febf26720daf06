//! Shard file names (`model-00001-of-00003.safetensors`), as mlx-knife's health check and
//! mlx-lm's loader read them. Names come from disk: every cut here is by character, never by
//! byte index.

/// `…model-00001-of-00003.safetensors` → (1, 3): the last 20 characters of the stem must be
/// `model-NNNNN-of-NNNNN` (anything may come before, as in mlx-knife's regex search).
pub fn shard_numbers(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".safetensors")?;
    // The 20-character tail is ASCII when it matches, so cutting at the 20th character from
    // the end is the same as cutting 20 bytes; a multi-byte tail simply does not match.
    let start = stem.char_indices().rev().nth(19).map(|(i, _)| i)?;
    let tail = &stem[start..];
    let idx = tail.strip_prefix("model-")?.get(..5)?;
    let total = tail.get(11..)?.strip_prefix("-of-")?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(idx) || !digits(total) {
        return None;
    }
    Some((idx.parse().ok()?, total.parse().ok()?))
}

/// `^model-\d{5}-of-\d{5}\.safetensors$` (the names mlx-lm loads as shards).
pub fn is_exact_shard_name(n: &str) -> bool {
    n.len() == "model-00001-of-00002.safetensors".len()
        && n.starts_with("model-")
        && shard_numbers(n).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert_eq!(
            shard_numbers("model-00001-of-00003.safetensors"),
            Some((1, 3))
        );
        assert_eq!(
            shard_numbers("xmodel-00002-of-00003.safetensors"),
            Some((2, 3))
        );
        assert_eq!(shard_numbers("model-1-of-3.safetensors"), None);
        assert_eq!(shard_numbers("model.safetensors"), None);
        assert!(is_exact_shard_name("model-00001-of-00002.safetensors"));
        assert!(!is_exact_shard_name("xmodel-00001-of-00002.safetensors"));
    }

    #[test]
    fn multi_byte_names_never_panic() {
        for n in [
            "ééééééééééééééééééééé.safetensors",
            "é-model-00001-of-00002.safetensors",
            "model-0000é-of-00002.safetensors",
            "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀.safetensors",
        ] {
            let _ = shard_numbers(n);
            let _ = is_exact_shard_name(n);
        }
        assert_eq!(
            shard_numbers("é-model-00001-of-00002.safetensors"),
            Some((1, 2))
        );
    }
}
