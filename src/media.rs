//! Images and audio handed to a model (`run --image/--audio`, `serve`'s `image_url` parts and
//! audio uploads), checked before any Python starts: the type is told by the file's first
//! bytes (never by its name), the size is bounded, and a file that is not one of the kinds a
//! backend reads is refused by name.

use std::io::Read;
use std::path::Path;

/// Most bytes of one image (mlx-knife's limit).
pub const IMAGE_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Most pixels of one image, as its header states them (8192 × 8192): a 10 MiB PNG of one
/// colour can claim hundreds of megapixels, and decoded RGB takes 3 bytes a pixel (here at
/// most 192 MiB an image) before a processor scales it down to the few hundred thousand
/// pixels a vision model sees. A 48-megapixel phone photo passes.
pub const IMAGE_MAX_PIXELS: u64 = 8192 * 8192;
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

/// The size and first `n` bytes of a regular file (a FIFO or a device is refused, never
/// read).
fn head(path: &Path, n: u64) -> Result<(u64, Vec<u8>), MediaError> {
    let shown = shown(path);
    let f = crate::sys::open_regular(path).map_err(|e| invalid(format!("{shown}: {e}")))?;
    let size = f
        .metadata()
        .map_err(|e| invalid(format!("{shown}: {e}")))?
        .len();
    let mut buf = Vec::new();
    f.take(n.min(size))
        .read_to_end(&mut buf)
        .map_err(|e| invalid(format!("{shown}: {e}")))?;
    Ok((size, buf))
}

/// Width and height as an image's header states them: PNG's `IHDR`, JPEG's start-of-frame
/// segment (any of SOF0–SOF15 but DHT, JPG and DAC; the segments before it skipped by their
/// lengths), WebP's `VP8 ` frame header, `VP8L` header or `VP8X` canvas. None when the bytes
/// end before it or do not hold it.
pub fn image_dimensions(format: ImageFormat, b: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?) as u32);
    let le16 = |i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?) as u32);
    let le24 = |i: usize| {
        let x = b.get(i..i + 3)?;
        Some(x[0] as u32 | (x[1] as u32) << 8 | (x[2] as u32) << 16)
    };
    match format {
        ImageFormat::Png => {
            if b.get(12..16)? != b"IHDR" {
                return None;
            }
            let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
            let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
            Some((w, h))
        }
        ImageFormat::Jpeg => {
            let mut i = 2;
            loop {
                // Fill bytes (0xFF) may precede a marker.
                while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
                    i += 1;
                }
                if *b.get(i)? != 0xFF {
                    return None;
                }
                let marker = *b.get(i + 1)?;
                match marker {
                    // Markers without a length.
                    0x01 | 0xD0..=0xD7 => i += 2,
                    // Start of scan or end of image before any frame header.
                    0xD9 | 0xDA => return None,
                    0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                        return Some((be16(i + 7)?, be16(i + 5)?));
                    }
                    _ => i += 2 + be16(i + 2)? as usize,
                }
            }
        }
        ImageFormat::Webp => match b.get(12..16)? {
            b"VP8 " => {
                if b.get(23..26)? != [0x9D, 0x01, 0x2A] {
                    return None;
                }
                Some((le16(26)? & 0x3FFF, le16(28)? & 0x3FFF))
            }
            b"VP8L" => {
                if *b.get(20)? != 0x2F {
                    return None;
                }
                let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
                Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
            }
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            _ => None,
        },
    }
}

