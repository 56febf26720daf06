//! `mlxfs run` at its edges: it ends when its work ends (no hang after the answer), Ctrl-C and
//! SIGTERM stop it wherever it is (importing, loading, blocked in a read that never returns),
//! a prompt over the context length is refused before any of it is processed, and its
//! defaults are mlx-lm's (temperature 0 is greedy: mlx-lm's own text).

use serde_json::Value;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::*;
use crate::support::python::*;
use crate::support::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Start `cmd` (with `--subprocess` when `mode` says so) in a process group of its own, its
/// stdout and stderr piped.
fn spawn_grouped(cmd: &mut Command, mode: &str) -> Child {
    if mode == "subprocess" {
        cmd.arg("--subprocess");
    }
    cmd.process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for `child` at most `limit`; on time out kill it (and its group) and say so.
fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on our own child's process group (started with process_group(0)).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Python environment of its own (a venv of the Python mlxfs embeds, so the embedded mode
/// runs), whose `mlx` is empty and whose `mlx_lm`, when imported, writes `<fifo>.reached` and
/// then blocks opening the FIFO `fifo`: with Python's own `os.open` (`how` = "python": a
/// blocked system call Python can interrupt) or with the tokenizers library's Rust code
/// (`how` = "rust": its open(2) is retried on EINTR, so nothing in the process can break
/// it — as a FIFO named tokenizer.json, or a dead network disk, holds a real load).
fn blocking_env(dir: &Path) -> PathBuf {
    let env = dir.join("blocking-env");
    let o = Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&env)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A venv's site-packages: lib/pythonX.Y/site-packages.
    let site_of = |venv: &Path| {
        fs::read_dir(venv.join("lib"))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path()
            .join("site-packages")
    };
    let site = site_of(&env);
    let real_site = site_of(&venv_dir());
    fs::create_dir_all(site.join("mlx")).unwrap();
    fs::create_dir_all(site.join("mlx_lm")).unwrap();
    fs::write(site.join("mlx/__init__.py"), "").unwrap();
    fs::write(
        site.join("mlx_lm/__init__.py"),
        format!(
            "import os, sys\n\
             fifo = os.environ['BLOCK_FIFO']\n\
             open(fifo + '.reached', 'w').close()\n\
             if os.environ['BLOCK_HOW'] == 'python':\n    os.open(fifo, os.O_RDONLY)\n\
             else:\n    sys.path.append({real_site:?})\n    \
             from tokenizers import Tokenizer\n    Tokenizer.from_file(fifo)\n"
        ),
    )
    .unwrap();
    env
}

