//! JSON text exactly as Python's `json.dumps(obj, indent=2)` writes it (mlx-knife's output and
//! sentinel format): two-space indent, `": "` separators, and `ensure_ascii` — every non-ASCII
//! character (and DEL) escaped as `\uXXXX`, astral characters as surrogate pairs.

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use std::io::{self, Write};

struct PyFormatter<'a>(PrettyFormatter<'a>);

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(fn $name<W: ?Sized + Write>(&mut self, w: &mut W $(, $arg: $ty)*) -> io::Result<()> {
            self.0.$name(w $(, $arg)*)
        })*
    };
}

impl Formatter for PyFormatter<'_> {
    delegate!(
        begin_array(),
        end_array(),
        begin_array_value(first: bool),
        end_array_value(),
        begin_object(),
        end_object(),
        begin_object_key(first: bool),
        begin_object_value(),
        end_object_value(),
    );

    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, s: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if c.is_ascii() && c != '\x7f' {
                continue;
            }
            w.write_all(&s.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&s.as_bytes()[start..])
    }
}

/// Serialize like `json.dumps(value, indent=2)` (no trailing newline).
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, PyFormatter(PrettyFormatter::new()));
    value
        .serialize(&mut ser)
        .expect("serializing to memory cannot fail");
    String::from_utf8(out).expect("ensure_ascii output is ASCII")
}

#[cfg(test)]
mod tests {
    use super::to_python_json;
    use serde_json::json;

    #[test]
    fn matches_python_dumps_indent_2() {
        // python3 -c 'import json;print(json.dumps({"a":[1,{}],"b":[],"c":"é—😀\x7f\r","d":None},indent=2))'
        let v = json!({"a": [1, {}], "b": [], "c": "é—😀\u{7f}\r", "d": null});
        let want = "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": [],\n  \"c\": \"\\u00e9\\u2014\\ud83d\\ude00\\u007f\\r\",\n  \"d\": null\n}";
        assert_eq!(to_python_json(&v), want);
    }
}
