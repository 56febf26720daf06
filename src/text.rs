//! Small text rules shared by the core and every adapter: short commit ids, object-id hex,
//! mlx-knife's size format, and the escaping that keeps one model on one line.
//!
//! Everything here takes untrusted text (names read from disk) and never panics on it: no
//! byte-index slicing of names anywhere else in mlxfs — use [`short_rev`].

use std::borrow::Cow;
use std::fmt::Write;

/// The first 7 characters of a commit (or of any snapshot folder name), counted in characters,
/// so a name with multi-byte characters is never cut inside one (`abcdefé12` → `abcdefé`).
pub fn short_rev(rev: &str) -> &str {
    match rev.char_indices().nth(7) {
        Some((i, _)) => &rev[..i],
        None => rev,
    }
}

/// Is `s` a full commit id (40 hex digits)?
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// mlx-knife's `humanize_size`: decimal units, bytes without decimals (`999B`, `1.7KB`,
/// `4.5GB`).
pub fn human_bytes(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["B", "KB", "MB", "GB", "TB"] {
        if v < 1000.0 {
            return if unit == "B" {
                format!("{v:.0}{unit}")
            } else {
                format!("{v:.1}{unit}")
            };
        }
        v /= 1000.0;
    }
    format!("{v:.1}PB")
}

/// Characters that would end or reshape a line on a terminal or in a line-oriented file:
/// C0 and C1 controls (`\n`, `\r`, `\t`, ESC, NEL, …), DEL, the Unicode line and paragraph
/// separators, and the bidirectional controls (which can make a line read as another).
fn breaks_lines(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` quoted for a POSIX shell when it needs it (`rm -rf '/path/with space'`).
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b));
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', "'\\''")))
    }
}

/// A name or reason made safe for one line of text, as `ls` quotes names: `\n`, `\r` and `\t`
/// become those two-character escapes, other control characters `\xHH` (or `\u{HHHH}`), so a
/// name can never forge another model's line. Text without such characters is returned as is.
/// JSON output never goes through this (its own escaping is exact).
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(breaks_lines) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if breaks_lines(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if breaks_lines(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_revs_count_characters() {
        assert_eq!(short_rev("1234567890abcdef"), "1234567");
        assert_eq!(short_rev("abcdefé12"), "abcdefé");
        assert_eq!(short_rev("ééééééééé"), "ééééééé");
        assert_eq!(short_rev("abc"), "abc");
        assert_eq!(short_rev(""), "");
    }

    #[test]
    fn sizes_like_mlx_knife() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(999), "999B");
        assert_eq!(human_bytes(1653), "1.7KB");
        assert_eq!(human_bytes(4_500_000_000), "4.5GB");
    }

    #[test]
    fn one_line_escapes_what_breaks_lines() {
        assert_eq!(one_line("plain name"), "plain name");
        assert!(matches!(one_line("plain"), Cow::Borrowed(_)));
        assert_eq!(one_line("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(one_line("esc\u{1b}[31m"), "esc\\x1b[31m");
        assert_eq!(one_line("nel\u{85}x\u{2028}y"), "nel\\x85x\\u{2028}y");
        assert_eq!(one_line("é—😀"), "é—😀");
        assert!(!one_line("x\u{7f}\n").contains(['\n', '\u{7f}']));
        assert_eq!(one_line("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(shell_quote("/plain/path"), "/plain/path");
        assert_eq!(shell_quote("/it's here"), "'/it'\\''s here'");
    }
}
