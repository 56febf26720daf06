//! Vision and speech models: `run --image` (mlx-vlm) and `run --audio` (mlx-whisper) with real
//! inference on tiny random-weight models the tests generate (scripts/make-tiny-vlm.py,
//! scripts/make-tiny-whisper.py), the refusals that come before any Python starts, the same
//! text as the backend called directly, offline runs in a network namespace, and nothing
//! written to the shared caches.

use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cli::*;
use crate::support::mnt::Mount;
use crate::support::python::*;
use crate::support::serve::*;
use crate::support::*;

/// `mlxfs run ARGS` with the test venv.
fn run(fx: &Fx, args: &[&str]) -> Command {
    let mut c = mlxfs(fx);
    c.arg("run").args(args).arg("--python").arg(venv_dir());
    c
}

/// A refusal: the envelope's error type and message, with Python never started (`--python`
/// points at nothing, which would be `python_not_found` had the run got that far).
fn refused(fx: &Fx, args: &[&str]) -> (String, String) {
    run_before_python(fx, args).refused()
}

const VLM_ARGS: &[&str] = &[
    "--json",
    "--temperature",
    "0",
    "--repetition-penalty",
    "1",
    "--max-tokens",
    "12",
];

/// `MODEL PROMPT --image IMAGE` and [`VLM_ARGS`].
fn vlm_args<'a>(model: &'a str, prompt: &'a str, image: &'a Path) -> Vec<&'a str> {
    [
        &[model, prompt, "--image", image.to_str().unwrap()][..],
        VLM_ARGS,
    ]
    .concat()
}

/// `run tiny-vlm "Describe the image." --image IMAGE` (greedy, JSON): the data.
fn described(fx: &Fx, image: &Path) -> Value {
    run(fx, &vlm_args("tiny-vlm", "Describe the image.", image)).ok()
}

/// `run whisper-tiny-mlx --audio CLIP --json`.
fn transcribe(fx: &Fx, clip: &Path) -> Command {
    run(
        fx,
        &[
            "whisper-tiny-mlx",
            "--audio",
            clip.to_str().unwrap(),
            "--json",
        ],
    )
}

/// The test images' red.png and a tone.wav of `secs` seconds.
fn media_files(fx: &Fx, secs: f64) -> (PathBuf, PathBuf) {
    let png = images(&fx.tmp.path().join("img")).join("red.png");
    let clip = fx.tmp.path().join("tone.wav");
    wav(&clip, secs);
    (png, clip)
}

/// A catalog with a text model `tiny`, a vision model `tiny-vlm` and a speech model
/// `whisper-tiny-mlx`.
fn all_kinds() -> Fx {
    let fx = Fx::new();
    crate::support::python::make_tiny(&fx, "tiny", &[]);
    make_vlm(&fx, "tiny-vlm");
    make_whisper(&fx, "whisper-tiny-mlx", &[]);
    fx
}

/// A catalog with the speech model `whisper-tiny-mlx`, and its folder.
fn with_whisper() -> (Fx, PathBuf) {
    let fx = Fx::new();
    let ws = make_whisper(&fx, "whisper-tiny-mlx", &[]);
    (fx, ws)
}

/// `v[key]` is an error `[status, …]` whose item `at` (the type or the message) says `says`.
#[track_caller]
fn error_says(v: &Value, key: &str, status: u16, at: usize, says: &str) {
    assert_eq!(v[key][0], status, "{key}: {v}");
    assert!(v[key][at].as_str().unwrap().contains(says), "{key}: {v}");
}

/// `v[key]` is an error `[status, type, …]` of exactly this type.
#[track_caller]
fn error_type(v: &Value, key: &str, status: u16, ty: &str) {
    assert_eq!(v[key][0], status, "{key}: {v}");
    assert_eq!(v[key][1], ty, "{key}: {v}");
}

/// Python for [`openai`]: `ask(url, text, **create_args)` sends the image at `url` and `text`
/// to `tiny-vlm`, giving the answer or `[status, type, message]`.
const ASK_IMAGE_URL: &str = r#"
def ask(url, text, **kw):
    try:
        r = c.chat.completions.create(model="tiny-vlm", **kw,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                   {"type": "text", "text": text}]}])
        return r.choices[0].message.content
    except openai.APIStatusError as e:
        return [e.status_code, e.body.get("type"), e.body.get("message")]
"#;

/// mlx-vlm called directly on the same folder, image and prompt (its own chat template),
/// greedy: what `run --image` must print.
fn vlm_direct(ws: &Path, image: &Path, prompt: &str) -> String {
    let script = r#"
import sys, json
from PIL import Image, ImageOps
from mlx_vlm import load, stream_generate
from mlx_vlm.prompt_utils import apply_chat_template
model, processor = load(sys.argv[1])
img = ImageOps.exif_transpose(Image.open(sys.argv[2])).convert("RGB")
prompt = apply_chat_template(processor, model.config, sys.argv[3], num_images=1)
text = "".join(r.text for r in stream_generate(model, processor, prompt, image=[img], max_tokens=12, temperature=0.0, top_p=1.0))
print(json.dumps(text))
"#;
    let o = Command::new(venv_python())
        .args(["-c", script])
        .arg(ws)
        .arg(image)
        .arg(prompt)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", ws.join(".direct-hf"))
        .succeeds();
    serde_json::from_slice::<String>(&o.stdout).unwrap()
}

