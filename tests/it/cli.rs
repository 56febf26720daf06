//! The `mlxfs` binary end to end: envelopes, exit codes, human tables, and reads that never write.

use serde_json::Value;
use std::fs;
use std::path::Path;

use crate::support::cli::*;
use crate::support::*;

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// `mlxfs ARGS` exits 0 with an envelope of these keys, in this order.
#[track_caller]
fn keyed(fx: &Fx, args: &[&str], want: &[&str]) -> (std::process::Output, Value) {
    let o = mlxfs(fx).args(args).out();
    let v = exited(&o, 0);
    assert_eq!(keys(&v), want);
    (o, v)
}

/// A catalog with every Src state: cache, ws (clean), ws* (modified), ws? (no v2 hash).
fn catalog() -> Fx {
    let fx = Fx::new();
    fx.hub_model("mlx-community/Tiny-Instruct-4bit", &good_files());
    fx.hub_model("org/broken", &files(&[("config.json", b"{}")]));
    for name in ["clean-ws", "dirty-ws"] {
        let ws = fx.workspace(name, &good_files());
        managed_sentinel(&ws, "");
        mlxfs::hash::sentinel::recalc(&ws).unwrap();
    }
    fs::write(fx.ws_home.join("dirty-ws/extra.txt"), "changed").unwrap();
    fx.workspace("plain-ws", &good_files());
    fx
}

#[test]
fn list_json_envelope() {
    let fx = catalog();
    let (o, v) = keyed(
        &fx,
        &["list", "--json"],
        &["status", "command", "data", "error"],
    );
    assert_eq!(
        (v["status"].as_str(), v["command"].as_str()),
        (Some("success"), Some("list"))
    );
    assert_eq!(v["error"], Value::Null);
    assert_eq!(keys(&v["data"]), ["models", "count", "system"]);
    assert_eq!(v["data"]["count"], 5);
    let m = &v["data"]["models"][0];
    assert_eq!(
        keys(m),
        [
            "name",
            "hash",
            "size_bytes",
            "last_modified",
            "framework",
            "model_type",
            "capabilities",
            "context_length",
            "health",
            "runtime_compatible",
            "reason",
            "cached",
            "origin",
            "content_hash",
            "hash_modified",
            "clean",
            "display_name",
            "source",
            "path",
            "revision"
        ]
    );
    let by_name = |n: &str| {
        v["data"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str().unwrap().ends_with(n))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("clean-ws")["clean"], true);
    assert_eq!(by_name("dirty-ws")["clean"], false);
    assert_eq!(by_name("plain-ws")["clean"], Value::Null);
    assert_eq!(by_name("org/broken")["health"], "unhealthy");
    assert!(by_name("org/broken").get("display_name").is_none());
    // Output is ASCII: mlx-knife's ensure_ascii.
    assert!(o.stdout.is_ascii());
}

#[test]
fn json_is_accepted_anywhere_on_the_line() {
    let fx = catalog();
    for args in [
        &["--json", "list"][..],
        &["list", "--json"],
        &["list", "tiny", "--json"],
    ] {
        let o = mlxfs(&fx).args(args).out();
        assert_eq!(envelope(&o)["command"], "list", "{args:?}");
    }
}

#[test]
fn version() {
    let fx = Fx::new();
    let o = mlxfs(&fx).args(["--version", "--json"]).out();
    let v = envelope(&o);
    assert_eq!(v["command"], "version");
    assert_eq!(v["data"]["cli_version"], env!("CARGO_PKG_VERSION"));
    let o = mlxfs(&fx).args(["--version"]).out();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("mlxfs {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn errors_and_exit_codes() {
    let fx = catalog();
    // Ambiguous: exit 1, every candidate listed.
    let o = mlxfs(&fx).args(["show", "ws", "--json"]).out();
    let v = exited(&o, 1);
    assert_eq!(v["error"]["type"], "ambiguous_match");
    assert_eq!(
        v["error"]["matches"],
        serde_json::json!(["clean-ws", "dirty-ws", "plain-ws"])
    );
    // Human: message, candidates and a hint on stderr; nothing on stdout.
    let o = mlxfs(&fx).args(["show", "ws"]).out();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("show: Error: Multiple models match 'ws'"),
        "{err}"
    );
    assert!(err.contains("  plain-ws") && err.contains("hint:"), "{err}");
    // Not found.
    let v = envelope(&mlxfs(&fx).args(["show", "zzz", "--json"]).out());
    assert_eq!(v["error"]["type"], "model_not_found");
    // Usage errors: exit 2, JSON when --json is on the line.
    let o = mlxfs(&fx).args(["list", "--bogus", "--json"]).out();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(envelope(&o)["error"]["type"], "CommandError");
    let o = mlxfs(&fx).args(["show"]).out();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Usage"));
    let o = mlxfs(&fx).args(["--json"]).out();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(envelope(&o)["error"]["message"], "No command specified");
}