/// Ctrl-C and SIGTERM stop `run` while Python is blocked loading, in both modes: where Python
/// can be interrupted, with its `interrupted` answer at once (exit 130, JSON success with
/// `finish_reason` "interrupted"); where nothing can break the read, after the 2 s grace
/// (exit 130, the error `interrupted`), the subprocess killed, not orphaned. Before, the
/// embedded run ignored both signals for ever.
#[test]
fn ctrl_c_and_sigterm_stop_a_run_blocked_while_loading() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let env = blocking_env(fx.tmp.path());
    let fifo = fx.tmp.path().join("block.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reached = PathBuf::from(format!("{}.reached", fifo.display()));
    for (how, mode, signal) in [
        ("python", "embedded", libc::SIGINT),
        ("python", "subprocess", libc::SIGTERM),
        ("rust", "embedded", libc::SIGTERM),
        ("rust", "subprocess", libc::SIGINT),
    ] {
        let case = format!("{how}, {mode}, signal {signal}");
        let _ = fs::remove_file(&reached);
        let mut cmd = mlxfs(&fx);
        cmd.args(["run", "tiny", "hello", "--json", "--python"])
            .arg(&env)
            .env("BLOCK_FIFO", &fifo)
            .env("BLOCK_HOW", how);
        let mut child = spawn_grouped(&mut cmd, mode);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reached.exists() {
            assert!(Instant::now() < deadline, "{case}: the load never began");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        let python = children(child.id());
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = wait_for(&mut child, Duration::from_secs(8));
        let took = sent.elapsed();
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let mut err = Vec::new();
        child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
        let status = status.unwrap_or_else(|| panic!("{case}: still running 8 s after the signal"));
        assert_eq!(status.code(), Some(130), "{case}: {}", text(&err));
        let v: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{case}: {e}: {}\n{}", text(&out), text(&err)));
        if how == "python" {
            assert!(took < Duration::from_secs(2), "{case}: {took:?}");
            assert_eq!(v["status"], "success", "{case}: {v}");
            assert_eq!(v["data"]["finish_reason"], "interrupted", "{case}: {v}");
        } else {
            assert!(
                took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
                "{case}: {took:?}"
            );
            assert_eq!(v["error"]["type"], "interrupted", "{case}: {v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("did not stop within 2 s"),
                "{case}: {v}"
            );
        }
        for pid in python {
            assert!(
                wait_gone(pid, Duration::from_secs(2)),
                "{case}: the Python subprocess {pid} outlived mlxfs"
            );
        }
    }
    // A second signal ends a run at once, whatever it waits for (one within 250 ms of the
    // first is the same stop delivered twice: see the next test).
    let _ = fs::remove_file(&reached);
    let mut child = mlxfs(&fx)
        .args(["run", "tiny", "hello", "--python"])
        .arg(&env)
        .env("BLOCK_FIFO", &fifo)
        .env("BLOCK_HOW", "rust")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while !reached.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    for _ in 0..2 {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(400));
    }
    let status = wait_for(&mut child, Duration::from_secs(8)).expect("still running");
    assert_eq!(status.code(), Some(130));
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "{:?}",
        sent.elapsed()
    );
    let err = rest_of_stderr(&mut child);
    assert!(err.contains("interrupted"), "{err}");
}

/// SIGTERM and SIGHUP as they come in life — to the whole process group (systemd's stop, a
/// closed terminal), and as `timeout -s TERM` sends it (to mlxfs, then at once to its group:
/// one stop delivered twice) — stop a generating run like Ctrl-C, in both modes: exit 130,
/// the text so far on stdout, its token counts on stderr. Before, a Python subprocess died of
/// the signal and the run reported nothing generated, and the doubled SIGTERM took the
/// second-signal path (no answer at all).
#[test]
fn sigterm_and_sighup_to_the_group_keep_the_text_so_far() {
    crate::require!(Python);
    let (fx, _ws) = crate::support::python::with_endless_tiny();
    for (mode, signal, twice) in [
        ("subprocess", libc::SIGTERM, false),
        ("subprocess", libc::SIGHUP, false),
        ("subprocess", libc::SIGTERM, true),
        ("embedded", libc::SIGTERM, true),
        ("embedded", libc::SIGHUP, false),
    ] {
        let case = format!("{mode}, signal {signal}, to mlxfs first: {twice}");
        let mut cmd = mlxfs(&fx);
        cmd.args(["run", "tiny", "hello", "--max-tokens", "900000", "--python"])
            .arg(venv_dir());
        let mut child = spawn_grouped(&mut cmd, mode);
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        out.read_exact(&mut first)
            .expect("tokens before the signal");
        let pid = child.id() as i32;
        // SAFETY: kill(2) on our own child and its process group, not yet waited for.
        unsafe {
            if twice {
                libc::kill(pid, signal);
            }
            libc::kill(-pid, signal);
        }
        let mut rest = Vec::new();
        out.read_to_end(&mut rest).unwrap();
        let status = wait_for(&mut child, Duration::from_secs(8));
        let err = rest_of_stderr(&mut child);
        let status = status.unwrap_or_else(|| panic!("{case}: still running"));
        assert_eq!(status.code(), Some(130), "{case}: {err}");
        assert!(err.contains("interrupted"), "{case}: {err}");
        // The counts are the run's own: the tokens it generated before the signal.
        let generated: u64 = err
            .split("generation: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{case}: no token counts: {err}"));
        assert!(generated >= 1, "{case}: {err}");
    }
}

