//! Hub operations against a real local hub server (tests/it/support/fakehub.rs on 127.0.0.1):
//! clone, pull, rm, push, resume after a kill, failures that leave nothing behind, agreement
//! with the Python huggingface_hub client on the cache layout, and what a mount shows while
//! a download runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::*;
use crate::support::fakehub::FakeHub;
use crate::support::mnt::Mount;
use crate::support::python::test_python;
use crate::support::*;
use serde_json::Value;

struct Env {
    fx: Fx,
    hub: FakeHub,
}

impl Env {
    fn new() -> Env {
        let fx = Fx::new();
        let hub = FakeHub::start(&fx.tmp.path().join("hubroot"));
        Env { fx, hub }
    }

    fn cmd(&self, extra: &[(&str, &str)]) -> Command {
        let mut c = against_hub(&self.fx, &self.hub.url, true);
        c.envs(extra.iter().copied());
        c
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        self.cmd(extra).args(args).out()
    }

    /// Run with --json; (exit code, envelope).
    fn json(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, Value) {
        self.cmd(extra).args(args).arg("--json").json()
    }
}

impl Env {
    /// A hub with `repo` (a model of `size` bytes of weights) whose weights stall after `at`
    /// bytes; and the model's files.
    fn stalled(repo: &str, size: usize, at: u64) -> (Env, Vec<(String, Vec<u8>)>) {
        let e = Env::new();
        let files = model_files(size);
        e.hub.put_repo(repo, &files);
        e.hub.stall("model.safetensors", at);
        (e, files)
    }
}

impl Env {
    /// Nothing is listed (a stopped download left nothing visible); then the stalled server
    /// goes on and `args` run again end well: their envelope.
    #[track_caller]
    fn nothing_listed_then_again(&self, args: &[&str]) -> Value {
        let (_, l) = self.json(&["list", "--all"], &[]);
        assert_eq!(l["data"]["count"], 0, "{l:#}");
        self.hub.release();
        self.hub.clear_requests();
        let (code, v) = self.json(args, &[]);
        assert_eq!(code, 0, "{v:#}");
        v
    }
}

/// A small healthy MLX llama with a nested file, a duplicate blob, and LFS-sized weights.
fn model_files(weights_bytes: usize) -> Vec<(String, Vec<u8>)> {
    let n = weights_bytes / 4;
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}},"__metadata__":{{"format":"mlx"}}}}"#,
        n * 4
    );
    let mut weights = safetensors(&header, 0);
    weights.extend((0..n * 4).map(|i| (i * 7 % 251) as u8));
    let mut f = good_files();
    f.retain(|(p, _)| p != "model.safetensors");
    f.push(("model.safetensors".into(), weights));
    f.push(("sub/nested.txt".into(), b"nested".to_vec()));
    f.push((
        "special_tokens_map.json".into(),
        br#"{"version": "1.0"}"#.to_vec(),
    ));
    f
}

fn assert_same_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let p = dir.join(rel);
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(md.is_file(), "{} is not a regular file", p.display());
        assert!(fs::read(&p).unwrap() == *data, "{} differs", p.display());
    }
}

