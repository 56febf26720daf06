//! Images and audio handed to a model (`run --image/--audio`, `serve`'s `image_url` parts and
//! audio uploads), checked before any Python starts: the type is told by the file's first
//! bytes (never by its name), the size is bounded, and a file that is not one of the kinds a
//! backend reads is refused by name.

use std::io::Read;
use std::path::Path;

/// Most bytes of one image (mlx-knife's limit).
pub const IMAGE_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Most images in one request.
pub const MAX_IMAGES: usize = 10;
/// Most bytes of one audio file (mlx-knife's limit).
pub const AUDIO_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Whisper's language codes (its tokenizer's `LANGUAGES`, in its order).
pub const WHISPER_LANGUAGES: &[&str] = &[
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su", "yue",
];

/// A `--language` (or a transcription's `language`) as Whisper takes it: one of
/// [`WHISPER_LANGUAGES`], any case; Err says what is accepted.
pub fn whisper_language(s: &str) -> Result<String, String> {
    let code = s.trim().to_ascii_lowercase();
    if WHISPER_LANGUAGES.contains(&code.as_str()) {
        Ok(code)
    } else {
        Err(format!(
            "`{}` is not a Whisper language code (one of: {})",
            crate::text::one_line(s),
            WHISPER_LANGUAGES.join(", ")
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Webp,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Webp => "webp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Wav,
    Mp3,
    Flac,
    /// MPEG-4 audio (`.m4a`, `.mp4`: an `ftyp` box).
    M4a,
    Ogg,
}

impl AudioFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AudioFormat::Wav => "wav",
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Flac => "flac",
            AudioFormat::M4a => "m4a",
            AudioFormat::Ogg => "ogg",
        }
    }
}

/// The image format of these first bytes, when it is one the vision backends read.
pub fn sniff_image(b: &[u8]) -> Option<ImageFormat> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some(ImageFormat::Webp)
    } else {
        None
    }
}

/// The audio format of these first bytes, when it is one mlxfs decodes.
pub fn sniff_audio(b: &[u8]) -> Option<AudioFormat> {
    if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE" {
        Some(AudioFormat::Wav)
    } else if b.starts_with(b"fLaC") {
        Some(AudioFormat::Flac)
    } else if b.starts_with(b"OggS") {
        Some(AudioFormat::Ogg)
    } else if b.len() >= 8 && &b[4..8] == b"ftyp" {
        Some(AudioFormat::M4a)
    } else if b.starts_with(b"ID3")
        || (b.len() >= 2 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0 && b[1] & 0x06 != 0)
    {
        // An ID3 tag, or an MPEG audio frame header (layer bits not 00, which is ADTS AAC).
        Some(AudioFormat::Mp3)
    } else {
        None
    }
}

/// What is wrong with a media input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaErrorKind {
    /// Missing, unreadable, not a regular file, empty, or not a kind the backend reads.
    Invalid,
    /// Over the size limit.
    TooLarge,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct MediaError {
    pub kind: MediaErrorKind,
    pub message: String,
}

fn invalid(message: String) -> MediaError {
    MediaError {
        kind: MediaErrorKind::Invalid,
        message,
    }
}

fn too_large(what: &str, size: u64, max: u64) -> MediaError {
    MediaError {
        kind: MediaErrorKind::TooLarge,
        message: format!(
            "{what} is {size} bytes; the limit is {max} bytes ({} MiB)",
            max / (1024 * 1024)
        ),
    }
}

/// A path as messages show it (one line).
fn shown(path: &Path) -> String {
    crate::text::one_line(&path.to_string_lossy()).into_owned()
}

/// The size and first 16 bytes of a regular file (a FIFO or a device is refused, never read).
fn head(path: &Path) -> Result<(u64, Vec<u8>), MediaError> {
    let shown = shown(path);
    let f = crate::sys::open_regular(path).map_err(|e| invalid(format!("{shown}: {e}")))?;
    let size = f
        .metadata()
        .map_err(|e| invalid(format!("{shown}: {e}")))?
        .len();
    let mut buf = Vec::with_capacity(16);
    f.take(16)
        .read_to_end(&mut buf)
        .map_err(|e| invalid(format!("{shown}: {e}")))?;
    Ok((size, buf))
}