/// C source of a library whose destructor never returns: it joins a thread that never ends,
/// the shape of OpenBLAS's `blas_thread_shutdown_` when it hangs at exit (`_dl_fini` →
/// `gotoblas_quit` → `pthread_join`).
const HANGS_AT_EXIT: &str = r#"
#include <pthread.h>
#include <unistd.h>
static pthread_t worker;
static void *forever(void *arg) { (void)arg; for (;;) pause(); return 0; }
__attribute__((constructor)) static void start(void) { pthread_create(&worker, 0, forever, 0); }
__attribute__((destructor)) static void stop(void) { pthread_join(worker, 0); }
"#;

/// `mlxfs run tiny hello --max-tokens 4 --json` in the test venv.
fn short_run(fx: &Fx) -> Command {
    let mut cmd = mlxfs(fx);
    cmd.args([
        "run",
        "tiny",
        "hello",
        "--max-tokens",
        "4",
        "--json",
        "--python",
    ])
    .arg(venv_dir());
    cmd
}

/// Run `cmd` (its stdout piped) and return (its JSON output, Null when it is not JSON; how
/// long the process lived after the last byte of it; the exit status, `None` when it was
/// still running `limit` after its output ended).
fn outlives(mut cmd: Command, limit: Duration) -> (Value, Duration, Option<i32>) {
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut last = Instant::now();
    let mut buf = [0u8; 4096];
    // The output is complete when the JSON envelope parses (the process may keep stdout open
    // while it hangs).
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        last = Instant::now();
        if serde_json::from_slice::<Value>(&out).is_ok() {
            break;
        }
    }
    let status = wait_for(&mut child, limit.saturating_sub(last.elapsed()));
    let v = serde_json::from_slice(&out).unwrap_or(Value::Null);
    (v, last.elapsed(), status.and_then(|s| s.code()))
}

/// A run ends when its answer is written: no C library destructor runs at its exit, so a
/// library whose destructor hangs (as OpenBLAS's thread shutdown can) cannot hold it — in the
/// embedded interpreter and in a subprocess. Before, the embedded run hung after its answer.
#[test]
fn a_run_ends_when_its_answer_is_written_whatever_a_library_does_at_exit() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let src = fx.tmp.path().join("hang.c");
    let lib = fx.tmp.path().join("libhang.so");
    fs::write(&src, HANGS_AT_EXIT).unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-lpthread")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    for mode in ["embedded", "subprocess"] {
        let mut cmd = short_run(&fx);
        cmd.env("MLXFS_BLAS", &lib);
        if mode == "subprocess" {
            cmd.arg("--subprocess");
        }
        let (v, after, status) = outlives(cmd, Duration::from_secs(10));
        assert_eq!(v["status"], "success", "{mode}: {v}");
        assert_eq!(v["data"]["python"]["mode"], mode, "{v}");
        assert_eq!(
            v["data"]["python"]["blas"],
            lib.to_str().unwrap(),
            "{mode}: the library was loaded"
        );
        assert_eq!(
            status,
            Some(0),
            "{mode}: still running {after:?} after its answer"
        );
        assert!(after < Duration::from_secs(2), "{mode}: {after:?}");
    }
}

/// 50 runs with the system's OpenBLAS (what `MLXFS_BLAS=auto` loads beside mlx's bundled
/// BLAS): none outlives its answer by more than 2 s.
#[test]
fn fifty_runs_with_the_system_openblas_end_with_their_answers() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let (v, after, status) = outlives(short_run(&fx), Duration::from_secs(10));
        assert_eq!(v["status"], "success", "run {i}: {v}");
        assert!(
            v["data"]["python"]["blas"]
                .as_str()
                .is_some_and(|b| b.contains("openblas")),
            "run {i}: not the system OpenBLAS: {}",
            v["data"]["python"]
        );
        assert_eq!(
            status,
            Some(0),
            "run {i}: still running {after:?} after its answer"
        );
        worst = worst.max(after);
    }
    assert!(worst < Duration::from_secs(2), "{worst:?}");
}

