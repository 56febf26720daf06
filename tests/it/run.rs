//! `mlxfs run` with real MLX inference on a tiny model the tests generate
//! (scripts/make-tiny-model.py), in the venv scripts/test.sh creates (MLXFS_TEST_PYTHON).

use serde_json::Value;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::*;
use crate::support::python::*;
use crate::support::*;

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
        .succeeds();
    stderr_has(&o, "tokens/s");
    stderr_has(&o, "/.hf_cache: nothing added");
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
    stderr_has(&o, "pip install \"mlx[cpu]\" mlx-lm");
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
        let o = run_before_python(&fx, &[name, "hi"]).output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["error"]["type"], kind, "{v}");
    }
}

/// No prompt, as words or from stdin, is refused before Python starts; out-of-range numbers
/// (negative ones too) get the option's own message.
#[test]
fn empty_prompts_and_bad_numbers_are_refused() {
    let fx = Fx::new();
    fx.workspace("ok", &good_files());
    for (args, stdin) in [(&["ok", ""][..], ""), (&["ok", "-"], " \n\t")] {
        let mut child = run_before_python(&fx, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        let o = child.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["error"]["type"], "invalid_prompt", "{args:?}: {v}");
    }
    for (flag, value, says) in [
        ("--temperature", "-1", "must be 0 or more"),
        ("--max-tokens", "-3", "must be at least 1"),
        ("--max-tokens", "0", "must be at least 1"),
        ("--top-p", "-0.5", "must be above 0"),
        ("--repetition-penalty", "-2", "must be above 0"),
    ] {
        let o = mlxfs(&fx)
            .args(["run", "ok", "hi", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

#[test]
fn a_pytorch_labelled_checkpoint_is_refused_with_both_ways_out_and_runs_with_force() {
    crate::require!(Python);
    let fx = Fx::new();
    let ws = make_tiny(&fx, "plain", &["--no-mlx-marker"]);
    // The record keeps mlx-knife's label.
    let o = mlxfs(&fx)
        .args(["show", "plain", "--json"])
        .output()
        .unwrap();
    let v = envelope(&o);
    assert_eq!(v["data"]["model"]["framework"], "PyTorch", "{v}");
    assert_eq!(v["data"]["model"]["runtime_compatible"], false);
    // Refused before Python starts (a Python that does not exist is never reached), and the
    // message names both ways out.
    let o = run_before_python(&fx, &["plain", "hi"]).output().unwrap();
    let v = exited(&o, 1);
    assert_eq!(v["error"]["type"], "model_incompatible", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Incompatible framework: PyTorch")
            && msg.contains("--force")
            && msg.contains("mlxfs convert"),
        "{msg}"
    );
    // Forced, mlx-lm runs it; both modes give the text of the same weights marked as MLX.
    let forced = run_json(&fx, "plain", &["--force"]);
    assert_eq!(forced["forced"], true);
    assert_eq!(forced["model"]["framework"], "PyTorch");
    let sub = run_json(&fx, "plain", &["--force", "--subprocess"]);
    assert_eq!(sub["text"], forced["text"]);
    make_tiny(&fx, "marked", &[]);
    let m = run_json(&fx, "marked", &[]);
    assert_eq!(m["forced"], false);
    assert_eq!(m["text"], forced["text"]);
    // --force never lifts the other gates: model-supplied code stays refused.
    let cfg = ws.join("config.json");
    let mut c: Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    c["model_file"] = "modeling.py".into();
    fs::write(&cfg, c.to_string()).unwrap();
    let o = run_before_python(&fx, &["plain", "hi", "--force"])
        .output()
        .unwrap();
    let v = envelope(&o);
    error_is(&v, "model_incompatible", "model_file");
}

#[test]
fn workspace_cache_chooses_the_isolated_cache_and_cache_dir_is_its_alias() {
    crate::require!(Python);
    let (fx, ws) = with_tiny();
    for flag in ["--workspace-cache", "--cache-dir"] {
        let dir = fx.tmp.path().join(flag.trim_start_matches('-'));
        let v = run_json(&fx, "tiny", &[flag, dir.to_str().unwrap()]);
        assert_eq!(
            v["python"]["hf_home"],
            dir.to_string_lossy().as_ref(),
            "{flag}"
        );
        assert_eq!(v["cache"]["dir"], dir.to_string_lossy().as_ref());
        assert!(dir.is_dir());
    }
    assert!(!ws.join(".hf_cache").exists());
    let o = mlxfs(&fx).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("--workspace-cache <DIR>") && help.contains("cache-dir"),
        "{help}"
    );
}

#[test]
fn prompt_from_stdin_and_no_stream() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let o = output_with_stdin(
        mlxfs(&fx)
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
            .arg(venv_dir()),
        b"Explain FUSE",
    );
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
    use std::os::unix::process::CommandExt;
    crate::require!(Python);
    let (fx, _ws) = with_endless_tiny();
    for (extra, group) in CTRL_C {
        // Greedy decoding of this model never emits end-of-sequence: it would run for minutes.
        let mut child = mlxfs(&fx)
            .args([
                "run",
                "tiny",
                "hello",
                "--temperature",
                "0",
                "--max-tokens",
                "900000",
                "--python",
            ])
            .arg(venv_dir())
            .args(extra)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        out.read_exact(&mut first).expect("tokens before Ctrl-C");
        std::thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        ctrl_c(&child, group);
        let mut rest = Vec::new();
        out.read_to_end(&mut rest).unwrap();
        let status = child.wait().unwrap();
        let err = rest_of_stderr(&mut child);
        let case = format!("{extra:?}, to the group: {group}");
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "{case}: {:?}",
            sent.elapsed()
        );
        assert_eq!(status.code(), Some(130), "{case}: {err}");
        says_with_summary(&err, "interrupted", &case);
    }
}

/// Ctrl-C while a subprocess is still starting (imports, loading the model) is an
/// interrupted run, exit 130, as in the embedded interpreter — not a Python failure
/// (run_edges.rs has the embedded mode, and loads that block).
#[test]
fn ctrl_c_while_a_subprocess_loads_is_an_interrupted_run() {
    use std::os::unix::process::CommandExt;
    crate::require!(Python);
    let (fx, _ws) = with_endless_tiny();
    for group in [false, true] {
        let mut child = mlxfs(&fx)
            .args(["run", "tiny", "hello", "--max-tokens", "900000", "--json"])
            .args(["--subprocess", "--python"])
            .arg(venv_dir())
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while children(child.id()).is_empty() {
            assert!(Instant::now() < deadline, "no Python subprocess started");
            std::thread::sleep(Duration::from_millis(5));
        }
        // generate.py's first statements install its handler; mlx is imported after.
        std::thread::sleep(Duration::from_millis(150));
        ctrl_c(&child, group);
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let err = rest_of_stderr(&mut child);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "group {group}: {err}");
        let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        assert_eq!(v["status"], "success", "group {group}: {v} {err}");
        assert_eq!(
            v["data"]["finish_reason"], "interrupted",
            "group {group}: {v}"
        );
    }
}

