//! Nothing on disk can crash a command or the mount: property tests over hub caches and
//! workspace homes built from a hostile alphabet (multi-byte characters at every offset,
//! bytes that are not UTF-8, control characters, 255-byte names, names starting with `-` or
//! `.`, holding `@`, `--` or `%`, names equal to `.mlxfs`) and hostile contents (garbage,
//! empty and dangling `refs/main`, snapshots that are files, no `blobs/`, zero-byte and 10 MB
//! `config.json`, JSON arrays, wrong-typed fields, 200-level nesting, symlink loops,
//! safetensors headers that lie).
//!
//! Each generated tree goes through what the CLI does — `list --all`, `health`, `show` of every
//! listed name and path (the same functions `mlxfs` calls) — and through the mount's core:
//! building the virtual tree, rendering every virtual file, and a `diff` against the tree
//! before one more edit. None may panic; every model folder must be listed (healthy or with a
//! reason) and appear in the tree (or in its `hidden` list); line files keep one model per
//! line. The cases that once failed are kept below as plain regression tests.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use proptest::prelude::*;

use mlxfs::catalog::Locations;
use mlxfs::cli::health::{HealthArgs, run as health};
use mlxfs::cli::list::{ListArgs, run as list};
use mlxfs::cli::show::{ShowArgs, run as show};
use mlxfs::vfs::{Content, Inodes, Virtual, build, diff};

use crate::support::hostile_trees::*;

// ------------------------------------------------------------------ the properties

/// Model folders on disk, as the catalog defines them: `models--*` folders of the hub cache
/// and workspace-home folders with a `config.json` (not staging folders).
fn model_folders(loc: &Locations) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(&loc.hub_cache).into_iter().flatten().flatten() {
        if e.file_name().as_bytes().starts_with(b"models--") && e.path().is_dir() {
            out.push(e.path());
        }
    }
    if let Some(home) = &loc.workspace_home {
        for e in fs::read_dir(home).into_iter().flatten().flatten() {
            let p = e.path();
            let n = e.file_name();
            if p.is_dir()
                && fs::symlink_metadata(p.join("config.json")).is_ok()
                && !n.as_bytes().starts_with(b".mlxfs-")
                && !n.as_bytes().starts_with(b".mlxk2_temp_")
            {
                out.push(p);
            }
        }
    }
    out
}

fn list_args() -> ListArgs {
    ListArgs {
        pattern: None,
        all: true,
        health: true,
        verbose: true,
        full_paths: false,
        origin: true,
        from_disk: true,
    }
}

