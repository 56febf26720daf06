//! Workspaces this user can read but not write (issue 25 §3: a shared `/opt/models`, a
//! read-only disk, a service user serving an admin's models) run with their isolated cache in
//! the per-user state folder, and every cache report says so: the catalog's rule
//! (`ModelRef::isolated_cache`), `show`, `run` (its JSON `cache` and its stderr line) and a
//! `serve` request on the tiny model. The read-only disk is a read-only bind mount (root), the
//! user a process or thread without the capabilities that let root write anywhere.

use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cli::*;
use crate::support::unprivileged::{mkfifo, unprivileged, unprivileged_cmd};
use crate::support::*;
use mlxfs::catalog::{CacheLocation, ModelRef};

/// `dir` bound onto itself read-only for the test's lifetime (a read-only disk).
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        let mount = |args: &[&str]| {
            let st = Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .status()
                .unwrap();
            assert!(st.success(), "mount {args:?} needs root");
        };
        mount(&["--bind"]);
        let st = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The state folder a process with the fixture's HOME uses.
fn state_caches(fx: &Fx) -> PathBuf {
    fx.home.join(".local/state/mlxfs/hf-cache/workspaces")
}

fn show_json(fx: &Fx, name: &str) -> Value {
    let o = mlxfs(fx).args(["show", name, "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&o.stderr));
    });
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["runtime_cache"].clone()
}