#[test]
fn run_image_same_text_from_path_name_mount_subprocess_and_mlx_vlm() {
    crate::require!(Python, Fuse);
    let fx = Fx::new();
    let ws = make_vlm(&fx, "tiny-vlm");
    let img = images(&fx.tmp.path().join("img"));
    let png = img.join("red.png");
    let before = tree_state(&fx.hf_home);
    let mut args = vec![ws.to_str().unwrap(), "Describe the image.", "--image"];
    args.push(png.to_str().unwrap());
    args.extend(VLM_ARGS);
    let by_path = run(&fx, &args).ok();
    assert_eq!(by_path["backend"], "mlx-vlm");
    let text = by_path["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty(), "{by_path}");
    assert_eq!(by_path["python"]["mode"], "embedded");
    assert_eq!(
        by_path["python"]["hf_home"],
        ws.join(".hf_cache").to_string_lossy().as_ref()
    );
    assert_eq!(by_path["images"][0], png.to_string_lossy().as_ref());
    assert_eq!(text, vlm_direct(&ws, &png, "Describe the image."));

    args[0] = "tiny-vlm";
    assert_eq!(run(&fx, &args).ok()["text"], text.as_str());
    let mut sub = args.clone();
    sub.push("--subprocess");
    let s = run(&fx, &sub).ok();
    assert_eq!(s["python"]["mode"], "subprocess");
    assert_eq!(s["text"], text.as_str());

    // The same model in the hub cache: run by its id, under its own per-model cache.
    assert_eq!(tree_state(&fx.hf_home), before);
    fx.hub_model("org/tiny-vlm-hub", &files_of(&ws));
    let before = tree_state(&fx.hf_home);
    let mut hub = args.clone();
    hub[0] = "org/tiny-vlm-hub";
    let h = run(&fx, &hub).ok();
    assert_eq!(h["text"], text.as_str());
    let hub_home = h["python"]["hf_home"].as_str().unwrap().to_string();
    assert!(hub_home.contains("hf-cache"), "{hub_home}");
    assert!(
        !hub_home.starts_with(fx.hf_home.to_str().unwrap()),
        "{hub_home}"
    );

    let m = Mount::start(&fx, &[]);
    let through = m.dir.join("tiny-vlm");
    args[0] = through.to_str().unwrap();
    let t = run(&fx, &args).ok();
    assert_eq!(t["text"], text.as_str());
    assert_eq!(
        t["model"]["weights_path"],
        through.to_string_lossy().as_ref()
    );
    drop(m);

    // Another image gives the image's own answer; JPEG with EXIF orientation is turned
    // upright first (the same text as the upright PNG), and WebP reads too.
    let jpg = img.join("blue.jpg");
    let upright = img.join("blue-upright.png");
    let mut a2 = vec![
        "tiny-vlm",
        "Describe the image.",
        "--image",
        jpg.to_str().unwrap(),
    ];
    a2.extend(VLM_ARGS);
    let rotated = run(&fx, &a2).ok()["text"].clone();
    a2[3] = upright.to_str().unwrap();
    assert_eq!(run(&fx, &a2).ok()["text"], rotated);
    let webp = img.join("green.webp");
    a2[3] = webp.to_str().unwrap();
    run(&fx, &a2).ok();
    // Two images in one prompt.
    let mut two = vec![
        "tiny-vlm",
        "Compare them.",
        "--image",
        png.to_str().unwrap(),
    ];
    two.extend(["--image", webp.to_str().unwrap()]);
    two.extend(VLM_ARGS);
    assert_eq!(run(&fx, &two).ok()["images"].as_array().unwrap().len(), 2);
    // Nothing reached the shared cache; the model's own cache holds nothing new either.
    assert_eq!(tree_state(&fx.hf_home), before);
}

#[test]
fn media_refusals_come_before_python_starts() {
    crate::require!(Python);
    let fx = all_kinds();
    make_whisper(&fx, "whisper-tiny.en-mlx", &["--english-only"]);
    let img = images(&fx.tmp.path().join("img"));
    let png = img.join("red.png");
    let gif = img.join("red.gif");
    let clip = fx.tmp.path().join("clip.wav");
    wav(&clip, 1.0);
    let (p, g, c) = (
        png.to_str().unwrap(),
        gif.to_str().unwrap(),
        clip.to_str().unwrap(),
    );
    // A text model given an image.
    let (t, m) = refused(&fx, &["tiny", "hi", "--image", p]);
    assert_eq!(t, "model_incompatible");
    assert!(
        m.contains("cannot take images") && m.contains("vision"),
        "{m}"
    );
    // A vision model given audio, a text model given audio.
    let (t, m) = refused(&fx, &["tiny-vlm", "hi", "--audio", c]);
    assert_eq!(t, "model_incompatible");
    assert!(m.contains("cannot take audio"), "{m}");
    assert_eq!(
        refused(&fx, &["tiny", "--audio", c]).0,
        "model_incompatible"
    );
    // A speech model without audio, or given an image.
    let (t, m) = refused(&fx, &["whisper-tiny-mlx", "hello"]);
    assert_eq!(t, "model_incompatible");
    assert!(m.contains("--audio"), "{m}");
    assert_eq!(
        refused(&fx, &["whisper-tiny-mlx", "hi", "--image", p]).0,
        "model_incompatible"
    );
    // An English-only Whisper cannot translate.
    let (t, m) = refused(&fx, &["whisper-tiny.en-mlx", "--audio", c, "--translate"]);
    assert_eq!(t, "model_incompatible");
    assert!(m.contains("cannot translate"), "{m}");
    // Files that are not what they must be, by their bytes (a GIF named .png too).
    let (t, m) = refused(&fx, &["tiny-vlm", "hi", "--image", g]);
    assert_eq!(t, "invalid_media");
    assert!(m.contains("not a PNG, JPEG or WebP"), "{m}");
    let disguised = img.join("gif-named.png");
    fs::copy(&gif, &disguised).unwrap();
    assert_eq!(
        refused(
            &fx,
            &["tiny-vlm", "hi", "--image", disguised.to_str().unwrap()]
        )
        .0,
        "invalid_media"
    );
    assert_eq!(
        refused(&fx, &["whisper-tiny-mlx", "--audio", p]).0,
        "invalid_media"
    );
    let missing = fx.tmp.path().join("missing.wav");
    assert_eq!(
        refused(
            &fx,
            &["whisper-tiny-mlx", "--audio", missing.to_str().unwrap()]
        )
        .0,
        "invalid_media"
    );
    // Too large: a PNG header and 10 MiB + 1 of padding.
    let big = img.join("big.png");
    let mut b = fs::read(&png).unwrap();
    b.resize(10 * 1024 * 1024 + 1, 0);
    fs::write(&big, b).unwrap();
    let (t, m) = refused(&fx, &["tiny-vlm", "hi", "--image", big.to_str().unwrap()]);
    assert_eq!(t, "media_too_large");
    assert!(m.contains("limit"), "{m}");
    // Eleven images.
    let mut many = vec!["tiny-vlm", "hi"];
    for _ in 0..11 {
        many.extend(["--image", p]);
    }
    assert_eq!(refused(&fx, &many).0, "invalid_media");
    // --language and --translate need --audio; --image and --audio exclude each other.
    for args in [
        vec!["run", "tiny", "hi", "--language", "en"],
        vec!["run", "tiny", "hi", "--translate"],
        vec!["run", "whisper-tiny-mlx", "--audio", c, "--translate", "de"],
        vec![
            "run",
            "whisper-tiny-mlx",
            "--audio",
            c,
            "--language",
            "klingon",
        ],
        vec!["run", "tiny-vlm", "hi", "--image", p, "--audio", c],
    ] {
        let o = mlxfs(&fx).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

/// mlx-whisper called directly on the same samples (read with Python's `wave`), greedy.
fn whisper_direct(ws: &Path, clip: &Path) -> Value {
    let script = r#"
import sys, json, wave, types
import numpy as np
try:
    import numba
except ImportError:  # as mlxfs's generate.py: numba only compiles word timestamps
    sys.modules["numba"] = types.ModuleType("numba")
    sys.modules["numba"].jit = lambda *a, **k: (lambda f: f)
import mlx_whisper
with wave.open(sys.argv[2]) as w:
    x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
r = mlx_whisper.transcribe(x, path_or_hf_repo=sys.argv[1], temperature=(0.0,), verbose=None)
print(json.dumps({"text": r["text"].strip(), "language": r["language"],
                  "segments": [[round(s["start"], 3), round(s["end"], 3), s["text"]] for s in r["segments"]]}))
"#;
    let o = Command::new(venv_python())
        .args(["-c", script])
        .arg(ws)
        .arg(clip)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", ws.join(".direct-hf"))
        .succeeds();
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn run_audio_same_transcript_from_path_name_mount_and_mlx_whisper() {
    crate::require!(Python, Fuse);
    let (fx, ws) = with_whisper();
    // Like the mlx-community conversions: no tokenizer, no processor files.
    assert!(!ws.join("tokenizer.json").exists());
    assert!(!ws.join("preprocessor_config.json").exists());
    let clip = fx.tmp.path().join("tone.wav");
    wav(&clip, 2.0);
    let c = clip.to_str().unwrap();
    let before = tree_state(&fx.hf_home);
    let by_path = run(&fx, &[ws.to_str().unwrap(), "--audio", c, "--json"]).ok();
    assert_eq!(by_path["backend"], "mlx-whisper");
    let want = whisper_direct(&ws, &clip);
    assert_eq!(by_path["text"], want["text"], "{by_path}");
    assert_eq!(by_path["language"], want["language"]);
    let segs: Vec<Value> = by_path["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serde_json::json!([s["start"], s["end"], s["text"]]))
        .collect();
    assert_eq!(Value::Array(segs), want["segments"]);
    assert_eq!(by_path["audio"]["decoder"], "wav");
    assert!((by_path["audio"]["seconds"].as_f64().unwrap() - 2.0).abs() < 0.01);
    assert_eq!(
        by_path["python"]["hf_home"],
        ws.join(".hf_cache").to_string_lossy().as_ref()
    );
    let text = by_path["text"].clone();
    assert_eq!(
        run(&fx, &["whisper-tiny-mlx", "--audio", c, "--json"]).ok()["text"],
        text
    );
    assert_eq!(
        run(
            &fx,
            &["whisper-tiny-mlx", "--audio", c, "--json", "--subprocess"]
        )
        .ok()["text"],
        text
    );
    assert_eq!(tree_state(&fx.hf_home), before);
    fx.hub_model("mlx-community/whisper-tiny-hub-mlx", &files_of(&ws));
    let before = tree_state(&fx.hf_home);
    let h = run(
        &fx,
        &["mlx-community/whisper-tiny-hub-mlx", "--audio", c, "--json"],
    )
    .ok();
    assert_eq!(h["text"], text);
    assert!(
        h["python"]["hf_home"]
            .as_str()
            .unwrap()
            .contains("hf-cache"),
        "{h}"
    );
    let m = Mount::start(&fx, &[]);
    let through = m.dir.join("whisper-tiny-mlx");
    assert_eq!(
        run(&fx, &[through.to_str().unwrap(), "--audio", c, "--json"]).ok()["text"],
        text
    );
    drop(m);
    // Plain output: the transcript alone on stdout.
    let o = run(&fx, &["whisper-tiny-mlx", "--audio", c]).out();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end_matches('\n'),
        text.as_str().unwrap()
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("transcribed"));
    // --language and --translate reach the model (the task and language are Whisper's).
    let translated = |extra: &[&str]| {
        let args = ["whisper-tiny-mlx", "--audio", c, "--json"];
        run(
            &fx,
            &[&args[..], &["--language", "de", "--translate"], extra].concat(),
        )
        .ok()
    };
    let tr = translated(&[]);
    assert_eq!(tr["language"], "de");
    assert_eq!(tr["audio"]["task"], "translate");
    // mlx-knife's spelling, `--translate en`, is the same (and not a prompt word).
    let tr2 = translated(&["en"]);
    assert_eq!(tr2["text"], tr["text"]);
    assert_eq!(tree_state(&fx.hf_home), before);
}

/// Ctrl-C during a transcription stops it within one 30-second window (mlx-whisper has no
/// stop hook: generate.py's progress-bar stand-in raises), exit 130 with `interrupted`, as a
/// text run; before, the whole file was transcribed first.
#[test]
fn ctrl_c_stops_a_transcription() {
    use std::os::unix::process::CommandExt;
    crate::require!(Python);
    let (fx, ws) = with_whisper();
    let clip = fx.tmp.path().join("long.wav");
    wav(&clip, 1200.0); // 40 windows
    for (extra, group) in crate::support::python::CTRL_C {
        let child = mlxfs(&fx)
            .arg("run")
            .arg(&ws)
            .arg("--audio")
            .arg(&clip)
            .args(["--json", "--python"])
            .arg(venv_dir())
            .args(extra)
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        crate::support::python::ctrl_c(&child, group);
        let o = child.wait_with_output().unwrap();
        let case = format!("{extra:?}, to the group: {group}");
        let v = exited(&o, 130);
        assert_eq!(v["data"]["finish_reason"], "interrupted", "{case}: {v}");
        assert_eq!(v["data"]["backend"], "mlx-whisper", "{case}: {v}");
    }
}

/// The tone of [`wav`] encoded with PyAV (FFmpeg's encoders in the test venv) as FLAC, MP3,
/// M4A (AAC) and Ogg (Opus), and as 8-bit stereo 8 kHz and 32-bit float 44.1 kHz WAVs.
fn encoded(dir: &Path, src: &Path) {
    let script = r#"
import sys, wave
import numpy as np
import av
d, src = sys.argv[1], sys.argv[2]
with wave.open(src) as w:
    x = np.frombuffer(w.readframes(w.getnframes()), "<i2")
for ext, codec, fmt, rate in [("flac", "flac", "s16", 16000), ("mp3", "libmp3lame", "s16p", 16000),
                              ("m4a", "aac", "fltp", 16000), ("ogg", "libopus", "s16", 48000)]:
    out = av.open(f"{d}/tone.{ext}", "w", format={"m4a": "ipod", "ogg": "ogg"}.get(ext, ext))
    st = out.add_stream(codec, rate=rate)
    st.layout = "mono"
    frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16000
    res = av.AudioResampler(format=fmt, layout="mono", rate=rate)
    for f in res.resample(frame) + res.resample(None):
        for p in st.encode(f):
            out.mux(p)
    for p in st.encode(None):
        out.mux(p)
    out.close()
# 8-bit unsigned stereo at 8 kHz; 32-bit float mono at 44.1 kHz
y = x[::2].astype(np.int32) // 256 + 128
with wave.open(f"{d}/tone-u8-stereo.wav", "wb") as w:
    w.setnchannels(2); w.setsampwidth(1); w.setframerate(8000)
    w.writeframes(np.repeat(y.astype(np.uint8), 2).tobytes())
f = np.interp(np.arange(int(len(x) * 44100 / 16000)) * 16000 / 44100, np.arange(len(x)), x / 32768.0).astype("<f4")
data = f.tobytes()
import struct
hdr = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 3, 1, 44100, 44100 * 4, 4, 32)
open(f"{d}/tone-f32.wav", "wb").write(hdr + b"data" + struct.pack("<I", len(data)) + data)
"#;
    Command::new(venv_python())
        .args(["-c", script])
        .arg(dir)
        .arg(src)
        .succeeds();
}

#[test]
fn common_audio_formats_decode_and_a_missing_decoder_is_named() {
    crate::require!(Python);
    let (fx, _) = with_whisper();
    let dir = fx.tmp.path().join("audio");
    fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("tone.wav");
    wav(&clip, 2.0);
    encoded(&dir, &clip);
    for (file, decoder) in [
        ("tone.flac", "pyav"),
        ("tone.mp3", "pyav"),
        ("tone.m4a", "pyav"),
        ("tone.ogg", "pyav"),
        ("tone-u8-stereo.wav", "wav"),
        ("tone-f32.wav", "wav"),
    ] {
        let f = dir.join(file);
        let v = transcribe(&fx, &f).ok();
        assert_eq!(v["audio"]["decoder"], decoder, "{file}: {v}");
        let secs = v["audio"]["seconds"].as_f64().unwrap();
        assert!((secs - 2.0).abs() < 0.15, "{file}: {secs} s");
    }
    // Without PyAV (hidden by a stand-in that fails to import) and without ffmpeg on PATH:
    // a FLAC file is `decoder_missing`, naming both ways; WAV still works.
    let hide = fx.tmp.path().join("no-av");
    fs::create_dir_all(hide.join("av")).unwrap();
    fs::write(
        hide.join("av/__init__.py"),
        "raise ImportError('hidden by the test')\n",
    )
    .unwrap();
    let o = mlxfs(&fx)
        .args(["run", "whisper-tiny-mlx", "--json", "--audio"])
        .arg(dir.join("tone.flac"))
        .arg("--python")
        .arg(venv_dir())
        .env("PYTHONPATH", &hide)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let v = envelope(&o);
    assert_eq!(v["error"]["type"], "decoder_missing", "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("PyAV") && m.contains("ffmpeg"), "{m}");
    // A file that claims to be FLAC but is not: PyAV's own error, as invalid_media.
    let fake = dir.join("fake.flac");
    fs::write(&fake, b"fLaC\0\0\0\x22not really flac").unwrap();
    let v = envelope(&transcribe(&fx, &fake).out());
    assert_eq!(v["error"]["type"], "invalid_media", "{v}");
    // WAV headers are the file's word only: a sample rate of 1 Hz (a 2 s clip claiming 9
    // hours), no bits per sample, no samples at all — refused, not transcribed for minutes.
    let good = fs::read(&clip).unwrap();
    let patched = |name: &str, at: usize, bytes: &[u8], cut: Option<usize>| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        if let Some(n) = cut {
            b.truncate(n);
            let len = (n - 8) as u32;
            b[4..8].copy_from_slice(&len.to_le_bytes());
        }
        let p = dir.join(name);
        fs::write(&p, b).unwrap();
        p
    };
    for (f, want, text) in [
        (
            patched("rate1.wav", 24, &1u32.to_le_bytes(), None),
            "invalid_media",
            "at 1 Hz",
        ),
        (
            patched("bits0.wav", 34, &0u16.to_le_bytes(), None),
            "invalid_media",
            "0-bit",
        ),
        (
            patched("header-only.wav", 40, &0u32.to_le_bytes(), Some(44)),
            "invalid_media",
            "without audio samples",
        ),
    ] {
        let v = envelope(&transcribe(&fx, &f).out());
        assert_eq!(v["error"]["type"], want, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(text),
            "{v}"
        );
    }
}

#[test]
fn offline_media_runs_without_network() {
    crate::require!(Python, Root);
    let fx = Fx::new();
    make_vlm(&fx, "tiny-vlm");
    make_whisper(&fx, "whisper-tiny-mlx", &[]);
    let (png, clip) = media_files(&fx, 1.0);
    let online_v = run(&fx, &vlm_args("tiny-vlm", "Describe.", &png)).ok();
    let online_a = transcribe(&fx, &clip).ok();
    let before = tree_state(&fx.hf_home);
    let unshared = |args: &[&str]| -> Value {
        let mut c = Command::new("unshare");
        c.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
        for (k, v) in fx.vars() {
            c.env(k, v);
        }
        let o = c
            .args(["-n", "--", BIN, "run"])
            .args(args)
            .args(["--offline", "--python"])
            .arg(venv_dir())
            .output()
            .unwrap();
        let v = envelope(&o);
        assert_eq!(v["status"], "success", "{v}");
        assert_eq!(v["data"]["python"]["offline"], true);
        v["data"].clone()
    };
    let v = unshared(&vlm_args("tiny-vlm", "Describe.", &png));
    assert_eq!(v["text"], online_v["text"]);
    let a = unshared(&[
        "whisper-tiny-mlx",
        "--audio",
        clip.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(a["text"], online_a["text"]);
    assert_eq!(tree_state(&fx.hf_home), before);
}

#[test]
fn serve_images_and_transcriptions_through_the_openai_client() {
    crate::require!(Python);
    let fx = all_kinds();
    let (png, clip) = media_files(&fx, 2.0);
    let before = tree_state(&fx.hf_home);
    let want_image = described(&fx, &png)["text"].clone();
    let want_audio = transcribe(&fx, &clip).ok();
    // A stop sequence: two characters from the middle of the text (or one past its end).
    let chars: Vec<char> = want_image.as_str().unwrap().chars().collect();
    let stop: String = if chars.len() >= 4 {
        chars[2..4].iter().collect()
    } else {
        "@@@@".into()
    };
    let full = want_image.as_str().unwrap();
    let cut = full.find(&stop).map_or(full, |i| &full[..i]).to_string();
    let s = Served::start(&fx, &[]);
    let url = s.url();
    let models = get_json(&s.addr, "/v1/models", &[]).1;
    let caps = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["capabilities"].clone())
            .unwrap_or(Value::Null)
    };
    assert!(caps("tiny-vlm").to_string().contains("vision"), "{models}");
    assert!(
        caps("whisper-tiny-mlx").to_string().contains("audio"),
        "{models}"
    );
    let v = openai(
        &url,
        &format!(
            r#"
png = base64.b64encode(open({png:?}, "rb").read()).decode()
msg = [{{"role": "user", "content": [
    {{"type": "image_url", "image_url": {{"url": "data:image/png;base64," + png}}}},
    {{"type": "text", "text": "Describe the image."}}]}}]
def status(f):
    try:
        f()
        return None
    except openai.APIStatusError as e:
        return [e.status_code, e.body.get("type") if isinstance(e.body, dict) else None,
                e.body.get("message") if isinstance(e.body, dict) else str(e.body)]
out = {{}}
r = c.chat.completions.create(model="tiny-vlm", messages=msg, max_tokens=12, temperature=0,
                              extra_body={{"repetition_penalty": 1}})
out["chat"] = r.choices[0].message.content
out["usage"] = r.usage.completion_tokens
st = c.chat.completions.create(model="tiny-vlm", messages=msg, max_tokens=12, temperature=0,
                               stream=True, extra_body={{"repetition_penalty": 1}})
out["stream"] = "".join(ch.choices[0].delta.content or "" for ch in st if ch.choices)
stop = {stop:?}
out["stop"] = c.chat.completions.create(model="tiny-vlm", messages=msg, max_tokens=12, temperature=0,
    stop=[stop], extra_body={{"repetition_penalty": 1}}).choices[0].message.content
out["stop_stream"] = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
    model="tiny-vlm", messages=msg, max_tokens=12, temperature=0, stop=[stop], stream=True,
    extra_body={{"repetition_penalty": 1}}) if ch.choices)
out["logprobs"] = status(lambda: c.chat.completions.create(model="tiny-vlm", messages=msg, max_tokens=2, logprobs=True))
out["text_only"] = c.chat.completions.create(model="tiny-vlm", max_tokens=4, temperature=0,
    messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content is not None
out["text_model_image"] = status(lambda: c.chat.completions.create(model="tiny", messages=msg, max_tokens=2))
out["whisper_chat"] = status(lambda: c.chat.completions.create(model="whisper-tiny-mlx",
    messages=[{{"role": "user", "content": "hi"}}], max_tokens=2))
out["remote"] = status(lambda: c.chat.completions.create(model="tiny-vlm", max_tokens=2, messages=[
    {{"role": "user", "content": [{{"type": "image_url", "image_url": {{"url": "http://127.0.0.1:9/a.png"}}}}]}}]))
out["bad_image"] = status(lambda: c.chat.completions.create(model="tiny-vlm", max_tokens=2, messages=[
    {{"role": "user", "content": [{{"type": "image_url", "image_url": {{"url": "data:image/gif;base64,R0lGODlhAQABAAAAACw="}}}}]}}]))
f = lambda: open({clip:?}, "rb")
out["json"] = c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f()).text
out["text"] = c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(), response_format="text")
vj = c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(), response_format="verbose_json")
out["verbose"] = {{"text": vj.text, "language": vj.language, "duration": vj.duration,
                  "segments": [[s.start, s.end, s.text] for s in (vj.segments or [])]}}
out["srt"] = c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(), response_format="srt")
out["vtt"] = c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(), response_format="vtt")
out["translation"] = c.audio.translations.create(model="whisper-tiny-mlx", file=f()).text
out["bad_language"] = status(lambda: c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(), language="xx"))
out["text_model_audio"] = status(lambda: c.audio.transcriptions.create(model="tiny", file=f()))
out["not_audio"] = status(lambda: c.audio.transcriptions.create(model="whisper-tiny-mlx",
    file=("x.wav", open({png:?}, "rb"))))
