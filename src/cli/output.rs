//! What commands hand back (their `data` and human text, or a [`CliError`]), the JSON
//! envelope, writing to stdout (a closed pipe ends the program quietly), and the human table
//! helpers shared by commands.

use std::io::Write;

use serde_json::{Map, Value, json};

use crate::catalog::resolve::ResolveError;
use crate::error::{Diagnostic, ErrorType};
use crate::jsonfmt::to_python_json;
pub use crate::text::human_bytes as humanize_size;
use crate::text::one_line;

/// What a command produced: the JSON envelope's `data`, the same facts as human text
/// (rendered only when asked for: `--json` never pays for a table), and the exit code.
pub struct Output {
    pub data: Value,
    human: Box<dyn FnOnce() -> String>,
    pub code: i32,
    /// Printed already (a long-running command that said what it had to while running).
    pub silent: bool,
}

impl Output {
    /// A successful result (exit 0) whose human text is already known.
    pub fn new(data: impl serde::Serialize, human: String) -> Output {
        Output::lazy(
            serde_json::to_value(data).unwrap_or(Value::Null),
            move || human,
        )
    }
    /// A successful result with its `data` already JSON, whose human text is rendered when
    /// asked for.
    pub fn lazy(data: Value, human: impl FnOnce() -> String + 'static) -> Output {
        Output {
            data,
            human: Box::new(human),
            code: 0,
            silent: false,
        }
    }
    /// The same with another exit code.
    pub fn code(mut self, code: i32) -> Output {
        self.code = code;
        self
    }
    /// Nothing more to print at the end (the command printed while it ran).
    pub fn silent(mut self) -> Output {
        self.silent = true;
        self
    }
    /// The human text.
    pub fn human(self) -> String {
        (self.human)()
    }
}

/// A command's error: its `error.type`, a message, extra fields, and what to do next.
#[derive(Debug, Clone)]
pub struct CliError {
    pub kind: ErrorType,
    pub message: String,
    pub fields: Vec<(&'static str, Value)>,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
            fields: Vec::new(),
            hint: None,
        }
    }
    pub fn hint(mut self, h: impl Into<String>) -> CliError {
        self.hint = Some(h.into());
        self
    }
    /// The JSON error object: `type`, `message`, then the extra fields.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::from(self.kind.as_str()));
        m.insert("message".into(), Value::from(self.message.clone()));
        for (k, v) in &self.fields {
            m.insert((*k).to_string(), v.clone());
        }
        Value::Object(m)
    }
}

/// Every layer's error reaches the CLI the same way.
impl<E: Diagnostic> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError {
            kind: e.error_type(),
            message: e.to_string(),
            fields: e.fields(),
            hint: e.hint(),
        }
    }
}

/// The catalog reports facts; what to do next names mlxfs's commands, so it is said here.
impl Diagnostic for ResolveError {
    fn error_type(&self) -> ErrorType {
        ResolveError::error_type(self)
    }
    fn hint(&self) -> Option<String> {
        match self {
            ResolveError::Ambiguous { .. } => {
                Some("Give one of the names above exactly (or an explicit path).".into())
            }
            ResolveError::NotFound { .. } => {
                Some("Run `mlxfs list --all` to see the models mlxfs knows about.".into())
            }
            ResolveError::HashNotFound { .. } => {
                Some("Run `mlxfs show <model> --json` to see its revisions.".into())
            }
            ResolveError::RefNotCached { name, .. } => Some(format!(
                "`mlxfs pull {name}` fetches it; a cached revision runs as NAME@REV."
            )),
            ResolveError::NotAModel { .. } => None,
        }
    }
    fn fields(&self) -> Vec<(&'static str, Value)> {
        match self {
            ResolveError::Ambiguous { matches, .. } => vec![("matches", json!(matches))],
            ResolveError::RefNotCached { commit, cached, .. } => {
                vec![("commit", json!(commit)), ("cached", json!(cached))]
            }
            _ => Vec::new(),
        }
    }
}

pub use crate::envelope::Order;

/// Build an envelope from a command's result.
pub fn envelope(command: Option<&str>, order: Order, result: Result<&Value, &CliError>) -> Value {
    crate::envelope::build(command, order, result.cloned().map_err(CliError::json))
}