/// A prompt longer than one command-line argument may be (128 KiB) reaches a subprocess: the
/// request goes on its stdin. (mlx-lm cannot load this model, so the run ends at the load,
/// after Python has read the request, without processing 200,000 tokens.)
#[test]
fn a_prompt_over_128_kib_reaches_a_subprocess() {
    crate::require!(Python);
    let fx = Fx::new();
    let ws = make_tiny(&fx, "long", &[]);
    break_layers(&ws);
    let prompt = "word ".repeat(40_000);
    let o = output_with_stdin(
        mlxfs(&fx)
            .args(["run", "long", "-", "--json", "--subprocess", "--python"])
            .arg(venv_dir()),
        prompt.as_bytes(),
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["type"], "load_failed", "{v}");
}

/// `mlxfs run MODEL "Explain FUSE" --seed 7 --max-tokens 12` with the test venv, extra
/// arguments and variables, and "y" on stdin (an answer to any question a library might ask).
fn run_with(fx: &Fx, model: &str, extra: &[&str], vars: &[(&str, &Path)]) -> Output {
    let mut c = explain_fuse(fx, model);
    c.args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    let _ = child.stdin.take().unwrap().write_all(b"y\ny\ny\n");
    child.wait_with_output().unwrap()
}

/// stderr `err` says `says`, and has mlxfs's summary (tokens/s); `at` names the case.
#[track_caller]
fn says_with_summary(err: &str, says: &str, at: &str) {
    assert!(
        err.contains(says) && err.contains("tokens/s"),
        "{at}: {err}"
    );
}

