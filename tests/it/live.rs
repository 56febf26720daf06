//! Answers from a live mount (issue 15 §2): `list` and `health` answered by a running mount's
//! `.mlxfs/catalog.json` print exactly what the disk path prints; a change made just before
//! the command is in the answer (the barrier, no sleep); other sources, a mount that cannot
//! prove currency, a dead or hung daemon and the off switch all mean the disk.

use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::cli::*;
use crate::support::mnt::*;
use crate::support::*;

/// A small catalog with every kind of model `list` tells apart, and no link out of it.
fn catalog() -> Fx {
    let fx = Fx::new();
    fx.hub_model("mlx-community/Tiny-4bit", &good_files());
    fx.hub_snapshot(
        "acme/model",
        "1111111111111111111111111111111111111111",
        &good_files(),
        false,
    );
    let mut v2 = good_files();
    v2.push(("README.md".into(), b"# v2".to_vec()));
    fx.hub_snapshot(
        "acme/model",
        "2222222222222222222222222222222222222222",
        &v2,
        true,
    );
    // Broken: a blob went missing (a dangling link inside the hub cache).
    let snap = fx.hub_model("acme/broken", &good_files());
    fs::remove_file(snap.join(fs::read_link(snap.join("model.safetensors")).unwrap())).unwrap();
    fx.workspace("plain", &good_files());
    let ws = fx.workspace("managed", &good_files());
    managed_sentinel(&ws, "");
    mlxfs::hash::sentinel::recalc(&ws).unwrap();
    fx.linked_workspace("linked");
    fx
}

fn run(fx: &Fx, args: &[&str], env: &[(&str, &str)]) -> Output {
    mlxfs(fx).args(args).envs(env.iter().copied()).out()
}

