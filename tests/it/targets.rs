//! Writers refuse targets where they do harm (issue 25 §6): `restore`, `clone`, `convert`
//! and `archive` ask one rule (`catalog::target`) — never into the hub cache (a folder
//! written into a hub model's `snapshots/` became a bogus revision `show org/m@x` resolved and
//! huggingface_hub called a corrupted cache), never into any other Hugging Face cache
//! (mlxfs's run caches, a cache repo folder or a cache's root anywhere), never inside a model — and
//! `convert` says so in mlx-knife's words.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::cli::*;
use crate::support::*;

fn run(fx: &Fx, args: &[&str]) -> (Output, Value) {
    let o = mlxfs(fx)
        .args(args)
        .arg("--json")
        .current_dir(fx.tmp.path())
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o, v)
}

/// A refusal: exit 1, `InvalidTargetError`, the message holding `text`; the message.
fn refused(fx: &Fx, args: &[&str], text: &str) -> String {
    let (o, v) = run(fx, args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {v}");
    assert_eq!(v["error"]["type"], "InvalidTargetError", "{args:?}: {v}");
    let msg = v["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(text), "{args:?}: {msg}");
    msg
}

/// `restore TAR TARGET` is refused: `target` lies in the run cache `cache`.
fn in_a_run_cache(fx: &Fx, tar: &str, target: &Path, cache: &Path) {
    refused(
        fx,
        &["restore", tar, target.to_str().unwrap()],
        &format!(
            "it lies in a run cache of mlxfs ({}), a Hugging Face cache",
            cache.display()
        ),
    );
}

/// A workspace archived with `mlxfs archive`, and a hub model `org/m` (its snapshot folder).
fn setup() -> (Fx, PathBuf, PathBuf) {
    let fx = Fx::new();
    fx.workspace("ws", &good_files());
    managed_sentinel(&fx.ws_home.join("ws"), "");
    let tar = fx.tmp.path().join("ws.tar");
    let (o, v) = run(
        &fx,
        &["archive", "ws", tar.to_str().unwrap(), "--allow-dirty"],
    );
    assert!(o.status.success(), "{v}");
    let snap = fx.hub_model("org/m", &good_files());
    (fx, tar, snap)
}

/// The example: `restore` into a hub model's `snapshots/` (and anywhere in the hub
/// cache) is refused, nothing is written, and no bogus revision appears.
#[test]
fn restore_never_writes_into_a_hugging_face_cache() {
    let (fx, tar, snap) = setup();
    let tar = tar.to_str().unwrap();
    let before = tree_state(&fx.hf_home);
    let snaps = snap.parent().unwrap();
    for target in [
        snaps.join("bogus"),
        fx.hub().join("models--org--new"),
        fx.hub().join("models--org--m/blobs/x"),
    ] {
        let msg = refused(
            &fx,
            &["restore", tar, target.to_str().unwrap()],
            "hub cache",
        );
        assert!(
            msg.starts_with(&format!(
                "Cannot use {} as the target: it lies in the hub cache",
                target.display()
            )),
            "{msg}"
        );
    }
    // A folder that holds the hub cache.
    refused(
        &fx,
        &["restore", tar, fx.hf_home.to_str().unwrap()],
        &format!("it holds the hub cache ({})", fx.hub().display()),
    );
    assert_eq!(tree_state(&fx.hf_home), before, "the hub cache was written");
    let (o, v) = run(&fx, &["show", "org/m@bogus"]);
    assert_eq!(o.status.code(), Some(1), "{v}");

    // Another Hugging Face cache: the state folder's runtime cache of a hub model.
    let state_repo = fx.home.join(".local/state/mlxfs/hf-cache/models--org--m");
    std::fs::create_dir_all(state_repo.join("snapshots")).unwrap();
    let t = state_repo.join("snapshots/c");
    in_a_run_cache(&fx, tar, &t, &fx.home.join(".local/state/mlxfs/hf-cache"));
    assert!(!t.exists());
}

/// Any Hugging Face cache, as `restore --help` says: mlxfs's run caches (the state folder's
/// `hf-cache`, wherever `XDG_STATE_HOME` puts it, in the layout a run of a hub model makes —
/// a restore there became "other files" of `show org/m`'s runtime cache —, and every
/// workspace's `.hf_cache`), a folder inside any cache repo folder, and a folder inside one
/// that looks like a cache's root (it holds repo folders, or huggingface_hub's `.locks`).
/// `clone`, `convert` and `archive` ask the same rule.
#[test]
fn writers_refuse_every_hugging_face_cache() {
    let (fx, tar, _snap) = setup();
    let tar = tar.to_str().unwrap();
    let r = fx.tmp.path();
    let state = r.join("xdg-state");
    let run_cache = state.join("mlxfs/hf-cache");
    std::fs::create_dir_all(run_cache.join("models--org--m/hub")).unwrap();
    let ws = fx.ws_home.join("ws");
    std::fs::create_dir_all(ws.join(".hf_cache/hub")).unwrap();
    // A second cache (another disk's, a second HF_HOME): its root holds a repo folder.
    let hf2 = r.join("hf2/hub");
    std::fs::create_dir_all(hf2.join("models--a--b/snapshots")).unwrap();
    // A cache whose root holds only huggingface_hub's `.locks` so far.
    let hf3 = r.join("hf3/hub");
    std::fs::create_dir_all(hf3.join(".locks")).unwrap();
    // A repo folder that only remembers files the hub does not have.
    let nx = r.join("elsewhere/models--c--d");
    std::fs::create_dir_all(nx.join(".no_exist")).unwrap();

    let with_state = |args: &[&str]| {
        let o = mlxfs(&fx)
            .env("XDG_STATE_HOME", &state)
            .args(args)
            .arg("--json")
            .current_dir(r)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {v}");
        assert_eq!(v["error"]["type"], "InvalidTargetError", "{args:?}: {v}");
        v["error"]["message"].as_str().unwrap().to_string()
    };
    let junk = run_cache.join("models--org--m/hub/junk");
    assert_eq!(
        with_state(&["restore", tar, junk.to_str().unwrap()]),
        format!(
            "Cannot use {} as the target: it lies in a run cache of mlxfs ({}), a Hugging Face \
             cache, whose layout belongs to huggingface_hub (a folder written there becomes a \
             bogus revision of a corrupted cache)",
            junk.display(),
            run_cache.display()
        )
    );
    let own = ws.join(".hf_cache/hub/junk");
    in_a_run_cache(&fx, tar, &own, &ws.join(".hf_cache"));
    for (target, cache) in [
        (hf2.join("junk"), &hf2),
        (hf3.join("junk"), &hf3),
        (nx.join("junk"), &nx),
    ] {
        refused(
            &fx,
            &["restore", tar, target.to_str().unwrap()],
            &format!("it lies in a Hugging Face cache ({})", cache.display()),
        );
        assert!(!target.exists());
    }
    assert!(!junk.exists() && !own.exists());

    // The same rule for the other writers.
    refused(
        &fx,
        &["clone", "org/x", hf2.join("fresh").to_str().unwrap()],
        &format!("it lies in a Hugging Face cache ({})", hf2.display()),
    );
    let into = run_cache.join("models--org--m/hub/conv");
    assert!(
        with_state(&["convert", "ws", into.to_str().unwrap(), "--repair-index"])
            .starts_with("Target path is in HF cache (read-only): ")
    );
    refused(
        &fx,
        &[
            "archive",
            "ws",
            hf3.join("ws.tar").to_str().unwrap(),
            "--allow-dirty",
        ],
        &format!(
            "it lies in a Hugging Face cache ({}), whose layout belongs to huggingface_hub",
            hf3.display()
        ),
    );
    assert!(!hf3.join("ws.tar").exists() && !into.exists());
    // A folder beside a cache is fine.
    let beside = r.join("hf2/restored");
    let (o, v) = run(&fx, &["restore", tar, beside.to_str().unwrap()]);
    assert!(o.status.success(), "{v}");
}

/// `clone`, `convert` and `archive` ask the same rule: nothing is downloaded, converted or
/// written into the hub cache; `convert` in mlx-knife's words.
#[test]
fn clone_convert_and_archive_ask_the_same_rule() {
    let (fx, _tar, snap) = setup();
    let before = tree_state(&fx.hf_home);
    let into = snap.parent().unwrap().join("fresh");
    // Refused before the hub is asked (no HF_ENDPOINT answers here).
    refused(
        &fx,
        &["clone", "org/x", into.to_str().unwrap()],
        "it lies in the hub cache",
    );
    let msg = refused(
        &fx,
        &["convert", "ws", into.to_str().unwrap(), "--repair-index"],
        "",
    );
    assert_eq!(
        msg,
        format!(
            "Target path is in HF cache (read-only): {}. Convert cannot write to cache. Choose \
             workspace location outside cache",
            into.display()
        )
    );
    let out = snap.join("ws.tar");
    refused(
        &fx,
        &["archive", "ws", out.to_str().unwrap(), "--allow-dirty"],
        "Cannot write the archive to",
    );
    assert_eq!(tree_state(&fx.hf_home), before, "the hub cache was written");
    // Inside another model's folder: the archive would become part of it.
    let other = fx.workspace("other", &good_files());
    refused(
        &fx,
        &[
            "archive",
            "ws",
            other.join("ws.tar").to_str().unwrap(),
            "--allow-dirty",
        ],
        &format!("it lies inside the model folder {}", other.display()),
    );
    assert!(!other.join("ws.tar").exists());
}

/// `convert`'s "target not empty" is mlx-knife's message (its clone's stays clone's).
#[test]
fn convert_says_target_not_empty_in_mlx_knifes_words() {
    let (fx, tar, _) = setup();
    let busy = fx.ws_home.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let msg = refused(&fx, &["convert", "ws", "busy", "--repair-index"], "");
    assert_eq!(
        msg,
        format!(
            "Target directory not empty: {}. Convert requires empty target workspace. Use \
             different path or delete contents",
            busy.display()
        )
    );
    let msg = refused(&fx, &["restore", tar.to_str().unwrap(), "busy"], "");
    assert_eq!(
        msg,
        format!("Target directory '{}' is not empty", busy.display())
    );
    assert_eq!(
        std::fs::read_to_string(busy.join("keep.txt")).unwrap(),
        "mine"
    );
}