const MODES: [&[&str]; 2] = [&[], &["--subprocess"]];

/// A folder for PYTHONPATH whose `sitecustomize.py` is `code`: a stand-in for a library that
/// prints (Python imports it at start-up, in both run modes).
fn stub_library(fx: &Fx, name: &str, code: &str) -> PathBuf {
    let dir = fx.tmp.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("sitecustomize.py"), code).unwrap();
    dir
}

#[test]
fn a_tokenizer_that_needs_custom_code_is_refused_in_both_modes() {
    crate::require!(Python);
    let fx = Fx::new();
    let ws = qwenish(&fx);
    // Without the code, then with code that leaves a mark if it ever runs.
    let marker = fx.tmp.path().join("custom-code-ran");
    for with_code in [false, true] {
        if with_code {
            fs::write(
                ws.join("tokenization_qwen.py"),
                format!(
                    "open({:?}, 'w').write('ran')\nfrom transformers import PreTrainedTokenizerFast\n\
                     class QWenTokenizer(PreTrainedTokenizerFast):\n    pass\n",
                    marker.to_str().unwrap()
                ),
            )
            .unwrap();
        }
        for mode in MODES {
            let o = run_with(&fx, "qwenish", &[&["--json"], mode].concat(), &[]);
            assert_eq!(o.status.code(), Some(1), "{mode:?}");
            let v = envelope(&o);
            let msg = error_message(&v, "remote_code_required");
            assert!(
                msg.contains("tokenizer_config.json")
                    && msg.contains("tokenization_qwen.QWenTokenizer"),
                "{msg}"
            );
            // Plain mode: nothing on stdout, the error and its hint on stderr.
            let o = run_with(&fx, "qwenish", mode, &[]);
            assert_eq!(o.status.code(), Some(1), "{mode:?}");
            assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{mode:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("requires executing model-supplied code")
                    && err.contains("hint: mlxfs never runs code"),
                "{mode:?} {err}"
            );
            assert!(!err.contains("[y/N]"), "a library asked a question: {err}");
            assert!(!marker.exists(), "the model's own code ran ({mode:?})");
        }
    }
}

/// Prints on stdout without a newline at start-up and when mlx_lm is imported, in Python and
/// straight to fd 1 and 2 (as C code would), control characters included.
const PRINTING_LIBRARY: &str = r#"import os, sys
sys.stdout.write("Do you wish to run the custom code? [y/N] ")
os.write(1, b"raw fd 1 at start-up")

class _Hook:
    def find_spec(self, name, path=None, target=None):
        if name == "mlx_lm":
            sys.meta_path.remove(self)
            print("Do you wish to run the custom code? [y/N] ", end="")
            os.write(1, b"\x1b[31mraw fd 1\x07")
            os.write(2, b"stub on stderr, no newline")
        return None

sys.meta_path.insert(0, _Hook())
"#;

