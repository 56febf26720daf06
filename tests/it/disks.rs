//! Real disks (issue 10): models moved to another disk and linked back, macOS sidecar files,
//! every cache location huggingface_hub honours, `refs/main` naming a snapshot that is not
//! cached, and `rm` counting what it frees. In-process through the catalog and the CLI
//! binary, and through a real mount whose "other disk" is a second file system (a tmpfs).

use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::support::cli::*;
use crate::support::mnt::*;
use crate::support::python::{explain_fuse, make_tiny};
use crate::support::*;
use mlxfs::catalog::record::describe;
use mlxfs::catalog::resolve::{ResolveError, resolve};
use mlxfs::catalog::{Locations, ModelRef};

/// Run the binary with `--json`: (exit code, envelope).
fn json(fx: &Fx, args: &[&str]) -> (i32, Value) {
    mlxfs(fx)
        .args(args)
        .arg("--json")
        .current_dir(fx.tmp.path())
        .json()
}

/// `list --all --json` as name → record.
fn listed(fx: &Fx) -> std::collections::BTreeMap<String, Value> {
    let (code, v) = json(fx, &["list", "--all"]);
    assert_eq!(code, 0, "{v}");
    v["data"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["display_name"]
                .as_str()
                .or(m["name"].as_str())
                .unwrap()
                .to_string();
            (name, m.clone())
        })
        .collect()
}

/// Bytes of [`good_files`].
fn good_size() -> u64 {
    good_files().iter().map(|(_, b)| b.len() as u64).sum()
}

fn health_of(m: &ModelRef) -> (String, Option<String>) {
    let r = describe(m).record;
    (r.health.as_str().to_string(), r.reason)
}

fn move_and_link(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    // A rename across file systems fails: copy the tree (links stay links), then remove.
    if fs::rename(from, to).is_err() {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
        fs::remove_dir_all(from).unwrap();
    }
    symlink(to, from).unwrap();
}

fn repo_dir(fx: &Fx, repo: &str) -> PathBuf {
    fx.hub()
        .join(format!("models--{}", repo.replace('/', "--")))
}

/// Replace every link of a snapshot with a copy of the file it leads to.
fn materialize_links(snap: &Path) {
    for e in fs::read_dir(snap).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_symlink() {
            let bytes = fs::read(&p).unwrap();
            fs::remove_file(&p).unwrap();
            fs::write(&p, bytes).unwrap();
        }
    }
}

/// The layouts, with `ext` as the other disk: a whole repo folder, one snapshot (of
/// copies), `blobs/`, a workspace; plus what must stay refused or reported.
fn relocated_fleet(fx: &Fx, ext: &Path) {
    // 1. The whole repo folder.
    fx.hub_model("org/big", &good_files());
    move_and_link(&repo_dir(fx, "org/big"), &ext.join("models--org--big"));
    // 2. One snapshot folder, holding copies (what moving a snapshot frees space with).
    let snap = fx.hub_model("org/snap", &good_files());
    materialize_links(&snap);
    move_and_link(&snap, &ext.join("snap-store/org-snap"));
    // 3. blobs/ only: the snapshot's relative links now lead through the linked folder.
    fx.hub_model("org/blobs", &good_files());
    move_and_link(
        &repo_dir(fx, "org/blobs").join("blobs"),
        &ext.join("blob-store/org-blobs"),
    );
    // 4. A workspace living on the other disk, linked into the workspace home.
    write_tree(&ext.join("far-ws"), &good_files());
    symlink(ext.join("far-ws"), fx.ws_home.join("far")).unwrap();
    // Still refused: a link inside a model that leads out of it.
    fs::write(ext.join("secret.bin"), b"not yours").unwrap();
    let esc = fx.hub_model("org/escape", &good_files());
    symlink(ext.join("secret.bin"), esc.join("extra.bin")).unwrap();
    let ws = fx.workspace("ws-escape", &good_files());
    symlink(ext.join("secret.bin"), ws.join("extra.bin")).unwrap();
    // A blobs/ linked to `/` does not make the whole disk the model's own.
    let wide = fx.hub_model("org/wide", &good_files());
    materialize_links(&wide);
    let wide_blobs = repo_dir(fx, "org/wide").join("blobs");
    fs::remove_dir_all(&wide_blobs).unwrap();
    symlink("/", &wide_blobs).unwrap();
    let secret = ext.join("secret.bin");
    let through_root = format!(
        "../../blobs/{}",
        secret.to_string_lossy().trim_start_matches('/')
    );
    symlink(through_root, wide.join("extra.bin")).unwrap();
    // Reported, never left out: links whose disk is not attached.
    symlink(
        "/nonexistent/disk/models--org--gone",
        repo_dir(fx, "org/gone"),
    )
    .unwrap();
    symlink("/nonexistent/disk/gone-ws", fx.ws_home.join("gone-ws")).unwrap();
}

