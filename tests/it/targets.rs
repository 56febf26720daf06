//! Writers refuse targets where they do harm (issue 25 §6): `restore`, `clone`, `convert`
//! and `archive` ask one rule (`catalog::target`) — never into the hub cache (a folder
//! written into a hub model's `snapshots/` became a bogus revision `show org/m@x` resolved and
//! huggingface_hub called a corrupted cache), never into another Hugging Face cache's repo
//! folder (a workspace's `.hf_cache`, the state folder's), never inside a model — and
//! `convert` says so in mlx-knife's words.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;

use crate::support::mnt::cmd;
use crate::support::*;

fn run(fx: &Fx, args: &[&str]) -> (Output, Value) {
    let o = cmd(fx)
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
    refused(
        &fx,
        &["restore", tar, t.to_str().unwrap()],
        &format!("it lies in a Hugging Face cache ({})", state_repo.display()),
    );
    assert!(!t.exists());
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
