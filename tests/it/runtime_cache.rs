//! A model's runtime cache (a workspace's `.hf_cache`, a hub model's per-model folder under
//! mlxfs's state folder): what `catalog::runtime_cache::inspect` finds, the offline-readiness
//! verdict kept apart from the model's health, and how `health --verbose`, `show` and the
//! mount's `.mlxfs/runtime-cache.json` report it.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::cli::*;
use crate::support::*;
use mlxfs::catalog::runtime_cache::inspect;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A workspace `ws` whose runtime cache holds the draft `org/draft` at COMMIT (refs/main) with
/// three files, and a few other files (a lock, an asset).
fn ws_with_runtime_cache(fx: &Fx) -> (PathBuf, PathBuf) {
    let ws = fx.workspace("ws", &good_files());
    let cache = ws.join(".hf_cache");
    let repo_files = files(&[
        ("config.json", b"{\"model_type\": \"llama\"}"),
        ("model.safetensors", &tiny_weights()),
        ("sub/tokenizer.json", b"{}"),
    ]);
    cache_snapshot(&cache.join("hub"), "org/draft", COMMIT, &repo_files, true);
    write_tree(
        &cache,
        &files(&[
            ("hub/.locks/models--org--draft/x.lock", b""),
            ("assets/a.bin", b"12345"),
        ]),
    );
    (ws, cache)
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("hub/models--org--draft")
}

#[test]
fn a_complete_runtime_cache_is_offline_ready() {
    let fx = Fx::new();
    let (_ws, cache) = ws_with_runtime_cache(&fx);
    let rc = inspect(&cache);
    assert!(rc.exists);
    assert!(rc.offline_ready, "{:?}", rc.problems);
    assert_eq!(rc.repos.len(), 1);
    let r = &rc.repos[0];
    assert_eq!((r.repo_id.as_str(), r.kind), ("org/draft", "model"));
    assert_eq!(r.revisions.len(), 1);
    let v = &r.revisions[0];
    assert_eq!(v.commit, COMMIT);
    assert_eq!(v.refs, ["main"]);
    let paths: Vec<&str> = v.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["config.json", "model.safetensors", "sub/tokenizer.json"]
    );
    let weights = tiny_weights().len() as u64;
    assert_eq!(v.files[1].size, weights);
    assert_eq!(v.bytes, 23 + weights + 2);
    assert_eq!(r.bytes, v.bytes);
    // Three blobs, plus the lock and the asset outside the repo.
    assert_eq!((rc.other_files, rc.other_bytes), (2, 5));
    assert_eq!(rc.files, 5);
    assert_eq!(rc.bytes, v.bytes + 5);
    // No folder: nothing yet, and nothing wrong.
    let none = inspect(&fx.tmp.path().join("nope"));
    assert!(!none.exists && none.offline_ready && none.repos.is_empty());
}

#[test]
fn partial_downloads_dangling_links_and_lost_revisions_are_problems() {
    let fx = Fx::new();
    let (_ws, cache) = ws_with_runtime_cache(&fx);
    let repo = repo_dir(&cache);
    fs::write(repo.join("blobs/abc.incomplete"), b"half").unwrap();
    let rc = inspect(&cache);
    assert!(!rc.offline_ready);
    assert_eq!(rc.problems.len(), 1, "{:?}", rc.problems);
    assert!(
        rc.problems[0]
            .starts_with("org/draft: blobs/abc.incomplete: a download that did not finish"),
        "{:?}",
        rc.problems
    );
    fs::remove_file(repo.join("blobs/abc.incomplete")).unwrap();
    // A blob gone: the snapshot link dangles.
    let link = repo.join("snapshots").join(COMMIT).join("config.json");
    let blob = repo
        .join("snapshots")
        .join(COMMIT)
        .join(fs::read_link(&link).unwrap());
    fs::remove_file(blob).unwrap();
    // A ref naming a revision that is not cached.
    fs::create_dir_all(repo.join("refs/pr")).unwrap();
    fs::write(repo.join("refs/pr/1"), "f".repeat(40)).unwrap();
    let rc = inspect(&cache);
    assert!(!rc.offline_ready);
    let all = rc.problems.join("\n");
    assert!(
        all.contains("snapshots/0123456/config.json: dangling link")
            && all.contains("refs/pr/1 names revision fffffff, which is not cached"),
        "{all}"
    );
    // A runtime cache that is a link (downloads would land elsewhere) is a problem of its own.
    let fx2 = Fx::new();
    let ws2 = fx2.workspace("ws2", &good_files());
    std::os::unix::fs::symlink(fx2.tmp.path(), ws2.join(".hf_cache")).unwrap();
    let rc = inspect(&ws2.join(".hf_cache"));
    assert!(
        !rc.offline_ready && rc.problems[0].contains("a link"),
        "{rc:?}"
    );
    // Its one-line summary says so too (not "empty; offline-ready").
    assert!(
        rc.summary().contains("NOT offline-ready"),
        "{}",
        rc.summary()
    );
}

