//! The JSON envelope, error → exit code, and the human table helpers shared by commands.

use serde_json::{Map, Value, json};

use crate::catalog::resolve::ResolveError;
use crate::jsonfmt::to_python_json;

/// A command's error: an `error.type`, a message, extra fields, and what to do next.
#[derive(Debug, Clone)]
pub struct CliError {
    pub kind: String,
    pub message: String,
    pub extra: Box<Map<String, Value>>,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(kind: &str, message: impl Into<String>) -> CliError {
        CliError {
            kind: kind.into(),
            message: message.into(),
            extra: Box::default(),
            hint: None,
        }
    }
    pub fn hint(mut self, h: impl Into<String>) -> CliError {
        self.hint = Some(h.into());
        self
    }
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::from(self.kind.clone()));
        m.insert("message".into(), Value::from(self.message.clone()));
        for (k, v) in self.extra.iter() {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl From<ResolveError> for CliError {
    fn from(e: ResolveError) -> CliError {
        let mut c = CliError::new(e.kind(), e.to_string());
        match &e {
            ResolveError::Ambiguous { matches, .. } => {
                c.extra.insert("matches".into(), json!(matches));
                c.hint = Some("Give one of the names above exactly (or an explicit path).".into());
            }
            ResolveError::NotFound { .. } => {
                c.hint = Some("Run `mlxfs list --all` to see the models mlxfs knows about.".into());
            }
            ResolveError::HashNotFound { .. } => {
                c.hint = Some("Run `mlxfs show <model> --json` to see its revisions.".into());
            }
            ResolveError::NotAModel { .. } => {}
        }
        c
    }
}

pub use crate::envelope::Order;

/// Build an envelope from a command's result.
pub fn envelope(command: Option<&str>, order: Order, result: &Result<Value, CliError>) -> Value {
    crate::envelope::build(
        command,
        order,
        result.as_ref().map_err(CliError::json).cloned(),
    )
}

/// Print an envelope on stdout (Python `print(json.dumps(..., indent=2))`).
pub fn print_json(v: &Value) {
    println!("{}", to_python_json(v));
}

/// Print a human error on stderr: `<command>: Error: <message>` plus matches and a hint.
pub fn print_human_error(command: &str, e: &CliError) {
    eprintln!("{command}: Error: {}", e.message);
    if let Some(Value::Array(ms)) = e.extra.get("matches") {
        for m in ms {
            eprintln!("  {}", m.as_str().unwrap_or_default());
        }
    }
    if let Some(h) = &e.hint {
        eprintln!("hint: {h}");
    }
}

/// mlx-knife's `humanize_size`: decimal units, bytes without decimals.
pub use crate::hub::progress::human_bytes as humanize_size;

/// First 7 characters of a commit, else of a content hash's digest, else `-`.
pub fn hash7(commit: Option<&str>, content_hash: Option<&str>) -> String {
    if let Some(h) = commit.filter(|h| !h.is_empty()) {
        return h.chars().take(7).collect();
    }
    if let Some(c) = content_hash.filter(|c| !c.is_empty()) {
        let d = c.split_once(':').map_or(c, |x| x.1);
        return d.chars().take(7).collect();
    }
    "-".into()
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    if text.chars().count() <= width {
        return vec![text.to_string()];
    }
    let mut lines = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut len = 0;
    for w in text.split_whitespace() {
        let wl = w.chars().count();
        if !cur.is_empty() && len + 1 + wl > width {
            lines.push(cur.join(" "));
            cur = vec![w];
            len = wl;
        } else {
            len += if len > 0 { 1 } else { 0 } + wl;
            cur.push(w);
        }
    }
    if !cur.is_empty() {
        lines.push(cur.join(" "));
    }
    lines
}

/// mlx-knife's `_table`: cells padded to column width (in code points), `" | "` between,
/// a `-+-` rule, the last column optionally wrapped at `max_last` characters.
pub fn table(headers: &[&str], rows: &[Vec<String>], max_last: Option<usize>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    if let (Some(m), Some(last)) = (max_last, widths.last_mut()) {
        *last = (*last).min(m);
    }
    let fmt_row = |cols: &[String]| {
        cols.iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                format!("{c}{}", " ".repeat(pad))
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut lines = vec![fmt_row(
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    )];
    lines.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    for r in rows {
        match (max_last, r.last()) {
            (Some(m), Some(last)) if last.chars().count() > m => {
                let wrapped = wrap(last, m);
                let mut first = r[..r.len() - 1].to_vec();
                first.push(wrapped[0].clone());
                lines.push(fmt_row(&first));
                for w in &wrapped[1..] {
                    let mut cont = vec![String::new(); r.len() - 1];
                    cont.push(w.clone());
                    lines.push(fmt_row(&cont));
                }
            }
            _ => lines.push(fmt_row(r)),
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_mlx_knife() {
        assert_eq!(humanize_size(0), "0B");
        assert_eq!(humanize_size(999), "999B");
        assert_eq!(humanize_size(1653), "1.7KB");
        assert_eq!(humanize_size(4_500_000_000), "4.5GB");
    }

    #[test]
    fn table_layout() {
        let t = table(&["Name", "Size"], &[vec!["a".into(), "10B".into()]], None);
        assert_eq!(t, "Name | Size\n-----+-----\na    | 10B ");
    }
}
