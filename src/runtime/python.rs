//! Finding the Python environment for `run`: `--python`, `MLXFS_PYTHON`, `VIRTUAL_ENV`, then
//! `python3` on PATH. Each may name a venv folder or an interpreter.

use std::path::{Path, PathBuf};

use super::{RunError, RunErrorKind};
use crate::env;

#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// The interpreter to run (the venv's `bin/python`, never resolved through its symlink).
    pub python: PathBuf,
    /// The venv folder, when the interpreter belongs to one.
    pub venv: Option<PathBuf>,
    /// Where it came from (for messages).
    pub source: &'static str,
}

fn interpreter_in(p: &Path) -> Option<PathBuf> {
    if p.is_dir() {
        ["bin/python", "bin/python3"]
            .iter()
            .map(|b| p.join(b))
            .find(|c| c.is_file())
    } else if p.is_file() {
        Some(p.to_path_buf())
    } else {
        None
    }
}

/// `bin` in the directories of `PATH` only (no system fallback: `python3` is whatever the
/// user's PATH says).
fn on_path(bin: &str) -> Option<PathBuf> {
    env::var_os(env::PATH)
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Resolve the environment, or say what to do.
pub fn find(explicit: Option<&Path>) -> Result<PythonEnv, RunError> {
    let var = |k: &str| env::var_os(k).map(PathBuf::from);
    let candidates: [(Option<PathBuf>, &'static str); 3] = [
        (explicit.map(Path::to_path_buf), "--python"),
        (var(env::MLXFS_PYTHON), "MLXFS_PYTHON"),
        (var(env::VIRTUAL_ENV), "VIRTUAL_ENV"),
    ];
    for (cand, source) in candidates {
        let Some(c) = cand else { continue };
        let python = interpreter_in(&c).ok_or_else(|| {
            RunError::new(
                RunErrorKind::PythonNotFound,
                format!(
                    "{source} names {}, which is neither a Python interpreter nor a venv",
                    c.display()
                ),
                Some(
                    "create one: python3 -m venv DIR && DIR/bin/pip install \"mlx[cpu]\" mlx-lm"
                        .into(),
                ),
            )
        })?;
        return Ok(with_venv(python, source));
    }
    let python = on_path("python3").ok_or_else(|| {
        RunError::new(
            RunErrorKind::PythonNotFound,
            "no Python found (--python, MLXFS_PYTHON, VIRTUAL_ENV, python3 on PATH)",
            Some("create a venv: python3 -m venv ~/.venvs/mlx && ~/.venvs/mlx/bin/pip install \"mlx[cpu]\" mlx-lm, then pass --python ~/.venvs/mlx".into()),
        )
    })?;
    Ok(with_venv(python, "PATH"))
}

fn with_venv(python: PathBuf, source: &'static str) -> PythonEnv {
    let venv = python
        .parent()
        .and_then(Path::parent)
        .filter(|d| d.join("pyvenv.cfg").is_file())
        .map(Path::to_path_buf);
    PythonEnv {
        python,
        venv,
        source,
    }
}

/// `sys.version` of an interpreter. Running it costs a Python start-up (~20 ms), so the answer
/// is remembered in mlxfs's state folder, keyed on the interpreter's real file (path, size,
/// mtime) — a rebuilt or upgraded Python is asked again.
pub fn sys_version(python: &Path) -> Option<String> {
    let key = cache_key(python);
    let cache = state_file();
    if let (Some(k), Some(c)) = (&key, &cache)
        && let Ok(text) = std::fs::read_to_string(c)
        && let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&text)
        && let Some(v) = m.get(k).and_then(|v| v.as_str())
    {
        return Some(v.to_string());
    }
    // `-I -S`: no `site`, no `sitecustomize`, no PYTHON* variables — nothing that could print
    // before the version and make it unrecognisable (sys.version is the binary's own).
    let out = std::process::Command::new(python)
        .args([
            "-I",
            "-S",
            "-c",
            "import sys; sys.stdout.write(sys.version)",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    if let (Some(k), Some(c)) = (key, cache) {
        let mut m = std::fs::read_to_string(&c)
            .ok()
            .and_then(|t| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&t).ok()
            })
            .unwrap_or_default();
        m.insert(k, serde_json::Value::from(version.clone()));
        // Best effort, atomically (a cache: losing it only costs a Python start-up).
        if let Some(dir) = c.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let tmp = c.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, serde_json::Value::Object(m).to_string()).is_ok() {
                let _ = std::fs::rename(&tmp, &c);
            }
        }
    }
    Some(version)
}

fn cache_key(python: &Path) -> Option<String> {
    let real = std::fs::canonicalize(python).ok()?;
    let md = std::fs::metadata(&real).ok()?;
    Some(format!(
        "{}|{}|{}|{}",
        python.display(),
        real.display(),
        md.len(),
        crate::sys::mtime_ns(&md)
    ))
}

fn state_file() -> Option<PathBuf> {
    crate::state::dir().map(|d| d.join("python-versions.json"))
}