vw = c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(), response_format="verbose_json",
                                   timestamp_granularities=["word"])
out["words"] = {{"text": vw.text, "words": [[w.word, w.start, w.end] for w in (vw.words or [])],
                "segments": vw.segments}}
vb = c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(), response_format="verbose_json",
                                   timestamp_granularities=["word", "segment"])
out["both"] = [len(vb.words or []), len(vb.segments or [])]
out["words_in_json"] = status(lambda: c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(),
                                                                    timestamp_granularities=["word"]))
out["granularity"] = status(lambda: c.audio.transcriptions.create(model="whisper-tiny-mlx", file=f(),
    response_format="verbose_json", timestamp_granularities=["sentence"]))
import urllib.request, urllib.error
def form(**fields):
    b = "mlxfs-test-boundary"
    body = b""
    for k, v in {{"model": "whisper-tiny-mlx", **fields}}.items():
        body += f'--{{b}}\r\nContent-Disposition: form-data; name="{{k}}"\r\n\r\n{{v}}\r\n'.encode()
    body += (f'--{{b}}\r\nContent-Disposition: form-data; name="file"; filename="tone.wav"\r\n'
             'Content-Type: audio/wav\r\n\r\n').encode() + f().read() + f"\r\n--{{b}}--\r\n".encode()
    req = urllib.request.Request({url:?} + "/v1/audio/transcriptions", data=body,
                                 headers={{"Content-Type": f"multipart/form-data; boundary={{b}}"}})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return [r.status, None]
    except urllib.error.HTTPError as e:
        return [e.code, json.loads(e.read())["error"]["message"]]