#[test]
fn human_list_table() {
    let fx = catalog();
    let out = String::from_utf8(mlxfs(&fx).args(["list", "--all"]).out().stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Name "), "{out}");
    assert!(
        lines[0].contains("| Src ") && lines[0].contains("| Clean "),
        "{out}"
    );
    assert!(lines[1].contains("-+-"));
    let row = |n: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{n} in {out}"))
    };
    assert!(row("clean-ws").contains("| ws    |"), "{out}");
    assert!(row("dirty-ws").contains("| ws*   |"), "{out}");
    assert!(row("plain-ws").contains("| ws?   |"), "{out}");
    // mlx-community/ is stripped without --verbose.
    assert!(row("Tiny-Instruct-4bit").contains("| cache |"), "{out}");
    // The default view hides unhealthy models.
    let out = String::from_utf8(mlxfs(&fx).args(["list"]).out().stdout).unwrap();
    assert!(!out.contains("broken"), "{out}");
    assert!(out.contains("Tiny-Instruct-4bit"));
    let out = String::from_utf8(
        mlxfs(&fx)
            .args(["list", "--all", "--health", "--verbose"])
            .out()
            .stdout,
    )
    .unwrap();
    // The reason column wraps at 26 characters, as mlx-knife's does.
    assert!(out.contains("| config.json is empty or"), "{out}");
    assert!(
        out.lines().any(|l| l.trim_end().ends_with("| invalid")),
        "{out}"
    );
}

#[test]
fn health_command() {
    let fx = catalog();
    let want = ["status", "command", "error", "data"];
    let (_, v) = keyed(&fx, &["health", "--json"], &want);
    assert_eq!(
        v["data"]["summary"],
        serde_json::json!({"total": 5, "healthy_count": 4, "unhealthy_count": 1})
    );
    let ws = &v["data"]["healthy"][0];
    assert_eq!(
        (ws["name"].as_str(), ws["managed"].as_bool()),
        (Some("clean-ws"), Some(true))
    );
    assert_eq!(
        v["data"]["unhealthy"][0]["reason"],
        "config.json is empty or invalid"
    );
    let human = String::from_utf8(mlxfs(&fx).args(["health"]).out().stdout).unwrap();
    assert!(
        human.starts_with("Summary: total 5, healthy 4, unhealthy 1\n"),
        "{human}"
    );
    assert!(
        human.contains("unhealthy org/broken — config.json is empty or invalid"),
        "{human}"
    );
    let one = envelope(&mlxfs(&fx).args(["health", "tiny", "--json"]).out());
    assert_eq!(one["data"]["summary"]["total"], 1);
    assert_eq!(
        one["data"]["healthy"][0]["name"],
        "mlx-community/Tiny-Instruct-4bit"
    );
}