/// Everything the CLI and the mount do with a catalog, checked.
fn exercise(loc: &Locations, root: &Path) {
    // list --all --health --verbose: every model folder is listed.
    let out = list(&list_args(), loc).expect("list never fails");
    let list_data = out.data.clone();
    let models = out.data["models"].as_array().unwrap().clone();
    let mut listed_paths: Vec<PathBuf> = Vec::new();
    for m in &models {
        let p = PathBuf::from(m["path"].as_str().unwrap());
        listed_paths.push(p);
        let health = m["health"].as_str().unwrap();
        assert!(health == "healthy" || m["reason"].is_string(), "{m}");
    }
    // (JSON paths are text: a name that is not UTF-8 is listed by its lossy form.)
    let lossy = |p: &Path| PathBuf::from(p.to_string_lossy().into_owned());
    for folder in model_folders(loc) {
        let canon = fs::canonicalize(&folder).unwrap_or(folder.clone());
        assert!(
            listed_paths
                .iter()
                .any(|p| p.starts_with(lossy(&folder)) || p.starts_with(lossy(&canon))),
            "{} is not listed: {listed_paths:?}",
            folder.display()
        );
    }
    // The human table: one row per model plus the two header lines, whatever the names.
    let human = out.human();
    assert!(human.lines().count() >= models.len() + 2, "{human}");

    // health: every model once.
    let h = health(
        &HealthArgs {
            model: None,
            verbose: true,
            from_disk: true,
        },
        loc,
    )
    .expect("health never fails");
    assert_eq!(
        h.data["summary"]["total"].as_u64(),
        Some(models.len() as u64)
    );

    // The mount's catalog.json data: the same list and health (runtime caches aside), each
    // model described once, and it reads back exactly (what the CLI checks before use).
    let f = mlxfs::catalog::fleet::fleet(loc);
    let fl = serde_json::to_value(&f.list).unwrap();
    assert_eq!(fl, list_data, "fleet list != list");
    let mut hv = h.data.clone();
    for k in ["healthy", "unhealthy"] {
        for e in hv[k].as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("runtime_cache");
        }
    }
    let fh = serde_json::to_value(&f.health).unwrap();
    assert_eq!(fh, hv, "fleet health != health");
    let back: mlxfs::catalog::record::ListData = serde_json::from_value(fl.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), fl);
    let back: mlxfs::catalog::fleet::HealthData = serde_json::from_value(fh.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), fh);

    // show of every listed name, and of every listed path: an answer or an error, never a
    // panic.
    for l in mlxfs::catalog::resolve::list(None, loc) {
        for spec in [l.model.spec(), l.model.path.to_string_lossy().into_owned()] {
            let _ = show(
                &ShowArgs {
                    model: spec,
                    files: true,
                    config: false,
                    recalc_hash: false,
                },
                loc,
            );
        }
    }

    // The mount's core: build, render every virtual file, then an edit and a diff.
    let vfs = crate::support::vfs_for(loc, &root.join("mnt"));
    let tree = vfs.tree();
    assert_eq!(vfs.info().refresh_error, None);
    for folder in model_folders(loc) {
        let canon = fs::canonicalize(&folder).unwrap_or(folder.clone());
        let shown = tree
            .models
            .iter()
            .any(|m| m.model.path.starts_with(&folder) || m.model.path.starts_with(&canon));
        let hidden = tree.hidden.iter().any(|h| {
            let p = Path::new(&h.path);
            p.starts_with(lossy(&folder)) || p.starts_with(lossy(&canon))
        });
        assert!(
            shown || hidden,
            "{} is neither in the tree nor in its hidden list",
            folder.display()
        );
    }
    for (ino, node) in &tree.nodes {
        if let Content::Dir(children) = &node.content {
            for (name, child) in children {
                let c = &tree.nodes[child];
                assert_eq!((&c.name, c.parent), (name, ino), "a child that is not");
                assert!(**name != *"." && **name != *".." && !name.is_empty());
            }
        }
        let _ = vfs.attr(&tree, ino).expect("every node has attributes");
        if let Content::Virtual(v) = &node.content {
            let (fh, _) = vfs.open(ino, false).unwrap();
            vfs.read(fh, 0, u32::MAX, |r| assert!(r.is_ok()));
            vfs.release(fh).unwrap();
            if *v == Virtual::FleetHealth {
                let text = vfs.renderer.render(&vfs, &tree, v);
                let text = String::from_utf8_lossy(&text);
                assert_eq!(text.lines().count(), tree.models.len(), "{text:?}");
            }
            if let Virtual::Health(_) | Virtual::Hash(_) = v {
                let text = vfs.renderer.render(&vfs, &tree, v);
                assert_eq!(String::from_utf8_lossy(&text).lines().count(), 1);
            }
        }
    }
    // An edit, then a rescan and its diff against the tree before.
    let mut inodes = Inodes::default();
    let a = build(loc, &mut inodes, 1, SystemTime::UNIX_EPOCH);
    if let Some(victim) = model_folders(loc).first() {
        let _ = fs::remove_dir_all(victim);
    }
    if mkdir(&root.join("ws/added-later")) {
        create(&root.join("ws/added-later/config.json"), b"{}");
    }
    let b = build(loc, &mut inodes, 2, SystemTime::UNIX_EPOCH);
    let _ = diff(&a, &b);
    let _ = vfs.refresh();
}