fn staging_dirs(parent: &Path) -> Vec<PathBuf> {
    fs::read_dir(parent)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".mlxfs-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn clone_makes_a_clean_managed_workspace() {
    let e = Env::new();
    let files = model_files(300_000);
    e.hub.put_repo("org/tiny-model", &files);
    let commit = e.hub.commit("org/tiny-model", "main");

    let (code, v) = e.json(&["clone", "org/tiny-model"], &[]);
    assert_eq!(code, 0, "{v:#}");
    let target = e.fx.ws_home.join("tiny-model");
    assert_eq!(v["data"]["target_dir"], target.to_string_lossy().as_ref());
    assert_eq!(v["data"]["source_revision"], commit.as_str());
    assert_eq!(v["data"]["health"], "healthy");
    assert_same_files(&target, &files);
    assert!(
        staging_dirs(&e.fx.ws_home).is_empty(),
        "staging left behind"
    );

    // The sentinel is mlx-knife's, and the hash is what a recomputation gives.
    let s: Value =
        serde_json::from_slice(&fs::read(target.join(".mlxk_workspace.json")).unwrap()).unwrap();
    assert_eq!(s["operation"], "clone");
    assert_eq!(s["source_repo"], "org/tiny-model");
    assert_eq!(s["source_revision"], commit.as_str());
    assert_eq!(s["managed"], true);
    let (recomputed, index) =
        mlxfs::hash::compute_v2(&target, &mlxfs::hash::Excludes::default_list()).unwrap();
    assert_eq!(s["content_hash"], recomputed.as_str());
    assert_eq!(v["data"]["content_hash"], recomputed.as_str());
    assert_eq!(s["file_index"].as_array().unwrap().len(), index.len());

    // `list` sees a clean managed workspace with that hash.
    let (_, l) = e.json(&["list", "--all"], &[]);
    let m = l["data"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["path"] == target.to_string_lossy().as_ref())
        .unwrap_or_else(|| panic!("clone not listed: {l:#}"))
        .clone();
    assert_eq!(m["clean"], true, "{m:#}");
    assert_eq!(m["health"], "healthy");
    assert_eq!(m["content_hash"], recomputed.as_str());
    assert_eq!(m["origin"], "org/tiny-model");

    // The target is taken now.
    let (code, v) = e.json(&["clone", "org/tiny-model"], &[]);
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], "InvalidTargetError", "{v:#}");

    // --branch / @rev: another branch, into an explicit path.
    let mut dev = files.clone();
    dev.push(("README.md".into(), b"dev branch".to_vec()));
    e.hub.put_branch("org/tiny-model", "dev", &dev);
    let (code, v) = e.json(
        &["clone", "org/tiny-model", "./elsewhere", "--branch", "dev"],
        &[],
    );
    assert_eq!(code, 0, "{v:#}");
    let dev_dir = e.fx.tmp.path().join("elsewhere");
    assert_same_files(&dev_dir, &dev);
    assert_eq!(
        v["data"]["source_revision"],
        e.hub.commit("org/tiny-model", "dev").as_str()
    );
    let (code, v) = e.json(&["clone", "org/tiny-model@dev", "./no/such/parent"], &[]);
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], "InvalidTargetError");
    expect_error(e.json(&["clone", "org//bad"], &[]), "ValidationError");
    // No target and no workspace home: say what to do.
    let o = e.run(&["clone", "org/tiny-model"], &[("MLXK_WORKSPACE_HOME", "")]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("MLXK_WORKSPACE_HOME") && err.contains("hint:"),
        "{err}"
    );
    // A bare name goes under the workspace home.
    let (code, v) = e.json(&["clone", "org/tiny-model", "named"], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert!(e.fx.ws_home.join("named/config.json").is_file());
}

fn wait_for(what: &str, secs: u64, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn size_of_glob(dir: &Path, suffix: &str) -> u64 {
    fn walk(d: &Path, suffix: &str, n: &mut u64) {
        for e in fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, suffix, n);
            } else if p.to_string_lossy().ends_with(suffix) {
                *n += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    let mut n = 0;
    walk(dir, suffix, &mut n);
    n
}

const MIB: u64 = 1 << 20;

/// A `--json` result that must be an error of `kind` (exit code 1); returns the envelope.
#[track_caller]
fn expect_error((code, v): (i32, Value), kind: &str) -> Value {
    assert_eq!(
        (code, v["error"]["type"].as_str()),
        (1, Some(kind)),
        "{v:#}"
    );
    v
}

/// Start `args`, wait until files ending in `suffix` under `dir` hold `bytes` (the server
/// stalls there), then send `signal`; returns the process's stderr.
fn kill_when_stalled(
    e: &Env,
    args: &[&str],
    dir: &Path,
    suffix: &str,
    bytes: u64,
    signal: i32,
) -> String {
    let child = e
        .cmd(&[])
        .args(args)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the partial download to reach the stall", 60, || {
        size_of_glob(dir, suffix) >= bytes
    });
    unsafe { libc::kill(child.id() as i32, signal) };
    let o = child.wait_with_output().unwrap();
    if signal == libc::SIGINT {
        assert_eq!(o.status.code(), Some(130), "Ctrl-C exit code");
    }
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_clone_into_a_home_warns_when_another_home_has_the_name() {
    let e = Env::new();
    e.hub.put_repo("org/tiny-model", &model_files(1000));
    let other = e.fx.tmp.path().join("other-home");
    write_tree(&other.join("tiny-model"), &good_files());
    let mp = other.to_string_lossy().into_owned();
    let o = e.run(&["clone", "org/tiny-model"], &[("MLXK_MODEL_PATH", &mp)]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tiny-model will be ambiguous") && err.contains("other-home"),
        "{err}"
    );
    // And it is: by name both are candidates, by path each is found.
    let (code, v) = e.json(&["show", "tiny-model"], &[("MLXK_MODEL_PATH", &mp)]);
    assert_eq!(
        (code, v["error"]["type"].as_str()),
        (1, Some("ambiguous_match"))
    );
    // A clone elsewhere (not into a home) says nothing.
    fs::create_dir_all(e.fx.tmp.path().join("elsewhere")).unwrap();
    let o = e.run(
        &["clone", "org/tiny-model", "./elsewhere/tiny-model"],
        &[("MLXK_MODEL_PATH", &mp)],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("ambiguous"));
}

