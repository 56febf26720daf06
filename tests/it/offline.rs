//! The workspace promise of ADR-022, end to end (issue 12 §4): clone from the hub → run once
//! online with a draft model the run downloads → archive → restore on "another machine"
//! (another HOME, HF_HOME and workspace home) → the same run, offline inside `unshare -n`,
//! gives the same text, and the restored workspace is clean with the same content hash.
//! A single changed byte in the archive makes restore fail and leaves no target.

use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;

use crate::support::cli::*;
use crate::support::fakehub::FakeHub;
use crate::support::python::*;
use crate::support::*;

/// `mlxfs ARGS --json` on machine `fx` (its HOME, HF_HOME and workspace home), with the hub
/// at `hub`; inside a network namespace of its own (no network at all) when `no_net`.
fn mlxfs(fx: &Fx, hub: &str, no_net: bool, args: &[&str]) -> (Output, Value) {
    against_hub(fx, hub, !no_net)
        .args(args)
        .arg("--json")
        .envelope()
}

/// A success's `data` (`step` names it when it is not).
#[track_caller]
fn ok(step: &str, (o, v): (Output, Value)) -> Value {
    assert_eq!(v["status"], "success", "{step}");
    data(&v, &o)
}

/// The run of the round trip: seeded, greedy, with the hub draft.
fn run_args(venv: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "tiny",
        "Explain FUSE",
        "--draft-model",
        "org/draft",
        "--temperature",
        "0",
        "--seed",
        "7",
        "--max-tokens",
        "12",
        "--python",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(venv.to_string_lossy().into_owned());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn clone_run_archive_restore_elsewhere_and_run_offline() {
    crate::require!(Python, Root);
    let a = Fx::new();
    let hub = FakeHub::start(&a.tmp.path().join("remote"));
    let src = a.tmp.path().join("src");
    hub.put_repo(
        "org/tiny",
        &files_of(&generate("make-tiny-model.py", &src.join("tiny"), &[])),
    );
    let draft = generate(
        "make-tiny-model.py",
        &src.join("draft"),
        &["--seed", "3", "--layers", "1"],
    );
    hub.put_repo("org/draft", &files_of(&draft));
    let draft_commit = hub.commit("org/draft", "main");
    let venv = venv_dir();

    // Machine A: clone, then run once online (the draft is downloaded into .hf_cache).
    let cloned = ok("clone", mlxfs(&a, &hub.url, false, &["clone", "org/tiny"]));
    let ws = a.ws_home.join("tiny");
    assert_eq!(cloned["target_dir"], ws.to_string_lossy().as_ref());
    let hash = cloned["content_hash"].as_str().unwrap().to_string();
    let args = run_args(&venv, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let online = ok("run online", mlxfs(&a, &hub.url, false, &args));
    let text = online["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert_eq!(online["draft"]["source"], "hub", "{online:#}");
    assert_eq!(online["cache"]["arrived"][0]["repo_id"], "org/draft");
    assert!(ws.join(".hf_cache/hub/models--org--draft").is_dir());

    // Archive it; the same workspace gives the same bytes twice.
    let out = a.tmp.path().join("tiny.tar");
    let archived = ok(
        "archive",
        mlxfs(
            &a,
            &hub.url,
            false,
            &["archive", "tiny", out.to_str().unwrap()],
        ),
    );
    assert_eq!(archived["content_hash"], hash.as_str(), "{archived:#}");
    let again = a.tmp.path().join("again.tar");
    ok(
        "archive again",
        mlxfs(
            &a,
            &hub.url,
            false,
            &["archive", "tiny", again.to_str().unwrap()],
        ),
    );
    assert!(fs::read(&out).unwrap() == fs::read(&again).unwrap());

    // Machine B: another HOME, HF_HOME and workspace home; the hub is out of reach.
    let b = Fx::new();
    // What must stay untouched: the shared hub cache and ~/.cache (mlxfs's own state folder,
    // ~/.local/state/mlxfs, may record which Python it found).
    let home_cache = b.home.join(".cache");
    fs::create_dir_all(&home_cache).unwrap();
    let shared = || (tree_state(&b.hf_home), tree_state(&home_cache));
    let before = shared();
    let copied = b.tmp.path().join("tiny.tar");
    fs::copy(&out, &copied).unwrap();
    let dead = "http://127.0.0.1:9";
    let restored = ok(
        "restore",
        mlxfs(&b, dead, true, &["restore", copied.to_str().unwrap()]),
    );
    let ws_b = b.ws_home.join("tiny");
    assert_eq!(restored["content_hash"], hash.as_str(), "{restored:#}");
    let shown = ok("show", mlxfs(&b, dead, true, &["show", "tiny"]));
    assert_eq!(shown["model"]["clean"], true, "{shown:#}");
    assert_eq!(shown["model"]["content_hash"], hash.as_str());
    assert_eq!(shown["model"]["path"], ws_b.to_string_lossy().as_ref());
    assert_eq!(shown["runtime_cache"]["offline_ready"], true, "{shown:#}");

    // The same run with no network at all, and with --offline: the same text, the draft from
    // the restored runtime cache, nothing downloaded.
    for extra in [&[][..], &["--offline"][..]] {
        let args = run_args(&venv, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let off = ok("run offline", mlxfs(&b, dead, true, &args));
        assert_eq!(off["text"], text.as_str(), "{extra:?}");
        assert_eq!(off["draft"]["source"], "runtime-cache");
        assert_eq!(off["draft"]["revision"], draft_commit.as_str());
        assert_eq!(off["cache"]["added"], serde_json::json!([]));
    }
    // Still clean after running, and B's shared caches were never touched.
    let shown = ok("show after", mlxfs(&b, dead, true, &["show", "tiny"]));
    assert_eq!(shown["model"]["clean"], true);
    assert_eq!(shared(), before);

    // One changed byte anywhere in the weights' data: restore fails and leaves no target.
    let mut bytes = fs::read(&out).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let bad = b.tmp.path().join("bad.tar");
    fs::write(&bad, &bytes).unwrap();
    let before_home = tree_state(&b.ws_home);
    let (o, v) = mlxfs(&b, dead, true, &["restore", bad.to_str().unwrap(), "other"]);
    assert_eq!(o.status.code(), Some(1), "{v:#}");
    assert_eq!(v["status"], "error");
    assert!(!b.ws_home.join("other").exists());
    assert_eq!(tree_state(&b.ws_home), before_home, "nothing left behind");
}