/// Cases per property (`PROPTEST_CASES` overrides): 4 properties × 500 = 2,000 trees a run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // A failing tree is shrunk for at most a minute (each step writes it to disk again).
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// One generated catalog, on disk and through everything.
fn check(c: &Catalog) {
    let tmp = tempfile::tempdir().unwrap();
    let loc = materialize(c, tmp.path());
    exercise(&loc, tmp.path());
}

// Four properties of one kind, so that the test runner spreads them over the cores.
proptest! {
    #![proptest_config(config())]

    #[test]
    fn hostile_catalogs_never_panic_a(c in catalog()) { check(&c) }

    #[test]
    fn hostile_catalogs_never_panic_b(c in catalog()) { check(&c) }

    #[test]
    fn hostile_catalogs_never_panic_c(c in catalog()) { check(&c) }

    #[test]
    fn hostile_catalogs_never_panic_d(c in catalog()) { check(&c) }
}

// ------------------------------------------------------------------ fixed regression cases

/// Run `f` with a deadline: a hang is a failure, not a stuck test run.
fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("still running after {secs} s"),
        Err(_) => panic!("the check panicked (see above)"),
    }
}

/// Each kind of input that once crashed or hung mlxfs (found by the properties above or by
/// review), as one plain case ([`regression_tree`]): the snapshot name cut inside `é`, a hub folder whose
/// name is not UTF-8, FIFOs where config.json, refs/main and the sentinel should be, links to
/// /dev/zero, shard-like names with multi-byte characters, a file dated year 5138 in a
/// workspace whose v2 sentinel makes the clean check hash it, and mount names two models
/// would share.
#[test]
fn each_kind_that_once_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let hub = root.join("hf/hub");
    let ws = root.join("ws");
    regression_tree(&hub, &ws);
    let vars = [
        ("HF_HOME", root.join("hf")),
        ("MLXK_WORKSPACE_HOME", ws.clone()),
        ("HOME", root.clone()),
    ];
    let loc = Locations::from_vars(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    });
    let (l, r) = (loc.clone(), root.clone());
    within(60, move || exercise(&l, &r));

    // What the answers say about them.
    let out = list(&list_args(), &loc).unwrap();
    let reason_of = |suffix: &str| {
        out.data["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["path"].as_str().unwrap().ends_with(suffix))
            .map(|m| (m["health"].clone(), m["reason"].clone()))
            .unwrap_or_else(|| panic!("{suffix} is not listed"))
    };
    assert_eq!(
        reason_of("/ws/fifo").1,
        "config.json is a FIFO, not a regular file",
        "a FIFO is not a config"
    );
    assert_eq!(
        reason_of("/ws/zero").1,
        "config.json is a character device, not a regular file"
    );
    assert_eq!(
        reason_of("/ws/fifo2").1,
        "tokenizer_config.json is a FIFO, not a regular file"
    );
    let (h, r) = reason_of(&format!("models--a--{}", char::REPLACEMENT_CHARACTER));
    assert_eq!(h, "unhealthy");
    assert!(r.as_str().unwrap().contains("not valid UTF-8"), "{r}");
    let m = mlxfs::catalog::resolve::resolve("org/m@abcdefé", &loc).unwrap();
    assert_eq!(m.revision.as_deref(), Some("abcdefé12"));
    let vfs = crate::support::vfs_for(&loc, &root.join("mnt"));
    let t = vfs.tree();
    let hidden: Vec<String> = t.hidden.iter().map(|h| h.path.clone()).collect();
    assert!(
        hidden.iter().any(|h| h.ends_with("/ws/.mlxfs")),
        "{hidden:?}"
    );
    assert!(
        hidden.iter().any(|h| h.ends_with("/ws/meta/.mlxfs")),
        "{hidden:?}"
    );
    // `o/m@abc1234` is both a repo and a snapshot name: one shows, the other is hidden, said.
    assert!(
        hidden.iter().any(|h| h.contains("models--o--m")),
        "{hidden:?}"
    );
    assert!(t.resolve_path(Path::new("org/m@abcdefé")).is_ok());
    assert!(t.resolve_path(Path::new("x.incomplete@hub")).is_ok());
}