/// `args` through the mount (debug on: stderr says where from) and from the disk.
fn both(fx: &Fx, args: &[&str]) -> (Output, Output) {
    let live = run(fx, args, &[("MLXFS_MOUNT_ANSWERS", "debug")]);
    let mut disk_args = args.to_vec();
    disk_args.push("--from-disk");
    let disk = run(fx, &disk_args, &[]);
    (live, disk)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn from_mount(o: &Output) -> bool {
    stderr(o).contains("answered by the live mount")
}

/// `args` with a live mount allowed and from the disk: the same output, answered by the mount
/// (`by_mount`) or not. Returns the first.
fn same_answer(fx: &Fx, args: &[&str], by_mount: bool) -> Output {
    let (live, disk) = both(fx, args);
    assert_eq!(from_mount(&live), by_mount, "{args:?}: {}", stderr(&live));
    assert_eq!(
        String::from_utf8_lossy(&live.stdout),
        String::from_utf8_lossy(&disk.stdout),
        "{args:?}"
    );
    live
}

/// `live` was answered by the mount, the same as `disk` from the disk (`at` names the case).
#[track_caller]
fn mount_answered(live: &Output, disk: &Output, at: &str) {
    assert!(from_mount(live), "{at}: {}", stderr(live));
    assert_eq!(
        String::from_utf8_lossy(&live.stdout),
        String::from_utf8_lossy(&disk.stdout),
        "{at}"
    );
}

/// The test catalog and a mount of it.
fn mounted_catalog() -> (Fx, Mount) {
    let fx = catalog();
    let m = Mount::start(&fx, &[]);
    (fx, m)
}

/// `list --json --all` answered by the mount, the same as from the disk (`at` names the case).
#[track_caller]
fn all_listed_by_mount(fx: &Fx, at: &str) {
    let (live, disk) = both(fx, &["list", "--json", "--all"]);
    mount_answered(&live, &disk, at);
}

/// `live` was answered from the disk, saying `why`, the same as `disk`.
#[track_caller]
fn disk_answered(live: &Output, disk: &Output, why: &str) {
    assert!(!from_mount(live), "{}", stderr(live));
    assert!(stderr(live).contains(why), "{}", stderr(live));
    assert_eq!(live.stdout, disk.stdout);
}

fn catalog_json(m: &Mount) -> Value {
    serde_json::from_slice(&fs::read(m.p(".mlxfs/catalog.json")).unwrap()).unwrap()
}

#[test]
fn answers_equal_the_disk_for_every_flag() {
    crate::require!(Fuse);
    let (fx, m) = mounted_catalog();
    let c = catalog_json(&m);
    assert_eq!(c["current"], true, "{c}");
    let mut combos: Vec<Vec<&str>> = Vec::new();
    for flags in [
        &[][..],
        &["--all"],
        &["--health"],
        &["--verbose"],
        &["--all", "--health", "--verbose"],
        &["--full-paths"],
        &["--origin", "--all"],
        &["--health", "--full-paths", "--origin"],
    ] {
        let mut l = vec!["list"];
        l.extend_from_slice(flags);
        combos.push(l.clone());
        l.push("--json");
        combos.push(l);
    }
    combos.push(vec!["ls", "--all"]);
    combos.push(vec!["health"]);
    combos.push(vec!["health", "--json"]);
    combos.push(vec!["--json", "health"]);
    for args in &combos {
        let (live, disk) = both(&fx, args);
        assert!(from_mount(&live), "{args:?}: {}", stderr(&live));
        assert_eq!(live.status.code(), disk.status.code(), "{args:?}");
        assert!(!live.stdout.is_empty(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&live.stdout),
            String::from_utf8_lossy(&disk.stdout),
            "{args:?}"
        );
    }
    // What the mount cannot answer is read from the disk (and is the same).
    for args in [
        &["list", "Tiny"][..],
        &["list", "--json", "managed"],
        &["health", "plain"],
        &["health", "--verbose"],
    ] {
        let (live, disk) = both(&fx, args);
        assert!(!from_mount(&live), "{args:?}: {}", stderr(&live));
        assert!(
            stderr(&live).contains("from disk"),
            "{args:?}: {}",
            stderr(&live)
        );
        assert_eq!(live.stdout, disk.stdout, "{args:?}");
    }
    // The off switch.
    let o = run(&fx, &["list", "--json"], &[("MLXFS_MOUNT_ANSWERS", "off")]);
    assert!(o.status.success());
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let o = run(
        &fx,
        &["list", "--from-disk"],
        &[("MLXFS_MOUNT_ANSWERS", "debug")],
    );
    assert!(
        stderr(&o).contains("from disk (asked to)"),
        "{}",
        stderr(&o)
    );
}

/// A change made just before the command is in its answer: no sleep anywhere (the barrier
/// drains inotify inside the open of catalog.json), over many rounds of different changes.
#[test]
fn a_change_just_made_is_in_the_answer() {
    crate::require!(Fuse);
    let (fx, m) = mounted_catalog();
    let plain = fx.ws_home.join("plain");
    let mut builds = Vec::new();
    for i in 0..24 {
        match i % 6 {
            // A workspace stops being one, then is one again.
            0 => fs::rename(plain.join("config.json"), plain.join("config.off")).unwrap(),
            1 => fs::rename(plain.join("config.off"), plain.join("config.json")).unwrap(),
            // A file edited in place (same inode): another model type.
            2 => fs::write(
                plain.join("config.json"),
                format!("{{\"model_type\": \"llama\", \"hidden_size\": {i}}}"),
            )
            .unwrap(),
            // A new hub model, fully laid out.
            3 => {
                fx.hub_model(&format!("new/model-{i}"), &good_files());
            }
            // A new workspace, then a file removed from one (unhealthy now).
            4 => {
                fx.workspace(&format!("ws-{i}"), &good_files());
            }
            _ => fs::remove_file(
                fx.ws_home
                    .join(format!("ws-{}", i - 1))
                    .join("model.safetensors"),
            )
            .unwrap(),
        }
        all_listed_by_mount(&fx, &format!("round {i}"));
        let (live, disk) = both(&fx, &["health", "--json"]);
        mount_answered(&live, &disk, &format!("round {i}"));
        builds.push(catalog_json(&m)["build"].as_u64().unwrap());
    }
    // Each round rebuilt at least once.
    assert!(builds.windows(2).all(|w| w[1] > w[0]), "{builds:?}");
    // Without changes the same build answers, rendered once.
    let a = catalog_json(&m)["build"].clone();
    let b = catalog_json(&m)["build"].clone();
    assert_eq!(a, b);
}

#[test]
fn other_sources_and_unprovable_mounts_mean_the_disk() {
    crate::require!(Fuse);
    let (fx, m) = mounted_catalog();
    // Another catalog: the mount over fx is not asked for it.
    let other = catalog();
    other.workspace("only-here", &good_files());
    let live = same_answer(&other, &["list", "--json"], false);
    assert!(
        String::from_utf8_lossy(&live.stdout).contains("only-here"),
        "the other catalog's own answer"
    );
    // Same hub cache, but another workspace home.
    let (live, _) = {
        let mut c = mlxfs(&fx);
        c.args(["list", "--json"])
            .env("MLXK_WORKSPACE_HOME", &other.ws_home)
            .env("MLXFS_MOUNT_ANSWERS", "debug");
        (c.output().unwrap(), ())
    };
    assert!(!from_mount(&live), "{}", stderr(&live));
    // The same folders named through a link: the same sources.
    let alias = fx.tmp.path().join("alias");
    symlink(&fx.ws_home, &alias).unwrap();
    let mut c = mlxfs(&fx);
    c.args(["list", "--json"])
        .env("MLXK_WORKSPACE_HOME", &alias)
        .env("MLXFS_MOUNT_ANSWERS", "debug");
    let live = c.output().unwrap();
    assert!(from_mount(&live), "{}", stderr(&live));

    // A link out of a model: what happens where it leads sends no event, so the mount
    // cannot prove anything and says why.
    symlink("/etc/hostname", fx.ws_home.join("plain/escape")).unwrap();
    let (live, disk) = both(&fx, &["list", "--json", "--all"]);
    disk_answered(&live, &disk, "leads out of the watched folders");
    let c = catalog_json(&m);
    assert_eq!(c["current"], false);
    assert!(c.get("list").is_none(), "no data when not current");
    fs::remove_file(fx.ws_home.join("plain/escape")).unwrap();
    same_answer(&fx, &["list", "--json", "--all"], true);
}

#[test]
fn a_dead_or_hung_daemon_means_the_disk_soon() {
    crate::require!(Fuse);
    let (fx, mut m) = mounted_catalog();
    let pid = m.pid() as i32;
    // Hung: the daemon stopped. The command waits a bounded time, then reads the disk.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t = Instant::now();
    let (live, disk) = both(&fx, &["list", "--json"]);
    let took = t.elapsed();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    disk_answered(&live, &disk, "did not answer");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Answers again once it runs.
    let (live, _) = both(&fx, &["list", "--json"]);
    assert!(from_mount(&live), "{}", stderr(&live));
    // Dead: killed, the mount left behind (ENOTCONN).
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    let (live, disk) = both(&fx, &["list", "--json"]);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!from_mount(&live), "{}", stderr(&live));
    assert_eq!(live.stdout, disk.stdout);
    assert!(live.status.success());
    drop(m);
    // Unmounted.
    same_answer(&fx, &["health", "--json"], false);
}