/// Write `text` and a newline to stdout. A closed stdout (`mlxfs list --json | head -c1`) ends
/// the program quietly with status 0, as other Unix tools end; any other write error is said
/// on stderr and ends it with status 1. Never a panic.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let r = out
        .write_all(text.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if let Err(e) = r {
        drop(out);
        exit_on_write_error(&e);
    }
}

/// The end of a program whose stdout failed: quiet for a closed pipe, a message otherwise.
pub fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = writeln!(std::io::stderr(), "mlxfs: cannot write the output: {e}");
        crate::sys::exit_now(1);
    }
    crate::sys::exit_now(0)
}

/// A line on stderr; a closed stderr is ignored (never a panic).
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// Print an envelope on stdout (Python `print(json.dumps(..., indent=2))`).
pub fn print_json(v: &Value) {
    emit(&to_python_json(v));
}

/// Print a human error on stderr: `<command>: Error: <message>` plus matches and a hint.
pub fn print_human_error(command: &str, e: &CliError) {
    crate::note!("{command}: Error: {}", one_line(&e.message));
    for (k, v) in &e.fields {
        if *k == "matches"
            && let Value::Array(ms) = v
        {
            for m in ms {
                crate::note!("  {}", one_line(m.as_str().unwrap_or_default()));
            }
        }
        // `run`: the last lines Python printed on its stdout, escaped (its stderr was passed
        // on live, just above; the JSON error carries both).
        if *k == "python_output" {
            let lines = v["stdout"].as_array().cloned().unwrap_or_default();
            if !lines.is_empty() {
                crate::note!("Python's stdout ended with:");
            }
            for l in lines {
                crate::note!("  | {}", one_line(l.as_str().unwrap_or_default()));
            }
        }
    }
    if let Some(h) = &e.hint {
        crate::note!("hint: {h}");
    }
}

/// First 7 characters of a commit, else of a content hash's digest, else `-`.
pub fn hash7(commit: Option<&str>, content_hash: Option<&str>) -> String {
    if let Some(h) = commit.filter(|h| !h.is_empty()) {
        return one_line(crate::text::short_rev(h)).into_owned();
    }
    if let Some(c) = content_hash.filter(|c| !c.is_empty()) {
        let d = c.split_once(':').map_or(c, |x| x.1);
        return one_line(crate::text::short_rev(d)).into_owned();
    }
    "-".into()
}

/// Words of `text` in lines of at most `width` characters (a longer word gets its own line);
/// never empty.
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
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur.join(" "));
    }
    lines
}

/// mlx-knife's `_table`: cells padded to column width (in code points), `" | "` between,
/// a `-+-` rule, the last column optionally wrapped at `max_last` characters. Cells are
/// escaped ([`one_line`]): a name can never break a row.
pub fn table(headers: &[&str], rows: &[Vec<String>], max_last: Option<usize>) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| one_line(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    if let (Some(m), Some(last)) = (max_last, widths.last_mut()) {
        *last = (*last).min(m);
    }
    let fmt_row = |cols: &[String]| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| {
                let pad = w.saturating_sub(c.chars().count());
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
    for r in &rows {
        match (max_last, r.split_last()) {
            (Some(m), Some((last, rest))) if last.chars().count() > m => {
                let mut wrapped = wrap(last, m).into_iter();
                let mut first = rest.to_vec();
                first.push(wrapped.next().unwrap_or_default());
                lines.push(fmt_row(&first));
                for w in wrapped {
                    let mut cont = vec![String::new(); rest.len()];
                    cont.push(w);
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
    fn table_layout() {
        let t = table(&["Name", "Size"], &[vec!["a".into(), "10B".into()]], None);
        assert_eq!(t, "Name | Size\n-----+-----\na    | 10B ");
    }

    #[test]
    fn a_name_never_breaks_a_row() {
        let t = table(&["Name"], &[vec!["evil\nname".into()]], None);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.contains("evil\\nname"));
    }

    #[test]
    fn wrap_is_never_empty() {
        assert_eq!(wrap(&" ".repeat(40), 10), vec![String::new()]);
        let t = table(&["A", "B"], &[vec!["x".into(), " ".repeat(40)]], Some(10));
        assert_eq!(t.lines().count(), 3);
    }
}