#[test]
fn what_libraries_print_never_reaches_stdout() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let stub = stub_library(&fx, "printing", PRINTING_LIBRARY);
    for mode in MODES {
        let clean = envelope(&run_with(&fx, "tiny", &[&["--json"], mode].concat(), &[]));
        let clean_text = clean["data"]["text"].as_str().unwrap().to_string();
        assert!(!clean_text.is_empty());
        let plain = run_with(&fx, "tiny", mode, &[]);
        assert!(plain.status.success());
        assert_eq!(
            String::from_utf8_lossy(&plain.stdout),
            format!("{clean_text}\n")
        );

        let o = run_with(
            &fx,
            "tiny",
            &[&["--json"], mode].concat(),
            &[("PYTHONPATH", &stub)],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v = envelope(&o);
        assert_eq!(v["status"], "success", "{v}");
        assert_eq!(v["data"]["text"], clean_text.as_str(), "{mode:?}");
        // The start-up print does not keep the embedded interpreter from being used.
        let expected_mode = if mode.is_empty() {
            "embedded"
        } else {
            "subprocess"
        };
        assert_eq!(v["data"]["python"]["mode"], expected_mode);

        let o = run_with(&fx, "tiny", mode, &[("PYTHONPATH", &stub)]);
        assert!(o.status.success());
        // Exactly the tokens: the same bytes as without the library.
        assert_eq!(o.stdout, plain.stdout, "{mode:?}");
        // Its stderr is passed on live, and mlxfs's summary starts on a line of its own.
        let err = String::from_utf8_lossy(&o.stderr);
        says_with_summary(&err, "stub on stderr, no newline\n", "");
    }
}

#[test]
fn a_failing_python_side_shows_what_it_printed() {
    crate::require!(Python);
    let (fx, ws) = with_tiny();
    break_layers(&ws);
    let stub = stub_library(
        &fx,
        "marker",
        "import os\nprint('MARKER-OUT: said on stdout')\nos.write(2, b'MARKER-ERR: said on stderr\\n')\n",
    );
    for mode in MODES {
        let o = run_with(
            &fx,
            "tiny",
            &[&["--json"], mode].concat(),
            &[("PYTHONPATH", &stub)],
        );
        let v = exited(&o, 1);
        assert_eq!(v["error"]["type"], "load_failed", "{mode:?} {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("Missing"));
        let out = &v["error"]["python_output"];
        assert_eq!(
            out["stdout"],
            serde_json::json!(["MARKER-OUT: said on stdout"])
        );
        assert!(
            out["stderr"]
                .as_array()
                .unwrap()
                .contains(&"MARKER-ERR: said on stderr".into()),
            "{out}"
        );
        let o = run_with(&fx, "tiny", mode, &[("PYTHONPATH", &stub)]);
        assert_eq!(o.status.code(), Some(1));
        assert!(o.stdout.is_empty());
        stderr_has(&o, "run: Error: ValueError");
        stderr_has(
            &o,
            "Python's stdout ended with:\n  | MARKER-OUT: said on stdout",
        );
    }
}

#[test]
fn a_subprocess_that_dies_without_a_word_is_a_failure_with_its_output() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let stub = stub_library(
        &fx,
        "dying",
        r#"import os, sys
class _Hook:
    def find_spec(self, name, path=None, target=None):
        if name == "mlx_lm":
            sys.stdout.write("about to end [y/N] ")
            sys.stdout.flush()
            os._exit(int(os.environ["STUB_EXIT"]))
        return None
sys.meta_path.insert(0, _Hook())
"#,
    );
    for (code, says) in [
        ("3", "(exit status: 3) before"),
        ("0", "(exit status: 0) without a result"),
    ] {
        let mut c = mlxfs(&fx);
        let o = c
            .args(["run", "tiny", "hi", "--json", "--subprocess", "--python"])
            .arg(venv_dir())
            .env("PYTHONPATH", &stub)
            .env("STUB_EXIT", code)
            .output()
            .unwrap();
        let v = exited(&o, 1);
        assert_eq!(v["error"]["type"], "python_failed", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{v}"
        );
        assert_eq!(
            v["error"]["python_output"]["stdout"],
            serde_json::json!(["about to end [y/N] "])
        );
    }
}