#[test]
fn a_killed_clone_resumes_where_it_stopped() {
    let (e, files) = Env::stalled("org/big", 8 << 20, 3 * MIB);
    // Ctrl-C: the process says how to go on.
    let err = kill_when_stalled(
        &e,
        &["clone", "org/big"],
        &e.fx.ws_home,
        ".part",
        3 * MIB,
        libc::SIGINT,
    );
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    let target = e.fx.ws_home.join("big");
    assert!(!target.exists(), "a half clone is visible");
    e.nothing_listed_then_again(&["clone", "org/big"]);
    assert_same_files(&target, &files);
    let log = e.hub.requests();
    assert!(
        log.iter()
            .any(|l| l.contains("/model.safetensors range=bytes=3145728-") && l.starts_with("GET")),
        "no ranged GET from 3 MiB: {log:#?}"
    );
    assert!(staging_dirs(&e.fx.ws_home).is_empty());
}

#[test]
fn a_resumed_clone_follows_a_branch_that_moved() {
    let e = Env::new();
    let mut files = model_files(4 << 20);
    e.hub.put_repo("org/moving", &files);
    e.hub.stall("model.safetensors", MIB);
    kill_when_stalled(
        &e,
        &["clone", "org/moving"],
        &e.fx.ws_home,
        ".part",
        MIB,
        libc::SIGKILL,
    );
    // Meanwhile main moves: config.json changes without changing length.
    let cfg = files.iter_mut().find(|f| f.0 == "config.json").unwrap();
    let new_cfg = String::from_utf8(cfg.1.clone())
        .unwrap()
        .replace("64", "32");
    assert_eq!(new_cfg.len(), cfg.1.len());
    cfg.1 = new_cfg.into_bytes();
    e.hub.release();
    e.hub.put_repo("org/moving", &files);
    let (code, v) = e.json(&["clone", "org/moving"], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        v["data"]["source_revision"],
        e.hub.commit("org/moving", "main").as_str()
    );
    assert_same_files(&e.fx.ws_home.join("moving"), &files);
}