/// The rule, in the catalog: a writable workspace keeps its `.hf_cache`; one on a read-only
/// disk, one whose folder (or whose existing `.hf_cache`) this user may not write, has a
/// folder of its own in the state folder, with the reason; `show` (and so `health --verbose`
/// and the mount's `runtime-cache.json`, which ask the same function) reports it.
#[test]
fn the_catalog_places_the_cache_of_a_workspace_nobody_may_write() {
    crate::require!(Root);
    let fx = Fx::new();
    let [rw, ro] = fx.good_workspaces(["rw", "ro"]);
    let _ro = ReadOnly::new(&ro);
    let c = ModelRef::workspace(rw.clone(), "rw".into()).isolated_cache();
    assert_eq!(
        (c.dir.clone(), c.location, c.reason.clone()),
        (rw.join(".hf_cache"), CacheLocation::Workspace, None)
    );
    let c = ModelRef::workspace(ro.clone(), "ro".into()).isolated_cache();
    assert_eq!(c.location, CacheLocation::StateFolder);
    assert!(
        c.dir.parent().unwrap().ends_with("hf-cache/workspaces")
            && c.dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ro-"),
        "{c:?}"
    );
    assert_eq!(
        c.reason.as_deref(),
        Some(
            "the workspace folder is not writable for this user (Read-only file system): runs \
             keep their cache in mlxfs's state folder"
        )
    );
    assert_eq!(c.read_only_source, None);
    let rc = show_json(&fx, "ro");
    assert_eq!(rc["location"], "state_folder", "{rc}");
    assert_eq!(rc["location_reason"], c.reason.clone().unwrap().as_str());
    assert!(
        Path::new(rc["dir"].as_str().unwrap()).starts_with(state_caches(&fx)),
        "{rc}"
    );
    let rc = show_json(&fx, "rw");
    assert_eq!(
        (&rc["location"], &rc["location_reason"]),
        (&json!("workspace"), &Value::Null)
    );
    // Nothing was made by asking.
    assert!(!fx.home.join(".local").exists());

    // A service user: the admin's folder (mode 0555), and the admin's `.hf_cache` (0555).
    let admin = fx.workspace("admin", &good_files());
    fs::set_permissions(&admin, fs::Permissions::from_mode(0o555)).unwrap();
    let m = ModelRef::workspace(admin.clone(), "admin".into());
    assert_eq!(m.isolated_cache().location, CacheLocation::Workspace);
    let c = unprivileged(move || m.isolated_cache());
    assert_eq!(c.location, CacheLocation::StateFolder);
    assert!(
        c.reason.as_deref().unwrap().contains("(Permission denied)"),
        "{c:?}"
    );
    let cached = fx.workspace("cached", &good_files());
    fs::create_dir_all(cached.join(".hf_cache/hub")).unwrap();
    fs::set_permissions(cached.join(".hf_cache"), fs::Permissions::from_mode(0o555)).unwrap();
    let m = ModelRef::workspace(cached.clone(), "cached".into());
    let c = unprivileged(move || m.isolated_cache());
    assert_eq!(c.location, CacheLocation::StateFolder);
    assert_eq!(c.read_only_source, Some(cached.join(".hf_cache")));
    assert!(
        c.reason.as_deref().unwrap().starts_with(
            "its .hf_cache is not writable for this user (Permission denied): runs keep their \
             cache in mlxfs's state folder (a draft model captured"
        ),
        "{c:?}"
    );
    // An open `.hf_cache` whose `hub/` (where downloads land) is closed.
    let hub_closed = fx.workspace("hub-closed", &good_files());
    fs::create_dir_all(hub_closed.join(".hf_cache/hub")).unwrap();
    fs::set_permissions(
        hub_closed.join(".hf_cache/hub"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    let m = ModelRef::workspace(hub_closed.clone(), "hub-closed".into());
    let c = unprivileged(move || m.isolated_cache());
    assert_eq!(c.location, CacheLocation::StateFolder);
    assert_eq!(c.read_only_source, Some(hub_closed.join(".hf_cache")));
    fs::set_permissions(&admin, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `run` of the tiny model on a read-only disk runs (it failed with "cannot create
/// …/.hf_cache: Permission denied"), with its cache in the state folder, said in the JSON
/// `cache` and on stderr; a draft model an earlier run captured in the workspace's own
/// `.hf_cache` is still found there, offline. And as a user who may not write the folder.
#[test]
fn run_on_a_read_only_workspace() {
    crate::require!(Python, Root);
    let (fx, ws) = crate::support::python::with_tiny();
    // What an earlier run (by whoever could write) captured: the draft `org/draft`.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    cache_snapshot(
        &ws.join(".hf_cache/hub"),
        "org/draft",
        commit,
        &files_of(&ws),
        true,
    );
    let _ro = ReadOnly::new(&ws);
    let data =
        crate::support::python::run_json(&fx, "tiny", &["--draft-model", "org/draft", "--offline"]);
    let cache = &data["cache"];
    assert_eq!(cache["location"], "state_folder", "{cache}");
    assert!(
        Path::new(cache["dir"].as_str().unwrap()).starts_with(state_caches(&fx)),
        "{cache}"
    );
    assert!(
        cache["location_reason"]
            .as_str()
            .unwrap()
            .starts_with("its .hf_cache is not writable for this user (Read-only file system)"),
        "{cache}"
    );
    assert_eq!(data["python"]["hf_home"], cache["dir"]);
    assert_eq!(data["draft"]["source"], "runtime-cache", "{data}");
    assert!(
        data["draft"]["path"]
            .as_str()
            .unwrap()
            .starts_with(ws.join(".hf_cache").to_str().unwrap()),
        "{data}"
    );

    // Without --json: the stderr line says where and why.
    let o = mlxfs(&fx)
        .args([
            "run",
            "tiny",
            "Explain FUSE",
            "--max-tokens",
            "4",
            "--python",
        ])
        .arg(crate::support::python::venv_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("its .hf_cache is not writable for this user (Read-only file system)"),
        "{err}"
    );
}

/// A service user whose workspace home holds an admin's model (folder mode 0555, no
/// `.hf_cache` yet): `run` works, its cache in that user's state folder.
#[test]
fn run_as_a_user_who_may_not_write_the_workspace() {
    crate::require!(Python, Root);
    let (fx, ws) = crate::support::python::with_tiny();
    fs::set_permissions(&ws, fs::Permissions::from_mode(0o555)).unwrap();
    let mut c = mlxfs(&fx);
    c.args([
        "run",
        "tiny",
        "Explain FUSE",
        "--json",
        "--max-tokens",
        "4",
        "--python",
    ])
    .arg(crate::support::python::venv_dir());
    let o = unprivileged_cmd(&mut c).output().unwrap();
    fs::set_permissions(&ws, fs::Permissions::from_mode(0o755)).unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["data"]["cache"]["location"], "state_folder");
    assert!(
        v["data"]["cache"]["location_reason"]
            .as_str()
            .unwrap()
            .starts_with("the workspace folder is not writable for this user (Permission denied)"),
        "{v}"
    );
    assert!(!ws.join(".hf_cache").exists());
}

/// `serve`: one request on the tiny model in a read-only workspace is answered (it was a 500),
/// its worker's cache in the state folder. A model whose `tokenizer.json` is a FIFO (which
/// once wedged serve in the loader's open()) is refused at once with the reason (422), and the
/// other model's request is not held up.
#[test]
fn serve_answers_from_a_read_only_workspace() {
    crate::require!(Python, Root);
    let (fx, ws) = crate::support::python::with_tiny();
    let fifo = fx.workspace("fifo", &files_of(&ws));
    fs::remove_file(fifo.join("tokenizer.json")).unwrap();
    mkfifo(&fifo.join("tokenizer.json"));
    let _ro = ReadOnly::new(&ws);
    let s = crate::support::serve::Served::start(&fx, &[]);
    let started = std::time::Instant::now();
    let (status, v) = explain_fuse_chat(&s, "fifo");
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["type"], "model_unhealthy");
    assert_eq!(
        v["error"]["message"],
        "fifo is unhealthy: tokenizer.json is a FIFO, not a regular file"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (status, v) = explain_fuse_chat(&s, "tiny");
    assert_eq!(status, 200, "{v}\n{}", s.log());
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert!(!ws.join(".hf_cache").exists());
    let made: Vec<String> = fs::read_dir(state_caches(&fx))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(made.len() == 1 && made[0].starts_with("tiny-"), "{made:?}");
}

/// A chat completion of "Explain FUSE" (4 tokens at most) from `model`: (status, body).
fn explain_fuse_chat(s: &crate::support::serve::Served, model: &str) -> (u16, Value) {
    crate::support::serve::post_json(
        &s.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": model, "max_tokens": 4,
                "messages": [{"role": "user", "content": "Explain FUSE"}]}),
    )
}