#[test]
fn no_cache_variable_leads_back_to_the_shared_cache() {
    crate::require!(Python);
    let (fx, ws) = with_tiny();
    // Every variable a library consults points at a "shared" folder, legacy names included.
    let shared = fx.tmp.path().join("shared");
    let mut vars: Vec<(&str, PathBuf)> = Vec::new();
    for (var, _) in mlxfs::env::ISOLATED_CACHE {
        let d = shared.join(var);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("keep"), b"shared").unwrap();
        vars.push((var, d));
    }
    let before = tree_state(&shared);
    let iso = ws.join(".hf_cache");
    for mode in MODES {
        let refs: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let o = run_with(&fx, "tiny", &[&["--json"], mode].concat(), &refs);
        let v = envelope(&o);
        assert_eq!(v["status"], "success", "{v}");
        let caches = v["data"]["python"]["caches"].as_object().unwrap().clone();
        // What the libraries themselves resolved.
        let expect = [
            ("huggingface_hub.HF_HOME", iso.clone()),
            ("huggingface_hub.HF_HUB_CACHE", iso.join("hub")),
            ("huggingface_hub.HUGGINGFACE_HUB_CACHE", iso.join("hub")),
            ("huggingface_hub.HF_ASSETS_CACHE", iso.join("assets")),
            (
                "huggingface_hub.HUGGINGFACE_ASSETS_CACHE",
                iso.join("assets"),
            ),
            ("huggingface_hub.HF_XET_CACHE", iso.join("xet")),
            ("transformers.HF_MODULES_CACHE", iso.join("modules")),
            ("env.XDG_CACHE_HOME", iso.join("xdg-cache")),
            ("env.TORCH_HOME", iso.join("torch")),
            ("env.HF_DATASETS_CACHE", iso.join("datasets")),
        ];
        for (k, p) in &expect {
            assert_eq!(caches[*k], p.to_string_lossy().as_ref(), "{mode:?} {k}");
        }
        for (k, p) in &caches {
            if k != "huggingface_hub.HF_TOKEN_PATH" {
                assert!(
                    p.as_str().unwrap().starts_with(iso.to_str().unwrap()),
                    "{k} = {p}"
                );
            }
        }
        // The token is the user's, `$HF_HOME/token` of the user's HF_HOME (read, never
        // isolated).
        assert_eq!(
            caches["huggingface_hub.HF_TOKEN_PATH"],
            shared.join("HF_HOME/token").to_string_lossy().as_ref()
        );
    }
    assert_eq!(tree_state(&shared), before);
    // A token file named by the user stays the one used.
    let token = fx.tmp.path().join("my-token");
    let v = envelope(&run_with(
        &fx,
        "tiny",
        &["--json"],
        &[("HF_TOKEN_PATH", &token)],
    ));
    assert_eq!(
        v["data"]["python"]["caches"]["huggingface_hub.HF_TOKEN_PATH"],
        token.to_string_lossy().as_ref()
    );
}