#[test]
fn a_failed_clone_leaves_the_workspace_home_unchanged() {
    let e = Env::new();
    e.hub.put_repo("org/m", &model_files(100_000));
    fs::create_dir_all(e.fx.ws_home.join("existing")).unwrap();
    fs::write(e.fx.ws_home.join("existing/config.json"), "{}").unwrap();
    let before = tree_state(&e.fx.ws_home);

    expect_error(e.json(&["clone", "org/missing"], &[]), "repo_not_found");
    expect_error(e.json(&["clone", "org/m@nope"], &[]), "revision_not_found");
    // Refused mid-download (after some files arrived).
    e.hub.fail("model.safetensors", 403, 1);
    expect_error(e.json(&["clone", "org/m"], &[]), "access_denied");
    assert_eq!(tree_state(&e.fx.ws_home), before);

    // A private hub: no token, then a wrong one.
    e.hub.require_token("s3cret");
    let o = e.run(&["clone", "org/m"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Authentication required") && err.contains("HF_TOKEN"),
        "{err}"
    );
    let (_, v) = e.json(&["clone", "org/m"], &[("HF_TOKEN", "wrong")]);
    assert_eq!(v["error"]["type"], "auth_error", "{v:#}");
    assert_eq!(tree_state(&e.fx.ws_home), before);

    // A hub that goes away mid-download is transient: bytes are kept (hidden) for a resume.
    e.hub.fail("model.safetensors", 503, 5);
    expect_error(
        e.json(&["clone", "org/m"], &[("HF_TOKEN", "s3cret")]),
        "server_error",
    );
    assert!(!e.fx.ws_home.join("m").exists());
    assert_eq!(staging_dirs(&e.fx.ws_home).len(), 1);
    let (_, l) = e.json(&["list", "--all"], &[]);
    assert_eq!(l["data"]["count"], 1, "only `existing`: {l:#}");
    let (code, v) = e.json(&["clone", "org/m"], &[("HF_TOKEN", "s3cret")]);
    assert_eq!(code, 0, "{v:#}");
    assert!(staging_dirs(&e.fx.ws_home).is_empty());
}

/// Run Python in the test venv; stdout parsed as JSON.
fn python_json(script: &str, env: &[(&str, &str)]) -> Value {
    let mut c = Command::new(test_python());
    c.arg("-c").arg(script).env("HF_HUB_DISABLE_TELEMETRY", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

const SCAN: &str = r#"
import json, sys, os
from huggingface_hub import scan_cache_dir
info = scan_cache_dir(os.environ["CACHE"])
out = {"warnings": [str(w) for w in info.warnings], "repos": {}}
for r in info.repos:
    out["repos"][r.repo_id] = {
        "refs": sorted(r.refs),
        "revisions": {rev.commit_hash: sorted(f.file_name if False else str(f.file_path.relative_to(rev.snapshot_path)) for f in rev.files) for rev in r.revisions},
        "size": r.size_on_disk,
    }
print(json.dumps(out))
"#;

const DOWNLOAD: &str = r#"
import json, os
from huggingface_hub import snapshot_download
p = snapshot_download(os.environ["REPO"], cache_dir=os.environ["CACHE"])
print(json.dumps({"path": p}))
"#;

#[test]
fn pull_agrees_with_huggingface_hub_and_rm_keeps_shared_blobs() {
    crate::require!(Python);
    let e = Env::new();
    let files = model_files(200_000);
    e.hub.put_repo("org/pulled", &files);
    let main = e.hub.commit("org/pulled", "main");
    let hub_cache = e.fx.hub();

    let (code, v) = e.json(&["pull", "org/pulled"], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["data"]["download_status"], "success");
    assert_eq!(v["data"]["commit_hash"], main.as_str());
    assert_eq!(v["data"]["health"], "healthy");
    let snap = hub_cache.join("models--org--pulled/snapshots").join(&main);
    for (rel, data) in &files {
        assert!(
            fs::symlink_metadata(snap.join(rel))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(fs::read(snap.join(rel)).unwrap() == *data, "{rel}");
    }
    let (_, v) = e.json(&["pull", "org/pulled"], &[]);
    assert_eq!(v["data"]["download_status"], "already_exists", "{v:#}");

    // Python's own view of our cache.
    let scan = python_json(SCAN, &[("CACHE", hub_cache.to_str().unwrap())]);
    assert_eq!(scan["warnings"], serde_json::json!([]), "{scan:#}");
    let r = &scan["repos"]["org/pulled"];
    assert_eq!(r["refs"], serde_json::json!(["main"]));
    let mut want: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(r["revisions"][&main], serde_json::json!(want), "{scan:#}");

    // The Python client against the same hub writes the same layout and bytes.
    let py_cache = e.fx.tmp.path().join("py-cache");
    let d = python_json(
        DOWNLOAD,
        &[
            ("CACHE", py_cache.to_str().unwrap()),
            ("REPO", "org/pulled"),
            ("HF_ENDPOINT", &e.hub.url),
            ("HF_HUB_DISABLE_XET", "1"),
        ],
    );
    assert_eq!(
        d["path"],
        py_cache
            .join("models--org--pulled/snapshots")
            .join(&main)
            .to_str()
            .unwrap()
    );
    let blobs = |root: &Path| {
        let mut v: Vec<String> = fs::read_dir(root.join("models--org--pulled/blobs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(blobs(&hub_cache), blobs(&py_cache));
    for (rel, _) in &files {
        let ours = fs::read_link(snap.join(rel)).unwrap();
        let theirs = fs::read_link(
            py_cache
                .join("models--org--pulled/snapshots")
                .join(&main)
                .join(rel),
        )
        .unwrap();
        assert_eq!(ours, theirs, "{rel}");
    }
    assert_eq!(
        fs::read_to_string(py_cache.join("models--org--pulled/refs/main")).unwrap(),
        fs::read_to_string(hub_cache.join("models--org--pulled/refs/main")).unwrap()
    );

    // A second revision shares every blob but one.
    let mut dev = files.clone();
    dev.iter_mut()
        .find(|(p, _)| p == "sub/nested.txt")
        .unwrap()
        .1 = b"changed on dev".to_vec();
    e.hub.put_branch("org/pulled", "dev", &dev);
    let dev_commit = e.hub.commit("org/pulled", "dev");
    let (code, v) = e.json(&["pull", "org/pulled@dev"], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["data"]["commit_hash"], dev_commit.as_str());
    let n_blobs = blobs(&hub_cache).len();
    let scan = python_json(SCAN, &[("CACHE", hub_cache.to_str().unwrap())]);
    assert_eq!(
        scan["repos"]["org/pulled"]["refs"],
        serde_json::json!(["dev", "main"])
    );

    // rm: workspace refused, fuzzy needs -f, one revision keeps shared blobs.
    let (code, v) = e.json(&["rm", "pulled"], &[]);
    assert_eq!(code, 0);
    assert_eq!(v["data"]["action"], "requires_confirmation", "{v:#}");
    assert!(hub_cache.join("models--org--pulled").exists());
    assert_eq!(
        v["data"]["message"], "Would delete 'org/pulled' (matched from 'pulled')",
        "{v:#}"
    );
    // A fuzzy name with a revision: the message names that revision, which is all `-f`
    // would delete.
    let (code, v) = e.json(&["rm", &format!("pulled@{}", &dev_commit[..7])], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        v["data"]["message"],
        format!(
            "Would delete 'org/pulled@{} (that revision only)' (matched from 'pulled@{}')",
            &dev_commit[..7],
            &dev_commit[..7]
        ),
        "{v:#}"
    );
    let rev7 = format!("org/pulled@{}", &dev_commit[..7]);
    let (code, v) = e.json(&["rm", &rev7], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["data"]["action"], "delete_hash");
    assert_eq!(v["data"]["blobs_removed"], 1, "{v:#}");
    assert_eq!(blobs(&hub_cache).len(), n_blobs - 1);
    for (rel, data) in &files {
        assert!(
            fs::read(snap.join(rel)).unwrap() == *data,
            "main lost {rel}"
        );
    }
    let scan = python_json(SCAN, &[("CACHE", hub_cache.to_str().unwrap())]);
    let r = &scan["repos"]["org/pulled"];
    assert_eq!(r["refs"], serde_json::json!(["main"]), "{scan:#}");
    assert_eq!(r["revisions"].as_object().unwrap().len(), 1);
    let (_, h) = e.json(&["health", "org/pulled"], &[]);
    assert_eq!(h["data"]["summary"]["healthy_count"], 1, "{h:#}");

    let (code, v) = e.json(&["rm", "org/pulled"], &[]);
    assert_eq!(
        (code, v["data"]["action"].as_str()),
        (0, Some("delete_model"))
    );
    assert!(!hub_cache.join("models--org--pulled").exists());
    assert!(staging_dirs(&hub_cache).is_empty());

    // The last revision takes the model, even when a workspace has the same short name.
    let (code, _) = e.json(&["pull", "org/pulled"], &[]);
    assert_eq!(code, 0);
    e.fx.workspace("pulled", &good_files());
    let rev7 = format!("org/pulled@{}", &main[..7]);
    let (code, v) = e.json(&["rm", &rev7], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["data"]["whole_model_removed"], true);
    assert!(!hub_cache.join("models--org--pulled").exists());
    assert!(e.fx.ws_home.join("pulled").exists());

    let ws = e.fx.workspace("mine", &good_files());
    let (code, v) = e.json(&["rm", ws.to_str().unwrap()], &[]);
    assert_eq!(
        (code, v["error"]["type"].as_str()),
        (1, Some("workspace_model"))
    );
    assert!(ws.exists());
}

#[test]
fn a_killed_pull_resumes_and_nothing_half_written_is_listed() {
    let (e, files) = Env::stalled("org/slow", 6 << 20, 2 * MIB);
    kill_when_stalled(
        &e,
        &["pull", "org/slow"],
        &e.fx.hub(),
        ".incomplete",
        2 * MIB,
        libc::SIGKILL,
    );
    assert!(!e.fx.hub().join("models--org--slow").exists());
    let v = e.nothing_listed_then_again(&["pull", "org/slow"]);
    assert!(
        e.hub
            .requests()
            .iter()
            .any(|l| l.contains("range=bytes=2097152-")),
        "{:#?}",
        e.hub.requests()
    );
    let snap = PathBuf::from(v["data"]["path"].as_str().unwrap());
    assert_same_files_through_links(&snap, &files);
    assert!(staging_dirs(&e.fx.hub()).is_empty());
}

fn assert_same_files_through_links(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        assert!(fs::read(dir.join(rel)).unwrap() == *data, "{rel}");
    }
}

#[test]
fn push_round_trip_and_dry_run() {
    let e = Env::new();
    e.hub.require_token("tok");
    let tok = [("HF_TOKEN", "tok")];
    let files = model_files(150_000);
    e.hub.put_repo("org/src", &files);
    let (code, v) = e.json(&["clone", "org/src", "mine"], &tok);
    assert_eq!(code, 0, "{v:#}");
    let ws = e.fx.ws_home.join("mine");
    // Runtime artifacts and cruft that must not travel.
    fs::create_dir_all(ws.join(".hf_cache/hub")).unwrap();
    fs::write(ws.join(".hf_cache/hub/x"), "runtime").unwrap();
    fs::write(ws.join(".DS_Store"), "junk").unwrap();
    fs::write(ws.join("notes.txt~"), "backup").unwrap();
    // Big enough for the multipart LFS upload (the local hub splits above 2 MiB).
    let big: Vec<u8> = (0..3 * MIB as usize + 12_345)
        .map(|i| (i % 253) as u8)
        .collect();
    fs::write(ws.join("big.bin"), &big).unwrap();
    let mut files = files;
    files.push(("big.bin".into(), big));

    expect_error(
        e.json(&["push", "min", "org/pushed", "--create"], &tok),
        "ambiguous_workspace",
    );
    expect_error(
        e.json(
            &["push", "mine", "org/pushed", "--create", "--private"],
            &[],
        ),
        "auth_error",
    );
    expect_error(
        e.json(&["push", "mine", "org/pushed"], &tok),
        "repo_not_found",
    );

    let (code, v) = e.json(
        &["push", "mine", "org/pushed", "--create", "--dry-run"],
        &tok,
    );
    assert_eq!(code, 0, "{v:#} {:#?}", e.hub.requests());
    let mut want: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(v["data"]["added_files"], serde_json::json!(want), "{v:#}");
    assert_eq!(v["data"]["would_create_repo"], true);
    assert!(!e.hub.root.join("org/pushed").exists(), "dry run wrote");

    let (code, v) = e.json(
        &["push", "mine", "org/pushed", "--create", "--private"],
        &tok,
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        v["data"]["commit_sha"],
        e.hub.commit("org/pushed", "main").as_str()
    );
    assert_eq!(v["data"]["uploaded_files_count"], files.len());
    for junk in [
        ".mlxk_workspace.json",
        ".hf_cache",
        ".DS_Store",
        "notes.txt~",
    ] {
        assert!(
            !e.hub.root.join("org/pushed").join(junk).exists(),
            "{junk} uploaded"
        );
    }
    // The weights went through the LFS upload (single PUT), the big file in parts.
    let log = e.hub.requests();
    assert!(
        log.iter().any(|l| l.starts_with("PUT /lfs-upload/")),
        "{log:#?}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("PUT /lfs-part/"))
            .count(),
        4,
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST /lfs-complete/") && l.ends_with("200")),
        "{log:#?}"
    );
    assert_same_files(&e.hub.root.join("org/pushed"), &files);

    // Clone it back: same content hash.
    let (code, back) = e.json(&["clone", "org/pushed", "back"], &tok);
    assert_eq!(code, 0, "{back:#}");
    let (orig, _) = mlxfs::hash::compute_v2(&ws, &mlxfs::hash::Excludes::default_list()).unwrap();
    assert_eq!(back["data"]["content_hash"], orig.as_str());

    // Nothing changed → no commit; a changed file → one modified.
    let (_, v) = e.json(&["push", "mine", "org/pushed"], &tok);
    assert_eq!(v["data"]["no_changes"], true, "{v:#}");
    fs::write(ws.join("sub/nested.txt"), "edited").unwrap();
    let (code, v) = e.json(&["push", "mine", "org/pushed", "--branch", "edits"], &tok);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["data"]["change_summary"]["modified"], 1, "{v:#}");
    assert_eq!(
        fs::read_to_string(e.hub.root.join(".branches/org/pushed/edits/sub/nested.txt")).unwrap(),
        "edited"
    );
    // A hub model is not a workspace.
    let (_, v) = e.json(&["pull", "org/src"], &tok);
    assert_eq!(v["data"]["download_status"], "success", "{v:#}");
    expect_error(
        e.json(&["push", "org/src", "org/other", "--create"], &tok),
        "workspace_not_found",
    );
}

#[test]
fn a_mount_shows_new_clones_and_pulls_whole_and_promptly() {
    crate::require!(Fuse);
    let e = Env::new();
    let files = model_files(3 << 20);
    e.hub.put_repo("org/seen", &files);
    let m = Mount::start(&e.fx, &[]);
    e.hub.throttle(Some(4 << 20)); // ~1 s per download

    for (args, name) in [
        (vec!["clone", "org/seen", "--quiet"], "seen"),
        (vec!["pull", "org/seen", "--quiet"], "org/seen"),
    ] {
        let mut child = e
            .cmd(&[])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let shown = m.p(name);
        let mut done_at = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "{name} never appeared");
            if done_at.is_none()
                && let Some(st) = child.try_wait().unwrap()
            {
                assert!(st.success());
                done_at = Some(Instant::now());
            }
            if shown.join("config.json").exists() {
                // Whenever it is visible, it is whole.
                let w = fs::metadata(shown.join("model.safetensors")).unwrap();
                assert_eq!(
                    w.len(),
                    files
                        .iter()
                        .find(|f| f.0 == "model.safetensors")
                        .unwrap()
                        .1
                        .len() as u64
                );
                assert_same_files_through_links(&shown, &files);
                break;
            }
            if let Some(t) = done_at {
                assert!(
                    t.elapsed() < Duration::from_secs(1),
                    "{name} not shown within a second"
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        child.wait().unwrap();
    }
}

#[test]
fn errors_say_what_to_do() {
    crate::require!(Root);
    let e = Env::new();
    e.hub.put_repo("org/m", &model_files(3 << 20));

    // Nothing listens there.
    expect_error(
        e.json(
            &["clone", "org/m"],
            &[("HF_ENDPOINT", "http://127.0.0.1:9")],
        ),
        "network_error",
    );
    let o = e.run(&["pull", "org/m"], &[("HF_ENDPOINT", "http://127.0.0.1:9")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("hint:"),
        "{err}"
    );

    expect_error(
        e.json(&["pull", "org/m"], &[("HF_HUB_OFFLINE", "1")]),
        "offline",
    );
    let v = expect_error(
        e.json(&["clone", "org/m"], &[("HF_HUB_OFFLINE", "1")]),
        "offline",
    );
    assert!(
        staging_dirs(&e.fx.ws_home).is_empty(),
        "offline clone left staging"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HF_HUB_OFFLINE")
    );
    assert!(e.hub.requests().is_empty(), "offline, yet asked the hub");

    // A disk too small: refused before anything is written.
    let small = Tmpfs::new(e.fx.tmp.path().join("small"), "size=1m");
    expect_error(
        e.json(
            &["clone", "org/m", small.0.join("m").to_str().unwrap()],
            &[],
        ),
        "disk_full",
    );
    assert_eq!(fs::read_dir(&small.0).unwrap().count(), 0);

    // A read-only target and a read-only hub cache.
    let ro = Tmpfs::new(e.fx.tmp.path().join("ro"), "ro,size=64m");
    expect_error(
        e.json(&["clone", "org/m", ro.0.join("m").to_str().unwrap()], &[]),
        "permission_denied",
    );
    expect_error(
        e.json(
            &["pull", "org/m"],
            &[("HF_HUB_CACHE", ro.0.to_str().unwrap())],
        ),
        "permission_denied",
    );
}

#[test]
fn an_unhealthy_cached_model_needs_confirmation_then_is_repaired() {
    let e = Env::new();
    let files = model_files(50_000);
    e.hub.put_repo("org/fix", &files);
    let (code, v) = e.json(&["pull", "org/fix"], &[]);
    assert_eq!(code, 0, "{v:#}");
    let snap = PathBuf::from(v["data"]["path"].as_str().unwrap());
    // A blob goes missing: the snapshot link dangles.
    let blob = fs::canonicalize(snap.join("model.safetensors")).unwrap();
    fs::remove_file(&blob).unwrap();
    let before = tree_state(&e.fx.hub());

    let (code, v) = e.json(&["pull", "org/fix"], &[]);
    assert_eq!(code, 0, "mlx-knife's exit code for a question: {v:#}");
    assert_eq!(v["data"]["download_status"], "requires_confirmation");
    assert!(
        v["data"]["message"]
            .as_str()
            .unwrap()
            .contains("--force-resume")
    );
    let o = e.run(&["pull", "org/fix"], &[]);
    assert_eq!(o.status.code(), Some(1), "nobody answered: not a success");
    assert_eq!(
        tree_state(&e.fx.hub()),
        before,
        "asked, yet changed the cache"
    );

    e.hub.clear_requests();
    let (code, v) = e.json(&["pull", "org/fix", "--force-resume"], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["data"]["health"], "healthy");
    assert_same_files_through_links(&snap, &files);
    let gets: Vec<String> = e
        .hub
        .requests()
        .into_iter()
        .filter(|l| l.starts_with("GET") && l.contains("/resolve/"))
        .collect();
    assert_eq!(
        gets.len(),
        1,
        "only the missing blob is fetched again: {gets:#?}"
    );
}

#[test]
fn rm_waits_for_held_locks_unless_forced() {
    use std::os::fd::AsRawFd;
    let e = Env::new();
    e.hub.put_repo("org/locked", &model_files(20_000));
    let (code, v) = e.json(&["pull", "org/locked"], &[]);
    assert_eq!(code, 0, "{v:#}");
    // Another process is downloading: it holds one of the lock files.
    let lock = fs::read_dir(e.fx.hub().join(".locks/models--org--locked"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let f = fs::File::open(&lock).unwrap();
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    expect_error(e.json(&["rm", "org/locked"], &[]), "locks_present");
    assert!(e.fx.hub().join("models--org--locked").exists());
    drop(f); // released: no -f needed any more
    let (code, v) = e.json(&["rm", "org/locked"], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert!(!e.fx.hub().join("models--org--locked").exists());
    assert!(!e.fx.hub().join(".locks/models--org--locked").exists());
}

#[test]
fn two_pulls_of_one_repo_at_once_both_end_well() {
    let e = Env::new();
    let files = model_files(2 << 20);
    e.hub.put_repo("org/twice", &files);
    e.hub.throttle(Some(8 << 20));
    let spawn = || {
        e.cmd(&[])
            .args(["pull", "org/twice", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let mut statuses = Vec::new();
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success());
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        statuses.push(v["data"]["download_status"].as_str().unwrap().to_string());
    }
    statuses.sort();
    assert_eq!(statuses, ["already_exists", "success"]);
    let (_, h) = e.json(&["health", "org/twice"], &[]);
    assert_eq!(h["data"]["summary"]["healthy_count"], 1, "{h:#}");
    assert!(staging_dirs(&e.fx.hub()).is_empty());
}

#[test]
fn pull_refresh_follows_a_moved_branch_and_fetches_only_the_change() {
    let e = Env::new();
    let mut files = model_files(100_000);
    e.hub.put_repo("org/fresh", &files);
    let old = e.hub.commit("org/fresh", "main");
    let (code, _) = e.json(&["pull", "org/fresh"], &[]);
    assert_eq!(code, 0);
    files
        .iter_mut()
        .find(|f| f.0 == "sub/nested.txt")
        .unwrap()
        .1 = b"new text".to_vec();
    e.hub.put_repo("org/fresh", &files);
    let new = e.hub.commit("org/fresh", "main");

    e.hub.clear_requests();
    let (_, v) = e.json(&["pull", "org/fresh"], &[]);
    assert_eq!(v["data"]["download_status"], "already_exists");
    assert_eq!(v["data"]["commit_hash"], old.as_str());
    assert!(
        e.hub.requests().is_empty(),
        "no --refresh, yet asked the hub"
    );

    let (code, v) = e.json(&["pull", "org/fresh", "--refresh"], &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["data"]["commit_hash"], new.as_str());
    let refs = e.fx.hub().join("models--org--fresh/refs/main");
    assert_eq!(fs::read_to_string(&refs).unwrap(), new);
    let gets = e
        .hub
        .requests()
        .into_iter()
        .filter(|l| l.starts_with("GET") && l.contains("/resolve/"))
        .count();
    assert_eq!(gets, 1, "{:#?}", e.hub.requests());
    assert_same_files_through_links(&PathBuf::from(v["data"]["path"].as_str().unwrap()), &files);
    let (_, v) = e.json(&["pull", "org/fresh", "--refresh"], &[]);
    assert_eq!(v["data"]["download_status"], "already_exists", "{v:#}");
}