#[test]
fn relocated_models_are_listed_healthy_runnable_and_resolvable() {
    let fx = Fx::new();
    let ext = fx.tmp.path().join("ext-disk");
    relocated_fleet(&fx, &ext);
    let loc = fx.locations();
    for name in ["org/big", "org/snap", "org/blobs", "far"] {
        let m = resolve(name, &loc).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(health_of(&m), ("healthy".into(), None), "{name}");
        let d = describe(&m);
        assert!(d.record.runtime_compatible, "{name}: {:?}", d.record.reason);
        assert_eq!(
            d.record.size_bytes,
            good_size(),
            "{name}: every file counted once"
        );
    }
    for name in ["org/escape", "ws-escape", "org/wide"] {
        let m = resolve(name, &loc).unwrap();
        let (h, reason) = health_of(&m);
        assert_eq!(h, "unhealthy", "{name}");
        assert_eq!(
            reason.as_deref(),
            Some("Symlinks pointing outside the model folder: extra.bin"),
            "{name}"
        );
    }
    for (name, what) in [("org/gone", "models--org--gone"), ("gone-ws", "gone-ws")] {
        let m = resolve(name, &loc).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (h, reason) = health_of(&m);
        assert_eq!(h, "unhealthy", "{name}");
        let reason = reason.unwrap();
        assert!(
            reason.contains(&format!("/nonexistent/disk/{what}"))
                && reason.contains("is its disk attached?"),
            "{name}: {reason}"
        );
    }
    // Paths: through the cache's links and at the real places.
    let big_snap = fs::read_dir(repo_dir(&fx, "org/big").join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let commit = big_snap.file_name().unwrap().to_string_lossy().into_owned();
    let real_snap = ext.join("models--org--big/snapshots").join(&commit);
    for p in [&big_snap, &real_snap] {
        let m = resolve(&p.to_string_lossy(), &loc).unwrap();
        assert_eq!(
            (m.name.as_str(), m.revision.as_deref()),
            ("org/big", Some(commit.as_str())),
            "{}",
            p.display()
        );
    }
    let linked_snap = repo_dir(&fx, "org/snap").join("snapshots");
    let linked_snap = fs::read_dir(linked_snap).unwrap().next().unwrap().unwrap();
    let m = resolve(&linked_snap.path().to_string_lossy(), &loc).unwrap();
    assert_eq!(m.name, "org/snap");
    // …and at its real place on the other disk.
    let real = ext.join("snap-store/org-snap");
    let m = resolve(&real.to_string_lossy(), &loc).unwrap();
    assert_eq!(
        (m.name.as_str(), m.source),
        ("org/snap", mlxfs::catalog::Source::Cache)
    );

    // The binary: list --all names every model (healthy or with its reason), health agrees.
    let all = listed(&fx);
    for name in ["org/big", "org/snap", "org/blobs", "far"] {
        assert_eq!(all[name]["health"], "healthy", "{name}: {}", all[name]);
    }
    for name in ["org/escape", "ws-escape", "org/wide", "org/gone", "gone-ws"] {
        assert_eq!(all[name]["health"], "unhealthy", "{name}: {}", all[name]);
    }
    let (code, v) = json(&fx, &["show", "org/big"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["data"]["model"]["health"], "healthy", "{v}");
    // run: accepted up to Python (here: none to be found), refused for the escaping model.
    let run = |name: &str| json(&fx, &["run", name, "hi", "--python", "/nonexistent/python"]);
    for name in ["org/big", "org/snap", "org/blobs", "far"] {
        let (code, v) = run(name);
        assert_eq!(code, 1);
        assert_eq!(v["error"]["type"], "python_not_found", "{name}: {v}");
    }
    let (_, v) = run("org/escape");
    assert_eq!(v["error"]["type"], "model_unhealthy", "{v}");
}

#[test]
fn relocated_models_in_the_mount_on_another_file_system() {
    crate::require!(Fuse, Root);
    let fx = Fx::new();
    let ext_fs = Tmpfs::new(fx.tmp.path().join("ext-tmpfs"), "size=64m");
    relocated_fleet(&fx, &ext_fs.0);
    let m = Mount::start(&fx, &[]);
    let want: Vec<(String, Vec<u8>)> = good_files();
    for dir in ["org/big", "org/snap", "org/blobs", "far"] {
        for (name, bytes) in &want {
            let got = fs::read(m.p(dir).join(name))
                .unwrap_or_else(|e| panic!("{dir}/{name} through the mount: {e}"));
            assert_eq!(&got, bytes, "{dir}/{name}");
        }
        let health = fs::read_to_string(m.p(dir).join(".mlxfs/health")).unwrap();
        assert!(
            health.contains("healthy") && !health.contains("unhealthy"),
            "{dir}: {health}"
        );
    }
    // The escaping links stay hidden; their models say why.
    for dir in ["org/escape", "ws-escape", "org/wide"] {
        assert!(!m.p(dir).join("extra.bin").exists(), "{dir}");
        let health = fs::read_to_string(m.p(dir).join(".mlxfs/health")).unwrap();
        assert!(health.contains("pointing outside"), "{dir}: {health}");
    }
    // A model whose disk is not attached is there, and says so.
    let health = fs::read_to_string(m.p("org/gone/.mlxfs/health")).unwrap();
    assert!(health.contains("is its disk attached?"), "{health}");
    // A change on the other disk reaches the mount (its real folder is watched too).
    fs::write(ext_fs.0.join("far-ws/notes.txt"), b"added later").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !m.p("far/notes.txt").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(fs::read(m.p("far/notes.txt")).unwrap(), b"added later");
}

/// An AppleDouble sidecar: magic 0x00051607, which read as a safetensors header length is
/// absurd.
fn apple_double() -> Vec<u8> {
    let mut v = vec![0x00, 0x05, 0x16, 0x07, 0x00, 0x02, 0x00, 0x00];
    v.extend_from_slice(b"Mac OS X        ");
    v.extend(std::iter::repeat_n(0u8, 4000));
    v
}

#[test]
fn macos_sidecar_files_are_not_model_files() {
    let fx = Fx::new();
    let mut files = good_files();
    for n in [
        "._model.safetensors",
        "._config.json",
        "._tokenizer.json",
        ".DS_Store",
        "sub/._nested.safetensors",
    ] {
        files.push((n.to_string(), apple_double()));
    }
    files.push(("sub/kept.txt".into(), b"kept".to_vec()));
    let ws = fx.workspace("mac-ws", &files);
    let mut hub_files = good_files();
    hub_files.push(("._model.safetensors".into(), apple_double()));
    fx.hub_model("org/mac", &hub_files);
    // A sharded model: a sidecar of a shard must not count as a shard either.
    let loc = fx.locations();
    for name in ["mac-ws", "org/mac"] {
        let m = resolve(name, &loc).unwrap();
        let d = describe(&m);
        assert_eq!(
            (d.record.health.as_str(), d.record.reason.as_deref()),
            ("healthy", None),
            "{name}"
        );
        assert!(d.record.runtime_compatible, "{name}");
        assert!(
            d.inventory
                .entries
                .iter()
                .all(|e| !e.name.starts_with("._")),
            "{name}"
        );
        assert!(
            d.record.warnings.iter().any(|w| w.contains("OS junk")),
            "{name}: {:?}",
            d.record.warnings
        );
    }
    // Size counts model files only (the docs say so).
    let d = describe(&resolve("mac-ws", &loc).unwrap());
    assert_eq!(d.record.size_bytes, good_size() + 4);
    // show --files does not list them.
    let (code, v) = json(&fx, &["show", "mac-ws", "--files"]);
    assert_eq!(code, 0, "{v}");
    let listed = v["data"]["files"].to_string();
    assert!(
        !listed.contains("._config.json") && !listed.contains(".DS_Store"),
        "{v}"
    );
    assert!(listed.contains("kept.txt"), "{v}");
    // push never uploads them.
    let up: Vec<String> = mlxfs::hub::push::local_files(&ws)
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert!(
        up.iter()
            .all(|p| !p.contains("._") && !p.contains(".DS_Store")),
        "{up:?}"
    );
    assert!(up.contains(&"sub/kept.txt".to_string()), "{up:?}");
    // The hash is the same with and without them (mlx-knife's exclude patterns).
    let ex = mlxfs::hash::Excludes::default_list();
    let with = mlxfs::hash::compute_v2(&ws, &ex).unwrap().0;
    let clean = fx.workspace("clean-ws", &good_files());
    write_tree(&clean, &[("sub/kept.txt".to_string(), b"kept".to_vec())]);
    assert_eq!(with, mlxfs::hash::compute_v2(&clean, &ex).unwrap().0);
    // run accepts it (up to Python).
    let (_, v) = json(
        &fx,
        &["run", "mac-ws", "hi", "--python", "/nonexistent/python"],
    );
    assert_eq!(v["error"]["type"], "python_not_found", "{v}");
}

#[test]
fn every_cache_location_huggingface_hub_honours() {
    let p = |l: Locations| l.hub_cache;
    let h = ("HOME", "/h");
    assert_eq!(
        p(loc_from(&[h, ("HUGGINGFACE_HUB_CACHE", "/legacy")])),
        Path::new("/legacy")
    );
    assert_eq!(
        p(loc_from(&[
            h,
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
            ("HF_HUB_CACHE", "/new")
        ])),
        Path::new("/new")
    );
    assert_eq!(
        p(loc_from(&[
            h,
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
            ("HF_HOME", "/hf")
        ])),
        Path::new("/legacy")
    );
    assert_eq!(
        p(loc_from(&[h, ("XDG_CACHE_HOME", "/xdg")])),
        Path::new("/xdg/huggingface/hub")
    );
    assert_eq!(
        p(loc_from(&[
            h,
            ("XDG_CACHE_HOME", "/xdg"),
            ("HF_HOME", "/hf")
        ])),
        Path::new("/hf/hub")
    );
    // Empty counts as unset; `~` and `$VAR` are expanded as huggingface_hub does.
    assert_eq!(
        p(loc_from(&[
            h,
            ("HUGGINGFACE_HUB_CACHE", ""),
            ("XDG_CACHE_HOME", "")
        ])),
        Path::new("/h/.cache/huggingface/hub")
    );
    assert_eq!(
        p(loc_from(&[h, ("XDG_CACHE_HOME", "~/c")])),
        Path::new("/h/c/huggingface/hub")
    );
    assert_eq!(
        p(loc_from(&[h, ("HF_HOME", "$HOME/hf"), ("X", "y")])),
        Path::new("/h/hf/hub")
    );
    assert_eq!(
        p(loc_from(&[h, ("HF_HUB_CACHE", "${HOME}/c/$UNSET/x$")])),
        Path::new("/h/c/$UNSET/x$")
    );

    // The binary, with only the legacy variable or only XDG_CACHE_HOME set.
    let fx = Fx::new();
    fx.hub_model("org/m", &good_files());
    let cache = fx.hub();
    let xdg = fx.tmp.path().join("xdg");
    fs::create_dir_all(xdg.join("huggingface")).unwrap();
    symlink(&cache, xdg.join("huggingface/hub")).unwrap();
    for (k, v) in [
        ("HUGGINGFACE_HUB_CACHE", cache.clone()),
        ("XDG_CACHE_HOME", xdg.clone()),
    ] {
        let o = std::process::Command::new(BIN)
            .env_clear()
            .env("HOME", &fx.home)
            .env(k, &v)
            .args(["list", "--json"])
            .out();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let names: Vec<&str> = strs(&v["data"]["models"], "name");
        assert_eq!(names, ["org/m"], "{k}");
    }
}

const OLD: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const GONE: &str = "cccccccccccccccccccccccccccccccccccccccc";

#[test]
fn refs_main_naming_a_missing_snapshot_is_said() {
    let fx = Fx::new();
    fx.hub_snapshot("org/m", OLD, &good_files(), false);
    fs::create_dir_all(repo_dir(&fx, "org/m").join("refs")).unwrap();
    fs::write(repo_dir(&fx, "org/m").join("refs/main"), GONE).unwrap();
    let loc = fx.locations();
    let cur = resolve("org/m", &loc).unwrap();
    let (h, reason) = health_of(&cur);
    assert_eq!(h, "unhealthy");
    assert_eq!(
        reason.as_deref(),
        Some(
            "Current revision ccccccc (refs/main) is not in the cache; cached: org/m@bbbbbbb. \
             `mlxfs pull org/m` fetches it"
        )
    );
    // The cached snapshot stays addressable, and healthy.
    let old = resolve("org/m@bbbbbbb", &loc).unwrap();
    assert_eq!(old.revision.as_deref(), Some(OLD));
    assert_eq!(health_of(&old), ("healthy".into(), None));
    // `@main` explains the missing commit instead of "not found".
    for spec in ["org/m@main", "org/m@ccccccc"] {
        match resolve(spec, &loc) {
            Err(ResolveError::RefNotCached {
                rev,
                commit,
                cached,
                ..
            }) => {
                assert_eq!(
                    (rev.as_str(), commit.as_str(), cached),
                    ("main", GONE, vec!["org/m@bbbbbbb".to_string()]),
                    "{spec}"
                );
            }
            other => panic!("{spec}: {other:?}"),
        }
    }
    let (code, v) = json(&fx, &["show", "org/m@main"]);
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], "hash_not_found", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(
            "names commit cccccccccccccccccccccccccccccccccccccccc, which is not in the cache"
        ),
        "{v}"
    );
    // list says it; run refuses the current revision and takes the cached one by name.
    let all = listed(&fx);
    assert_eq!(all["org/m"]["health"], "unhealthy");
    let (_, v) = json(
        &fx,
        &["run", "org/m", "hi", "--python", "/nonexistent/python"],
    );
    assert_eq!(v["error"]["type"], "model_unhealthy", "{v}");
    let (_, v) = json(
        &fx,
        &[
            "run",
            "org/m@bbbbbbb",
            "hi",
            "--python",
            "/nonexistent/python",
        ],
    );
    assert_eq!(v["error"]["type"], "python_not_found", "{v}");
    // The mount's tree: the model's name with its health, the snapshot under @rev7.
    let vfs = vfs_for(&loc, Path::new("/mnt"));
    let tree = vfs.tree();
    let names: Vec<&str> = tree.models.iter().map(|m| m.mount_path.as_str()).collect();
    assert_eq!(names, ["org/m", "org/m@bbbbbbb"]);
}