/// Check an image's bytes (`bytes`: the whole file, or as much of its start as there is;
/// `size`: its whole size): not empty, at most [`IMAGE_MAX_BYTES`], PNG, JPEG or WebP, a
/// header that states its width and height, neither 0, at most [`IMAGE_MAX_PIXELS`] pixels.
/// `what` names it in messages (`a.png`, `messages[0].content[1]`). Whether the model's own
/// image processor takes it (a processor may refuse an extreme aspect ratio) is asked in
/// Python, before generation (generate.py `check_images`).
pub fn check_image(what: &str, size: u64, bytes: &[u8]) -> Result<ImageFormat, MediaError> {
    if size == 0 {
        return Err(invalid(format!("{what} is empty")));
    }
    if size > IMAGE_MAX_BYTES {
        return Err(too_large(what, size, IMAGE_MAX_BYTES));
    }
    let format = sniff_image(bytes).ok_or_else(|| {
        invalid(format!(
            "{what} is not a PNG, JPEG or WebP image (told by its first bytes: {})",
            crate::text::hex(&bytes[..bytes.len().min(8)])
        ))
    })?;
    let Some((w, h)) = image_dimensions(format, bytes) else {
        return Err(invalid(format!(
            "{what}: its {} header does not state its width and height (a damaged or \
             truncated image?)",
            format.as_str().to_uppercase()
        )));
    };
    if w == 0 || h == 0 {
        return Err(invalid(format!(
            "{what} is {w}×{h} pixels: an image without pixels"
        )));
    }
    let pixels = w as u64 * h as u64;
    if pixels > IMAGE_MAX_PIXELS {
        return Err(MediaError {
            kind: MediaErrorKind::TooLarge,
            message: format!(
                "{what} is {w}×{h} pixels ({:.0} megapixels); the limit is {} megapixels \
                 (8192×8192): scale it down",
                pixels as f64 / 1e6,
                IMAGE_MAX_PIXELS / 1_000_000
            ),
        });
    }
    Ok(format)
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

/// [`check_image`] of a file: read whole when it is within [`IMAGE_MAX_BYTES`] (a FIFO or a
/// device is refused, never read).
pub fn check_image_file(path: &Path) -> Result<ImageFormat, MediaError> {
    let (size, bytes) = head(path, IMAGE_MAX_BYTES)?;
    check_image(&shown(path), size, &bytes)
}

pub fn check_audio_file(path: &Path) -> Result<AudioFormat, MediaError> {
    let (size, first) = head(path, 16)?;
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

    /// A PNG's first 24 bytes: signature, IHDR length and name, width, height.
    fn png_head(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b
    }

    #[test]
    fn dimensions_from_headers() {
        assert_eq!(
            image_dimensions(ImageFormat::Png, &png_head(40, 24)),
            Some((40, 24))
        );
        // JPEG: SOI, an APP0 segment of 16 bytes, fill bytes, SOF2 (progressive).
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        jpeg.extend_from_slice(&[0; 14]);
        jpeg.extend_from_slice(&[0xFF, 0xFF, 0xC2, 0x00, 0x11, 0x08, 0x01, 0x2C, 0x00, 0xC8]);
        assert_eq!(image_dimensions(ImageFormat::Jpeg, &jpeg), Some((200, 300)));
        // DHT (0xC4) is not a frame header; a scan before any frame is no size.
        let dht = [0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x02, 0xFF, 0xDA, 0x00, 0x02];
        assert_eq!(image_dimensions(ImageFormat::Jpeg, &dht), None);
        // WebP: VP8X canvas (24-bit, minus one), VP8L (14-bit fields, minus one).
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\x10\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0x3F, 0x1F, 0x00, 0x0F, 0x00, 0x00]);
        assert_eq!(image_dimensions(ImageFormat::Webp, &vp8x), Some((8000, 16)));
        let mut vp8l = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2F".to_vec();
        let bits: u32 = 39 | (23 << 14);
        vp8l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(image_dimensions(ImageFormat::Webp, &vp8l), Some((40, 24)));
        // Bytes that end before the header: no size.
        assert_eq!(
            image_dimensions(ImageFormat::Png, &png_head(1, 1)[..20]),
            None
        );
    }

    #[test]
    fn limits_and_empty() {
        let png = png_head(40, 24);
        assert!(check_image("a", 100, &png).is_ok());
        let e = check_image("a.png", 100, &png_head(9000, 9000)).unwrap_err();
        assert_eq!(e.kind, MediaErrorKind::TooLarge);
        assert!(
            e.message.contains("9000×9000 pixels (81 megapixels)"),
            "{e}"
        );
        assert!(check_image("a", 100, &png_head(8192, 8192)).is_ok());
        let e = check_image("a.png", 100, &png_head(0, 5)).unwrap_err();
        assert!(e.message.contains("an image without pixels"), "{e}");
        let e = check_image("a.png", 100, &png[..10]).unwrap_err();
        assert!(
            e.message.contains("does not state its width and height"),
            "{e}"
        );
        let png: &[u8] = &png;
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
