//! Finding the Python environment for `run`: `--python`, `MLXFS_PYTHON`, `VIRTUAL_ENV`, then
//! `python3` on PATH. Each may name a venv folder or an interpreter.

use std::path::{Path, PathBuf};

use super::RunError;

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

fn on_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Resolve the environment, or say what to do.
pub fn find(explicit: Option<&Path>) -> Result<PythonEnv, RunError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let candidates: [(Option<PathBuf>, &'static str); 3] = [
        (explicit.map(Path::to_path_buf), "--python"),
        (var("MLXFS_PYTHON"), "MLXFS_PYTHON"),
        (var("VIRTUAL_ENV"), "VIRTUAL_ENV"),
    ];
    for (cand, source) in candidates {
        let Some(c) = cand else { continue };
        let python = interpreter_in(&c).ok_or_else(|| {
            RunError::new(
                "python_not_found",
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
            "python_not_found",
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

/// `sys.version` of an interpreter (runs it once).
pub fn sys_version(python: &Path) -> Option<String> {
    let out = std::process::Command::new(python)
        .args(["-c", "import sys; sys.stdout.write(sys.version)"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