#[test]
fn refs_main_naming_a_missing_snapshot_is_repaired_by_pull() {
    use crate::support::fakehub::FakeHub;
    let fx = Fx::new();
    let hub = FakeHub::start(&fx.tmp.path().join("hubroot"));
    hub.put_repo("org/m", &good_files());
    let commit = hub.commit("org/m", "main");
    fx.hub_snapshot("org/m", OLD, &good_files(), false);
    fs::create_dir_all(repo_dir(&fx, "org/m").join("refs")).unwrap();
    fs::write(repo_dir(&fx, "org/m").join("refs/main"), &commit).unwrap();
    assert_eq!(listed(&fx)["org/m"]["health"], "unhealthy");
    mlxfs(&fx)
        .env("HF_ENDPOINT", &hub.url)
        .env("MLXFS_HUB_RETRIES", "0")
        .args(["pull", "org/m", "--json"])
        .succeeds();
    let m = &listed(&fx)["org/m"];
    assert_eq!(
        (m["health"].as_str(), m["revision"].as_str()),
        (Some("healthy"), Some(commit.as_str())),
        "{m}"
    );
}

#[test]
fn rm_counts_everything_it_frees() {
    let fx = Fx::new();
    // A snapshot of regular files (no blob links).
    let snap = fx.hub_model("org/copies", &good_files());
    materialize_links(&snap);
    let blobs = repo_dir(&fx, "org/copies").join("blobs");
    fs::remove_dir_all(&blobs).unwrap();
    fs::create_dir(&blobs).unwrap();
    let (code, v) = json(&fx, &["rm", "org/copies", "-f"]);
    assert_eq!(code, 0, "{v}");
    // The files and refs/main (a 40-byte commit id): everything removed.
    let whole = good_size() + 40;
    assert_eq!(v["data"]["freed_bytes"], whole, "{v}");
    assert!(!repo_dir(&fx, "org/copies").exists());

    // One revision made of copies, the other of blob links.
    let snap = fx.hub_snapshot("org/two", OLD, &good_files(), false);
    materialize_links(&snap);
    std::thread::sleep(std::time::Duration::from_millis(10));
    fx.hub_snapshot("org/two", GONE, &good_files(), true);
    let (code, v) = json(&fx, &["rm", "org/two@bbbbbbb", "-f"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["data"]["freed_bytes"], good_size(), "{v}");
    assert_eq!(v["data"]["blobs_removed"], 0, "{v}");

    // Moved to another disk and linked back: the space is freed there.
    let ext = fx.tmp.path().join("ext-disk");
    fx.hub_model("org/far", &good_files());
    move_and_link(&repo_dir(&fx, "org/far"), &ext.join("models--org--far"));
    fx.hub_model("org/farblobs", &good_files());
    move_and_link(
        &repo_dir(&fx, "org/farblobs").join("blobs"),
        &ext.join("blobs-farblobs"),
    );
    for (name, real) in [
        ("org/far", ext.join("models--org--far")),
        ("org/farblobs", ext.join("blobs-farblobs")),
    ] {
        let (code, v) = json(&fx, &["rm", name, "-f"]);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["data"]["freed_bytes"], whole, "{name}: {v}");
        assert_eq!(
            v["data"]["relocated_removed"],
            serde_json::json!([real]),
            "{name}: {v}"
        );
        assert!(!real.exists(), "{name}");
        assert!(fs::symlink_metadata(repo_dir(&fx, name)).is_err(), "{name}");
    }
    // A link to a folder that holds the cache itself is never followed into a deletion.
    fx.hub_model("org/keep", &good_files());
    let keep_blobs = repo_dir(&fx, "org/keep").join("blobs");
    fs::remove_dir_all(&keep_blobs).unwrap();
    symlink(&fx.hf_home, &keep_blobs).unwrap();
    let (code, v) = json(&fx, &["rm", "org/keep", "-f"]);
    assert_eq!(code, 0, "{v}");
    assert!(fx.hub().is_dir(), "the hub cache survives");
    assert_eq!(
        v["data"]["relocated_kept"][0]["path"],
        serde_json::json!(fx.hf_home),
        "{v}"
    );
}

