//! The catalog core in-process: every health reason, the resolution rules, and records.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::support::cli::Run;
use crate::support::*;
use mlxfs::catalog::record::describe;
use mlxfs::catalog::resolve::{ResolveError, resolve};
use mlxfs::catalog::{Locations, ModelRef, Source};

const ST_HDR: &str = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;

fn with(extra: &[(&str, &[u8])], drop: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut f: Vec<(String, Vec<u8>)> = good_files()
        .into_iter()
        .filter(|(n, _)| !drop.contains(&n.as_str()))
        .collect();
    for (n, b) in extra {
        f.retain(|(x, _)| x != n);
        f.push((n.to_string(), b.to_vec()));
    }
    f
}

/// Build a workspace from `files` and return (health, reason).
fn ws_health(files: &[(String, Vec<u8>)]) -> (String, Option<String>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("m");
    write_tree(&ws, files);
    let d = describe(&ModelRef::workspace(ws, "m".into()));
    (
        d.record.health.as_str().to_string(),
        d.record.reason,
        d.health.message().to_string(),
    )
}

fn unhealthy_reason(files: &[(String, Vec<u8>)]) -> String {
    let (h, reason, msg) = ws_health(files);
    assert_eq!(h, "unhealthy", "expected unhealthy, got healthy: {msg}");
    reason.unwrap()
}

/// A case of [`reasons_are`]: the files [`with`] writes and drops, and the reason.
type Unhealthy<'a> = (&'a [(&'a str, &'a [u8])], &'a [&'a str], &'a str);

/// Each case's files make a workspace unhealthy for its reason.
#[track_caller]
fn reasons_are(cases: &[Unhealthy]) {
    for (extra, drop, reason) in cases {
        let names: Vec<&str> = extra.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            unhealthy_reason(&with(extra, drop)),
            *reason,
            "{names:?} written, {drop:?} dropped"
        );
    }
}

/// A healthy workspace `m` in a temporary folder of its own (kept while the first lives).
fn good_m() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("m");
    write_tree(&ws, &good_files());
    (tmp, ws)
}

/// The reason of the workspace at `ws`, named `m`.
fn reason_m(ws: &Path) -> Option<String> {
    describe_m(ws).record.reason
}

/// The workspace at `ws`, named `m`, described.
fn describe_m(ws: &Path) -> mlxfs::catalog::record::Described {
    describe(&ModelRef::workspace(ws.to_path_buf(), "m".into()))
}

#[test]
fn healthy_single_file_model() {
    let (h, reason, msg) = ws_health(&good_files());
    assert_eq!(
        (h.as_str(), reason, msg.as_str()),
        ("healthy", None, "Model is healthy")
    );
}

/// A `config.json` that is a folder is not "invalid JSON": the reason says what it is.
#[test]
fn a_config_folder_is_named_so() {
    let fx = Fx::new();
    let ws = fx.workspace("dir-config", &files(&[("model.safetensors", b"x")]));
    fs::create_dir_all(ws.join("config.json")).unwrap();
    let m = mlxfs::catalog::resolve::resolve("dir-config", &fx.locations()).unwrap();
    let d = mlxfs::catalog::record::describe(&m);
    assert_eq!(
        d.record.reason.as_deref(),
        Some("config.json is a folder, not a regular file")
    );
}

