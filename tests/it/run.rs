//! `mlxfs run` with real MLX inference on a tiny model the tests generate
//! (scripts/make-tiny-model.py), in the venv scripts/test.sh creates (MLXFS_TEST_PYTHON).

use serde_json::Value;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mlxfs");

fn venv_python() -> PathBuf {
    let p = std::env::var("MLXFS_TEST_PYTHON")
        .expect("require!(Python) checks MLXFS_TEST_PYTHON first");
    PathBuf::from(p)
}

fn venv_dir() -> PathBuf {
    venv_python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fixture catalog with the tiny model as the workspace `tiny`.
fn with_tiny() -> (Fx, PathBuf) {
    let fx = Fx::new();
    let ws = fx.ws_home.join("tiny");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-tiny-model.py");
    let o = Command::new(venv_python())
        .arg(script)
        .arg(&ws)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "make-tiny-model: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (fx, ws)
}

fn mlxfs(fx: &Fx) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
    for (k, v) in fx.vars() {
        c.env(k, v);
    }
    c
}

fn run_json(fx: &Fx, model: &str, extra: &[&str]) -> Value {
    let o = mlxfs(fx)
        .args([
            "run",
            model,
            "Explain FUSE",
            "--json",
            "--seed",
            "7",
            "--max-tokens",
            "12",
        ])
        .arg("--python")
        .arg(venv_dir())
        .args(extra)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert_eq!(
        v["status"],
        "success",
        "{v}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    v["data"].clone()
}

#[test]
fn same_text_from_path_name_mount_and_subprocess() {
    crate::require!(Python, Fuse);
    let (fx, ws) = with_tiny();
    let by_path = run_json(&fx, ws.to_str().unwrap(), &[]);
    let text = by_path["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert_eq!(by_path["generation_tokens"], 12);
    assert_eq!(by_path["chat_template"], true);
    assert_eq!(by_path["python"]["mode"], "embedded", "{by_path}");
    // The interpreter is the venv's, and HF_HOME is the workspace's own cache.
    assert_eq!(
        by_path["python"]["prefix"],
        venv_dir().to_string_lossy().as_ref()
    );
    let hf = ws.join(".hf_cache");
    assert_eq!(by_path["python"]["hf_home"], hf.to_string_lossy().as_ref());
    assert!(hf.is_dir());
    assert_eq!(by_path["cache"]["dir"], hf.to_string_lossy().as_ref());
    assert!(by_path["timings"]["first_token_s"].as_f64().unwrap() > 0.0);
    assert_eq!(by_path["model"]["name"], ws.to_string_lossy().as_ref());

    let by_name = run_json(&fx, "tiny", &[]);
    assert_eq!(by_name["text"], text);

    let sub = run_json(&fx, "tiny", &["--subprocess"]);
    assert_eq!(sub["python"]["mode"], "subprocess");
    assert_eq!(sub["text"], text);
    assert_eq!(sub["python"]["hf_home"], hf.to_string_lossy().as_ref());

    // Through a live mount: the same output, the weights read from the mount, the cache the
    // workspace's real folder.
    let mnt = fx.tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mut daemon = mlxfs(&fx)
        .arg("mount")
        .arg(&mnt)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::metadata(mnt.join(".mlxfs/status.json")).is_err() {
        assert!(Instant::now() < deadline, "mount did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let through = run_json(&fx, mnt.join("tiny").to_str().unwrap(), &[]);
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    assert_eq!(through["text"], text);
    assert_eq!(
        through["model"]["weights_path"],
        mnt.join("tiny").to_string_lossy().as_ref()
    );
    assert_eq!(through["model"]["path"], ws.to_string_lossy().as_ref());
    assert_eq!(through["python"]["hf_home"], hf.to_string_lossy().as_ref());
}

#[test]
fn nothing_is_written_to_the_shared_caches() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    fx.hub_model("org/other", &good_files());
    // The user's home cache (mlxfs's own state folder, ~/.local/state/mlxfs, may change).
    let home_cache = fx.home.join(".cache");
    fs::create_dir_all(home_cache.join("huggingface")).unwrap();
    let before = (tree_state(&fx.hf_home), tree_state(&home_cache));
    let o = mlxfs(&fx)
        .args([
            "run",
            "tiny",
            "--prompt",
            "hello",
            "--max-tokens",
            "4",
            "--python",
        ])
        .arg(venv_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tokens/s"), "{err}");
    assert!(err.contains("/.hf_cache: nothing added"), "{err}");
    assert_eq!((tree_state(&fx.hf_home), tree_state(&home_cache)), before);
}

#[test]
fn offline_run_without_network() {
    crate::require!(Python, Root);
    let (fx, _ws) = with_tiny();
    let mut c = Command::new("unshare");
    c.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
    for (k, v) in fx.vars() {
        c.env(k, v);
    }
    let o = c
        .args([
            "-n",
            "--",
            BIN,
            "run",
            "tiny",
            "hello",
            "--offline",
            "--json",
            "--max-tokens",
            "4",
            "--python",
        ])
        .arg(venv_dir())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["data"]["python"]["offline"], true);
}

#[test]
fn a_venv_without_mlx_gets_the_install_hint() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let bare = fx.tmp.path().join("bare-venv");
    let st = Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&bare)
        .status()
        .unwrap();
    assert!(st.success());
    let o = mlxfs(&fx)
        .args(["run", "tiny", "hi", "--json", "--python"])
        .arg(&bare)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["type"], "missing_dependency", "{v}");
    let o = mlxfs(&fx)
        .args(["run", "tiny", "hi", "--python"])
        .arg(&bare)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pip install \"mlx[cpu]\" mlx-lm"), "{err}");
}