/// Check an image's bytes: not empty, at most [`IMAGE_MAX_BYTES`], PNG, JPEG or WebP.
/// `what` names it in messages (`a.png`, `messages[0].content[1]`).
pub fn check_image(what: &str, size: u64, first: &[u8]) -> Result<ImageFormat, MediaError> {
    if size == 0 {
        return Err(invalid(format!("{what} is empty")));
    }
    if size > IMAGE_MAX_BYTES {
        return Err(too_large(what, size, IMAGE_MAX_BYTES));
    }
    sniff_image(first).ok_or_else(|| {
        invalid(format!(
            "{what} is not a PNG, JPEG or WebP image (told by its first bytes: {})",
            crate::text::hex(&first[..first.len().min(8)])
        ))
    })
}

/// Check an audio file's bytes: not empty, at most [`AUDIO_MAX_BYTES`], WAV, MP3, FLAC, M4A
/// or Ogg.
pub fn check_audio(what: &str, size: u64, first: &[u8]) -> Result<AudioFormat, MediaError> {
    if size == 0 {
        return Err(invalid(format!("{what} is empty")));
    }
    if size > AUDIO_MAX_BYTES {
        return Err(too_large(what, size, AUDIO_MAX_BYTES));
    }
    sniff_audio(first).ok_or_else(|| {
        invalid(format!(
            "{what} is not WAV, MP3, FLAC, M4A or Ogg audio (told by its first bytes: {})",
            crate::text::hex(&first[..first.len().min(8)])
        ))
    })
}

pub fn check_image_file(path: &Path) -> Result<ImageFormat, MediaError> {
    let (size, first) = head(path)?;
    check_image(&shown(path), size, &first)
}

pub fn check_audio_file(path: &Path) -> Result<AudioFormat, MediaError> {
    let (size, first) = head(path)?;
    check_audio(&shown(path), size, &first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_magic() {
        assert_eq!(
            sniff_image(b"\x89PNG\r\n\x1a\n\0\0"),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            sniff_image(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
        assert_eq!(sniff_image(b"GIF89a"), None);
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(sniff_audio(b"RIFF\0\0\0\0WAVEfmt "), Some(AudioFormat::Wav));
        assert_eq!(sniff_audio(b"fLaC\0"), Some(AudioFormat::Flac));
        assert_eq!(sniff_audio(b"ID3\x04"), Some(AudioFormat::Mp3));
        assert_eq!(sniff_audio(&[0xFF, 0xFB, 0x90]), Some(AudioFormat::Mp3));
        assert_eq!(sniff_audio(&[0xFF, 0xF1, 0x50]), None); // ADTS AAC
        assert_eq!(sniff_audio(b"\0\0\0\x20ftypM4A "), Some(AudioFormat::M4a));
        assert_eq!(sniff_audio(b"OggS\0"), Some(AudioFormat::Ogg));
        assert_eq!(sniff_audio(b"\x89PNG\r\n\x1a\n"), None);
    }

    #[test]
    fn languages() {
        assert_eq!(WHISPER_LANGUAGES.len(), 100);
        assert_eq!(whisper_language(" DE ").unwrap(), "de");
        assert_eq!(whisper_language("yue").unwrap(), "yue");
        assert!(whisper_language("german").is_err());
        assert!(whisper_language("xx").unwrap_err().contains("en, zh, de"));
    }

    #[test]
    fn limits_and_empty() {
        let png = b"\x89PNG\r\n\x1a\n";
        assert!(check_image("a", 100, png).is_ok());
        assert_eq!(
            check_image("a", IMAGE_MAX_BYTES + 1, png).unwrap_err().kind,
            MediaErrorKind::TooLarge
        );
        assert_eq!(
            check_image("a", 0, png).unwrap_err().kind,
            MediaErrorKind::Invalid
        );
        assert!(check_audio("a", AUDIO_MAX_BYTES + 1, b"fLaC").is_err());
        let e = check_image("x.gif", 10, b"GIF89a").unwrap_err();
        assert!(
            e.message.contains("x.gif is not a PNG, JPEG or WebP"),
            "{e}"
        );
    }
}