out["unknown_field"] = form(diarize="true")
out["stream_field"] = form(stream="true")
out["stream_false"] = form(stream="false")
out["vlm_long"] = status(lambda: c.chat.completions.create(model="tiny-vlm", max_tokens=2,
    messages=[{{"role": "user", "content": "word " * 5000}}]))
out["vlm_top_k"] = status(lambda: c.chat.completions.create(model="tiny-vlm", messages=msg, max_tokens=2,
                                                            extra_body={{"top_k": 5, "min_p": 0.1}}))
print(json.dumps(out))
"#
        ),
    );
    assert_eq!(v["chat"], want_image, "{v}");
    assert_eq!(v["stream"], want_image, "{v}");
    assert_eq!(v["stop"], cut.as_str(), "{v}");
    assert_eq!(v["stop_stream"], cut.as_str(), "{v}");
    assert_eq!(v["logprobs"][0], 422, "{v}");
    assert_eq!(v["text_only"], true);
    error_says(&v, "text_model_image", 422, 2, "cannot take images");
    assert_eq!(v["whisper_chat"][0], 422, "{v}");
    error_says(&v, "remote", 400, 2, "does not fetch");
    error_type(&v, "bad_image", 400, "invalid_media");
    let text = want_audio["text"].as_str().unwrap();
    assert_eq!(v["json"], text, "{v}");
    assert_eq!(v["text"].as_str().unwrap().trim_end(), text, "{v}");
    assert_eq!(v["verbose"]["text"], text);
    assert_eq!(v["verbose"]["language"], want_audio["language"]);
    assert_eq!(
        v["verbose"]["segments"].as_array().unwrap().len(),
        want_audio["segments"].as_array().unwrap().len()
    );
    let srt = v["srt"].as_str().unwrap();
    let vtt = v["vtt"].as_str().unwrap();
    if !want_audio["segments"].as_array().unwrap().is_empty() {
        assert!(srt.starts_with("1\n00:00:"), "{srt}");
        assert!(srt.contains(" --> "), "{srt}");
    }
    assert!(vtt.starts_with("WEBVTT\n"), "{vtt}");
    assert!(v["translation"].is_string());
    assert_eq!(v["text_model_audio"][0], 422, "{v}");
    assert_eq!(v["bad_language"][0], 400, "{v}");
    error_type(&v, "not_audio", 400, "invalid_media");
    // Word timestamps (issue 25 §2: they were silently dropped): OpenAI's `words`, in order,
    // each within the first 30-second window; segments only when asked for too; refused
    // outside verbose_json and for an unknown granularity. (mlx-whisper seeks by words then:
    // the tiny model's noise may differ from the text without them.)
    assert!(v["words"]["segments"].is_null(), "{v}");
    let words = v["words"]["words"].as_array().unwrap();
    assert!(!words.is_empty(), "{v}");
    let mut last = 0.0;
    for w in words {
        let (a, b) = (w[1].as_f64().unwrap(), w[2].as_f64().unwrap());
        assert!(last <= a && a <= b && b <= 30.0, "{v}");
        assert!(!w[0].as_str().unwrap().is_empty(), "{v}");
        last = a;
    }
    assert_eq!(v["both"][0].as_u64(), Some(words.len() as u64), "{v}");
    assert!(v["both"][1].as_u64().unwrap() >= 1, "{v}");
    error_says(&v, "words_in_json", 400, 2, "verbose_json");
    assert_eq!(v["granularity"][0], 400, "{v}");
    // Form fields that are not honoured are refused, naming them (they were ignored).
    error_says(&v, "unknown_field", 400, 1, "`diarize`");
    assert_eq!(v["stream_field"][0], 400, "{v}");
    assert_eq!(v["stream_false"], json!([200, null]), "{v}");
    // A prompt over a vision model's context is refused before any token is processed, as
    // a text model's.
    error_type(&v, "vlm_long", 400, "context_length_exceeded");
    // A vision model refuses the sampling fields mlx-vlm is not given.
    error_says(&v, "vlm_top_k", 422, 2, "`top_k`, `min_p`");
    // Every worker ran under its model's own isolated cache; the shared cache is untouched.
    let h = get_json(&s.addr, "/health", &[]).1;
    assert!(!h["workers"].as_array().unwrap().is_empty(), "{h}");
    assert_eq!(tree_state(&fx.hf_home), before);
}

