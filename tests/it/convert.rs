//! `mlxfs convert`: refusals (before anything is written), `--repair-index` against
//! mlx-knife's index format, and the weight modes with real mlx-lm on the tiny model
//! (scripts/make-tiny-model.py) — tensor for tensor equal to `mlx_lm.convert`'s output,
//! runnable with the same text, a clean managed workspace — and Ctrl-C mid-conversion.

use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::*;
use crate::support::python::*;
use crate::support::*;

/// `mlxfs` from the workspace home: bare targets go under it; paths with a `/` are taken from
/// there too.
fn mlxfs(fx: &Fx) -> Command {
    let mut c = crate::support::cli::mlxfs(fx);
    c.current_dir(&fx.ws_home);
    c
}

/// `mlxfs convert ARGS --json` (with the test venv), its envelope.
fn convert(fx: &Fx, args: &[&str]) -> (Value, Output) {
    let o = mlxfs(fx)
        .arg("convert")
        .args(args)
        .arg("--json")
        .arg("--python")
        .arg(venv_or_none())
        .output()
        .unwrap();
    (envelope(&o), o)
}

/// No `.mlxfs-convert-*` staging folder is left in `dir`.
fn no_staging(dir: &Path) {
    let left: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mlxfs-convert-"))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

fn py(code: &str, args: &[&Path]) -> String {
    stdout(
        &Command::new(venv_python())
            .arg("-c")
            .arg(code)
            .args(args)
            .succeeds(),
    )
}

/// Every tensor of two model folders (all `model*.safetensors`): same names, dtypes, shapes
/// and values; and the same `quantization` / `quantization_config` in config.json.
const SAME_TENSORS: &str = r#"
import glob, json, sys
import mlx.core as mx
def load(d):
    w = {}
    for f in sorted(glob.glob(d + "/model*.safetensors")):
        w.update(mx.load(f))
    return w
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
for k in a:
    assert a[k].dtype == b[k].dtype, (k, a[k].dtype, b[k].dtype)
    assert a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)
    assert mx.array_equal(a[k], b[k]).item(), k
ca = json.load(open(sys.argv[1] + "/config.json"))
cb = json.load(open(sys.argv[2] + "/config.json"))
for key in ("quantization", "quantization_config"):
    assert ca.get(key) == cb.get(key), (key, ca.get(key), cb.get(key))
assert {k: v for k, v in ca.items()} == {k: v for k, v in cb.items()}, "config.json differs"
print(len(a), sorted({str(v.dtype) for v in a.values()}))
"#;

/// mlx-lm's own `convert` of `src` into `out` with `args`.
fn mlx_lm_convert(src: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(venv_python())
        .args(["-m", "mlx_lm", "convert", "--hf-path"])
        .arg(src)
        .arg("--mlx-path")
        .arg(out)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", out.with_extension("hf"))
        .output()
        .unwrap()
}