/// Real inference from relocated copies of the tiny model: the same text as from its own
/// folder (a linked workspace, and a hub model whose `blobs/` lives on the other disk).
#[test]
fn relocated_models_run_with_the_same_text() {
    crate::require!(Python);
    let fx = Fx::new();
    let ext = fx.tmp.path().join("ext-disk");
    let ws = make_tiny(&fx, "tiny", &[]);
    let files = files_of(&ws);
    fx.hub_model("org/tiny", &files);
    move_and_link(
        &repo_dir(&fx, "org/tiny").join("blobs"),
        &ext.join("blob-store/org-tiny"),
    );
    let far = ext.join("far-tiny");
    write_tree(&far, &files);
    symlink(&far, fx.ws_home.join("far-tiny")).unwrap();
    let text = |model: &str| {
        let (code, v) = explain_fuse(&fx, model)
            .args(["--subprocess", "--json"])
            .current_dir(fx.tmp.path())
            .json();
        assert_eq!(code, 0, "{model}: {v}");
        v["data"]["text"].as_str().unwrap().to_string()
    };
    let want = text("tiny");
    assert!(!want.is_empty());
    assert_eq!(text("org/tiny"), want);
    assert_eq!(text("far-tiny"), want);
}

/// The cache location agrees with huggingface_hub's own `constants.HF_HUB_CACHE` for every
/// combination of the variables it reads, and `pull` writes where it reads.
#[test]
fn cache_location_agrees_with_huggingface_hub() {
    crate::require!(Python);
    let python = std::env::var("MLXFS_TEST_PYTHON").unwrap();
    let vars = [
        ("HF_HUB_CACHE", "/c/hub-cache"),
        ("HUGGINGFACE_HUB_CACHE", "/c/legacy"),
        ("HF_HOME", "~/hf-$USER"),
        ("XDG_CACHE_HOME", "/c/xdg"),
    ];
    for mask in 0..16u32 {
        let set: Vec<(&str, &str)> = vars
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, kv)| *kv)
            .chain([("HOME", "/h"), ("USER", "u")])
            .collect();
        let o = std::process::Command::new(&python)
            .env_clear()
            .envs(set.iter().copied())
            .args([
                "-c",
                "import huggingface_hub.constants as c, sys; sys.stdout.write(c.HF_HUB_CACHE)",
            ])
            .succeeds();
        let theirs = String::from_utf8(o.stdout).unwrap();
        assert_eq!(loc_from(&set).hub_cache, PathBuf::from(&theirs), "{set:?}");
    }

    // pull with only XDG_CACHE_HOME set lands where huggingface_hub looks.
    use crate::support::fakehub::FakeHub;
    let fx = Fx::new();
    let hub = FakeHub::start(&fx.tmp.path().join("hubroot"));
    hub.put_repo("org/m", &good_files());
    let xdg = fx.tmp.path().join("xdg");
    std::process::Command::new(BIN)
        .env_clear()
        .env("HOME", &fx.home)
        .env("XDG_CACHE_HOME", &xdg)
        .env("HF_ENDPOINT", &hub.url)
        .env("MLXFS_HUB_RETRIES", "0")
        .args(["pull", "org/m", "--json"])
        .succeeds();
    let commit = hub.commit("org/m", "main");
    let snap = xdg
        .join("huggingface/hub/models--org--m/snapshots")
        .join(&commit);
    assert_eq!(
        fs::read(snap.join("config.json")).unwrap(),
        good_files()[0].1
    );
    assert!(
        fs::read_dir(&fx.home).unwrap().next().is_none(),
        "nothing under ~"
    );
}