#[test]
fn show_json_and_human() {
    let fx = catalog();
    let v = envelope(&mlxfs(&fx).args(["show", "clean-ws", "--json"]).out());
    assert_eq!(
        keys(&v["data"]),
        ["model", "workspace_metadata", "metadata", "runtime_cache"]
    );
    assert_eq!(
        v["data"]["model"]["quantization"],
        serde_json::json!({"group_size": 64, "bits": 4})
    );
    assert_eq!(v["data"]["workspace_metadata"]["operation"], "clone");
    assert_eq!(v["data"]["metadata"]["model_type"], "llama");
    let v = envelope(&mlxfs(&fx).args(["show", "tiny", "--files", "--json"]).out());
    let names: Vec<&str> = strs(&v["data"]["files"], "name");
    assert_eq!(
        names,
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    assert_eq!(v["data"]["files"][1]["type"], "weights");
    let v = envelope(
        &mlxfs(&fx)
            .args(["show", "tiny", "--config", "--json"])
            .out(),
    );
    assert_eq!(v["data"]["config"]["model_type"], "llama");
    let human = String::from_utf8(mlxfs(&fx).args(["show", "dirty-ws"]).out().stdout).unwrap();
    assert!(
        human.contains("Workspace:\n  Source: org/x\n  Operation: clone"),
        "{human}"
    );
    assert!(human.contains("  Clean: ✗"), "{human}");
    assert!(human.contains("  Content Hash: sha256:"), "{human}");
}

#[test]
fn reads_never_write() {
    let fx = catalog();
    // mtime drift with equal content: mlx-knife would rewrite the sentinel here.
    let f = fs::File::options()
        .write(true)
        .open(fx.ws_home.join("clean-ws/tokenizer.json"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    let before = tree_state(fx.tmp.path());
    for args in [
        &["list", "--json"][..],
        &["list", "--all", "--health", "--verbose"],
        &["show", "clean-ws", "--json"],
        &["show", "dirty-ws", "--files"],
        &["show", "tiny", "--config"],
        &["health", "--json"],
        &["health", "clean-ws"],
    ] {
        let o = mlxfs(&fx).args(args).out();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // `convert` reads its source the same way: the new workspaces go elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    for ws in ["clean-ws", "dirty-ws"] {
        let out = elsewhere.path().join(ws);
        let o = mlxfs(&fx)
            .args([
                "convert",
                ws,
                out.to_str().unwrap(),
                "--repair-index",
                "--skip-health",
            ])
            .out();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.join(".mlxk_workspace.json").is_file());
    }
    assert_eq!(tree_state(fx.tmp.path()), before);
    let v = envelope(&mlxfs(&fx).args(["show", "clean-ws", "--json"]).out());
    assert_eq!(v["data"]["model"]["clean"], true);
}

/// A workspace argument (convert's source, archive, push) that is a folder in the current
/// one needs no `./`, as in mlx-knife; a name the catalog knows keeps meaning that model.
#[test]
fn a_bare_relative_folder_is_a_workspace_argument() {
    let fx = catalog();
    let here = fx.tmp.path().join("here");
    let ws = here.join("my-model");
    write_tree(&ws, &good_files());
    managed_sentinel(&ws, "");
    mlxfs::hash::sentinel::recalc(&ws).unwrap();
    // A folder here with the name of a workspace of the home: the home's is meant.
    write_tree(&here.join("plain-ws"), &files(&[("config.json", b"{}")]));
    let run = |args: &[&str]| mlxfs(&fx).args(args).current_dir(&here).out();
    let o = run(&[
        "convert",
        "my-model",
        "../converted",
        "--repair-index",
        "--skip-health",
        "--json",
    ]);
    let v = envelope(&o);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(
        v["data"]["source"]
            .as_str()
            .map(|p| Path::new(p).canonicalize().unwrap()),
        Some(ws.canonicalize().unwrap()),
        "{v}"
    );
    assert!(
        fx.tmp
            .path()
            .join("converted/.mlxk_workspace.json")
            .is_file()
    );
    let o = run(&["archive", "my-model", "--json", "--quiet"]);
    assert_eq!(envelope(&o)["status"], "success", "{}", envelope(&o));
    assert!(here.join("my-model.tar").is_file());
    // `archive SPEC` (dirty allowed): the workspace it archived, resolved.
    let archived = |spec: &str| -> std::path::PathBuf {
        let v = envelope(&run(&[
            "archive",
            spec,
            "--json",
            "--quiet",
            "--allow-dirty",
        ]));
        assert_eq!(v["status"], "success", "{spec}: {v}");
        Path::new(v["data"]["workspace"].as_str().unwrap())
            .canonicalize()
            .unwrap()
    };
    assert_eq!(
        archived("plain-ws"),
        fx.ws_home.join("plain-ws").canonicalize().unwrap()
    );
    // A folder here whose name a model's name only contains (the catalog's partial match
    // would take `plain-ws`): the folder.
    write_tree(&here.join("plain"), &files(&[("config.json", b"{}")]));
    assert_eq!(
        archived("plain"),
        here.join("plain").canonicalize().unwrap()
    );
    // A folder here with a hub model's name (`mlx-community/` added): a hub model is never a
    // workspace argument, so the folder.
    write_tree(
        &here.join("Tiny-Instruct-4bit"),
        &files(&[("config.json", b"{}")]),
    );
    for spec in ["Tiny-Instruct-4bit", "Tiny-Instruct-4bit/"] {
        assert_eq!(
            archived(spec),
            here.join("Tiny-Instruct-4bit").canonicalize().unwrap(),
            "{spec}"
        );
        fs::remove_file(here.join("Tiny-Instruct-4bit.tar")).unwrap();
    }
    // A path without `./` for a command that takes any model: not found, with the way out.
    fs::create_dir_all(here.join("sub/deep")).unwrap();
    let v = envelope(&run(&["show", "sub/deep", "--json"]));
    error_is(&v, "model_not_found", "write ./sub/deep to mean it");
    // Neither a model nor a folder: the usual error.
    let o = run(&[
        "convert",
        "nothing-here",
        "../x",
        "--repair-index",
        "--json",
    ]);
    assert_eq!(envelope(&o)["status"], "error");
    assert!(!fx.tmp.path().join("x").exists());
}

/// With no HOME and no XDG_STATE_HOME, the state folder falls back to one in $TMPDIR: a
/// reader must not make it (a hub model's runtime cache is looked for there).
#[test]
fn reads_never_write_without_a_home() {
    let fx = catalog();
    let tmpdir = tempfile::tempdir().unwrap();
    // mlxfs ARGS with the catalog's variables but HOME, and TMPDIR=`temp`, run in `tmpdir`.
    let without_home = |args: &[&str], temp: &std::ffi::OsStr| {
        let vars: Vec<_> = fx
            .vars()
            .into_iter()
            .filter(|(k, _)| *k != "HOME")
            .collect();
        with_vars(&vars)
            .args(args)
            .current_dir(tmpdir.path())
            .env("TMPDIR", temp)
            .out()
    };
    let cache_dir = |temp: &std::ffi::OsStr| {
        let v = envelope(&without_home(
            &["show", "Tiny-Instruct-4bit", "--json"],
            temp,
        ));
        v["data"]["runtime_cache"]["dir"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for args in [
        &["list", "--json", "--verbose"][..],
        &["list", "--all", "--health", "--verbose"],
        &["show", "Tiny-Instruct-4bit", "--json"],
        &["show", "clean-ws", "--json"],
        &["health", "--json"],
    ] {
        let o = without_home(args, tmpdir.path().as_os_str());
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let made: Vec<_> = fs::read_dir(tmpdir.path()).unwrap().collect();
        assert!(made.is_empty(), "{args:?} wrote into $TMPDIR: {made:?}");
    }
    // The runtime cache `show` names is the one a writer makes: below $TMPDIR when a folder
    // can be made there, else the home's (a $TMPDIR that does not exist).
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let missing = tmpdir.path().join("not/made");
    for (temp, under) in [
        (
            tmpdir.path().to_path_buf(),
            tmpdir.path().join(format!("mlxfs-{uid}")),
        ),
        (
            missing.clone(),
            std::path::PathBuf::from(mlxfs::sys::home_dir(None)).join(".local/state/mlxfs"),
        ),
    ] {
        let dir = cache_dir(temp.as_os_str());
        assert!(
            Path::new(&dir).starts_with(under.join("hf-cache")),
            "TMPDIR={}: {dir}",
            temp.display()
        );
    }
    assert!(!missing.exists());
    // A relative $TMPDIR is not taken (the folder would follow the current one).
    let dir = cache_dir("rel".as_ref());
    assert!(
        Path::new(&dir).is_absolute() && !dir.contains("rel/mlxfs"),
        "{dir}"
    );
}

#[test]
fn recalc_hash_is_the_one_writer() {
    let fx = catalog();
    let v = envelope(
        &mlxfs(&fx)
            .args(["show", "dirty-ws", "--recalc-hash", "--json"])
            .out(),
    );
    assert_eq!(v["data"]["hash_updated"], true);
    assert_eq!(v["data"]["model"]["clean"], true);
    // Unmanaged: warning, nothing written, still success.
    let o = mlxfs(&fx)
        .args(["show", "plain-ws", "--recalc-hash", "--json"])
        .out();
    assert_eq!(o.status.code(), Some(0));
    assert!(envelope(&o)["data"].get("hash_updated").is_none());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a managed workspace"));
    assert!(!fx.ws_home.join("plain-ws/.mlxk_workspace.json").exists());
}

#[test]
fn list_patterns() {
    let fx = catalog();
    let v = envelope(&mlxfs(&fx).args(["list", "DIRTY", "--json"]).out());
    assert_eq!(v["data"]["count"], 1);
    // A path prefix lists workspaces whose folder starts with it.
    let prefix = format!("{}/c", fx.ws_home.display());
    let v = envelope(&mlxfs(&fx).args(["list", &prefix, "--json"]).out());
    assert_eq!(v["data"]["count"], 1);
    assert_eq!(
        v["data"]["models"][0]["display_name"],
        fx.ws_home.join("clean-ws").to_string_lossy().as_ref()
    );
    let v = envelope(
        &mlxfs(&fx)
            .args(["list", fx.ws_home.to_str().unwrap(), "--json"])
            .out(),
    );
    assert_eq!(v["data"]["count"], 3);
}

#[test]
fn empty_and_missing_caches_are_fine() {
    let fx = Fx::new();
    fs::remove_dir_all(fx.hub()).unwrap();
    let v = envelope(&mlxfs(&fx).args(["list", "--json"]).out());
    assert_eq!(v["data"]["count"], 0);
    assert_eq!(v["status"], "success");
}

/// `mlxfs list --json | head -c1` (and the human forms): a closed stdout ends the program like
/// other Unix tools — status 0 or SIGPIPE, no panic message.
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let fx = Fx::new();
    for i in 0..300 {
        fx.hub_model(&format!("org/model-{i:03}"), &good_files());
    }
    for args in [
        &["list", "--json"][..],
        &["list", "--all"][..],
        &["health"][..],
        &["health", "--json"][..],
    ] {
        let mut c = mlxfs(&fx);
        c.args(args);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut one = [0u8; 1];
        child.stdout.take().unwrap().read_exact(&mut one).unwrap(); // then the pipe closes
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

/// One model, one line: control characters in names and reasons are escaped in human output
/// (as `ls` quotes them); the JSON keeps the names exactly.
#[test]
fn names_never_forge_a_line() {
    let fx = Fx::new();
    let evil = "evil\nhealthy    forged — Model is healthy";
    fx.workspace(evil, &files(&[("config.json", b"{}")]));
    fx.workspace("good", &good_files());
    let v = envelope(&mlxfs(&fx).args(["list", "--all", "--json"]).out());
    let names: Vec<&str> = strs(&v["data"]["models"], "display_name");
    assert!(names.contains(&evil), "{names:?}");
    let table =
        String::from_utf8(mlxfs(&fx).args(["list", "--all", "--health"]).out().stdout).unwrap();
    assert_eq!(table.lines().count(), 2 + 2, "{table}");
    assert!(table.contains("evil\\nhealthy"), "{table}");
    let health = String::from_utf8(mlxfs(&fx).args(["health"]).out().stdout).unwrap();
    assert_eq!(health.lines().count(), 1 + 2, "{health}");
    assert!(
        !health.lines().any(|l| l.starts_with("healthy    forged")),
        "{health}"
    );
    let show = String::from_utf8(mlxfs(&fx).args(["show", "evil"]).out().stdout).unwrap();
    assert!(show.lines().any(|l| l.starts_with("Path: ") && l.ends_with("healthy    forged — Model is healthy")), "{show}");
}

/// A real `.mlxfs` inside a workspace is hidden by the mount's virtual folder: the record
/// says so (a warning, human and JSON), and nothing else changes.
#[test]
fn a_real_mlxfs_in_a_model_is_a_warning() {
    let fx = Fx::new();
    let ws = fx.workspace("ws", &good_files());
    fs::write(ws.join(".mlxfs"), "mine").unwrap();
    fx.workspace("plain", &good_files());
    let v = envelope(&mlxfs(&fx).args(["show", "ws", "--json"]).out());
    let w = v["data"]["model"]["warnings"][0].as_str().unwrap();
    assert!(w.contains(".mlxfs") && w.contains("hidden"), "{w}");
    assert_eq!(v["data"]["model"]["health"], "healthy");
    let v = envelope(&mlxfs(&fx).args(["show", "plain", "--json"]).out());
    assert!(v["data"]["model"].get("warnings").is_none(), "{v:#}");
    let human = String::from_utf8(mlxfs(&fx).args(["show", "ws"]).out().stdout).unwrap();
    assert!(
        human.contains("Warning: .mlxfs (a file) is hidden"),
        "{human}"
    );
    let health = String::from_utf8(mlxfs(&fx).args(["health", "ws"]).out().stdout).unwrap();
    assert!(health.contains("warning: .mlxfs (a file)"), "{health}");
}

/// Lock files are probed and taken without waiting on a FIFO or following a link planted at
/// their path.
#[test]
fn rm_and_pull_never_wait_on_or_follow_a_lock_file() {
    let fx = Fx::new();
    fx.hub_model("org/x", &good_files());
    let locks = fx.hub().join(".locks/models--org--x");
    fs::create_dir_all(&locks).unwrap();
    let fifo = std::ffi::CString::new(
        locks
            .join(".mlxfs-pull.lock")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let run = |args: &[&str]| {
        let mut c = mlxfs(&fx);
        c.args(args);
        c.env("HF_ENDPOINT", "http://127.0.0.1:9");
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} hung on a FIFO lock file");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    run(&["pull", "org/x", "--refresh", "--json"]);
    run(&["rm", "org/x", "--json"]);
    // A dangling link where the pull lock goes: nothing is created at its target.
    fs::remove_file(locks.join(".mlxfs-pull.lock")).unwrap();
    let target = fx.tmp.path().join("created-by-mlxfs");
    std::os::unix::fs::symlink(&target, locks.join(".mlxfs-pull.lock")).unwrap();
    run(&["pull", "org/x", "--refresh", "--json"]);
    run(&["rm", "org/x", "-f", "--json"]);
    assert!(!target.exists(), "a lock link was followed");
}

#[test]
fn run_refuses_bad_numbers_and_a_linked_cache_before_python() {
    let fx = Fx::new();
    let ws = fx.workspace("ws", &good_files());
    for bad in [
        &["--temperature", "nan"][..],
        &["--temperature", "-1"][..],
        &["--top-p", "7"][..],
        &["--max-tokens", "0"][..],
        &["--repetition-penalty", "inf"][..],
    ] {
        let mut args = vec!["run", "ws", "hi", "--json"];
        args.extend_from_slice(bad);
        let o = mlxfs(&fx).args(&args).out();
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert_eq!(envelope(&o)["error"]["type"], "CommandError", "{bad:?}");
    }
    // A workspace's .hf_cache that is a link would send downloads elsewhere: refused.
    let elsewhere = fx.tmp.path().join("shared-cache");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, ws.join(".hf_cache")).unwrap();
    let o = mlxfs(&fx)
        .args([
            "run",
            "ws",
            "hi",
            "--json",
            "--python",
            "/nonexistent/python",
        ])
        .out();
    let v = envelope(&o);
    assert_eq!(v["error"]["type"], "cache_dir_failed", "{v:#}");
    // The usage error names what is missing.
    let v = envelope(&mlxfs(&fx).args(["show", "--json"]).out());
    assert_eq!(
        v["error"]["message"],
        "the following required arguments were not provided: <MODEL>"
    );
}

/// A sentinel that is not JSON leaves the workspace unmanaged (mlx-knife's rule): healthy,
/// with a warning that says why, and `show` says the sentinel is unreadable rather than
/// missing. An unmanaged sentinel without a hash gets no `--recalc-hash` hint (recalc
/// refuses unmanaged workspaces).
#[test]
fn an_unreadable_or_unmanaged_sentinel_is_said_so() {
    let fx = Fx::new();
    let garbage = fx.workspace("garbage-ws", &good_files());
    fs::write(garbage.join(".mlxk_workspace.json"), b"\x00\xff not json").unwrap();
    let unmanaged = fx.workspace("unmanaged-ws", &good_files());
    fs::write(
        unmanaged.join(".mlxk_workspace.json"),
        br#"{"managed": false, "source_repo": "org/x"}"#,
    )
    .unwrap();
    let v = envelope(&mlxfs(&fx).args(["list", "--json", "--all"]).out());
    let rec = |name: &str| {
        v["data"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["display_name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {v}"))
    };
    let g = rec("garbage-ws");
    assert_eq!(g["health"], "healthy", "{g}");
    let w = g["warnings"].to_string();
    assert!(
        w.contains(".mlxk_workspace.json: sentinel is not valid JSON") && w.contains("unmanaged"),
        "{g}"
    );
    assert!(rec("unmanaged-ws").get("warnings").is_none());
    let o = mlxfs(&fx).args(["show", "garbage-ws"]).out();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Managed: no (unreadable sentinel)"), "{text}");
    let v = envelope(&mlxfs(&fx).args(["show", "unmanaged-ws", "--json"]).out());
    let why = v["data"]["clean_unknown_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("not a managed workspace") && !why.contains("--recalc-hash"),
        "{v}"
    );
}
