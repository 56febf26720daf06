//! `mlxfs run`: the Python side of running a model — finding the environment, the isolated
//! cache, and generation in an embedded interpreter (pyo3) or, when the venv does not match
//! the linked libpython (or mlxfs was built without the `python` feature), in a subprocess of
//! the venv's `python` running the same code.

#[cfg(feature = "python")]
mod embedded;
pub mod python;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use python::PythonEnv;

use crate::error::{Diagnostic, ErrorType};

/// The generation code both modes run.
pub const GENERATE_PY: &str = include_str!("generate.py");

/// Set by SIGINT/SIGTERM: generation stops after the current token.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Route Ctrl-C and SIGTERM to [`STOP`] (the embedded interpreter installs no handlers).
pub fn install_stop_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub model_path: PathBuf,
    pub prompt: String,
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub repetition_penalty: Option<f64>,
    pub seed: Option<u64>,
    pub chat_template: bool,
}

impl GenRequest {
    pub fn to_json(&self) -> String {
        json!({
            "model_path": self.model_path,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "chat_template": self.chat_template,
        })
        .to_string()
    }
}

/// One event from the generation code.
#[derive(Debug, Clone)]
pub enum Event {
    Env(Value),
    Token(String),
    Done(Value),
    Error { kind: String, message: String },
}

impl Event {
    pub fn parse(line: &str) -> Option<Event> {
        let v: Value = serde_json::from_str(line).ok()?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Some(match v["event"].as_str()? {
            "env" => Event::Env(v),
            "token" => Event::Token(s("text")),
            "done" => Event::Done(v),
            "error" => Event::Error {
                kind: s("type"),
                message: s("message"),
            },
            _ => return None,
        })
    }
}

/// How generation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Subprocess,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::Subprocess => "subprocess",
        }
    }
}

/// What kept Python from running the generation, by what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunErrorKind {
    /// No interpreter where `--python`, `MLXFS_PYTHON`, `VIRTUAL_ENV` or PATH point.
    PythonNotFound,
    /// The subprocess Python could not be waited for, or exited with an error.
    PythonFailed,
    /// The embedded interpreter did not start.
    PythonInitFailed,
    /// The embedded interpreter raised out of the generation code.
    PythonError,
}

impl RunErrorKind {
    pub fn error_type(self) -> ErrorType {
        match self {
            RunErrorKind::PythonNotFound => ErrorType::PythonNotFound,
            RunErrorKind::PythonFailed => ErrorType::PythonFailed,
            RunErrorKind::PythonInitFailed => ErrorType::PythonInitFailed,
            RunErrorKind::PythonError => ErrorType::PythonError,
        }
    }
}

/// Why generation could not run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    pub kind: RunErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl RunError {
    pub fn new(kind: RunErrorKind, message: impl Into<String>, hint: Option<String>) -> RunError {
        RunError {
            kind,
            message: message.into(),
            hint,
        }
    }
}

impl Diagnostic for RunError {
    fn error_type(&self) -> ErrorType {
        self.kind.error_type()
    }
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// The install line for mlx and mlx-lm on this platform.
pub fn install_hint(env: &PythonEnv) -> String {
    let pkgs = if cfg!(target_os = "macos") {
        "mlx-lm"
    } else {
        "\"mlx[cpu]\" mlx-lm"
    };
    format!(
        "install them into that environment: {} -m pip install {pkgs}",
        env.python.display()
    )
}

pub type Handler = Arc<Mutex<dyn FnMut(Event) + Send>>;

/// Run generation, streaming events to `handler`. `force_subprocess` skips the embedded
/// interpreter. Returns the mode used and, when the embedded interpreter could not be used,
/// why (for a note to the user).
pub fn generate(
    env: &PythonEnv,
    req: &GenRequest,
    force_subprocess: bool,
    handler: Handler,
) -> Result<(Mode, Option<String>), RunError> {
    #[cfg(feature = "python")]
    if !force_subprocess {
        match embedded::usable(env) {
            Ok(()) => {
                embedded::run(env, &req.to_json(), handler)?;
                return Ok((Mode::Embedded, None));
            }
            Err(why) => {
                subprocess(env, req, handler)?;
                return Ok((Mode::Subprocess, Some(why)));
            }
        }
    }
    let why = if force_subprocess {
        None
    } else {
        Some("mlxfs was built without the embedded interpreter (feature `python`)".to_string())
    };
    subprocess(env, req, handler)?;
    Ok((Mode::Subprocess, why))
}

fn subprocess(env: &PythonEnv, req: &GenRequest, handler: Handler) -> Result<(), RunError> {
    let mut child = Command::new(&env.python)
        .arg("-c")
        .arg(GENERATE_PY)
        .arg(req.to_json())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            RunError::new(
                RunErrorKind::PythonNotFound,
                format!("cannot start {}: {e}", env.python.display()),
                Some("point --python (or MLXFS_PYTHON) at a Python environment with mlx-lm".into()),
            )
        })?;
    let Some(out) = child.stdout.take() else {
        let _ = child.kill();
        return Err(RunError::new(
            RunErrorKind::PythonFailed,
            "no pipe to the Python subprocess",
            None,
        ));
    };
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        if let Some(ev) = Event::parse(&line) {
            (handler.lock().unwrap_or_else(|e| e.into_inner()))(ev);
        }
    }
    let status = child
        .wait()
        .map_err(|e| RunError::new(RunErrorKind::PythonFailed, e.to_string(), None))?;
    if !status.success() && !STOP.load(Ordering::SeqCst) {
        return Err(RunError::new(
            RunErrorKind::PythonFailed,
            format!("{} exited with {status}", env.python.display()),
            None,
        ));
    }
    Ok(())
}

/// Files of a folder: relative path → (size, mtime in ns).
pub fn snapshot(dir: &Path) -> BTreeMap<String, (u64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    (md.len(), crate::sys::mtime_ns(&md)),
                );
            }
        }
    }
    out
}

/// What a run added to (or changed in) its cache.
pub fn cache_report(dir: &Path, before: &BTreeMap<String, (u64, i64)>) -> Value {
    let after = snapshot(dir);
    let changed: Vec<Value> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, (size, _))| json!({"path": k, "size": size}))
        .collect();
    let bytes: u64 = changed.iter().filter_map(|c| c["size"].as_u64()).sum();
    json!({"dir": dir, "added": changed, "bytes_added": bytes})
}