#[test]
fn serve_fetches_image_urls_only_when_allowed() {
    crate::require!(Python);
    let fx = Fx::new();
    make_vlm(&fx, "tiny-vlm");
    let img = images(&fx.tmp.path().join("img"));
    let png = img.join("red.png");
    let want = described(&fx, &png)["text"].clone();
    // A file server on loopback (the only kind of address a test may fetch from).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut files = Command::new(venv_python())
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(&img)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The default (public addresses only) refuses this machine, whatever the URL calls it,
    // before any model loads.
    let public = Served::start(&fx, &["--allow-remote-images"]);
    let v = openai(
        &public.url(),
        &format!(
            r#"{ASK_IMAGE_URL}
print(json.dumps([ask(u, "?", max_tokens=4) for u in [
    "http://127.0.0.1:{port}/red.png", "http://localhost:{port}/red.png",
    "http://2130706433:{port}/red.png", "http://[::1]:{port}/red.png"]]))
"#
        ),
    );
    for (i, r) in v.as_array().unwrap().iter().enumerate() {
        assert_eq!(r[0], 400, "{i}: {v}");
        assert_eq!(r[1], "invalid_media", "{i}: {v}");
        let m = r[2].as_str().unwrap();
        assert!(
            m.contains("public address") && m.contains("--allow-remote-images=any"),
            "{i}: {m}"
        );
    }
    // Where a name leads is not told to the client.
    let m = v[1][2].as_str().unwrap();
    assert!(
        m.contains("localhost has no public address") && !m.contains("127.0.0.1"),
        "{m}"
    );
    drop(public);
    let s = Served::start(&fx, &["--allow-remote-images=any"]);
    let v = openai(
        &s.url(),
        &format!(
            r#"{ASK_IMAGE_URL}
def describe(url):
    return ask(url, "Describe the image.", max_tokens=12, temperature=0,
               extra_body={{"repetition_penalty": 1}})
print(json.dumps({{"ok": describe("http://127.0.0.1:{port}/red.png"),
                  "missing": describe("http://127.0.0.1:{port}/nothing.png"),
                  "gif": describe("http://127.0.0.1:{port}/red.gif")}}))
"#
        ),
    );
    let _ = files.kill();
    let _ = files.wait();
    assert_eq!(v["ok"], want, "{v}");
    error_type(&v, "missing", 400, "invalid_media");
    assert_eq!(v["gif"][1], "invalid_media", "{v}");
}