/// A prompt longer than the model's context length (512 tokens for the tiny model) is
/// refused before any of it is processed, as `serve` refuses it — in both modes; before, `run`
/// processed it (a 225,000-token prompt: 10+ minutes, 3.3 GB).
#[test]
fn a_prompt_over_the_context_length_is_refused() {
    crate::require!(Python);
    let (fx, _ws) = with_tiny();
    let prompt = "hello world ".repeat(2_000);
    for extra in [&[][..], &["--subprocess"]] {
        let o = mlxfs(&fx)
            .args(["run", "tiny", "-", "--json", "--python"])
            .arg(venv_dir())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(prompt.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&o.stdout), text(&o.stderr)));
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        let m = error_message(&v, "context_length_exceeded");
        assert!(
            m.starts_with("the prompt is ")
                && m.ends_with(" tokens; this model's context length is 512"),
            "{m}"
        );
        let n: u64 = m["the prompt is ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(n > 4_000, "{m}");
    }
    // A vision model (mlx-vlm, context length 4096): its prompt's text alone is over it.
    crate::support::python::make_vlm(&fx, "vlm");
    let img = crate::support::python::images(&fx.tmp.path().join("img")).join("red.png");
    let long = "hello world ".repeat(4_000);
    let o = mlxfs(&fx)
        .args(["run", "vlm", &long, "--json", "--image"])
        .arg(&img)
        .arg("--python")
        .arg(venv_dir())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = error_message(&v, "context_length_exceeded");
    assert!(
        m.starts_with("the prompt is at least ")
            && m.ends_with("this model's context length is 4096"),
        "{m}"
    );
    // Just under the limit it runs.
    let o = mlxfs(&fx)
        .args([
            "run",
            "tiny",
            &"hello ".repeat(100),
            "--json",
            "--max-tokens",
            "2",
            "--python",
        ])
        .arg(venv_dir())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "success", "{v}");
}