/// mlx-cpu bundles the reference BLAS; run loads the system's OpenBLAS first (scripts/
/// prereqs.sh installs it), and `MLXFS_BLAS=bundled` keeps mlx's own. Both give text.
#[test]
fn an_optimised_blas_is_used_unless_refused() {
    crate::require!(Python);
    let (fx, ws) = with_tiny();
    let run = |blas: Option<&str>, extra: &[&str]| -> Value {
        let mut c = mlxfs(&fx);
        if let Some(b) = blas {
            c.env("MLXFS_BLAS", b);
        }
        c.args([
            "run",
            ws.to_str().unwrap(),
            "Explain FUSE",
            "--json",
            "--seed",
            "7",
        ])
        .args(["--max-tokens", "8", "--python"])
        .arg(venv_dir())
        .args(extra)
        .ok()
        .clone()
    };
    for extra in [&[][..], &["--subprocess"][..]] {
        let fast = run(None, extra);
        let blas = fast["python"]["blas"].as_str().unwrap();
        assert!(blas.contains("openblas"), "{extra:?}: {blas}");
        assert_eq!(fast["generation_tokens"], 8);
        let own = run(Some("bundled"), extra);
        assert_eq!(own["python"]["blas"], "bundled", "{extra:?}");
        assert_eq!(own["generation_tokens"], 8);
    }
    // A library that cannot be loaded: a warning, mlx's own BLAS, and the run still works.
    let o = mlxfs(&fx)
        .env("MLXFS_BLAS", "/nonexistent/libblas.so")
        .args([
            "run",
            ws.to_str().unwrap(),
            "Hi",
            "--max-tokens",
            "4",
            "--python",
        ])
        .arg(venv_dir())
        .succeeds();
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("MLXFS_BLAS=/nonexistent/libblas.so could not be loaded"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A draft for the tiny model: the same tokenizer (it depends only on the vocabulary size),
/// other weights and one layer, generated outside the catalog.
fn make_draft(fx: &Fx) -> PathBuf {
    generate(
        "make-tiny-model.py",
        &fx.tmp.path().join("draft-src"),
        &["--seed", "3", "--layers", "1"],
    )
}

/// `mlxfs run MODEL "Explain FUSE" --seed 7 --temperature 0 --max-tokens 12 --json` with a
/// draft model, HF_ENDPOINT at the local hub, optionally inside a network namespace of its
/// own (`unshare -n`: no network at all).
fn run_draft(fx: &Fx, model: &str, hub: &str, no_net: bool, extra: &[&str]) -> Value {
    explain_fuse_in(mlxfs_net(fx, !no_net), model)
        .env("HF_ENDPOINT", hub)
        .args(["--json", "--temperature", "0"])
        .args(extra)
        .ok()
}

#[test]
fn a_hub_draft_is_downloaded_into_the_isolated_cache_and_then_runs_offline() {
    crate::require!(Python, Root);
    let (fx, ws) = with_tiny();
    let hub = crate::support::fakehub::FakeHub::start(&fx.tmp.path().join("remote"));
    hub.put_repo("org/draft", &files_of(&make_draft(&fx)));
    let commit = hub.commit("org/draft", "main");
    // A hub model too: its runtime cache is its per-model folder under the state folder.
    fx.hub_model("org/tiny-hub", &files_of(&ws));
    let home_cache = fx.home.join(".cache");
    fs::create_dir_all(home_cache.join("huggingface")).unwrap();
    let shared = || (tree_state(&fx.hf_home), tree_state(&home_cache));
    let before = shared();

    let plain = run_draft(&fx, "tiny", &hub.url, false, &[]);
    for (model, cache) in [
        ("tiny", ws.join(".hf_cache")),
        (
            "org/tiny-hub",
            fx.home
                .join(".local/state/mlxfs/hf-cache/models--org--tiny-hub"),
        ),
    ] {
        // First run: mlx-lm downloads the draft (the catalog does not know it) into the run's
        // isolated cache, and the report names what arrived.
        hub.clear_requests();
        let first = run_draft(&fx, model, &hub.url, false, &["--draft-model", "org/draft"]);
        assert_eq!(first["draft"]["source"], "hub", "{model}");
        assert!(
            hub.requests()
                .iter()
                .any(|r| r.contains("/org/draft/resolve/")),
            "{:?}",
            hub.requests()
        );
        let repo = cache.join("hub/models--org--draft");
        assert_eq!(
            fs::read_to_string(repo.join("refs/main")).unwrap().trim(),
            commit
        );
        assert!(
            repo.join("snapshots")
                .join(&commit)
                .join("model.safetensors")
                .is_file()
        );
        let report = &first["cache"];
        assert_eq!(report["dir"], cache.to_string_lossy().as_ref());
        assert_eq!(report["arrived"][0]["repo_id"], "org/draft", "{report}");
        assert_eq!(
            report["arrived"][0]["revisions"][0]["commit"],
            commit.as_str()
        );
        assert_eq!(report["offline_ready"], true);
        // Greedy speculative decoding gives the model's own text.
        assert_eq!(first["text"], plain["text"], "{model}");
        assert!(first["draft"]["accepted_tokens"].is_u64());

        // The same run with no network at all: the draft comes from the runtime cache, the
        // text is the same, nothing is added.
        hub.clear_requests();
        let offline = run_draft(&fx, model, &hub.url, true, &["--draft-model", "org/draft"]);
        assert_eq!(offline["draft"]["source"], "runtime-cache");
        assert_eq!(offline["draft"]["revision"], commit.as_str());
        assert_eq!(offline["text"], first["text"]);
        assert_eq!(offline["cache"]["added"], serde_json::json!([]));
        assert_eq!(hub.requests(), Vec::<String>::new());
        // And with --offline (HF_HUB_OFFLINE=1) too.
        let off = run_draft(
            &fx,
            model,
            &hub.url,
            true,
            &["--draft-model", "org/draft", "--offline"],
        );
        assert_eq!(off["text"], first["text"]);
        // health --verbose sees the captured draft, offline-ready; the model stays as it was.
        let o = mlxfs(&fx)
            .args(["health", model, "--verbose", "--json"])
            .output()
            .unwrap();
        let h = envelope(&o);
        let rc = &h["data"]["healthy"][0]["runtime_cache"];
        assert_eq!(rc["repos"][0]["repo_id"], "org/draft", "{h}");
        assert_eq!(rc["offline_ready"], true);
    }
    // The shared cache and ~/.cache are untouched.
    assert_eq!(shared(), before);
}

#[test]
fn a_draft_from_the_catalog_and_drafts_that_cannot_be() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let draft = fx.ws_home.join("draft");
    fs::rename(make_draft(&fx), &draft).unwrap();
    let plain = run_json(&fx, "tiny", &["--temperature", "0"]);
    // By name: loaded from its folder, nothing downloaded; the subprocess agrees.
    for mode in MODES {
        let v = run_json(
            &fx,
            "tiny",
            &[
                &[
                    "--temperature",
                    "0",
                    "--draft-model",
                    "draft",
                    "--num-draft-tokens",
                    "2",
                ],
                mode,
            ]
            .concat(),
        );
        assert_eq!(v["draft"]["source"], "catalog");
        assert_eq!(v["draft"]["path"], draft.to_string_lossy().as_ref());
        assert_eq!(v["draft"]["num_draft_tokens"], 2);
        assert_eq!(v["text"], plain["text"], "{mode:?}");
        assert_eq!(v["cache"]["added"], serde_json::json!([]));
    }
    // Refused before Python starts (the Python does not exist): a path that is not there, a
    // name that is neither in the catalog nor a hub id.
    for (spec, kind) in [("./nope", "model_not_found"), ("nope", "model_not_found")] {
        let o = run_before_python(&fx, &["tiny", "hi"])
            .args(["--draft-model", spec])
            .output()
            .unwrap();
        let v = envelope(&o);
        assert_eq!(v["error"]["type"], kind, "{spec}: {v}");
    }
    // A draft with another tokenizer.
    make_tiny(&fx, "other-vocab", &["--vocab", "300"]);
    let o = run_with(
        &fx,
        "tiny",
        &["--json", "--draft-model", "other-vocab"],
        &[],
    );
    let v = envelope(&o);
    error_is(
        &v,
        "draft_mismatch",
        "vocabulary sizes differ (300 vs the model's 384)",
    );
    // --num-draft-tokens needs --draft-model.
    let o = mlxfs(&fx)
        .args(["run", "tiny", "hi", "--num-draft-tokens", "2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