#[test]
fn serve_loads_vision_and_speech_models_through_a_mount() {
    crate::require!(Python, Fuse);
    let fx = Fx::new();
    make_vlm(&fx, "tiny-vlm");
    let ws = make_whisper(&fx, "whisper-tiny-mlx", &[]);
    let (png, clip) = media_files(&fx, 1.0);
    let want_image = described(&fx, &png)["text"].clone();
    let want_audio = transcribe(&fx, &clip).ok()["text"].clone();
    let m = Mount::start(&fx, &[]);
    let (v, a) = (m.dir.join("tiny-vlm"), m.dir.join("whisper-tiny-mlx"));
    let s = Served::start(
        &fx,
        &[
            "--model",
            v.to_str().unwrap(),
            "--model",
            a.to_str().unwrap(),
            "--max-loaded",
            "2",
            "--offline",
        ],
    );
    let out = openai(
        &s.url(),
        &format!(
            r#"
png = base64.b64encode(open({png:?}, "rb").read()).decode()
r = c.chat.completions.create(model="tiny-vlm", max_tokens=12, temperature=0, extra_body={{"repetition_penalty": 1}},
    messages=[{{"role": "user", "content": [{{"type": "image_url", "image_url": {{"url": "data:image/png;base64," + png}}}},
                                            {{"type": "text", "text": "Describe the image."}}]}}])
t = c.audio.transcriptions.create(model="whisper-tiny-mlx", file=open({clip:?}, "rb"))
print(json.dumps({{"image": r.choices[0].message.content, "audio": t.text}}))
"#
        ),
    );
    assert_eq!(out["image"], want_image, "{out}");
    assert_eq!(out["audio"], want_audio, "{out}");
    // The workers read the weights through the mount; their caches are the real folders.
    assert!(ws.join(".hf_cache").is_dir());
    drop(s);
    drop(m);
}