#[test]
fn health_verbose_and_show_report_the_runtime_cache_apart_from_health() {
    let fx = Fx::new();
    let (ws, cache) = ws_with_runtime_cache(&fx);
    fs::write(repo_dir(&cache).join("blobs/abc.incomplete"), b"half").unwrap();
    // Without --verbose: mlx-knife's entry, nothing more.
    let v = envelope(&mlxfs(&fx).args(["health", "ws", "--json"]).out());
    assert!(
        v["data"]["healthy"][0].get("runtime_cache").is_none(),
        "{v}"
    );
    let v = envelope(
        &mlxfs(&fx)
            .args(["health", "ws", "--verbose", "--json"])
            .out(),
    );
    // The model stays healthy; the runtime cache has its own verdict.
    let e = &v["data"]["healthy"][0];
    assert_eq!(e["status"], "healthy", "{v}");
    let rc = &e["runtime_cache"];
    assert_eq!(rc["dir"], cache.to_string_lossy().as_ref());
    assert_eq!(rc["offline_ready"], false);
    assert_eq!(rc["repos"][0]["repo_id"], "org/draft");
    assert_eq!(
        rc["repos"][0]["revisions"][0]["refs"],
        serde_json::json!(["main"])
    );
    let o = mlxfs(&fx).args(["health", "ws", "-v"]).out();
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(
        human.contains("healthy   ws — ")
            && human.contains("NOT offline-ready: 1 problem(s)")
            && human.contains("org/draft: 1 revision(s)")
            && human.contains("0123456 [main]: 3 file(s)")
            && human.contains("problem: org/draft: blobs/abc.incomplete"),
        "{human}"
    );
    // show: the same object in JSON, a section for people.
    let v = envelope(&mlxfs(&fx).args(["show", "ws", "--json"]).out());
    assert_eq!(v["data"]["model"]["health"], "healthy");
    assert_eq!(v["data"]["runtime_cache"], *rc);
    let o = mlxfs(&fx).args(["show", ws.to_str().unwrap()]).out();
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(
        human.contains("Health: healthy")
            && human.contains("Runtime cache:\n  ")
            && human.contains("NOT offline-ready"),
        "{human}"
    );
    // A hub model: its per-model folder under mlxfs's state folder (HOME is the fixture's).
    fx.hub_model("org/m", &good_files());
    let state_cache = fx.home.join(".local/state/mlxfs/hf-cache/models--org--m");
    cache_snapshot(
        &state_cache.join("hub"),
        "org/draft",
        COMMIT,
        &files(&[("config.json", b"{}")]),
        true,
    );
    let v = envelope(&mlxfs(&fx).args(["health", "org/m", "-v", "--json"]).out());
    let rc = &v["data"]["healthy"][0]["runtime_cache"];
    assert_eq!(rc["dir"], state_cache.to_string_lossy().as_ref(), "{v}");
    assert_eq!(rc["offline_ready"], true);
    assert_eq!(rc["files"], 1);
}

#[test]
fn the_mount_shows_the_runtime_cache_and_keeps_it_current() {
    let fx = Fx::new();
    let (_ws, cache) = ws_with_runtime_cache(&fx);
    let v = vfs_for(&fx.locations(), &fx.tmp.path().join("mnt"));
    let read = |v: &mlxfs::vfs::Vfs| -> Value {
        let tree = v.tree();
        let ino = tree
            .resolve_path(Path::new("ws/.mlxfs/runtime-cache.json"))
            .unwrap();
        let (fh, _) = v.open(ino, false).unwrap();
        let bytes = v.read(fh, 0, 1 << 20, |r| r.unwrap().to_vec());
        v.release(fh).unwrap();
        assert_eq!(
            v.getattr(ino, None).unwrap().size,
            bytes.len() as u64,
            "the size is that of the content"
        );
        serde_json::from_slice(&bytes).unwrap()
    };
    let before_state = tree_state(&fx.ws_home);
    let first = read(&v);
    assert_eq!(first["offline_ready"], true);
    assert_eq!(first["repos"][0]["repo_id"], "org/draft");
    // Reads never write.
    assert_eq!(tree_state(&fx.ws_home), before_state);
    // A download left unfinished shows up after a refresh.
    fs::write(repo_dir(&cache).join("blobs/abc.incomplete"), b"half").unwrap();
    assert!(!v.refresh().is_empty());
    let second = read(&v);
    assert_eq!(second["offline_ready"], false, "{second}");
    // The model's own health file is not touched by it.
    let tree = v.tree();
    let ino = tree.resolve_path(Path::new("ws/.mlxfs/health")).unwrap();
    let (fh, _) = v.open(ino, false).unwrap();
    let health = v.read(fh, 0, 4096, |r| r.unwrap().to_vec());
    assert_eq!(String::from_utf8_lossy(&health), "healthy\n");
}