fn run_text(fx: &Fx, model: &Path) -> String {
    explain_fuse(fx, model.to_str().unwrap())
        .current_dir(&fx.ws_home)
        .arg("--json")
        .ok()["text"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The record `list --all --json` gives for the workspace at `path`.
fn listed(fx: &Fx, path: &Path) -> Value {
    let (_, v) = mlxfs(fx).args(["list", "--all", "--json"]).envelope();
    v["data"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["path"] == path.to_string_lossy().as_ref())
        .unwrap_or_else(|| panic!("{} not listed: {v}", path.display()))
        .clone()
}

fn check_result_workspace(fx: &Fx, target: &Path, d: &Value, mode: &str) {
    assert_eq!(d["mode"], mode);
    assert_eq!(d["health_check"], true);
    assert_eq!(d["health_status"], "healthy", "{d}");
    assert_eq!(d["target"], target.to_string_lossy().as_ref());
    let rec = listed(fx, target);
    assert_eq!(rec["source"], "workspace");
    assert_eq!(rec["clean"], true, "{rec}");
    assert_eq!(rec["health"], "healthy", "{rec}");
    assert_eq!(rec["runtime_compatible"], true, "{rec}");
    assert_eq!(rec["content_hash"], d["content_hash"]);
    let s: Value =
        serde_json::from_slice(&fs::read(target.join(".mlxk_workspace.json")).unwrap()).unwrap();
    assert_eq!(s["managed"], true);
    assert_eq!(s["operation"], "convert");
    assert_eq!(s["mode"], mode);
    assert_eq!(s["hash_algorithm"], "v2");
    assert_eq!(s["conversion"]["mode"], mode);
    // mlx-knife's key order for a converted workspace.
    let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(&keys[..6], &SENTINEL_HEAD);
    assert_eq!(keys[6], "mode");
    assert_eq!(
        &keys[keys.len() - 5..],
        &[
            "hash_algorithm",
            "content_hash",
            "hash_modified",
            "exclude_patterns",
            "file_index"
        ]
    );
    // The human table says `ws` for it.
    let o = mlxfs(fx).args(["list", "--all"]).output().unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    let name = target.file_name().unwrap().to_string_lossy();
    assert!(
        table
            .lines()
            .any(|l| l.contains(name.as_ref()) && l.split_whitespace().any(|w| w == "ws")),
        "{table}"
    );
}

#[test]
fn quantize_equals_mlx_lm_convert_and_runs() {
    crate::require!(Python);
    let fx = Fx::new();
    let src = make_tiny(&fx, "tiny", &["--shards", "2"]);
    let before = tree_state(&src);
    for bits in ["4", "8"] {
        let name = format!("tiny-q{bits}");
        let (v, o) = convert(&fx, &["tiny", &name, "--quantize", bits]);
        let d = data(&v, &o);
        let target = fx.ws_home.join(&name);
        check_result_workspace(&fx, &target, &d, "quantize");
        assert_eq!(d["bits"], bits.parse::<u64>().unwrap());
        assert_eq!(d["group_size"], 64);
        assert_eq!(
            d["message"],
            format!("Quantized to {bits}-bit successfully")
        );
        // Shard by shard: one output shard per source shard.
        assert!(target.join("model-00001-of-00002.safetensors").is_file());
        assert!(target.join("model-00002-of-00002.safetensors").is_file());
        let s: Value =
            serde_json::from_slice(&fs::read(target.join(".mlxk_workspace.json")).unwrap())
                .unwrap();
        assert_eq!(
            s["quantization"],
            serde_json::json!({"bits": bits.parse::<u64>().unwrap(), "group_size": 64})
        );
        assert_eq!(s["source_repo"], src.to_string_lossy().as_ref());

        // mlx-lm's own conversion: the same tensors and config, the same text.
        let reference = fx.tmp.path().join(format!("ref-q{bits}"));
        let r = mlx_lm_convert(&src, &reference, &["-q", "--q-bits", bits]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        py(SAME_TENSORS, &[&target, &reference]);
        assert_eq!(run_text(&fx, &target), run_text(&fx, &reference));
    }
    assert_eq!(tree_state(&src), before, "the source was modified");
    no_staging(&fx.ws_home);
}

#[test]
fn quantize_with_a_floating_point_mode_when_mlx_supports_it() {
    crate::require!(Python);
    let fx = Fx::new();
    let src = make_tiny(&fx, "tiny", &[]);
    let reference = fx.tmp.path().join("ref-mxfp4");
    let r = mlx_lm_convert(&src, &reference, &["-q", "--q-mode", "mxfp4"]);
    if !r.status.success() {
        eprintln!(
            "SKIP mxfp4: mlx-lm's own convert fails here: {}",
            String::from_utf8_lossy(&r.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return;
    }
    let (v, o) = convert(
        &fx,
        &["tiny", "tiny-mxfp4", "--quantize", "4", "--q-mode", "mxfp4"],
    );
    let d = data(&v, &o);
    let target = fx.ws_home.join("tiny-mxfp4");
    assert_eq!(d["group_size"], 32);
    assert_eq!(d["parameters"]["q_mode"], "mxfp4");
    py(SAME_TENSORS, &[&target, &reference]);
    // A runnable workspace (its health and runtime verdicts), even if the text is noise.
    check_result_workspace(&fx, &target, &d, "quantize");
    // mxfp4 allows one group size and one bit width: anything else is refused up front.
    let (v, _) = convert(&fx, &["tiny", "x", "--quantize", "8", "--q-mode", "mxfp4"]);
    assert_eq!(v["error"]["type"], "InvalidArgumentError", "{v}");
    assert!(!fx.ws_home.join("x").exists());
}

#[test]
fn dtype_float16_and_dequantize_equal_mlx_lm() {
    crate::require!(Python);
    let fx = Fx::new();
    let src = make_tiny(&fx, "tiny", &["--shards", "2"]);
    let (v, o) = convert(&fx, &["tiny", "tiny-f16", "--dtype", "float16"]);
    let d = data(&v, &o);
    let target = fx.ws_home.join("tiny-f16");
    check_result_workspace(&fx, &target, &d, "dtype");
    assert_eq!(d["message"], "Converted to float16 successfully");
    let reference = fx.tmp.path().join("ref-f16");
    let r = mlx_lm_convert(&src, &reference, &["--dtype", "float16"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = py(SAME_TENSORS, &[&target, &reference]);
    assert!(
        out.contains("mlx.core.float16") && !out.contains("float32"),
        "{out}"
    );
    assert_eq!(run_text(&fx, &target), run_text(&fx, &reference));

    // Quantized, then back: mlx-lm's -d of the same quantized model.
    let (v, o) = convert(&fx, &["tiny", "tiny-q4", "--quantize", "4"]);
    data(&v, &o);
    let (v, o) = convert(&fx, &["tiny-q4", "tiny-deq", "--dequantize"]);
    let d = data(&v, &o);
    check_result_workspace(&fx, &fx.ws_home.join("tiny-deq"), &d, "dequantize");
    let reference = fx.tmp.path().join("ref-deq");
    let r = mlx_lm_convert(&fx.ws_home.join("tiny-q4"), &reference, &["-d"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    py(SAME_TENSORS, &[&fx.ws_home.join("tiny-deq"), &reference]);
}

/// mlx-knife's `rebuild_safetensors_index`, independently: the shards in name order, each
/// shard's keys as `safe_open(...).keys()` gives them, total_size the files' sizes.
const EXPECTED_INDEX: &str = r#"
import json, sys
from pathlib import Path
from safetensors import safe_open
d = Path(sys.argv[1])
shards = sorted(d.glob("*.safetensors"))
wm, total = {}, 0
for s in shards:
    total += s.stat().st_size
    with safe_open(s, framework="numpy") as f:
        for k in f.keys():
            wm[k] = s.name
sys.stdout.write(json.dumps({"metadata": {"total_size": total}, "weight_map": wm}, indent=2) + "\n")
"#;

#[test]
fn repair_index_missing_stale_and_absent_index() {
    crate::require!(Python);
    let fx = Fx::new();
    let src = make_tiny(&fx, "two", &["--shards", "2"]);
    let expected = py(EXPECTED_INDEX, &[&src]);
    let index = src.join("model.safetensors.index.json");
    let good = fs::read(&index).unwrap();

    // 1. A healthy sharded model: the index rewritten in mlx-knife's format.
    // 2. A stale index naming shards that do not exist (mlx-vlm #624).
    // 3. No index at all.
    // 4. An index whose shards exist but whose map is wrong (every tensor in shard 1).
    let stale = String::from_utf8(good.clone())
        .unwrap()
        .replace("model-00001-of-00002", "model-00001-of-00003")
        .replace("model-00002-of-00002", "model-00002-of-00003");
    let wrong = String::from_utf8(good.clone())
        .unwrap()
        .replace("model-00002-of-00002", "model-00001-of-00002");
    for (case, content) in [
        ("ok", Some(good.clone())),
        ("stale", Some(stale.into_bytes())),
        ("none", None),
        ("wrong", Some(wrong.into_bytes())),
    ] {
        match &content {
            Some(c) => fs::write(&index, c).unwrap(),
            None => fs::remove_file(&index).unwrap(),
        }
        let health = mlxfs(&fx)
            .args(["health", "two", "--json"])
            .output()
            .unwrap();
        let hv = envelope(&health);
        if case == "stale" {
            let reason = hv.to_string();
            assert!(
                reason.contains("Fix: mlxfs convert <model> <output> --repair-index"),
                "{reason}"
            );
            // Still reported, but its weights are whole: `run --force` runs it.
            let run = |force: bool| {
                let mut c = mlxfs(&fx);
                c.args([
                    "run",
                    "two",
                    "hi",
                    "--json",
                    "--max-tokens",
                    "3",
                    "--python",
                ])
                .arg(venv_dir());
                if force {
                    c.arg("--force");
                }
                envelope(&c.output().unwrap())
            };
            let refused = run(false);
            assert_eq!(refused["error"]["type"], "model_unhealthy", "{refused}");
            assert!(refused.to_string().contains("--repair-index"), "{refused}");
            let forced = run(true);
            assert_eq!(forced["status"], "success", "{forced}");
        }
        let before = tree_state(&src);
        let name = format!("two-{case}");
        let (v, o) = convert(&fx, &["two", &name, "--repair-index"]);
        let d = data(&v, &o);
        let target = fx.ws_home.join(&name);
        check_result_workspace(&fx, &target, &d, "repair-index");
        assert_eq!(d["message"], "Index rebuilt successfully");
        assert_eq!(
            fs::read_to_string(target.join("model.safetensors.index.json")).unwrap(),
            expected,
            "{case}"
        );
        // Every other top-level file is a copy.
        for f in [
            "config.json",
            "tokenizer.json",
            "model-00001-of-00002.safetensors",
        ] {
            assert_eq!(
                fs::read(target.join(f)).unwrap(),
                fs::read(src.join(f)).unwrap()
            );
        }
        assert_eq!(tree_state(&src), before, "{case}: the source was modified");
    }
    fs::write(&index, &good).unwrap();

    // A single-file model gets no index, and mlx-knife's message.
    make_tiny(&fx, "one", &[]);
    let (v, o) = convert(&fx, &["one", "one-fixed", "--repair-index"]);
    let d = data(&v, &o);
    assert_eq!(
        d["message"],
        "No index to rebuild (single-file model or no safetensors found)"
    );
    assert!(
        !fx.ws_home
            .join("one-fixed/model.safetensors.index.json")
            .exists()
    );
    no_staging(&fx.ws_home);
}

#[test]
fn refusals_leave_no_target() {
    let fx = Fx::new();
    fx.workspace("ws", &good_files());
    fx.hub_model("org/cached", &good_files());
    let mut with_code = good_files();
    with_code[0].1 = br#"{"model_type": "llama", "model_file": "custom.py"}"#.to_vec();
    with_code.push((
        "custom.py".into(),
        b"raise SystemExit('never run')".to_vec(),
    ));
    fx.workspace("coded", &with_code);
    // A vision model without its preprocessor config: what --repair-index writes is unhealthy.
    let mut vision = good_files();
    vision[0].1 =
        br#"{"model_type": "llava", "vision_config": {"hidden_size": 8}, "text_config": {}}"#
            .to_vec();
    fx.workspace("vision", &vision);
    let mut float = good_files();
    float[0].1 = br#"{"model_type": "llama", "hidden_size": 64}"#.to_vec();
    fx.workspace("float", &float);
    let busy = fx.ws_home.join("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("keep.txt"), "mine").unwrap();
    let home_before = tree_state(&fx.ws_home);

    #[rustfmt::skip]
    let cases: &[(&[&str], &str, &str)] = &[
        (&["org/cached", "out", "--repair-index"], "workspace_not_found", "Source path is in HF cache (read-only)"),
        (&["ws", "busy", "--repair-index"], "InvalidTargetError", "Target directory not empty: "),
        (&["ws", "out", "--quantize", "5"], "InvalidArgumentError", "--quantize must be 2, 3, 4, 6, or 8 (got 5)"),
        (&["ws", "out", "--repair-index", "--quantize", "4"], "InvalidArgumentError", "--repair-index and --quantize are mutually exclusive"),
        (&["ws", "out", "--quantize", "4", "--dtype", "float16"], "InvalidArgumentError", "--quantize and --dtype are mutually exclusive"),
        (&["ws", "out"], "InvalidArgumentError", "Must specify conversion mode (--repair-index or --quantize N)"),
        // mlx quantizes in groups of 32, 64 or 128 only (mlx-lm would silently skip layers).
        (&["float", "out", "--quantize", "4", "--q-group-size", "100"], "InvalidArgumentError", "--q-group-size must be 32, 64 or 128 for affine quantization (got 100)"),
        // The weights would not change while the result said they did.
        (&["ws", "out", "--quantize", "8"], "InvalidArgumentError", "is already quantized"),
        (&["float", "out", "--dequantize"], "InvalidArgumentError", "is not quantized"),
        (&["coded", "out", "--quantize", "4"], "remote_code_required", "requires importing and running a custom module ('custom.py')"),
        (&["coded", "out", "--repair-index"], "remote_code_required", "mlxfs refuses to execute it"),
        (&["ws", "ws/inner", "--repair-index"], "InvalidTargetError", "inside"),
        (&["vision", "out", "--repair-index"], "HealthCheckFailed", "Output workspace failed health check: Vision model missing preprocessor_config.json"),
    ];
    for (args, kind, text) in cases {
        let (v, o) = convert(&fx, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {v}");
        assert_eq!(v["status"], "error", "{args:?}");
        assert_eq!(v["command"], "convert");
        assert_eq!(v["error"]["type"], *kind, "{args:?}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(text),
            "{args:?}: {v}"
        );
        assert!(!fx.ws_home.join("out").exists(), "{args:?}");
        // Human output: `convert: Error: …` on stderr.
        let o = mlxfs(&fx).arg("convert").args(*args).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(text),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(tree_state(&fx.ws_home), home_before);
    no_staging(&fx.ws_home);
    // --skip-health writes it anyway (mlx-knife's debug switch).
    let (v, o) = convert(&fx, &["vision", "out", "--repair-index", "--skip-health"]);
    let d = data(&v, &o);
    assert_eq!(d["health_check"], false);
    assert!(d.get("health_status").is_none());
    assert!(fx.ws_home.join("out/config.json").is_file());
    // clap's own refusals (exit 2).
    let o = mlxfs(&fx)
        .args(["convert", "ws", "out", "--quantize", "four"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// Ctrl-C while the weights are converted: nothing at the target, the source as it was; in
/// both Python modes. Interrupted before any shard was written, nothing is left at all;
/// after some were, they are kept in the staging folder and the same command continues from
/// them, to the same tensors as a conversion in one go.
#[test]
fn ctrl_c_mid_conversion_leaves_no_target() {
    crate::require!(Python);
    let fx = Fx::new();
    let src = make_tiny(
        &fx,
        "big",
        &["--hidden", "1024", "--layers", "12", "--shards", "8"],
    );
    let before = tree_state(&src);
    let start = |target: &Path, extra: &[&str]| {
        mlxfs(&fx)
            .arg("convert")
            .arg("big")
            .arg(target)
            .args(["--quantize", "4", "--python"])
            .arg(venv_dir())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut resumed_once = false;
    // (extra arguments, the stderr line after which Ctrl-C comes)
    for (extra, after) in [
        (&["--subprocess"][..], "Converting"),
        (&[][..], "  wrote model-"),
    ] {
        let target = fx.ws_home.join("big-q4");
        let mut child = start(&target, extra);
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("ended before {after:?}: {seen}");
            }
            seen.push_str(&line);
            if line.starts_with(after) {
                break;
            }
            assert!(Instant::now() < deadline);
        }
        let sent = Instant::now();
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
        let status = child.wait().unwrap();
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "{:?}",
            sent.elapsed()
        );
        assert_eq!(status.code(), Some(1), "{seen}{rest}");
        assert!(rest.contains("Interrupted"), "{seen}{rest}");
        assert!(!target.exists(), "{extra:?}: the target exists");
        assert_eq!(
            tree_state(&src),
            before,
            "{extra:?}: the source was modified"
        );
        if !rest.contains(" kept in ") {
            // Stopped before a shard was finished (the line may come after the first one).
            assert_ne!(after, "  wrote model-", "{rest}");
            no_staging(&fx.ws_home);
            continue;
        }
        // Shards were kept: the same command continues from them.
        assert!(
            rest.contains("run the same command again to continue"),
            "{rest}"
        );
        resumed_once = true;
        let (v, o) = convert(&fx, &["big", "big-q4", "--quantize", "4"]);
        let d = data(&v, &o);
        assert!(d["engine"]["resumed_shards"].as_u64().unwrap() >= 1, "{d}");
        no_staging(&fx.ws_home);
        check_result_workspace(&fx, &target, &d, "quantize");
        let (v, o) = convert(&fx, &["big", "big-q4-fresh", "--quantize", "4"]);
        let fresh = data(&v, &o);
        assert_eq!(fresh["engine"]["resumed_shards"], 0);
        py(SAME_TENSORS, &[&target, &fx.ws_home.join("big-q4-fresh")]);
        assert_eq!(fresh["content_hash"], d["content_hash"]);
        fs::remove_dir_all(&target).unwrap();
        fs::remove_dir_all(fx.ws_home.join("big-q4-fresh")).unwrap();
    }
    assert!(resumed_once);
}

/// A workspace whose weights are the named tensors (F32, zeros) in one `model.safetensors`
/// (MLX's format), with `config` and a tokenizer: healthy, never run.
fn with_tensors(fx: &Fx, name: &str, config: &str, tensors: &[(&str, &[u64])]) -> PathBuf {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (t, shape) in tensors {
        let n = shape.iter().product::<u64>() * 4;
        header.insert(
            t.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "mlx"}));
    let weights = safetensors(&Value::Object(header).to_string(), offset as usize);
    let mut f = good_files();
    f[0].1 = config.as_bytes().to_vec();
    f[1].1 = weights;
    fx.workspace(name, &f)
}

/// `--quantize` whose group size divides no weight matrix's input width quantized nothing and
/// said "Quantized to 4-bit successfully" (config.json and `show` then said 4-bit): refused
/// from the safetensors headers, before anything is written or Python starts, with the group
/// sizes and modes that would quantize something. The same kind: `--q-mode`'s fixed group
/// sizes, `--dtype` of weights already that dtype in MLX's format, `--dequantize` of weights
/// that hold no quantized layer.
#[test]
fn conversions_that_change_nothing_are_refused_before_anything_is_written() {
    let fx = Fx::new();
    let float48 = r#"{"model_type": "llama", "hidden_size": 48}"#;
    let w48: &[(&str, &[u64])] = &[
        ("model.embed_tokens.weight", &[384, 48]),
        ("model.layers.0.self_attn.q_proj.weight", &[48, 48]),
        ("model.layers.0.mlp.down_proj.weight", &[48, 96]),
        ("model.layers.0.input_layernorm.weight", &[48]),
    ];
    with_tensors(&fx, "w48", float48, w48);
    let w40: &[(&str, &[u64])] = &[
        ("model.embed_tokens.weight", &[384, 40]),
        ("model.layers.0.mlp.down_proj.weight", &[40, 80]),
    ];
    with_tensors(&fx, "w40", float48, w40);
    // Config says 4-bit, weights are float (what the bug wrote).
    with_tensors(&fx, "fake4", LLAMA_CONFIG, w48);
    let home_before = tree_state(&fx.ws_home);
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["w48", "out", "--quantize", "4"],
            "--quantize 4 would quantize nothing in w48: groups of 64 divide none of its weight \
             matrices' input widths (48, 96), and mlx-lm leaves such layers float; the result \
             would be a float model labelled 4-bit",
            "these would quantize layers: --q-group-size 32; --q-mode mxfp4 (groups of 32, 4 \
             bits); --q-mode nvfp4 (groups of 16, 4 bits)",
        ),
        (
            &["w40", "out", "--quantize", "4", "--q-mode", "mxfp4"],
            "--quantize 4 would quantize nothing in w40: groups of 32 divide none of its weight \
             matrices' input widths (40, 80), and mlx-lm leaves such layers float; the result \
             would be a float model labelled 4-bit",
            "these would quantize layers: --q-mode nvfp4 (groups of 16, 4 bits)",
        ),
        (
            &["w40", "out", "--quantize", "8", "--q-mode", "mxfp8"],
            "--quantize 8 would quantize nothing in w40",
            "--q-mode nvfp4",
        ),
        (
            &["w48", "out", "--dtype", "float32"],
            "w48 is already float32 in MLX's format: --dtype float32 would change none of its \
             weights",
            "choose another dtype",
        ),
        (
            &["fake4", "out", "--dequantize"],
            "fake4 holds no quantized weights (no .scales tensors), although its config.json \
             says quantized: there is nothing to dequantize",
            "--dtype",
        ),
    ];
    for (args, message, hint) in cases {
        // No Python: the refusal comes first.
        let o = mlxfs(&fx)
            .arg("convert")
            .args(*args)
            .args(["--json", "--python", "/nonexistent-venv"])
            .output()
            .unwrap();
        let v = envelope(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {v}");
        assert_eq!(v["error"]["type"], "InvalidArgumentError", "{args:?}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(message), "{args:?}: {m}");
        let o = mlxfs(&fx).arg("convert").args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(hint), "{args:?}: {err}");
    }
    assert_eq!(tree_state(&fx.ws_home), home_before);
    // Another dtype, or the same one of a transformers checkpoint, still converts (not run
    // here: the refusal is what is tested).
}

/// A conversion that quantizes some layers names the others (JSON `unquantized`, the human
/// output, the sentinel's `conversion`); one the headers cannot tell quantizes nothing (a
/// tensor the model drops) is refused by the conversion itself, nothing at the target.
#[test]
fn layers_left_unquantized_are_named() {
    crate::require!(Python);
    let fx = Fx::new();
    make_tiny(&fx, "t96", &["--hidden", "96"]);
    let (v, o) = convert(&fx, &["t96", "t96-q4", "--quantize", "4"]);
    let d = data(&v, &o);
    assert_eq!(d["quantized_layers"], 2, "{d}");
    let left = d["unquantized"].as_array().unwrap();
    assert_eq!(left.len(), 13, "{d}");
    assert!(
        left.iter()
            .all(|l| l["input_width"] == 96 && l["why"] == "group_size")
    );
    assert!(
        left.iter()
            .any(|l| l["layer"] == "model.layers.0.self_attn.q_proj")
    );
    assert_eq!(
        d["message"],
        "Quantized 2 of 15 layers to 4-bit; 13 left unquantized (named in `unquantized`: an \
         input width groups of 64 do not divide, or the model's own rule)"
    );
    let target = fx.ws_home.join("t96-q4");
    let s: Value =
        serde_json::from_slice(&fs::read(target.join(".mlxk_workspace.json")).unwrap()).unwrap();
    assert_eq!(s["conversion"]["unquantized"], d["unquantized"]);
    assert_eq!(s["conversion"]["quantized_layers"], 2);
    // The human output names them.
    let o = mlxfs(&fx)
        .args(["convert", "t96", "t96-q4b", "--quantize", "4", "--python"])
        .arg(venv_dir())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("⚠ 13 layer(s) left unquantized: model.embed_tokens (input width 96), "),
        "{out}"
    );

    // Hidden size 48, and a tied `lm_head.weight` 64 wide that llama's sanitize drops: the
    // headers show a width 64 divides, the model has none.
    let src = make_tiny(&fx, "t48", &["--hidden", "48"]);
    py(
        "import sys, mlx.core as mx\n\
         p = sys.argv[1] + '/model.safetensors'\n\
         w = mx.load(p)\n\
         w['lm_head.weight'] = mx.zeros((384, 64))\n\
         mx.save_safetensors(p, w, metadata={'format': 'mlx'})",
        &[&src],
    );
    let (v, o) = convert(&fx, &["t48", "t48-q4", "--quantize", "4"]);
    assert_eq!(o.status.code(), Some(1), "{v}");
    assert_eq!(v["error"]["type"], "InvalidArgumentError", "{v}");
    assert_eq!(
        v["error"]["message"],
        "--quantize 4 would quantize none of the model's 15 layers: groups of 64 divide none \
         of their input widths (48, 96), or the model keeps them float; the result would be a \
         float model labelled 4-bit"
    );
    assert!(!fx.ws_home.join("t48-q4").exists());
    no_staging(&fx.ws_home);
}