/// Issue 25 review §5: a form field of the audio routes given twice is refused, naming it
/// (the last one silently won: two `file` parts, `model=whisper` then `model=tiny`,
/// `temperature=0.5` then `0.9`); `timestamp_granularities[]` may repeat. The form is read
/// before any model is resolved, so no model is needed to tell.
#[test]
fn a_form_field_given_twice_is_refused() {
    crate::require!(Python);
    let fx = Fx::new();
    let s = Served::start(&fx, &[]);
    let b = "mlxfs-test-boundary";
    let form = |fields: &[(&str, &str)]| {
        let mut body = Vec::new();
        for (k, v) in fields {
            if *k == "file" {
                body.extend_from_slice(
                    format!(
                        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{v}\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n"
                    )
                    .as_bytes(),
                );
            } else {
                body.extend_from_slice(
                    format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                        .as_bytes(),
                );
            }
        }
        body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={b}");
        let (st, _, out) = http(
            &s.addr,
            "POST",
            "/v1/audio/transcriptions",
            &[("Content-Type", ct.as_str())],
            &body,
        );
        let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        (
            st,
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    for (fields, twice) in [
        (
            &[("model", "whisper"), ("file", "a.wav"), ("file", "b.wav")][..],
            "file",
        ),
        (
            &[("model", "whisper"), ("model", "tiny"), ("file", "a.wav")][..],
            "model",
        ),
        (
            &[
                ("model", "whisper"),
                ("file", "a.wav"),
                ("temperature", "0.5"),
                ("temperature", "0.9"),
            ][..],
            "temperature",
        ),
    ] {
        let (st, message) = form(fields);
        assert_eq!(st, 400, "{fields:?}: {message}");
        assert_eq!(
            message,
            format!(
                "`{twice}` is given twice: the form takes each field once (`timestamp_granularities[]` may repeat)"
            )
        );
    }
    // Repeating granularities is the form's way to give several: the request goes on (to the
    // model, which this catalog does not have).
    let (st, message) = form(&[
        ("model", "whisper"),
        ("file", "a.wav"),
        ("response_format", "verbose_json"),
        ("timestamp_granularities[]", "word"),
        ("timestamp_granularities[]", "segment"),
    ]);
    assert_eq!(st, 404, "{message}");
}