#[test]
fn unhealthy_and_incompatible_models_are_refused_before_python_starts() {
    let fx = Fx::new();
    fx.workspace(
        "broken",
        &files(&[("config.json", br#"{"model_type": "llama"}"#)]),
    );
    fx.workspace(
        "torchy",
        &files(&[
            ("config.json", br#"{"model_type": "llama"}"#),
            ("model.safetensors", &tiny_weights()),
        ]),
    );
    // A Python that does not exist: reaching it would be a different error.
    for (name, kind) in [
        ("broken", "model_unhealthy"),
        ("torchy", "model_incompatible"),
    ] {
        let o = mlxfs(&fx)
            .args([
                "run",
                name,
                "hi",
                "--json",
                "--python",
                "/nonexistent/python",
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["error"]["type"], kind, "{v}");
    }
}

#[test]
fn prompt_from_stdin_and_no_stream() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let mut child = mlxfs(&fx)
        .args([
            "run",
            "tiny",
            "-",
            "--max-tokens",
            "5",
            "--no-stream",
            "--seed",
            "3",
            "--python",
        ])
        .arg(venv_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Explain FUSE")
        .unwrap();
    let o: Output = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o2 = mlxfs(&fx)
        .args([
            "run",
            "tiny",
            "Explain FUSE",
            "--json",
            "--max-tokens",
            "5",
            "--seed",
            "3",
            "--python",
        ])
        .arg(venv_dir())
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice::<Value>(&o2.stdout).unwrap()["data"].clone();
    // Same prompt, same seed: the printed text is the JSON text.
    let printed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        printed.trim_end_matches('\n'),
        json["text"].as_str().unwrap()
    );
}

#[test]
fn ctrl_c_stops_generation_cleanly() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    // Greedy decoding of this model never emits end-of-sequence: it would run for minutes.
    let mut child = mlxfs(&fx)
        .args([
            "run",
            "tiny",
            "hello",
            "--temperature",
            "0",
            "--max-tokens",
            "1000000",
            "--python",
        ])
        .arg(venv_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).expect("tokens before Ctrl-C");
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("interrupted") && err.contains("tokens/s"),
        "{err}"
    );
}