/// `rm` never deletes what belongs to another model, a workspace or the user: a relocated
/// part that is really another model's folder, a workspace, or a folder holding other files.
#[test]
fn rm_never_deletes_what_is_not_the_models() {
    let fx = Fx::new();
    fx.hub_model("org/victim", &good_files());
    let victim_blobs = repo_dir(&fx, "org/victim").join("blobs");
    // blobs/ linked into another repo's blobs/.
    fx.hub_model("org/borrower", &good_files());
    let b = repo_dir(&fx, "org/borrower").join("blobs");
    fs::remove_dir_all(&b).unwrap();
    symlink(&victim_blobs, &b).unwrap();
    // A snapshot linked to another repo's snapshot.
    let victim_snap = fs::read_dir(repo_dir(&fx, "org/victim").join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let z = repo_dir(&fx, "org/z").join("snapshots");
    fs::create_dir_all(&z).unwrap();
    symlink(&victim_snap, z.join(OLD)).unwrap();
    // A snapshot linked to a workspace.
    let ws = fx.workspace("mywork", &good_files());
    fs::write(ws.join("MY_NOTES.md"), b"mine").unwrap();
    let s = repo_dir(&fx, "org/s").join("snapshots");
    fs::create_dir_all(&s).unwrap();
    symlink(&ws, s.join(OLD)).unwrap();
    // blobs/ relocated into a folder that also holds the user's files.
    let important = fx.tmp.path().join("important");
    fx.hub_model("org/bl", &good_files());
    move_and_link(&repo_dir(&fx, "org/bl").join("blobs"), &important);
    fs::write(important.join("taxes.pdf"), b"keep me").unwrap();
    // A snapshot that links to a sibling snapshot: removing it frees nothing.
    fx.hub_snapshot("org/al", GONE, &good_files(), true);
    let al = repo_dir(&fx, "org/al").join("snapshots");
    symlink(GONE, al.join(OLD)).unwrap();

    for spec in ["org/borrower", "org/z", "org/s", "org/bl", "org/al@bbbbbbb"] {
        let (code, v) = json(&fx, &["rm", spec, "-f"]);
        assert_eq!(code, 0, "{spec}: {v}");
        if spec == "org/al@bbbbbbb" {
            assert_eq!(v["data"]["freed_bytes"], 0, "{v}");
        }
        if spec == "org/bl" {
            assert_eq!(v["data"]["freed_bytes"], good_size() + 40, "{v}");
            assert_eq!(
                v["data"]["relocated_kept"][0]["path"],
                serde_json::json!(important)
            );
        }
    }
    let all = listed(&fx);
    assert_eq!(
        all["org/victim"]["health"], "healthy",
        "{}",
        all["org/victim"]
    );
    assert_eq!(all["mywork"]["health"], "healthy");
    assert_eq!(fs::read(ws.join("MY_NOTES.md")).unwrap(), b"mine");
    assert_eq!(fs::read(important.join("taxes.pdf")).unwrap(), b"keep me");
    let left: Vec<_> = fs::read_dir(&important)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["taxes.pdf"], "only the model's blobs went");
    assert_eq!(all["org/al"]["health"], "healthy");
}