/// A workspace that is a link to itself: a link loop, said so, with the link's own time
/// (not 1970), and the other models still listed.
#[test]
fn a_link_loop_is_named_so() {
    let fx = Fx::new();
    fx.workspace("fine", &good_files());
    symlink("loop", fx.ws_home.join("loop")).unwrap();
    let (_, v) = crate::support::cli::mlxfs(&fx)
        .env_remove("PATH")
        .args(["list", "--json", "--all"])
        .envelope();
    let models = v["data"]["models"].as_array().unwrap();
    assert!(models.iter().any(|m| m["display_name"] == "fine"), "{v}");
    let l = models
        .iter()
        .find(|m| m["display_name"] == "loop")
        .unwrap_or_else(|| panic!("{v}"));
    let reason = l["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("link loop"), "{l}");
    assert!(
        !l["last_modified"].as_str().unwrap().starts_with("1970"),
        "{l}"
    );
}

#[test]
fn config_reasons() {
    #[rustfmt::skip]
    let cases: &[Unhealthy] = &[
        (&[], &["config.json"], "config.json missing"),
        (&[("config.json", b"{nope")], &[], "config.json contains invalid JSON"),
        (&[("config.json", b"{}")], &[], "config.json is empty or invalid"),
        (&[("config.json", b"[1]")], &[], "config.json is empty or invalid"),
    ];
    reasons_are(cases);
}

fn shard(i: u32, n: u32) -> String {
    format!("model-{i:05}-of-{n:05}.safetensors")
}

fn index_json(shards: &[&str]) -> Vec<u8> {
    let map: Vec<String> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| format!(r#""t{i}": "{s}""#))
        .collect();
    format!(
        r#"{{"metadata": {{}}, "weight_map": {{{}}}}}"#,
        map.join(", ")
    )
    .into_bytes()
}

#[test]
fn index_reasons() {
    let w = tiny_weights();
    let (s1, s2) = (shard(1, 2), shard(2, 2));
    let index = index_json(&[&s1, &s2]);
    let index_name = "model.safetensors.index.json";
    let weights: &[&str] = &["model.safetensors"];
    let complete = with(&[(&s1, &w), (&s2, &w), (index_name, &index)], weights);
    let (h, _, msg) = ws_health(&complete);
    assert_eq!(
        (h.as_str(), msg.as_str()),
        ("healthy", "Multi-file model complete")
    );

    let sub = format!("sub/{s1}");
    let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n";
    let mismatch = "Index/shard mismatch (mlx-vlm #624). Index references 2 shards but found 1 different files. Fix: mlxfs convert <model> <output> --repair-index";
    let (missing, empty, pointer) = (
        format!("Missing weight shards: {s1}, {s2}"),
        format!("Empty weight shards: {s2}"),
        format!("LFS pointers instead of files: {s2}"),
    );
    #[rustfmt::skip]
    let cases: &[Unhealthy] = &[
        (&[(index_name, b"{oops")], &[], "Invalid index file"),
        (&[(index_name, br#"{"weight_map": {}}"#)], &[], "Empty or invalid weight_map in index"),
        (&[(&s1, &w), (index_name, &index)], weights, mismatch),
        (&[(&sub, &w), (index_name, &index)], weights, &missing),
        (&[(&s1, &w), (&s2, b""), (index_name, &index)], weights, &empty),
        (&[(&s1, &w), (&s2, lfs), (index_name, &index)], weights, &pointer),
    ];
    reasons_are(cases);

    let escape = with(&[(index_name, &index_json(&["../x.safetensors"]))], &[]);
    assert!(unhealthy_reason(&escape).starts_with("Index references files outside"));
}

#[test]
fn weight_reasons_without_index() {
    let w = tiny_weights();
    let (s1, s24, s3) = (shard(1, 3), shard(2, 4), shard(3, 3));
    let (a, b) = (shard(1, 2), shard(2, 2));
    let empty_b = format!("Empty shards: {b}");
    let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n";
    let weights: &[&str] = &["model.safetensors"];
    // A pointer a loader would open is a reason (the last case); one in a folder no loader
    // reads is a warning (`loadable::a_folder_no_loader_reads_may_be_closed`).
    #[rustfmt::skip]
    let cases: &[Unhealthy] = &[
        (&[(&s1, &w), (&s24, &w)], weights, "Inconsistent shard totals detected"),
        (&[(&s1, &w), (&s3, &w)], weights, "Missing shards by pattern: 2/3 present"),
        (&[(&a, &w), (&b, b"")], weights, &empty_b),
        (&[(&a, &w), (&b, &w)], weights, "Safetensors index missing for sharded model"),
        (&[], weights, "No model weights found"),
        (&[("model.safetensors.partial", b"x")], &[], "Partial download marker detected"),
        (&[("model.safetensors", b"")], &[], "Empty weight files: model.safetensors"),
        (&[("tokenizer.model", lfs)], &[], "LFS pointers instead of files: tokenizer.model"),
    ];
    reasons_are(cases);
    assert_eq!(
        ws_health(&with(&[("extra/tokenizer.model", lfs)], &[])).0,
        "healthy"
    );
    // Weights only in a sub-folder still count.
    let (h, _, _) = ws_health(&with(
        &[("sub/model.safetensors", &w)],
        &["model.safetensors"],
    ));
    assert_eq!(h, "healthy");
}

#[test]
fn truncated_and_absurd_safetensors() {
    let mut truncated = tiny_weights();
    truncated.truncate(truncated.len() - 4);
    let short_header = safetensors(ST_HDR, 16)[..20].to_vec();
    let mut absurd = u64::MAX.to_le_bytes().to_vec();
    absurd.extend_from_slice(b"{}");
    let not_json = safetensors("not json at all", 0);
    for (weights, says) in [
        (truncated, "truncated tensor data"),
        (short_header, "truncated header"),
        (absurd, "absurd header length"),
        (not_json, "not a JSON object"),
    ] {
        let reason = unhealthy_reason(&with(&[("model.safetensors", &weights)], &[]));
        assert!(reason.contains(says), "{reason}");
    }
}

#[test]
fn aux_reasons() {
    let vision = br#"{"model_type": "llava", "quantization": {"bits": 4}}"#;
    let tok = "tokenizer_config.json";
    #[rustfmt::skip]
    let cases: &[Unhealthy] = &[
        (&[("config.json", vision)], &[], "Vision model missing preprocessor_config.json or processor_config.json"),
        (&[("config.json", vision), ("preprocessor_config.json", b"{x")], &[], "preprocessor_config.json invalid JSON"),
        (&[("config.json", vision), ("processor_config.json", b"[]")], &[], "processor_config.json invalid"),
        (&[(tok, b"{x")], &[], "tokenizer_config.json contains invalid JSON"),
        (&[(tok, b"[]")], &[], "tokenizer_config.json exists but invalid"),
        (&[], &["tokenizer.json"], "tokenizer_config.json present but tokenizer.json missing"),
    ];
    reasons_are(cases);
}

#[test]
fn link_and_name_problems_are_this_models_reason() {
    let (_tmp, ws) = good_m();
    symlink("gone.bin", ws.join("dangling.bin")).unwrap();
    assert_eq!(
        reason_m(&ws).as_deref(),
        Some("Dangling symlinks: dangling.bin")
    );
    fs::remove_file(ws.join("dangling.bin")).unwrap();

    symlink("/etc/hostname", ws.join("escape.txt")).unwrap();
    assert_eq!(
        reason_m(&ws).as_deref(),
        Some("Symlinks pointing outside the model folder: escape.txt")
    );
    fs::remove_file(ws.join("escape.txt")).unwrap();

    // A link inside the workspace is fine.
    symlink("model.safetensors", ws.join("alias.safetensors")).unwrap();
    assert_eq!(describe_m(&ws).record.health.as_str(), "healthy");

    // A weight file whose name is not UTF-8 is one the loader globs (`model*.safetensors`):
    // a reason. (The stray-file case is `a_stray_name_that_is_not_utf8_is_a_warning`.)
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"model-\xff.safetensors");
    fs::write(ws.join(bad), tiny_weights()).unwrap();
    assert_eq!(
        reason_m(&ws).as_deref(),
        Some("File names that are not valid UTF-8: model-\u{fffd}.safetensors")
    );
}

#[test]
fn hf_cache_runtime_artifacts_do_not_make_a_workspace_unhealthy() {
    let mut f = good_files();
    f.push((
        ".hf_cache/hub/models--x--y/blobs/abc.incomplete".into(),
        b"".to_vec(),
    ));
    f.push((".hf_cache/tmp.partial".into(), b"x".to_vec()));
    let (h, _, _) = ws_health(&f);
    assert_eq!(h, "healthy");
}

#[test]
fn hub_snapshot_problems() {
    let fx = Fx::new();
    fs::create_dir_all(fx.hub().join("models--org--nosnaps")).unwrap();
    fs::create_dir_all(fx.hub().join("models--org--empty/snapshots")).unwrap();
    let snap = fx.hub_model("org/dangling", &good_files());
    let blob = fs::read_link(snap.join("model.safetensors")).unwrap();
    fs::remove_file(snap.join(&blob)).unwrap();
    fx.hub_model("org/good", &good_files());
    // An interrupted download: the blob is still `.incomplete` and not linked.
    let partial = fx.hub_model("org/partial", &with(&[], &["model.safetensors"]));
    fs::write(partial.join("../../blobs/0123.incomplete"), b"half").unwrap();

    let loc = fx.locations();
    let models = mlxfs::catalog::all_models(&loc);
    let got: Vec<(String, String, Option<String>)> = models
        .iter()
        .map(|m| {
            let r = describe(m).record;
            (r.name, r.health.as_str().to_string(), r.reason)
        })
        .collect();
    #[rustfmt::skip]
    let want = [
        ("org/dangling", "unhealthy", Some("Dangling symlinks: model.safetensors")),
        ("org/empty", "unhealthy", Some("No snapshots found")),
        ("org/good", "healthy", None),
        ("org/nosnaps", "unhealthy", Some("No snapshots directory found")),
        ("org/partial", "unhealthy", Some("No model weights found")),
    ];
    let want: Vec<(String, String, Option<String>)> = want
        .iter()
        .map(|(n, h, r)| (n.to_string(), h.to_string(), r.map(str::to_string)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn record_fields_for_hub_and_workspace() {
    let fx = Fx::new();
    let snap = fx.hub_model("mlx-community/Tiny-Instruct-4bit", &good_files());
    let ws = fx.workspace("my-ws", &good_files());
    managed_sentinel(&ws, "");
    mlxfs::hash::sentinel::recalc(&ws).unwrap();
    let loc = fx.locations();

    let hub = describe(&resolve("Tiny-Instruct", &loc).unwrap()).record;
    assert_eq!(hub.name, "mlx-community/Tiny-Instruct-4bit");
    assert_eq!(hub.hash.as_deref(), snap.file_name().unwrap().to_str());
    assert_eq!(hub.revision, hub.hash);
    assert_eq!(hub.path, snap.to_string_lossy());
    assert_eq!(hub.source.as_str(), "cache");
    assert!(hub.cached);
    assert_eq!(hub.framework.as_str(), "MLX");
    assert_eq!(hub.model_type.as_str(), "chat");
    let caps: Vec<&str> = hub.capabilities.iter().map(|c| c.as_str()).collect();
    assert_eq!(caps, ["text-generation", "chat"]);
    assert_eq!(hub.context_length, Some(2048));
    assert_eq!(
        (hub.health.as_str(), hub.runtime_compatible),
        ("healthy", true)
    );
    assert_eq!(hub.clean, None);
    let blob_sizes: u64 = good_files().iter().map(|f| f.1.len() as u64).sum();
    assert_eq!(hub.size_bytes, blob_sizes);
    assert!(hub.last_modified.ends_with('Z') && hub.last_modified.len() == 20);

    let w = describe(&resolve("my-ws", &loc).unwrap()).record;
    assert_eq!(w.name, ws.to_string_lossy());
    assert_eq!(
        (w.source.as_str(), w.cached, w.hash.clone()),
        ("workspace", false, None)
    );
    assert_eq!(w.origin.as_deref(), Some("org/x"));
    assert_eq!(w.clean, Some(true));
    assert!(w.content_hash.unwrap().starts_with("sha256:"));
    // Name heuristics look at the model's own name, not the parent folders.
    let chat_parent = fx.tmp.path().join("chat-models/plain");
    write_tree(&chat_parent, &with(&[], &["tokenizer_config.json"]));
    let r = describe(
        &mlxfs::catalog::resolve::resolve_path(chat_parent.to_str().unwrap(), &loc).unwrap(),
    )
    .record;
    assert_eq!(r.model_type.as_str(), "base");
}

#[test]
fn runtime_reasons() {
    let fx = Fx::new();
    let loc = fx.locations();
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "pt",
            br#"{"model_type": "llama"}"#,
            "Incompatible framework: PyTorch",
        ),
        (
            "foo",
            br#"{"model_type": "foo", "quantization": {}}"#,
            "Model type foo not supported.",
        ),
        (
            "nomt",
            br#"{"hidden_size": 1, "quantization": {}}"#,
            "config.json missing model_type field",
        ),
        (
            "code",
            br#"{"model_type": "llama", "model_file": "x.py", "quantization": {}}"#,
            "requires executing model-supplied code (config.json: model_file)",
        ),
    ];
    for (name, cfg, want) in cases {
        fx.workspace(name, &with(&[("config.json", cfg)], &[]));
        let r = describe(&resolve(name, &loc).unwrap()).record;
        assert_eq!(
            (r.health.as_str(), r.runtime_compatible),
            ("healthy", false),
            "{name}"
        );
        assert_eq!(r.reason.as_deref(), Some(*want), "{name}");
    }
    fx.workspace(
        "legacy",
        &with(
            &[("weights.00.safetensors", &tiny_weights())],
            &["model.safetensors"],
        ),
    );
    let r = describe(&resolve("legacy", &loc).unwrap()).record;
    assert_eq!(
        r.reason.as_deref(),
        Some("Legacy format not supported by mlx-lm")
    );
}

fn names(e: ResolveError) -> Vec<String> {
    match e {
        ResolveError::Ambiguous { matches, .. } => matches,
        other => panic!("expected ambiguity, got {other:?}"),
    }
}

#[test]
fn resolution_rules() {
    let fx = Fx::new();
    fx.good_hub_models([
        "mlx-community/Llama-3.2-1B-4bit",
        "mlx-community/Llama-3.2-3B-4bit",
        "org/whisper-tiny",
        "org/qwen",
    ]);
    fx.good_workspaces(["qwen", "my-llama-ws"]);
    let loc = fx.locations();

    // Exact beats fuzzy; workspace home first.
    let m = resolve("qwen", &loc).unwrap();
    assert_eq!(
        (m.source, m.short_name.as_str()),
        (Source::Workspace, "qwen")
    );
    assert_eq!(resolve("org/qwen", &loc).unwrap().source, Source::Cache);
    // Fuzzy, case-insensitive, unique.
    assert_eq!(resolve("WHISPER", &loc).unwrap().name, "org/whisper-tiny");
    // mlx-community short name.
    assert_eq!(
        resolve("Llama-3.2-1B-4bit", &loc).unwrap().name,
        "mlx-community/Llama-3.2-1B-4bit"
    );
    // Ambiguity lists every candidate, workspaces included, sorted.
    assert_eq!(
        names(resolve("llama", &loc).unwrap_err()),
        [
            "mlx-community/Llama-3.2-1B-4bit",
            "mlx-community/Llama-3.2-3B-4bit",
            "my-llama-ws"
        ]
    );
    // Not found.
    let e = resolve("nothing-like-this", &loc).unwrap_err();
    assert_eq!(e.error_type().as_str(), "model_not_found");
    assert_eq!(
        resolve("   ", &loc).unwrap_err().error_type().as_str(),
        "model_not_found"
    );
    // Explicit paths are exact.
    let ws = fx.ws_home.join("qwen");
    let m = resolve(ws.to_str().unwrap(), &loc).unwrap();
    assert_eq!(m.name, ws.to_string_lossy());
    let e = resolve(fx.ws_home.join("qwe").to_str().unwrap(), &loc).unwrap_err();
    assert_eq!(e.error_type().as_str(), "model_not_found");
    let e = resolve(fx.ws_home.to_str().unwrap(), &loc).unwrap_err();
    assert!(matches!(e, ResolveError::NotAModel { .. }));
}

#[test]
fn revisions() {
    let fx = Fx::new();
    let old = "1111111111111111111111111111111111111111";
    let new = "2222222222222222222222222222222222222222";
    let also = "2223333333333333333333333333333333333333";
    fx.hub_snapshot("org/m", old, &good_files(), true);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fx.hub_snapshot("org/m", new, &good_files(), false);
    fx.hub_snapshot("org/m", also, &good_files(), false);
    fs::create_dir_all(fx.hub().join("models--org--m/refs")).unwrap();
    fs::write(fx.hub().join("models--org--m/refs/dev"), also).unwrap();
    let loc = fx.locations();

    // refs/main decides the current revision, not the newest snapshot.
    let m = resolve("org/m", &loc).unwrap();
    assert_eq!(m.revision.as_deref(), Some(old));
    assert!(m.is_current);
    let m = resolve("org/m@2222222", &loc).unwrap();
    assert_eq!(m.revision.as_deref(), Some(new));
    assert!(!m.is_current);
    assert_eq!(m.spec(), "org/m@2222222");
    assert_eq!(m.path, fx.hub().join("models--org--m/snapshots").join(new));
    // A shared prefix is ambiguous; a branch under refs/ works.
    assert_eq!(
        names(resolve("org/m@222", &loc).unwrap_err()),
        [format!("org/m@{new}"), format!("org/m@{also}")]
    );
    assert_eq!(
        resolve("m@dev", &loc).unwrap().revision.as_deref(),
        Some(also)
    );
    let e = resolve("org/m@deadbee", &loc).unwrap_err();
    assert_eq!(e.error_type().as_str(), "hash_not_found");
    // Without refs/main the newest snapshot wins.
    fs::remove_file(fx.hub().join("models--org--m/refs/main")).unwrap();
    let newest = resolve("org/m", &loc).unwrap();
    assert_ne!(newest.revision.as_deref(), Some(old));
    // A snapshot folder given by path maps back to the hub model at that revision.
    let p = fx.hub().join("models--org--m/snapshots").join(new);
    let m = resolve(p.to_str().unwrap(), &loc).unwrap();
    assert_eq!(
        (m.source, m.revision.as_deref()),
        (Source::Cache, Some(new))
    );
}

#[test]
fn locations_from_environment() {
    let l = loc_from(&[("HOME", "/h"), ("HF_HOME", "")]);
    assert_eq!(l.hub_cache, Path::new("/h/.cache/huggingface/hub"));
    let l = loc_from(&[("HOME", "/h"), ("HF_HOME", "~/hf")]);
    assert_eq!(l.hub_cache, Path::new("/h/hf/hub"));
    let l = loc_from(&[("HOME", "/h"), ("HF_HOME", "/x"), ("HF_HUB_CACHE", "/c")]);
    assert_eq!(l.hub_cache, Path::new("/c"));
    let l = loc_from(&[
        ("HOME", "/h"),
        ("HF_HUB_CACHE", ""),
        ("MLXK_WORKSPACE_HOME", ""),
    ]);
    assert_eq!(l.hub_cache, Path::new("/h/.cache/huggingface/hub"));
    assert_eq!(l.workspace_home, None);
    let l = loc_from(&[("MLXK_WORKSPACE_HOME", "/does/not/exist")]);
    assert_eq!(l.workspace_home, None);
    assert!(l.workspace_home_problem.is_some());
}

#[test]
fn one_broken_model_never_hides_the_others() {
    let fx = Fx::new();
    for i in 0..5 {
        fx.hub_model(&format!("org/good-{i}"), &good_files());
    }
    let snap = fx.hub_model("org/broken", &good_files());
    fs::remove_file(snap.join(fs::read_link(snap.join("config.json")).unwrap())).unwrap();
    fx.workspace("ws-bad-sentinel", &good_files());
    fs::write(
        fx.ws_home.join("ws-bad-sentinel/.mlxk_workspace.json"),
        "{{{",
    )
    .unwrap();
    let loc = fx.locations();
    let listed = mlxfs::catalog::resolve::list(None, &loc);
    assert_eq!(listed.len(), 7);
    let recs: Vec<_> = listed.iter().map(|l| describe(&l.model).record).collect();
    assert_eq!(
        recs.iter()
            .filter(|r| r.health.as_str() == "healthy")
            .count(),
        6
    );
    let broken = recs.iter().find(|r| r.name == "org/broken").unwrap();
    assert_eq!(broken.reason.as_deref(), Some("config.json missing"));
    let bad = recs
        .iter()
        .find(|r| r.name.ends_with("ws-bad-sentinel"))
        .unwrap();
    assert_eq!((bad.health.as_str(), bad.clean), ("healthy", None));
}

#[test]
fn hub_cache_reached_through_a_symlink_stays_healthy() {
    let fx = Fx::new();
    fx.hub_model("org/m", &good_files());
    let link = fx.tmp.path().join("hf-link");
    symlink(&fx.hf_home, &link).unwrap();
    let loc = Locations::from_vars(|k| match k {
        "HF_HOME" => Some(link.to_string_lossy().into_owned()),
        _ => None,
    });
    let r = describe(&resolve("org/m", &loc).unwrap()).record;
    assert_eq!((r.health.as_str(), r.reason), ("healthy", None));
}

#[test]
fn symlink_loops_are_reported_not_followed() {
    let (_tmp, ws) = good_m();
    symlink("b", ws.join("a")).unwrap();
    symlink("a", ws.join("b")).unwrap();
    assert_eq!(reason_m(&ws).as_deref(), Some("Dangling symlinks: a, b"));
    let h = mlxfs::hash::compute_v2(&ws, &mlxfs::hash::Excludes::default_list());
    assert!(
        matches!(h, Err(mlxfs::hash::HashError::SymlinkLoop { .. })),
        "{h:?}"
    );
}

#[test]
fn non_utf8_workspace_folder_is_listed_as_unhealthy() {
    use std::os::unix::ffi::OsStrExt;
    let fx = Fx::new();
    let name = std::ffi::OsStr::from_bytes(b"ws-\xfe");
    write_tree(&fx.ws_home.join(name), &good_files());
    fx.workspace("fine", &good_files());
    let listed = mlxfs::catalog::resolve::list(None, &fx.locations());
    assert_eq!(listed.len(), 2);
    let recs: Vec<_> = listed.iter().map(|l| describe(&l.model).record).collect();
    let bad = recs.iter().find(|r| r.name.contains("ws-")).unwrap();
    assert_eq!(bad.health.as_str(), "unhealthy");
    assert!(bad.reason.as_deref().unwrap().contains("not valid UTF-8"));
}

#[test]
fn hub_alias_names_and_staging_folders() {
    let fx = Fx::new();
    fx.good_hub_models(["acme/model", "gpt2"]);
    fx.good_workspaces(["acme", "gpt2", ".mlxfs-staging-x", ".mlxk2_temp_0123"]);
    let loc = fx.locations();
    assert_eq!(resolve("acme@hub/model", &loc).unwrap().name, "acme/model");
    assert_eq!(resolve("gpt2@hub", &loc).unwrap().source, Source::Cache);
    assert_eq!(resolve("gpt2", &loc).unwrap().source, Source::Workspace);
    let names: Vec<String> = mlxfs::catalog::resolve::list(None, &loc)
        .into_iter()
        .map(|l| l.model.short_name)
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn with_home_unset_the_cache_is_never_relative() {
    // No HOME, no HF_HOME, no HF_HUB_CACHE: the home comes from the password database.
    let loc = Locations::from_vars(|_| None);
    assert!(loc.hub_cache.is_absolute(), "{}", loc.hub_cache.display());
    assert!(loc.hub_cache.ends_with(".cache/huggingface/hub"));
}

#[test]
fn a_sentinel_that_is_a_link_is_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    write_tree(&ws, &good_files());
    let secret = tmp.path().join("secret.json");
    fs::write(&secret, r#"{"managed": true, "source_repo": "SECRET"}"#).unwrap();
    symlink(&secret, ws.join(".mlxk_workspace.json")).unwrap();
    let d = describe(&ModelRef::workspace(ws.clone(), "ws".into()));
    assert_eq!(d.record.origin, None);
    assert!(d.sentinel.unwrap().sentinel().is_none());
}

/// The walk matches a hub snapshot's links to the inodes of the repo's `blobs/` (issue 15):
/// what it decides must be what resolving each link decides — inside, escaping, dangling —
/// and the files it reads for the LFS scan are the blobs.
#[test]
fn hub_snapshot_links_are_matched_to_their_blobs() {
    let fx = Fx::new();
    let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n".to_vec();
    let describe_repo = |repo: &str| {
        let loc = fx.locations();
        describe(&resolve(repo, &loc).unwrap()).record
    };

    // An LFS pointer left in a blob: found through the link.
    let mut files = good_files();
    files.push(("tokenizer.model".into(), lfs.clone()));
    fx.hub_model("org/pointer", &files);
    let r = describe_repo("org/pointer");
    assert_eq!(
        r.reason.as_deref(),
        Some("LFS pointers instead of files: tokenizer.model")
    );

    // Sizes are the blobs' (links followed), as before.
    let snap = fx.hub_model("org/good", &good_files());
    let total: u64 = good_files().iter().map(|(_, b)| b.len() as u64).sum();
    let r = describe_repo("org/good");
    assert_eq!((r.health.as_str(), r.size_bytes), ("healthy", total));

    // A link to a file outside the repo escapes, even with the same bytes as a blob.
    let outside = fx.tmp.path().join("outside.json");
    fs::write(&outside, b"{}").unwrap();
    symlink(&outside, snap.join("extra.json")).unwrap();
    assert_eq!(
        describe_repo("org/good").reason.as_deref(),
        Some("Symlinks pointing outside the model folder: extra.json")
    );
    fs::remove_file(snap.join("extra.json")).unwrap();

    // A blob that is itself a link out of the repo: the snapshot's link escapes.
    let blobs = snap.join("../../blobs");
    symlink(&outside, blobs.join("linked-blob")).unwrap();
    symlink("../../blobs/linked-blob", snap.join("extra.json")).unwrap();
    assert_eq!(
        describe_repo("org/good").reason.as_deref(),
        Some("Symlinks pointing outside the model folder: extra.json")
    );
    fs::remove_file(snap.join("extra.json")).unwrap();

    // A link to a blob by its absolute path is inside; one to a blob that is not there dangles.
    let weights = fs::read_link(snap.join("model.safetensors")).unwrap();
    let abs = fs::canonicalize(snap.join(&weights)).unwrap();
    symlink(&abs, snap.join("copy.safetensors")).unwrap();
    let r = describe_repo("org/good");
    assert_eq!(r.health.as_str(), "healthy", "{:?}", r.reason);
    fs::remove_file(snap.join("copy.safetensors")).unwrap();
    symlink("../../blobs/0000", snap.join("gone.json")).unwrap();
    assert_eq!(
        describe_repo("org/good").reason.as_deref(),
        Some("Dangling symlinks: gone.json")
    );
    fs::remove_file(snap.join("gone.json")).unwrap();

    // `blobs/` linked to a folder too wide to be one model's (here the hub folder, which
    // holds the repo), its blobs moved there: the snapshot's links escape.
    let wide = fx.hub_model("org/wide", &good_files());
    let wide_blobs = wide.join("../../blobs");
    for e in fs::read_dir(&wide_blobs).unwrap() {
        let e = e.unwrap();
        fs::rename(e.path(), fx.hub().join(e.file_name())).unwrap();
    }
    fs::remove_dir(&wide_blobs).unwrap();
    symlink("..", &wide_blobs).unwrap();
    let r = describe_repo("org/wide");
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("Symlinks pointing outside the model folder: ")),
        "{:?}",
        r.reason
    );
}

/// `sys::real_path` (an `O_PATH` descriptor's name) gives what `fs::canonicalize` gives:
/// links in the middle and at the end, `..`, doubled slashes; the same error kind when the
/// path does not exist.
#[test]
fn real_path_agrees_with_canonicalize() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    fs::create_dir_all(base.join("a/b/c")).unwrap();
    fs::write(base.join("a/b/c/f"), b"x").unwrap();
    symlink("a/b", base.join("lb")).unwrap();
    symlink("../b/c", base.join("a/b/lc")).unwrap();
    symlink("c/f", base.join("a/b/lf")).unwrap();
    for p in [
        "a",
        "a/b/c",
        "lb",
        "lb/c",
        "lb/lc",
        "lb/lc/f",
        "a/b/lf",
        "a/../lb/./c//f",
        "lb/..",
    ] {
        let p = base.join(p);
        assert_eq!(
            mlxfs::sys::real_path(&p).unwrap(),
            fs::canonicalize(&p).unwrap(),
            "{}",
            p.display()
        );
    }
    let gone = base.join("lb/nothing");
    assert_eq!(
        mlxfs::sys::real_path(&gone).unwrap_err().kind(),
        fs::canonicalize(&gone).unwrap_err().kind()
    );
}

/// Existence questions answered by the walk follow links as `Path::is_file` does: a dangling
/// `chat_template.jinja` is no template, a linked one is.
#[test]
fn template_files_are_looked_up_as_the_disk_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("m");
    // No template in tokenizer_config.json: only the file can make the model `chat`.
    let mut files = good_files();
    files.retain(|(n, _)| n != "tokenizer_config.json");
    write_tree(&ws, &files);
    symlink("gone.jinja", ws.join("chat_template.jinja")).unwrap();
    let d = describe_m(&ws);
    assert_eq!(d.record.model_type.as_str(), "base");
    fs::write(ws.join("real.jinja"), b"{{ x }}").unwrap();
    fs::remove_file(ws.join("chat_template.jinja")).unwrap();
    symlink("real.jinja", ws.join("chat_template.jinja")).unwrap();
    let d = describe_m(&ws);
    assert_eq!(d.record.model_type.as_str(), "chat");
}

/// `par_map_io` keeps order, and grows its pool only while the work waits: items that sleep
/// (blocking, as a cold disk does) end up on more threads than two per core; items that
/// never block stay on two per core.
#[test]
fn the_io_pool_keeps_order_and_grows_only_while_work_waits() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let items: Vec<u32> = (0..400).collect();

    let threads = Mutex::new(HashSet::new());
    let out = mlxfs::par::par_map_io(&items, |i| {
        threads.lock().unwrap().insert(std::thread::current().id());
        std::thread::sleep(std::time::Duration::from_millis(1));
        i * 2
    });
    assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
    let waited = threads.lock().unwrap().len();
    assert!(
        waited > 2 * cores && waited <= mlxfs::par::IO_THREADS,
        "{waited} threads for work that waits, {cores} cores"
    );

    let threads = Mutex::new(HashSet::new());
    let out = mlxfs::par::par_map_io(&items, |i| {
        // Thread ids are gathered once per thread, not per item (no lock to wait on).
        thread_local!(static SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if !SEEN.with(|s| s.replace(true)) {
            threads.lock().unwrap().insert(std::thread::current().id());
        }
        (0..2000u64).fold(u64::from(*i), |a, b| a.wrapping_mul(31).wrapping_add(b))
    });
    assert_eq!(out.len(), items.len());
    let busy = threads.lock().unwrap().len();
    assert!(
        busy <= 2 * cores,
        "{busy} threads for work that never waits"
    );
}

/// A hub repo in the plain layout carries its real path from the scan, and the link roots it
/// gives without a system call are exactly those worked out from the disk; any linked part
/// (the repo folder, `blobs/`, `snapshots/`, the snapshot) takes the general way.
#[test]
fn plain_hub_layouts_give_the_same_link_roots_without_looking() {
    let fx = Fx::new();
    fx.hub_model("org/plain", &good_files());
    let away = fx.tmp.path().join("away");
    fs::create_dir_all(&away).unwrap();
    let move_out = |part: &Path, name: &str| {
        let to = away.join(name);
        fs::rename(part, &to).unwrap();
        symlink(&to, part).unwrap();
    };
    let snap = fx.hub_model("org/blobs", &good_files());
    move_out(
        &snap.parent().unwrap().parent().unwrap().join("blobs"),
        "blobs-of-blobs",
    );
    let snap = fx.hub_model("org/snaps", &good_files());
    let snaps = snap.parent().unwrap();
    let to = snaps.parent().unwrap().join("elsewhere");
    fs::rename(snaps, &to).unwrap();
    symlink(&to, snaps).unwrap();
    // Snapshot links are relative (`../../blobs/…`): a moved snapshot stays as deep.
    let snap = fx.hub_model("org/snap", &good_files());
    let to = snap
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("elsewhere/snapshot");
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::rename(&snap, &to).unwrap();
    symlink(&to, &snap).unwrap();
    let snap = fx.hub_model("org/repo", &good_files());
    move_out(snap.parent().unwrap().parent().unwrap(), "repo-of-repo");

    let models = mlxfs::catalog::all_models(&fx.locations());
    let plain: Vec<(&str, bool)> = models
        .iter()
        .map(|m| (m.name.as_str(), m.real_repo.is_some()))
        .collect();
    assert_eq!(
        plain,
        vec![
            ("org/blobs", false),
            ("org/plain", true),
            ("org/repo", false),
            ("org/snap", false),
            ("org/snaps", false),
        ]
    );
    for m in &models {
        let general = ModelRef {
            real_repo: None,
            ..m.clone()
        };
        assert_eq!(m.link_roots(), general.link_roots(), "{}", m.name);
        let r = describe(m).record;
        assert_eq!(
            (r.health.as_str(), r.reason),
            ("healthy", None),
            "{}",
            m.name
        );
    }
}