/// The text of `mlxfs run --temperature 0` is mlx-lm's own greedy text (`python -m mlx_lm
/// generate --temp 0`, the chat template applied as there), and so is the text of a run with
/// no sampling flags at all: the defaults are mlx-lm's (before, `run` applied a repetition
/// penalty of 1.1 nobody asked for, and temperature 0.7).
#[test]
fn temperature_zero_is_mlx_lms_greedy_text_and_the_default() {
    crate::require!(Python);
    let fx = Fx::new();
    let ws = make_tiny(&fx, "tiny", &[]);
    let o = Command::new(venv_python())
        .args(["-m", "mlx_lm", "generate", "--model"])
        .arg(&ws)
        .args(["--prompt", "hello", "--max-tokens", "100", "--temp", "0"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", fx.tmp.path().join("mlx-lm-home"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let mlx_lm = out
        .split_once("==========\n")
        .and_then(|(_, rest)| rest.split_once("\n==========\n"))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| panic!("mlx_lm's output: {out}"));
    for flags in [&["--temperature", "0"][..], &[]] {
        let o = mlxfs(&fx)
            .args([
                "run",
                "tiny",
                "hello",
                "--max-tokens",
                "100",
                "--json",
                "--python",
            ])
            .arg(venv_dir())
            .args(flags)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        assert_eq!(v["data"]["generation_tokens"], 100, "{v}");
        assert_eq!(v["data"]["text"].as_str().unwrap(), mlx_lm, "{flags:?}");
    }
}

/// Images are checked by what their headers say before Python starts (PNG, JPEG, WebP sizes
/// read right; more than 8192×8192 pixels refused: a 250 KB PNG can claim 81 megapixels), and
/// by the model's own image processor before generation (a 200×1 strip its resize would
/// leave 0 pixels high): `invalid_media` / `media_too_large` naming the image, in `run` and
/// `serve` (400, 413) — before, a failed generation (500 in `serve`).
#[test]
fn images_a_model_cannot_take_are_refused_naming_them() {
    crate::require!(Python);
    let fx = Fx::new();
    crate::support::python::make_vlm(&fx, "vlm");
    let dir = fx.tmp.path().join("img");
    fs::create_dir_all(&dir).unwrap();
    let o = Command::new(venv_python())
        .arg("-c")
        .arg(
            "import sys\nfrom PIL import Image\nd = sys.argv[1]\n\
             Image.new('RGB', (200, 1)).save(d + '/strip.png')\n\
             Image.new('RGB', (9000, 9000)).save(d + '/huge.png')\n\
             Image.new('RGB', (40, 24)).save(d + '/a.jpg', exif=Image.Exif())\n\
             Image.new('RGB', (41, 25)).save(d + '/b.webp')\n\
             Image.new('RGB', (42, 26)).save(d + '/c.webp', lossless=True)\n\
             Image.new('RGBA', (43, 27)).save(d + '/d.webp', exif=b'Exif\\0\\0')\n",
        )
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    for (name, dims) in [
        ("a.jpg", (40, 24)),
        ("b.webp", (41, 25)),
        ("c.webp", (42, 26)),
        ("d.webp", (43, 27)),
        ("huge.png", (9000, 9000)),
        ("strip.png", (200, 1)),
    ] {
        let bytes = fs::read(dir.join(name)).unwrap();
        let format = mlxfs::media::sniff_image(&bytes).unwrap();
        assert_eq!(
            mlxfs::media::image_dimensions(format, &bytes),
            Some(dims),
            "{name}"
        );
    }
    let run = |image: &str| -> Value {
        let o = mlxfs(&fx)
            .args(["run", "vlm", "hi", "--max-tokens", "2", "--json", "--image"])
            .arg(dir.join(image))
            .arg("--python")
            .arg(venv_dir())
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = run("strip.png");
    assert_eq!(v["error"]["type"], "invalid_media", "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.ends_with(
            "strip.png (200×1 pixels): the model's image processor cannot take it: \
                     ValueError: height and width must be > 0"
        ),
        "{m}"
    );
    let v = run("huge.png");
    assert_eq!(v["error"]["type"], "media_too_large", "{v}");
    assert!(
        v["error"].get("python_output").is_none(),
        "refused before Python: {v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("huge.png is 9000×9000 pixels (81 megapixels); the limit is 67 megapixels (8192×8192): scale it down"),
        "{v}"
    );
    assert_eq!(run("a.jpg")["status"], "success");

    let s = crate::support::serve::Served::start(&fx, &[]);
    let b64 = |name: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(fs::read(dir.join(name)).unwrap())
    };
    for (name, status, kind) in [
        ("strip.png", 400, "invalid_media"),
        ("huge.png", 413, "media_too_large"),
        ("a.jpg", 200, ""),
    ] {
        let body = serde_json::json!({"model": "vlm", "max_tokens": 2, "messages": [{"role": "user",
            "content": [{"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64(name))}},
                        {"type": "text", "text": "hi"}]}]});
        let (code, v) =
            crate::support::serve::post_json(&s.addr, "/v1/chat/completions", &[], &body);
        assert_eq!(code, status, "{name}: {v}");
        if status != 200 {
            assert_eq!(v["error"]["type"], kind, "{name}: {v}");
            assert_eq!(v["error"]["retryable"], false, "{name}: {v}");
        }
    }
    // The refusals harmed no one: the worker that refused the strip still answers.
    assert_eq!(
        crate::support::serve::get_json(&s.addr, "/health", &[]).0,
        200
    );
}