/// Reading through the mount writes nothing in the catalog.
#[test]
fn answers_write_nothing() {
    crate::require!(Fuse);
    let (fx, m) = mounted_catalog();
    let before = snapshot(fx.tmp.path(), &m.dir);
    for _ in 0..3 {
        let (live, _) = both(&fx, &["list", "--json"]);
        assert!(from_mount(&live), "{}", stderr(&live));
    }
    assert_eq!(before, snapshot(fx.tmp.path(), &m.dir));
}

/// Every path below `root` (never into `skip`) with its size and mtime.
fn snapshot(root: &Path, skip: &Path) -> Vec<(String, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p == skip || p.extension().is_some_and(|x| x == "log") {
                continue;
            }
            let md = fs::symlink_metadata(&p).unwrap();
            out.push((p.to_string_lossy().into_owned(), md.len(), md.mtime()));
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A file with a second name outside the watched folders, changed through that name: the
/// folder holding the model's name hears nothing, so the file itself is watched.
#[test]
fn a_hard_link_changed_from_outside_is_seen() {
    crate::require!(Fuse);
    let fx = catalog();
    let outside = fx.tmp.path().join("outside-config.json");
    fs::hard_link(fx.ws_home.join("plain/config.json"), &outside).unwrap();
    let _m = Mount::start(&fx, &[]);
    for i in 0..6 {
        let cfg = if i % 2 == 0 {
            "{\"model_type\": \"bert\", \"architectures\": [\"BertModel\"]}".to_string()
        } else {
            format!("{{\"model_type\": \"llama\", \"n\": {i}}}")
        };
        fs::write(&outside, cfg).unwrap();
        all_listed_by_mount(&fx, &format!("round {i}"));
    }
}

/// A file system mounted inside a watched folder sends no inotify event, and neither do
/// writes in its root until it is watched: the mount table is part of the barrier.
#[test]
fn a_file_system_mounted_inside_is_seen() {
    crate::require!(Fuse, Root);
    let (fx, _m) = mounted_catalog();
    let (live, _) = both(&fx, &["list", "--json"]);
    assert!(from_mount(&live), "{}", stderr(&live));
    let dir = fx.ws_home.join("on-tmpfs");
    fs::create_dir(&dir).unwrap();
    let (live, _) = both(&fx, &["list", "--json"]);
    assert!(from_mount(&live), "{}", stderr(&live));
    let t = Tmpfs::new(dir.clone(), "size=1m");
    write_tree(&dir, &good_files());
    let (live, disk) = both(&fx, &["list", "--json"]);
    mount_answered(&live, &disk, "");
    assert!(String::from_utf8_lossy(&disk.stdout).contains("on-tmpfs"));
    // Its files now change with events.
    fs::remove_file(dir.join("model.safetensors")).unwrap();
    same_answer(&fx, &["list", "--json", "--all"], true);
    drop(t);
}

/// Sources named through links, the links re-pointed (outside the watched folders: no
/// event). The workspace home is resolved once when the mount starts, so the mount now shows
/// other folders than the command would: the disk answers. The hub cache is followed by its
/// path: the barrier sees its root lead elsewhere, rescans, and answers for the new folder.
#[test]
fn re_pointed_source_links() {
    crate::require!(Fuse);
    let mut fx = catalog();
    let other_home = fx.tmp.path().join("other-home");
    write_tree(&other_home.join("elsewhere"), &good_files());
    let other_hf = fx.tmp.path().join("other-hf");
    cache_snapshot(
        &other_hf.join("hub"),
        "other/hub-model",
        "3333333333333333333333333333333333333333",
        &good_files(),
        true,
    );
    let ws_link = fx.tmp.path().join("home-link");
    symlink(&fx.ws_home, &ws_link).unwrap();
    fx.ws_home = ws_link.clone();
    let hf_link = fx.tmp.path().join("hf-link");
    symlink(&fx.hf_home, &hf_link).unwrap();
    fx.hf_home = hf_link.clone();
    let _m = Mount::start(&fx, &[]);
    same_answer(&fx, &["list", "--json"], true);
    // Atomically: a new link renamed over the old one.
    let repoint = |link: &Path, to: &Path| {
        let tmp = link.with_extension("new");
        symlink(to, &tmp).unwrap();
        fs::rename(&tmp, link).unwrap();
    };
    repoint(&hf_link, &other_hf);
    let (live, disk) = both(&fx, &["list", "--json"]);
    mount_answered(&live, &disk, "");
    assert!(String::from_utf8_lossy(&disk.stdout).contains("other/hub-model"));
    repoint(&ws_link, &other_home);
    let (live, disk) = both(&fx, &["list", "--json"]);
    assert!(stderr(&live).contains("other sources"), "{}", stderr(&live));
    assert!(String::from_utf8_lossy(&disk.stdout).contains("elsewhere"));
    assert_eq!(live.stdout, disk.stdout);
}

/// Workspaces moved elsewhere and linked back: their real folders are watched (a new one as
/// soon as the link appears), so changes there are in the next answer.
#[test]
fn relocated_models_are_watched() {
    crate::require!(Fuse);
    let fx = catalog();
    let away = fx.tmp.path().join("other-disk");
    write_tree(&away.join("moved"), &good_files());
    symlink(away.join("moved"), fx.ws_home.join("moved")).unwrap();
    let _m = Mount::start(&fx, &[]);
    for i in 0..4 {
        // A change inside the relocated folder.
        fs::write(
            away.join("moved/config.json"),
            format!("{{\"model_type\": \"llama\", \"n\": {i}}}"),
        )
        .unwrap();
        // A new relocated workspace, changed right after its link appears.
        let name = format!("late-{i}");
        write_tree(&away.join(&name), &good_files());
        symlink(away.join(&name), fx.ws_home.join(&name)).unwrap();
        fs::remove_file(away.join(&name).join("model.safetensors")).unwrap();
        all_listed_by_mount(&fx, &format!("round {i}"));
        // Changed again after it was answered once.
        write_tree(&away.join(&name), &good_files());
        all_listed_by_mount(&fx, &format!("round {i}"));
    }
}

/// Another file system mounted over the mount point, holding a well-formed but false reply
/// (a model removed): its files are not the mount's (device number), so the disk answers.
#[test]
fn a_file_system_over_the_mount_is_not_believed() {
    crate::require!(Fuse, Root);
    let (fx, m) = mounted_catalog();
    let mut reply = catalog_json(&m);
    assert_eq!(reply["current"], true);
    let status = fs::read(m.p(".mlxfs/status.json")).unwrap();
    let models = reply["list"]["models"].as_array_mut().unwrap();
    models.pop();
    reply["list"]["count"] = models.len().into();
    let cover = Tmpfs::new(m.dir.clone(), "size=4m");
    fs::create_dir_all(m.p(".mlxfs")).unwrap();
    fs::write(m.p(".mlxfs/status.json"), status).unwrap();
    fs::write(
        m.p(".mlxfs/catalog.json"),
        serde_json::to_vec(&reply).unwrap(),
    )
    .unwrap();
    let (live, disk) = both(&fx, &["list", "--json"]);
    disk_answered(&live, &disk, "not a file of the mlxfs mount");
    drop(cover);
}

/// The same hub cache spelled another way by the reader (its `HF_HOME` or `HF_HUB_CACHE` is a
/// link to the mount's): the sources are equal once canonicalised, so the mount answers — but
/// `list` prints each hub model's path as the reader spells its cache, and the answer must be
/// what the disk path prints for this reader, byte for byte.
#[test]
fn a_hub_cache_spelled_through_a_link_prints_the_readers_paths() {
    crate::require!(Fuse);
    let mut fx = catalog();
    let _m = Mount::start(&fx, &[]);
    let hf_link = fx.tmp.path().join("hf-alias");
    symlink(&fx.hf_home, &hf_link).unwrap();
    fx.hf_home = hf_link;
    for args in [&["list", "--json"][..], &["list", "--full-paths"][..]] {
        let (live, disk) = both(&fx, args);
        assert!(
            String::from_utf8_lossy(&disk.stdout).contains("hf-alias"),
            "{}",
            String::from_utf8_lossy(&disk.stdout)
        );
        assert_eq!(
            String::from_utf8_lossy(&live.stdout),
            String::from_utf8_lossy(&disk.stdout),
            "{args:?}: {}",
            stderr(&live)
        );
    }
}
