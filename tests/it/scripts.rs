//! The Python scripts (src/runtime/*.py) with nothing but `python3` on PATH — no venv, no
//! MLX, never skipped: each one compiles, and the standard-library unit tests of
//! tests/it/scripts/test_scripts.py pass (the stop and tool filters, the command reader, the
//! WAV header, convert's tensor grouping, the event writer and signals, and each script
//! started as mlxfs starts it, with `runtime::SHARED` as its last argument).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `python3` from PATH (not the test venv: these tests must run where only it exists).
fn python3() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .expect("the Python script tests need `python3` on PATH")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("cannot start python3");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scripts() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("src/runtime"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_script_compiles() {
    let tmp = tempfile::tempdir().unwrap();
    let files = scripts();
    assert!(files.len() >= 5, "{files:?}");
    // py_compile with its output in a temporary folder: nothing is written beside the sources.
    let code = "import py_compile, sys\n\
                for i, path in enumerate(sys.argv[2:]):\n    \
                    py_compile.compile(path, cfile=f'{sys.argv[1]}/{i}.pyc', doraise=True)\n";
    run(Command::new(python3())
        .args(["-c", code])
        .arg(tmp.path())
        .args(&files));
}

#[test]
fn the_scripts_pass_their_unit_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared.json");
    // As a subprocess gets it (`runtime::shared_arg`): a JSON list of [name, source], one
    // argument, which Linux takes up to 128 KiB (MAX_ARG_STRLEN).
    let arg = serde_json::to_string(&mlxfs::runtime::SHARED).unwrap();
    assert!(
        arg.len() < 128 << 10,
        "the shared modules ({} bytes) no longer fit in one argument",
        arg.len()
    );
    std::fs::write(&shared, arg).unwrap();
    let tests = root().join("tests/it/scripts/test_scripts.py");
    run(Command::new(python3())
        .arg("-B")
        .arg(&tests)
        .env("MLXFS_RUNTIME_DIR", root().join("src/runtime"))
        .env("MLXFS_SHARED_FILE", &shared)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(tmp.path()));
}