/// A relocated `blobs/` that is a disk's mount root: `rm` empties it instead of failing
/// halfway.
#[test]
fn rm_of_blobs_on_a_mount_root() {
    crate::require!(Root);
    let fx = Fx::new();
    let disk = Tmpfs::new(fx.tmp.path().join("disk"), "size=16m");
    fx.hub_model("org/t", &good_files());
    let blobs = repo_dir(&fx, "org/t").join("blobs");
    for e in fs::read_dir(&blobs).unwrap().flatten() {
        fs::copy(e.path(), disk.0.join(e.file_name())).unwrap();
    }
    fs::remove_dir_all(&blobs).unwrap();
    symlink(&disk.0, &blobs).unwrap();
    assert_eq!(listed(&fx)["org/t"]["health"], "healthy");
    let (code, v) = json(&fx, &["rm", "org/t", "-f"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["data"]["freed_bytes"], good_size() + 40, "{v}");
    assert!(fs::read_dir(&disk.0).unwrap().next().is_none());
    assert!(fs::symlink_metadata(repo_dir(&fx, "org/t")).is_err());
}

/// Links too wide to be one model's folder are not followed: a `blobs/` linked to the home
/// folder does not make the home's files the model's, and a repo folder linked to a folder
/// that holds the cache (and the mount point) is listed with that reason, never walked, and
/// never makes the mount read itself.
#[test]
fn links_too_wide_to_be_a_model_are_not_followed() {
    let fx = Fx::new();
    fs::write(fx.home.join(".netrc"), b"machine x password y").unwrap();
    let snap = fx.hub_model("org/home", &good_files());
    materialize_links(&snap);
    let blobs = repo_dir(&fx, "org/home").join("blobs");
    fs::remove_dir_all(&blobs).unwrap();
    symlink(&fx.home, &blobs).unwrap();
    symlink("../../blobs/.netrc", snap.join("netrc")).unwrap();
    symlink(fx.tmp.path(), repo_dir(&fx, "org/up")).unwrap();
    // A dangling blobs/ says where it led.
    fx.hub_model("org/detached", &good_files());
    let b = repo_dir(&fx, "org/detached").join("blobs");
    fs::remove_dir_all(&b).unwrap();
    symlink("/nonexistent/disk/blobs", &b).unwrap();
    let all = listed(&fx);
    assert_eq!(
        all["org/home"]["reason"], "Symlinks pointing outside the model folder: netrc",
        "{}",
        all["org/home"]
    );
    let reason = |m: &Value| m["reason"].as_str().unwrap().to_string();
    let up = &all["org/up"];
    assert!(reason(up).contains("holds far more than one model"), "{up}");
    assert_eq!(up["size_bytes"], 0, "{up}");
    let d = &all["org/detached"];
    assert!(
        reason(d).starts_with("blobs/: a link to /nonexistent/disk/blobs"),
        "{d}"
    );
    if crate::support::missing(crate::support::Needs::Fuse).is_none() {
        let m = Mount::start(&fx, &[]);
        let h = fs::read_to_string(m.p("org/up/.mlxfs/health")).unwrap();
        assert!(h.contains("holds far more"), "{h}");
        assert!(!m.p("org/home/netrc").exists());
        assert_eq!(
            fs::read(m.p("org/home/config.json")).unwrap(),
            good_files()[0].1
        );
    }
}

/// `refs/` files are read as commit ids only: a short, upper-case or garbage ref never
/// contradicts itself, and a ref's text is never echoed.
#[test]
fn refs_are_commit_ids_only() {
    let fx = Fx::new();
    let upper = OLD.to_uppercase();
    for (repo, main) in [
        ("org/short", "bbbbbbb"),
        ("org/upper", upper.as_str()),
        ("org/garbage", "ref: refs/heads/main"),
    ] {
        fx.hub_snapshot(repo, OLD, &good_files(), false);
        fs::create_dir_all(repo_dir(&fx, repo).join("refs")).unwrap();
        fs::write(repo_dir(&fx, repo).join("refs/main"), main).unwrap();
    }
    fs::write(
        repo_dir(&fx, "org/garbage").join("refs/y"),
        "SECRET-LINE-1\nSECRET-LINE-2",
    )
    .unwrap();
    let all = listed(&fx);
    for repo in ["org/short", "org/upper", "org/garbage"] {
        assert_eq!(all[repo]["health"], "healthy", "{repo}: {}", all[repo]);
        assert_eq!(all[repo]["revision"], OLD, "{repo}");
    }
    assert!(
        all["org/short"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("refs/main: not a commit id"),
        "{}",
        all["org/short"]
    );
    assert!(
        all["org/upper"].get("warnings").is_none(),
        "{}",
        all["org/upper"]
    );
    let (code, v) = json(&fx, &["show", "org/garbage@y"]);
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], "hash_not_found");
    assert!(!v.to_string().contains("SECRET"), "{v}");
}
