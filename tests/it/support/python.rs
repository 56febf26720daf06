//! The Python side of the tests: the test venv (`MLXFS_TEST_PYTHON`, made by scripts/test.sh),
//! the tiny models scripts/ generates into a fixture, `mlxfs run` with it, and the process
//! helpers the run, worker and serve suites share (Ctrl-C, children, waiting for a pid to go).
//! Callers `require!(Python)` first.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Fx;
use super::cli::{Run, mlxfs};

/// The test venv's interpreter as a string (for `Command::new` and scripts).
pub fn test_python() -> String {
    std::env::var("MLXFS_TEST_PYTHON").expect("require!(Python) checks MLXFS_TEST_PYTHON first")
}

pub fn venv_python() -> PathBuf {
    let p = std::env::var("MLXFS_TEST_PYTHON")
        .expect("require!(Python) checks MLXFS_TEST_PYTHON first");
    PathBuf::from(p)
}

pub fn venv_dir() -> PathBuf {
    venv_python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fixture catalog with the tiny model as the workspace `tiny`.
pub fn with_tiny() -> (Fx, PathBuf) {
    let fx = Fx::new();
    let ws = make_tiny(&fx, "tiny", &[]);
    (fx, ws)
}

/// [`with_tiny`] with a context of a million tokens (its config's), for runs that must go on
/// until they are stopped: prompt and answer are held to the context (512 tokens otherwise).
pub fn with_endless_tiny() -> (Fx, PathBuf) {
    let (fx, ws) = with_tiny();
    let cfg = ws.join("config.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    v["max_position_embeddings"] = 1_000_000.into();
    fs::write(&cfg, v.to_string()).unwrap();
    (fx, ws)
}

/// scripts/make-tiny-model.py into the workspace `name`, with extra arguments.
pub fn make_tiny(fx: &Fx, name: &str, args: &[&str]) -> PathBuf {
    make_with(fx, "make-tiny-model.py", name, args)
}

/// Run the generator script `script` of scripts/ (in the test venv) into the workspace `name`.
pub fn make_with(fx: &Fx, script: &str, name: &str, args: &[&str]) -> PathBuf {
    generate(script, &fx.ws_home.join(name), args)
}

/// Run the generator script `script` of scripts/ (in the test venv) into `dir`, anywhere.
pub fn generate(script: &str, dir: &Path, args: &[&str]) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let o = Command::new(venv_python())
        .arg(path)
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    dir.to_path_buf()
}

/// `mlxfs run MODEL "Explain FUSE" --seed 7 --max-tokens 12` with the test venv: the tests'
/// standard run (add `--json` and other arguments).
pub fn explain_fuse(fx: &Fx, model: &str) -> Command {
    explain_fuse_in(mlxfs(fx), model)
}

/// [`explain_fuse`] on another `mlxfs` command (one without network, say).
pub fn explain_fuse_in(mut c: Command, model: &str) -> Command {
    c.args([
        "run",
        model,
        "Explain FUSE",
        "--seed",
        "7",
        "--max-tokens",
        "12",
    ])
    .arg("--python")
    .arg(venv_dir());
    c
}

/// [`explain_fuse`] with `--json` and `extra`: it must succeed; its `data`.
pub fn run_json(fx: &Fx, model: &str, extra: &[&str]) -> Value {
    explain_fuse(fx, model).arg("--json").args(extra).ok()
}

/// Ctrl-C: to mlxfs alone (a `kill -INT`), or as a terminal sends it, to the whole process
/// group (then a subprocess gets it twice: from the terminal and forwarded by mlxfs).
pub const CTRL_C: [(&[&str], bool); 3] = [
    (&[], false),
    (&["--subprocess"], false),
    (&["--subprocess"], true),
];

/// Send Ctrl-C to `child` (started with `process_group(0)`): to it alone, or to its group.
pub fn ctrl_c(child: &std::process::Child, group: bool) {
    let pid = child.id() as i32;
    // SAFETY: kill(2) on our own child (or its own process group), not yet waited for.
    unsafe { libc::kill(if group { -pid } else { pid }, libc::SIGINT) };
}

/// The pids of `pid`'s children (every thread's).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The tiny model with one layer more in its config than its weights hold: healthy to mlxfs,
/// mlx-lm cannot load it.
pub fn break_layers(ws: &Path) {
    let cfg = ws.join("config.json");
    let text = fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    fs::write(&cfg, text).unwrap();
}

/// The workspace `qwenish`: the first Qwen's architecture (mlx-lm runs it, transformers does
/// not know it), whose checkpoints name their own tokenizer class in tokenizer_config.json.
pub fn qwenish(fx: &Fx) -> PathBuf {
    let ws = make_tiny(fx, "qwenish", &["--model-type", "qwen"]);
    let tc = ws.join("tokenizer_config.json");
    let mut cfg: Value = serde_json::from_slice(&fs::read(&tc).unwrap()).unwrap();
    cfg["tokenizer_class"] = "QWenTokenizer".into();
    cfg["auto_map"] =
        serde_json::json!({"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", null]});
    fs::write(&tc, cfg.to_string()).unwrap();
    ws
}

pub fn gone(pid: u32) -> bool {
    // Gone, or a zombie nobody has reaped yet (an init that does not reap, in a container).
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(s) => s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    gone(pid)
}

pub fn make_vlm(fx: &Fx, name: &str) -> PathBuf {
    make_with(fx, "make-tiny-vlm.py", name, &[])
}

pub fn make_whisper(fx: &Fx, name: &str, args: &[&str]) -> PathBuf {
    make_with(fx, "make-tiny-whisper.py", name, args)
}

/// Images made with PIL in the venv: `red.png` (40x24), `blue.jpg` (24x40, EXIF orientation
/// 6: shown rotated), `green.webp`, and the same pixels as `red.png` but as a GIF.
pub fn images(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let script = r#"
import sys
from PIL import Image
d = sys.argv[1]
img = Image.new("RGB", (40, 24), (200, 30, 30))
for x in range(10, 20):
    for y in range(5, 15):
        img.putpixel((x, y), (255, 255, 255))
img.save(d + "/red.png")
img.save(d + "/red.gif")
blue = Image.new("RGB", (24, 40), (20, 40, 220))
exif = Image.Exif()
exif[0x0112] = 6
blue.save(d + "/blue.jpg", exif=exif.tobytes(), quality=95)
blue.transpose(Image.Transpose.ROTATE_270).save(d + "/blue-upright.png")
Image.new("RGB", (32, 32), (20, 200, 40)).save(d + "/green.webp")
"#;
    let o = Command::new(venv_python())
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir.to_path_buf()
}

/// A 16 kHz mono 16-bit PCM WAV: a 440 Hz tone rising to 880 Hz, `secs` long.
pub fn wav(path: &Path, secs: f64) {
    let rate = 16_000u32;
    let n = (secs * rate as f64) as u32;
    let mut data = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let f = 440.0 + 440.0 * t / secs;
        let v = (0.4 * (2.0 * std::f64::consts::PI * f * t).sin() * 32767.0) as i16;
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    fs::write(path, b).unwrap();
}
