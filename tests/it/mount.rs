//! Real FUSE mounts (root and /dev/fuse required, as on CI): tree shape, virtual files,
//! byte-identical reads and mmap in both read modes, EROFS, live updates and the lifecycle.

use serde_json::Value;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::*;
use crate::support::mnt::*;
use crate::support::python::test_python;
use crate::support::*;
use sha2::{Digest, Sha256};

fn sha(p: &Path) -> String {
    let b = fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Sha256::digest(&b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222";

/// Hub models with two snapshots, a collision, broken models, and workspaces with links.
fn fleet() -> Fx {
    let fx = Fx::new();
    let mut v1 = good_files();
    v1.push(("sub/extra.txt".into(), b"nested".to_vec()));
    fx.hub_snapshot("acme/model", OLD, &v1, false);
    std::thread::sleep(Duration::from_millis(10));
    let mut v2 = good_files();
    v2.push(("README.md".into(), b"# v2".to_vec()));
    fx.hub_snapshot("acme/model", NEW, &v2, true);
    fx.hub_model("mlx-community/Tiny-4bit", &good_files());
    // A broken hub model: a blob went missing.
    let snap = fx.hub_model("acme/broken", &good_files());
    fs::remove_file(snap.join(fs::read_link(snap.join("model.safetensors")).unwrap())).unwrap();
    // Leftovers of an interrupted download.
    fs::write(
        fx.hub().join("models--acme--model/blobs/feed.incomplete"),
        b"half",
    )
    .unwrap();
    // Workspaces: one named like the org, one managed with links.
    fx.workspace("acme", &good_files());
    let ws = fx.linked_workspace("linked-ws");
    managed_sentinel(&ws, "");
    mlxfs::hash::sentinel::recalc(&ws).unwrap();
    symlink("/etc/hostname", ws.join("escape")).unwrap();
    fx
}

#[test]
fn tree_shape_and_attributes() {
    crate::require!(Fuse);
    let fx = fleet();
    let m = Mount::start(&fx, &[]);
    assert_eq!(
        names(&m.dir),
        [".mlxfs", "acme", "acme@hub", "linked-ws", "mlx-community"]
    );
    assert_eq!(
        names(&m.p("acme@hub")),
        ["broken", "model", "model@1111111"]
    );
    // A model's virtual .mlxfs/ is not listed (copies would take it along); it answers by
    // name (listed below).
    assert_eq!(
        names(&m.p("acme@hub/model")),
        [
            "README.md",
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    assert_eq!(names(&m.p("acme@hub/model@1111111/sub")), ["extra.txt"]);
    assert_eq!(
        names(&m.p(".mlxfs")),
        ["catalog.json", "health", "models.json", "status.json"]
    );
    assert_eq!(
        names(&m.p("acme/.mlxfs")),
        [
            "hash",
            "health",
            "model.json",
            "runtime-cache.json",
            "sentinel.json"
        ]
    );
    // The broken model's missing blob is not shown; the rest is.
    assert!(!names(&m.p("acme@hub/broken")).contains(&"model.safetensors".to_string()));
    // Links inside a workspace stay links (relative); links out of it and OS junk are hidden.
    let ws = m.p("linked-ws");
    assert_eq!(
        fs::read_link(ws.join("model.safetensors")).unwrap(),
        Path::new("weights/model.safetensors")
    );
    assert!(fs::symlink_metadata(ws.join("escape")).is_err());
    assert!(fs::symlink_metadata(ws.join(".DS_Store")).is_err());
    assert_eq!(
        fs::read(ws.join("model.safetensors")).unwrap(),
        tiny_weights()
    );
    // Sizes and mtimes of the backing files; hub files are regular files.
    let real = fx
        .hub()
        .join("models--acme--model/snapshots")
        .join(NEW)
        .join("config.json");
    let (a, b) = (
        fs::metadata(m.p("acme@hub/model/config.json")).unwrap(),
        fs::metadata(&real).unwrap(),
    );
    assert!(
        fs::symlink_metadata(m.p("acme@hub/model/config.json"))
            .unwrap()
            .is_file()
    );
    assert_eq!(
        (a.len(), a.mtime(), a.mtime_nsec()),
        (b.len(), b.mtime(), b.mtime_nsec())
    );
    // Modes: a backed file's own (the blob's); made-up folders 0755; virtual files 0444.
    assert_eq!(a.mode() & 0o7777, b.mode() & 0o7777);
    assert_eq!(
        fs::metadata(m.p("acme@hub")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(m.p("acme/.mlxfs/health")).unwrap().mode() & 0o7777,
        0o444
    );
    // Directory link counts: 2 + sub-folders.
    assert_eq!(fs::metadata(m.p("acme@hub")).unwrap().nlink(), 5);
    assert_eq!(
        fs::metadata(m.p("acme@hub/model@1111111")).unwrap().nlink(),
        4
    );
    // Inode numbers are stable between lookups.
    assert_eq!(
        fs::metadata(m.p("acme@hub/model")).unwrap().ino(),
        fs::metadata(m.p("acme@hub/model/.")).unwrap().ino()
    );
    // find, du and cp -r behave as on a normal read-only folder.
    let find = Command::new("find").arg(&m.dir).output().unwrap();
    assert!(find.status.success());
    let found = String::from_utf8_lossy(&find.stdout).lines().count();
    assert!(found > 30, "{found}");
    assert!(
        Command::new("du")
            .arg("-s")
            .arg(&m.dir)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let copy = fx.tmp.path().join("copy");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(m.p("acme@hub/model"))
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        sha(&copy.join("model.safetensors")),
        sha(&m.p("acme@hub/model/model.safetensors"))
    );
    // Finder probes: a fast ENOENT, even at the root.
    assert!(fs::metadata(m.p(".Spotlight-V100")).is_err());
    assert!(fs::metadata(m.p("acme/._config.json")).is_err());
    // Names in the tree are names `show` accepts.
    for name in [
        "acme",
        "acme@hub/model",
        "acme@hub/model@1111111",
        "mlx-community/Tiny-4bit",
    ] {
        let o = mlxfs(&fx).args(["show", name, "--json"]).output().unwrap();
        assert!(
            o.status.success(),
            "show {name}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

#[test]
fn virtual_files_render_the_catalog() {
    crate::require!(Fuse);
    let fx = fleet();
    let m = Mount::start(&fx, &[]);
    // models.json is exactly `mlxfs list --json`.
    let list = mlxfs(&fx).args(["list", "--json"]).output().unwrap();
    assert_eq!(fs::read(m.p(".mlxfs/models.json")).unwrap(), list.stdout);
    // Sizes in stat match the content.
    for rel in [
        ".mlxfs/models.json",
        ".mlxfs/health",
        "acme/.mlxfs/model.json",
        "linked-ws/.mlxfs/hash",
    ] {
        assert_eq!(
            fs::metadata(m.p(rel)).unwrap().len(),
            fs::read(m.p(rel)).unwrap().len() as u64,
            "{rel}"
        );
    }
    let fleet = fs::read_to_string(m.p(".mlxfs/health")).unwrap();
    assert!(fleet.contains("acme\thealthy\n"), "{fleet}");
    assert!(fleet.contains("acme@hub/model\thealthy\n"), "{fleet}");
    assert!(
        fleet.contains("acme@hub/broken\tunhealthy: Dangling symlinks: model.safetensors\n"),
        "{fleet}"
    );
    assert_eq!(
        fs::read_to_string(m.p("acme@hub/model/.mlxfs/health")).unwrap(),
        "healthy\n"
    );
    assert_eq!(
        fs::read_to_string(m.p("linked-ws/.mlxfs/health")).unwrap(),
        "unhealthy: Symlinks pointing outside the model folder: escape\n"
    );
    assert_eq!(
        fs::read_to_string(m.p("acme@hub/model/.mlxfs/hash")).unwrap(),
        format!("{NEW} pinned\n")
    );
    assert_eq!(
        fs::read_to_string(m.p("acme@hub/model@1111111/.mlxfs/hash")).unwrap(),
        format!("{OLD} pinned\n")
    );
    // linked-ws has a link that leaves it: its hash cannot be computed.
    let h = fs::read_to_string(m.p("linked-ws/.mlxfs/hash")).unwrap();
    assert!(
        h.starts_with("unknown: symlink escape points outside"),
        "{h}"
    );
    assert_eq!(
        fs::read_to_string(m.p("acme/.mlxfs/hash"))
            .unwrap()
            .split(':')
            .next(),
        Some("unknown")
    );
    // sentinel.json: as stored for a workspace; an origin record for a hub model.
    assert_eq!(
        fs::read(m.p("linked-ws/.mlxfs/sentinel.json")).unwrap(),
        fs::read(fx.ws_home.join("linked-ws/.mlxk_workspace.json")).unwrap()
    );
    let origin: Value =
        serde_json::from_slice(&fs::read(m.p("acme@hub/model/.mlxfs/sentinel.json")).unwrap())
            .unwrap();
    assert_eq!(
        origin,
        serde_json::json!({"source_repo": "acme/model", "source_revision": NEW, "managed": false})
    );
    // model.json is `show --json`'s model.
    let show: Value = serde_json::from_slice(
        &mlxfs(&fx)
            .args(["show", "acme@hub/model@1111111", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mj: Value =
        serde_json::from_slice(&fs::read(m.p("acme@hub/model@1111111/.mlxfs/model.json")).unwrap())
            .unwrap();
    assert_eq!(mj, show["data"]["model"]);
    assert_eq!(mj["revision"], OLD);
    // A model folder inside the mount stands for the model it shows (show, list by path).
    let shown: Value = serde_json::from_slice(
        &mlxfs(&fx)
            .arg("show")
            .arg(m.p("acme@hub/model"))
            .arg("--json")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(shown["data"]["model"]["name"], "acme/model");
    assert_eq!(shown["data"]["model"]["revision"], NEW);
    let listed: Value = serde_json::from_slice(
        &mlxfs(&fx)
            .arg("list")
            .arg(format!("{}/", m.dir.display()))
            .arg("--json")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let ws_path = fx.ws_home.join("linked-ws");
    assert!(
        listed["data"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["path"] == ws_path.to_string_lossy().as_ref()),
        "{listed}"
    );
    // status.json says how reads are served.
    let st = m.status();
    assert_eq!(st["models"], 6);
    assert!(st["read_mode"] == "passthrough" || st["read_mode"] == "daemon");
    // Reading in small pieces gives the same bytes as one read.
    let mut f = fs::File::open(m.p(".mlxfs/models.json")).unwrap();
    let mut buf = [0u8; 7];
    let pieces: Vec<u8> = std::iter::from_fn(|| {
        use std::io::Read;
        let n = f.read(&mut buf).unwrap();
        (n > 0).then(|| buf[..n].to_vec())
    })
    .flatten()
    .collect();
    assert_eq!(pieces, list.stdout);
}

/// A file of `mb` MiB with content that differs per 4 KiB page.
fn big_file(path: &Path, mb: usize) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let mut page = vec![0u8; 1 << 20];
    for i in 0..mb {
        for (j, chunk) in page.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&((i as u64) << 32 | j as u64).to_le_bytes());
        }
        f.write_all(&page).unwrap();
    }
}

/// 8 threads mmap the file and compare random 4 KiB pages with the backing file.
fn mmap_check(through: &Path, backing: &Path, seconds_budget: u64) {
    let len = fs::metadata(backing).unwrap().len() as usize;
    let start = Instant::now();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (through, backing) = (through.to_path_buf(), backing.to_path_buf());
            std::thread::spawn(move || {
                use std::os::unix::fs::FileExt;
                let f = fs::File::open(&through).unwrap();
                let real = fs::File::open(&backing).unwrap();
                let p = map_shared(&f, len);
                assert_ne!(p, libc::MAP_FAILED, "mmap failed");
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut want = vec![0u8; 4096];
                for _ in 0..2000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let page = (x as usize) % (len / 4096);
                    // SAFETY: page * 4096 + 4096 <= len.
                    let got = unsafe {
                        std::slice::from_raw_parts((p as *const u8).add(page * 4096), 4096)
                    };
                    real.read_exact_at(&mut want, (page * 4096) as u64).unwrap();
                    assert_eq!(got, &want[..], "page {page}");
                }
                // SAFETY: unmapping what we mapped.
                unsafe { libc::munmap(p, len) };
            })
        })
        .collect();
    for t in threads {
        t.join().expect("mmap reader failed");
    }
    assert!(
        start.elapsed() < Duration::from_secs(seconds_budget),
        "mmap reads took {:?}: a hang or a serialised read path",
        start.elapsed()
    );
}

fn reads_are_identical(extra: &[&str], want_mode: &str) {
    let fx = fleet();
    let ws = fx.workspace("big-ws", &good_files());
    big_file(&ws.join("weights.bin"), 256);
    let m = Mount::start(&fx, extra);
    let st = m.status();
    assert_eq!(st["read_mode"], want_mode, "{st}");
    let pairs = [
        (m.p("big-ws/weights.bin"), ws.join("weights.bin")),
        (
            m.p("acme@hub/model/model.safetensors"),
            fx.hub()
                .join("models--acme--model/snapshots")
                .join(NEW)
                .join("model.safetensors"),
        ),
        (
            m.p("acme@hub/model@1111111/sub/extra.txt"),
            fx.hub()
                .join("models--acme--model/snapshots")
                .join(OLD)
                .join("sub/extra.txt"),
        ),
        (
            m.p("linked-ws/weights/model.safetensors"),
            fx.ws_home.join("linked-ws/weights/model.safetensors"),
        ),
    ];
    for (through, direct) in &pairs {
        assert_eq!(sha(through), sha(direct), "{}", through.display());
        // Twice: the second read is served from the page cache.
        assert_eq!(sha(through), sha(direct), "{}", through.display());
    }
    mmap_check(&m.p("big-ws/weights.bin"), &ws.join("weights.bin"), 120);
}

#[test]
fn reads_with_passthrough() {
    crate::require!(Fuse, Root);
    reads_are_identical(&[], "passthrough");
}

#[test]
fn reads_through_the_daemon() {
    crate::require!(Fuse);
    reads_are_identical(&["--no-passthrough"], "daemon");
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn every_write_fails_with_erofs() {
    crate::require!(Fuse);
    let fx = fleet();
    let m = Mount::start(&fx, &[]);
    let file = m.p("acme/config.json");
    let dir = m.p("acme");
    let erofs = libc::EROFS;
    assert_eq!(
        errno_of(fs::write(m.p("acme/new.txt"), "x")),
        erofs,
        "create"
    );
    assert_eq!(
        errno_of(fs::OpenOptions::new().write(true).open(&file)),
        erofs,
        "open for write"
    );
    assert_eq!(
        errno_of(fs::OpenOptions::new().append(true).open(&file)),
        erofs,
        "append"
    );
    assert_eq!(errno_of(fs::create_dir(dir.join("d"))), erofs, "mkdir");
    assert_eq!(errno_of(fs::remove_file(&file)), erofs, "unlink");
    assert_eq!(
        errno_of(fs::remove_dir(m.p("acme@hub/model@1111111/sub"))),
        erofs,
        "rmdir"
    );
    assert_eq!(
        errno_of(fs::rename(&file, dir.join("c2.json"))),
        erofs,
        "rename"
    );
    assert_eq!(errno_of(symlink("x", dir.join("l"))), erofs, "symlink");
    assert_eq!(errno_of(fs::hard_link(&file, dir.join("h"))), erofs, "link");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        errno_of(fs::set_permissions(
            &file,
            fs::Permissions::from_mode(0o777)
        )),
        erofs,
        "chmod"
    );
    let c = CString::new(file.as_os_str().as_bytes()).unwrap();
    let rc = unsafe { libc::truncate(c.as_ptr(), 0) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(erofs)),
        "truncate"
    );
    let rc = unsafe { libc::utimes(c.as_ptr(), std::ptr::null()) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(erofs)),
        "utimes"
    );
    let rc = unsafe { libc::setxattr(c.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(erofs)),
        "setxattr"
    );
    // Mounting again on a live mount is refused, in the foreground and with --daemon.
    for extra in [&[][..], &["--daemon"]] {
        let o = mlxfs(&fx)
            .arg("mount")
            .arg(&m.dir)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("already a mount point"),
            "{extra:?}"
        );
    }
    // Nothing changed underneath.
    assert_eq!(
        fs::read(fx.ws_home.join("acme/config.json")).unwrap(),
        LLAMA_CONFIG.as_bytes()
    );
}

fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("not within 3 s: {what}");
}

#[test]
fn live_updates() {
    crate::require!(Fuse);
    let fx = fleet();
    let m = Mount::start(&fx, &[]);
    let ino_before = fs::metadata(m.p("acme@hub/model/config.json"))
        .unwrap()
        .ino();
    // Listings the kernel has cached (FOPEN_CACHE_DIR, kept across opens) must follow every
    // change below, not only lookups of a name.
    let root_before = names(&m.p(""));
    assert!(!root_before.contains(&"fresh".to_string()));
    assert!(!root_before.contains(&"newco".to_string()));
    let acme_before = names(&m.p("acme@hub"));
    // A workspace copied into the home appears; its files are readable.
    let staged = fx.tmp.path().join("incoming");
    write_tree(&staged, &good_files());
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&staged)
            .arg(fx.ws_home.join("fresh"))
            .status()
            .unwrap()
            .success()
    );
    eventually("new workspace listed", || {
        names(&m.p("")).contains(&"fresh".to_string())
    });
    eventually("new workspace visible", || {
        m.p("fresh/config.json").exists()
    });
    assert_eq!(
        fs::read(m.p("fresh/model.safetensors")).unwrap(),
        tiny_weights()
    );
    eventually("models.json lists it", || {
        fs::read_to_string(m.p(".mlxfs/models.json"))
            .unwrap()
            .contains("/workspaces/fresh")
    });
    // A pulled hub model appears.
    fx.hub_model("newco/pulled", &good_files());
    eventually("new hub model listed", || {
        names(&m.p("")).contains(&"newco".to_string())
    });
    eventually("new hub model visible", || {
        m.p("newco/pulled/model.safetensors").exists()
    });
    // An edit inside a managed workspace flips its hash status.
    let ws = fx.workspace("managed", &good_files());
    managed_sentinel(&ws, "");
    mlxfs::hash::sentinel::recalc(&ws).unwrap();
    eventually("managed workspace listed", || m.p("managed").is_dir());
    let managed_before = names(&m.p("managed"));
    assert!(!managed_before.contains(&"notes.txt".to_string()));
    eventually("managed workspace clean", || {
        fs::read_to_string(m.p("managed/.mlxfs/hash")).is_ok_and(|h| h.ends_with(" clean\n"))
    });
    fs::write(ws.join("notes.txt"), "edited").unwrap();
    eventually("edit listed", || {
        names(&m.p("managed")).contains(&"notes.txt".to_string())
    });
    eventually("edit visible", || m.p("managed/notes.txt").exists());
    eventually("hash modified", || {
        fs::read_to_string(m.p("managed/.mlxfs/hash"))
            .is_ok_and(|h| h.contains(" modified (sentinel sha256:"))
    });
    // Staging folders never appear.
    fx.workspace(".mlxfs-staging-x", &good_files());
    std::thread::sleep(Duration::from_millis(600));
    assert!(!m.p(".mlxfs-staging-x").exists());
    // Removal.
    fs::remove_dir_all(fx.ws_home.join("fresh")).unwrap();
    eventually("removed workspace gone", || !m.p("fresh").exists());
    eventually("removed workspace unlisted", || {
        !names(&m.p("")).contains(&"fresh".to_string())
    });
    // An unchanged folder lists the same after all these refreshes.
    assert_eq!(names(&m.p("acme@hub")), acme_before);
    // Unchanged paths keep their inode numbers across refreshes.
    assert_eq!(
        fs::metadata(m.p("acme@hub/model/config.json"))
            .unwrap()
            .ino(),
        ino_before
    );
}

#[test]
fn sigterm_unmounts_quickly() {
    crate::require!(Fuse);
    let fx = fleet();
    let mut m = Mount::start(&fx, &[]);
    let start = Instant::now();
    unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) };
    let status = m.child.as_mut().unwrap().wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(!mounted(&m.dir));
    assert!(names(&m.dir).is_empty());
}

#[test]
fn stale_mount_is_recovered_and_busy_umount_is_lazy() {
    crate::require!(Fuse);
    let fx = fleet();
    let mut m = Mount::start(&fx, &[]);
    let mut c = m.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let err = fs::metadata(m.p("acme")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    // A new mount over the stale one clears it.
    let child = mlxfs(&fx)
        .arg("mount")
        .arg(&m.dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    m.child = Some(child);
    m.wait_ready();
    assert!(m.p("acme/config.json").exists());
    // `mlxfs umount` on a busy mount detaches it lazily; the open file keeps working.
    let f = fs::File::open(m.p("acme/config.json")).unwrap();
    let o = mlxfs(&fx).arg("umount").arg(&m.dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!mounted(&m.dir));
    let mut s = String::new();
    use std::io::Read;
    (&f).read_to_string(&mut s).unwrap();
    assert_eq!(s, LLAMA_CONFIG);
    drop(f);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = m.child.as_mut().unwrap().try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        m.child.as_mut().unwrap().try_wait().unwrap().is_some(),
        "daemon still running after umount"
    );
}

#[test]
fn mount_errors_are_clear() {
    let fx = Fx::new();
    let o = mlxfs(&fx)
        .args(["mount", "/nonexistent/mlxfs-mnt", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["type"], "mountpoint_missing");
    let full = fx.tmp.path().join("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("x"), "x").unwrap();
    let o = mlxfs(&fx).arg("mount").arg(&full).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    stderr_has(&o, "is not empty");
    let o = mlxfs(&fx).arg("umount").arg(&full).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a mount point"));
}

/// A mount point inside a folder the mount shows (the workspace home, a model folder, the
/// hub cache, through a link too), or above one (a hub cache not made yet), is refused
/// before anything is mounted: the daemon would read its own mount, and every `list` of
/// that home would wait for it, unkillably.
#[test]
fn a_mount_point_among_the_sources_is_refused() {
    let fx = Fx::new();
    fx.workspace("m", &good_files());
    fx.hub_model("org/h", &good_files());
    let inner = fx.ws_home.join("inner");
    let in_model = fx.ws_home.join("m/empty");
    let in_hub = fx.hub().join("empty");
    for d in [&inner, &in_model, &in_hub] {
        fs::create_dir_all(d).unwrap();
    }
    let link = fx.tmp.path().join("link-to-inner");
    std::os::unix::fs::symlink(&inner, &link).unwrap();
    let up = fx.tmp.path().join("up");
    fs::create_dir_all(&up).unwrap();
    let cases: [(&Path, Option<std::path::PathBuf>); 5] = [
        (&inner, None),
        (&in_model, None),
        (&in_hub, None),
        (&link, None),
        (&up, Some(up.join("hf"))),
    ];
    for (dir, hf_home) in cases {
        for daemon in [true, false] {
            let mut c = mlxfs(&fx);
            if let Some(h) = &hf_home {
                c.env("HF_HOME", h);
            }
            c.arg("mount").arg(dir).arg("--json");
            if daemon {
                c.arg("--daemon");
            }
            let child = c
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // A mount that is not refused would run (or hang) until killed.
            let pid = child.id() as i32;
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let watchdog = std::thread::spawn(move || {
                if rx.recv_timeout(Duration::from_secs(20)).is_err() {
                    // SAFETY: kill(2) on the child, which the main thread waits for.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            });
            let o = child.wait_with_output().unwrap();
            let _ = tx.send(());
            watchdog.join().unwrap();
            let case = format!("{} (daemon {daemon})", dir.display());
            assert_eq!(o.status.code(), Some(1), "{case}");
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            assert_eq!(v["error"]["type"], "mountpoint_in_sources", "{case}: {v}");
            assert!(
                !fs::read_to_string("/proc/self/mountinfo")
                    .unwrap()
                    .contains(&*dir.to_string_lossy()),
                "{case}: mounted"
            );
        }
    }
    assert!(!up.join("hf").exists());
}

#[test]
fn safetensors_loads_through_the_mount() {
    crate::require!(Fuse, Python);
    let python = test_python();
    let fx = fleet();
    let m = Mount::start(&fx, &[]);
    for rel in [
        "acme@hub/model/model.safetensors",
        "linked-ws/model.safetensors",
    ] {
        let o = Command::new(&python)
            .args([
                "-c",
                "import sys; from safetensors.numpy import load_file; t = load_file(sys.argv[1]); print(sorted(t), t['w'].shape, float(t['w'].sum()))",
            ])
            .arg(m.p(rel))
            .succeeds();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "['w'] (2, 2) 0.0"
        );
    }
}

/// Issue 9's example, as a user would type it: a snapshot name with a multi-byte character
/// across byte 7 used to kill `mount --daemon` (exit status 101, a panic in the tree build).
#[test]
fn the_issue_example_mounts_as_a_daemon() {
    crate::require!(Fuse);
    let fx = Fx::new();
    for snap in ["1234567890abcdef", "abcdefé12"] {
        write_tree(
            &fx.hub().join("models--org--m/snapshots").join(snap),
            &files(&[("config.json", b"{\"model_type\":\"llama\"}\n")]),
        );
    }
    crate::support::hostile_trees::set_mtime(
        &fx.hub().join("models--org--m/snapshots/abcdefé12"),
        1_546_300_800,
    );
    let mnt = fx.tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    mlxfs(&fx).args(["mount", "--daemon"]).arg(&mnt).succeeds();
    let shown = names(&mnt.join("org"));
    let status: Value =
        serde_json::from_slice(&fs::read(mnt.join(".mlxfs/status.json")).unwrap()).unwrap();
    let health = fs::read_to_string(mnt.join("org/m@abcdefé/.mlxfs/health")).unwrap();
    let o = mlxfs(&fx).arg("umount").arg(&mnt).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(shown, ["m", "m@abcdefé"]);
    assert_eq!(status["models"], 2);
    assert_eq!(health, "unhealthy: No model weights found\n");
}

/// Every kind of input that once failed, and 40 generated hostile catalogs, in one real mount:
/// it comes up, and every folder lists, every entry stats, every link reads and every file
/// reads whole through it (within a deadline: nothing may hang either).
#[test]
fn hostile_trees_mount_and_every_file_reads() {
    crate::require!(Fuse);
    let fx = Fx::new();
    crate::support::hostile_trees::regression_tree(&fx.hub(), &fx.ws_home);
    for c in crate::support::hostile_trees::fixed_catalogs(40) {
        crate::support::hostile_trees::materialize_into(&c, &fx.hub(), &fx.ws_home);
    }
    let m = Mount::start(&fx, &[]);
    let dir = m.dir.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        fn walk(d: &Path, counts: &mut [usize; 3]) {
            for e in fs::read_dir(d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                let p = e.unwrap().path();
                let md =
                    fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                if md.is_dir() {
                    counts[0] += 1;
                    walk(&p, counts);
                } else if md.file_type().is_symlink() {
                    counts[1] += 1;
                    fs::read_link(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                } else {
                    counts[2] += 1;
                    let b = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    assert_eq!(b.len() as u64, md.len(), "{}", p.display());
                }
            }
        }
        let mut counts = [0usize; 3];
        walk(&dir, &mut counts);
        let _ = tx.send(counts);
    });
    let counts = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("walking the mount hung or panicked");
    assert!(counts[0] > 50 && counts[2] > 100, "{counts:?}");
    let status = m.status();
    let fleet = fs::read_to_string(m.p(".mlxfs/health")).unwrap();
    assert_eq!(
        fleet.lines().count() as u64,
        status["models"].as_u64().unwrap(),
        "one line per model, whatever the names:\n{fleet}"
    );
    assert!(
        !status["hidden"].as_array().unwrap().is_empty(),
        "{status:#}"
    );
    assert_eq!(status["refresh_error"], Value::Null);
    // The refresher survives a rescan of all this.
    fs::create_dir_all(fx.ws_home.join("late")).unwrap();
    fs::write(fx.ws_home.join("late/config.json"), "{}").unwrap();
    m.wait_for("late", "the tree stopped refreshing");
    assert!(!m.log().contains("panicked"), "{}", m.log());
}

/// A web of links inside a workspace (and a link out of the workspace home) never keeps the
/// watcher busy: new models still appear, and umount ends the daemon.
#[test]
fn links_never_stall_the_watcher() {
    crate::require!(Fuse);
    let fx = Fx::new();
    let ws = fx.workspace("good", &good_files());
    for i in 0..=40 {
        fs::create_dir_all(ws.join(format!("d{i}"))).unwrap();
    }
    for i in 0..40 {
        symlink(format!("../d{}", i + 1), ws.join(format!("d{i}/a"))).unwrap();
        symlink(format!("../d{}", i + 1), ws.join(format!("d{i}/b"))).unwrap();
    }
    let m = Mount::start(&fx, &[]);
    std::thread::sleep(Duration::from_millis(300));
    fx.workspace("new", &good_files());
    m.wait_for("new", "the watcher stalled");
}

/// `mount --daemon` through a link to an empty folder comes up (and `umount` through the same
/// link works); a link planted where the daemon log goes is replaced, not written through.
#[test]
fn a_link_mount_point_and_a_planted_log_link() {
    crate::require!(Fuse);
    let fx = Fx::new();
    fx.workspace("ws", &good_files());
    let real = fx.tmp.path().join("real-mnt");
    fs::create_dir_all(&real).unwrap();
    let link = fx.tmp.path().join("link-mnt");
    symlink(&real, &link).unwrap();
    let victim = fx.tmp.path().join("victim");
    fs::write(&victim, "keep me").unwrap();
    let state = fx.home.join(".local/state/mlxfs");
    fs::create_dir_all(&state).unwrap();
    for p in [&real, &link] {
        symlink(&victim, state.join(mlxfs::cli::mount::log_name(p))).unwrap();
    }
    mlxfs(&fx).args(["mount", "--daemon"]).arg(&link).succeeds();
    assert!(real.join("ws/config.json").exists());
    let o = mlxfs(&fx).arg("umount").arg(&link).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
}

#[test]
fn a_hub_models_runtime_cache_file_follows_its_state_folder() {
    crate::require!(Fuse);
    let fx = Fx::new();
    fx.hub_model("org/m", &good_files());
    // The per-model runtime cache exists before the mount (the watcher watches it then).
    let cache = fx.home.join(".local/state/mlxfs/hf-cache/models--org--m");
    fs::create_dir_all(cache.join("hub")).unwrap();
    let m = Mount::start(&fx, &[]);
    // The stated size is the content's. While the draft arrives the file changes between a
    // read and the stat after it (each sees its own version): they agree once it is stable.
    let read = || -> serde_json::Value {
        let p = m.p("org/m/.mlxfs/runtime-cache.json");
        let mut sizes = Vec::new();
        for _ in 0..50 {
            let bytes = fs::read(&p).unwrap();
            let stated = fs::metadata(&p).unwrap().len();
            if stated == bytes.len() as u64 {
                return serde_json::from_slice(&bytes).unwrap();
            }
            sizes.push((stated, bytes.len()));
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the stated size never matched the content: {sizes:?}");
    };
    let first = read();
    assert_eq!(first["dir"], cache.to_string_lossy().as_ref());
    assert_eq!(first["repos"], serde_json::json!([]));
    // A run downloads a draft there: the file says so within about a second.
    cache_snapshot(
        &cache.join("hub"),
        "org/draft",
        "0123456789abcdef0123456789abcdef01234567",
        &files(&[("config.json", b"{}")]),
        true,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = read();
        if now["repos"][0]["repo_id"] == "org/draft" {
            assert_eq!(now["offline_ready"], true);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {now}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A file replaced by rename (an edit saved by rename, a `refs/main` moved to another
/// snapshot by `pull --refresh`) keeps its path, hence its inode number. While some process
/// still holds the old file open (a server with the weights mapped), a new open of that path
/// must read the new file, as `stat` through the mount already says — not the backing file
/// the first open gave the kernel (passthrough shares one backing file per inode).
#[test]
fn a_file_replaced_while_held_open_reads_the_new_content() {
    crate::require!(Fuse);
    let fx = fleet();
    let ws = fx.workspace("held", &good_files());
    let old_config = fs::read(ws.join("config.json")).unwrap();
    let repo = "heldco/model";
    let first = "1".repeat(40);
    let second = "2".repeat(40);
    fx.hub_snapshot(repo, &first, &good_files(), true);
    let mut changed = good_files();
    for (name, bytes) in &mut changed {
        if name == "config.json" {
            *bytes = br#"{"model_type": "llama", "note": "the second snapshot"}"#.to_vec();
        }
    }
    fx.hub_snapshot(repo, &second, &changed, false);
    for extra in [&[][..], &["--no-passthrough"][..]] {
        let m = Mount::start(&fx, extra);
        // Workspace: a holder keeps config.json open; the file is replaced by rename.
        let held = fs::File::open(m.p("held/config.json")).unwrap();
        assert_eq!(fs::read(m.p("held/config.json")).unwrap(), old_config);
        let new = b"{\"model_type\": \"llama\", \"saved\": \"by rename\"}\n";
        fs::write(ws.join(".config.json.tmp"), new).unwrap();
        fs::rename(ws.join(".config.json.tmp"), ws.join("config.json")).unwrap();
        eventually("the new size through the mount", || {
            fs::metadata(m.p("held/config.json")).is_ok_and(|md| md.len() == new.len() as u64)
        });
        assert_eq!(
            String::from_utf8_lossy(&fs::read(m.p("held/config.json")).unwrap()),
            String::from_utf8_lossy(new),
            "{extra:?}: a new open of a workspace file replaced by rename reads the old file"
        );
        drop(held);
        // Hub: refs/main moves to another snapshot while the old config.json is held open.
        let held = fs::File::open(m.p("heldco/model/config.json")).unwrap();
        let refs = fx.hub().join("models--heldco--model/refs");
        fs::write(refs.join("main.tmp"), &second).unwrap();
        fs::rename(refs.join("main.tmp"), refs.join("main")).unwrap();
        let want = &changed.iter().find(|(n, _)| n == "config.json").unwrap().1;
        eventually("the second snapshot's size through the mount", || {
            fs::metadata(m.p("heldco/model/config.json"))
                .is_ok_and(|md| md.len() == want.len() as u64)
        });
        assert_eq!(
            String::from_utf8_lossy(&fs::read(m.p("heldco/model/config.json")).unwrap()),
            String::from_utf8_lossy(want),
            "{extra:?}: after refs/main moved, a new open reads the old snapshot's blob"
        );
        drop(held);
        // Put the fixture back for the next read mode.
        fs::write(ws.join("config.json"), &old_config).unwrap();
        fs::write(refs.join("main"), &first).unwrap();
        drop(m);
    }
}

/// A file's bytes rewritten in place with its size and time kept change nothing the tree
/// shows, but they change what the virtual files say: the event makes them render again.
#[test]
fn virtual_files_follow_a_rewrite_that_keeps_size_and_time() {
    crate::require!(Fuse);
    let fx = fleet();
    let ws = fx.workspace("inplace", &good_files());
    let m = Mount::start(&fx, &[]);
    let health = m.p("inplace/.mlxfs/health");
    assert_eq!(fs::read_to_string(&health).unwrap(), "healthy\n");
    let cfg = ws.join("config.json");
    let md = fs::metadata(&cfg).unwrap();
    // Same length, not JSON any more; then the old time back.
    let broken = vec![b'{'; md.len() as usize];
    {
        use std::io::{Seek, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&cfg).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&broken).unwrap();
        f.set_modified(md.modified().unwrap()).unwrap();
    }
    assert_eq!(fs::metadata(&cfg).unwrap().len(), md.len());
    eventually("the health file says unhealthy", || {
        fs::read_to_string(&health).is_ok_and(|h| h.starts_with("unhealthy"))
    });
}

/// A file replaced by rename, again and again, while it is read whole again and again through
/// the mount: every read is one version or the other, never old pages mixed with new ones
/// (in daemon mode the kernel kept the old file's pages for the node until the rescan, and
/// read the pages it did not hold from the new file).
#[test]
fn reads_during_replacements_are_never_mixed() {
    crate::require!(Fuse);
    let fx = Fx::new();
    let ws = fx.workspace("swapped", &good_files());
    let versions: Vec<Vec<u8>> = (0u8..2)
        .map(|v| {
            (0..256 * 1024)
                .map(|i| (i % 251) as u8 ^ (v * 0x5a))
                .collect()
        })
        .collect();
    fs::write(ws.join("weights.bin"), &versions[0]).unwrap();
    for extra in [&["--no-passthrough"][..], &[]] {
        let m = Mount::start(&fx, extra);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (ws, versions, stop) = (ws.clone(), versions.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let tmp = ws.join(".weights.tmp");
                    fs::write(&tmp, &versions[i % 2]).unwrap();
                    fs::rename(&tmp, ws.join("weights.bin")).unwrap();
                    std::thread::sleep(Duration::from_millis(400));
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(4);
        let (mut reads, mut mixed) = (0, 0);
        while Instant::now() < deadline {
            let got = fs::read(m.p("swapped/weights.bin")).unwrap();
            reads += 1;
            if got != versions[0] && got != versions[1] {
                mixed += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(reads > 20, "{extra:?}: {reads} reads");
        assert_eq!(
            mixed, 0,
            "{extra:?}: {mixed} of {reads} reads mixed both versions"
        );
    }
}

/// Run `argv` as the unprivileged user 65534 (a person, not root: root may remove anything).
fn as_nobody(argv: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args(argv)
        .output()
        .unwrap()
}

/// `mlxfs show PATH --json`'s model.
fn shown(fx: &Fx, path: &Path) -> Value {
    let o = mlxfs(fx)
        .arg("show")
        .arg(path)
        .arg("--json")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("show {}: {e}", path.display()));
    v["data"]["model"].clone()
}

/// `cp -a` and `rsync -a` of a model folder out of the mount, by a user who is not root: the
/// copy of a clean workspace is a clean workspace identical to its source (the virtual
/// `.mlxfs/` is not listed, so no copier takes it along; it still answers by name), a hub
/// model's copy is its snapshot's files, and the owner can remove every copy (`rm -rf`:
/// folders show their real modes, not 0555).
#[test]
fn a_copy_out_of_the_mount_is_clean_and_removable() {
    crate::require!(Fuse, Root);
    let fx = Fx::new();
    let mut files = good_files();
    files.push(("sub/notes.txt".into(), b"nested".to_vec()));
    let ws = fx.workspace("clean-ws", &files);
    managed_sentinel(&ws, "");
    mlxfs::hash::sentinel::recalc(&ws).unwrap();
    let snap = fx.hub_model("acme/model", &files);
    let source = shown(&fx, &ws);
    assert_eq!(source["clean"], true, "{source:#}");
    // The user 65534 must reach the mount point and write its copies.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(fx.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = fx.tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let m = Mount::start(&fx, &["--allow-other"]);
    // The virtual folder answers by name (what mountprobe, run and serve read) …
    assert_eq!(
        fs::read_to_string(m.p("clean-ws/.mlxfs/health")).unwrap(),
        "healthy\n"
    );
    // … but a listing of a model folder does not show it (the root's stays listed).
    assert!(!names(&m.p("clean-ws")).contains(&".mlxfs".to_string()));
    assert!(!names(&m.p("acme/model")).contains(&".mlxfs".to_string()));
    assert!(names(&m.dir).contains(&".mlxfs".to_string()));
    // Folders and files show their backing modes.
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&m.p("clean-ws")), mode(&ws));
    assert_eq!(mode(&m.p("clean-ws/sub")), mode(&ws.join("sub")));
    assert_eq!(
        mode(&m.p("clean-ws/config.json")),
        mode(&ws.join("config.json"))
    );
    let mut copies = vec![(
        "cp -a",
        vec!["cp", "-a"],
        out.join("cp-copy"),
        out.join("cp-copy"),
    )];
    if Path::new("/usr/bin/rsync").exists() {
        // rsync copies the folder's contents into DEST/ (trailing slashes).
        copies.push((
            "rsync -a",
            vec!["rsync", "-a"],
            out.join("rsync-copy/"),
            out.join("rsync-copy"),
        ));
    } else {
        // scripts/prereqs.sh installs it: under MLXFS_REQUIRE_ALL=1 this is a failure.
        crate::support::skip(
            "mount::a_copy_out_of_the_mount_is_clean_and_removable (rsync -a)",
            "rsync is not installed: only cp -a is checked",
        );
    }
    for (what, argv, dest, copy) in &copies {
        let src = if *what == "rsync -a" {
            format!("{}/", m.p("clean-ws").display())
        } else {
            m.p("clean-ws").display().to_string()
        };
        let mut a: Vec<&std::ffi::OsStr> = argv.iter().map(std::ffi::OsStr::new).collect();
        a.push(std::ffi::OsStr::new(&src));
        a.push(dest.as_os_str());
        let o = as_nobody(&a);
        assert!(
            o.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !copy.join(".mlxfs").exists(),
            "{what}: the virtual .mlxfs was copied"
        );
        let got = shown(&fx, copy);
        assert_eq!(got["clean"], true, "{what}: {got:#}");
        assert_eq!(got["content_hash"], source["content_hash"], "{what}");
        assert_eq!(got["health"], "healthy", "{what}");
        Command::new("diff").arg("-r").arg(&ws).arg(copy).succeeds();
        assert_eq!(
            tree_names(copy),
            tree_names(&ws),
            "{what}: another set of files"
        );
        let rm = as_nobody(&["rm".as_ref(), "-rf".as_ref(), copy.as_os_str()]);
        assert!(
            rm.status.success() && !copy.exists(),
            "{what}: rm -rf of the copy by its owner: {}",
            String::from_utf8_lossy(&rm.stderr)
        );
    }
    // A hub model: its snapshot's files as regular files, nothing else, removable.
    let hub_copy = out.join("hub-copy");
    let o = as_nobody(&[
        "cp".as_ref(),
        "-a".as_ref(),
        m.p("acme/model").as_os_str(),
        hub_copy.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(tree_names(&hub_copy), tree_names(&snap));
    Command::new("diff")
        .arg("-r")
        .arg(&snap)
        .arg(&hub_copy)
        .succeeds();
    let rm = as_nobody(&["rm".as_ref(), "-rf".as_ref(), hub_copy.as_os_str()]);
    assert!(
        rm.status.success() && !hub_copy.exists(),
        "rm -rf of the hub model's copy: {}",
        String::from_utf8_lossy(&rm.stderr)
    );
}

/// Every path below `root`, relative, sorted.
fn tree_names(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walk(root)
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// A reader that opened a virtual file before a change reads one whole version of it, never
/// the old text cut to the new length (which is not JSON): every kind of virtual file, per
/// model and at the root. The change makes each file shorter, and a `stat` through the mount
/// tells the kernel the new size before the holders read.
#[test]
fn an_open_virtual_file_reads_one_whole_version() {
    crate::require!(Fuse);
    let fx = Fx::new();
    let mend = fx.workspace("mend", &good_files());
    fs::write(mend.join("config.json"), b"{not json").unwrap();
    let spoil = fx.workspace("spoil", &good_files());
    managed_sentinel(&spoil, &format!(r#", "note": "{}""#, "x".repeat(300)));
    let gone = fx.workspace("gone", &good_files());
    fs::write(gone.join(".mlxfs"), b"real").unwrap(); // hidden: in status.json
    fx.workspace("stay", &good_files());
    let m = Mount::start(&fx, &[]);
    let paths = [
        "mend/.mlxfs/health",
        "spoil/.mlxfs/model.json",
        "spoil/.mlxfs/sentinel.json",
        ".mlxfs/models.json",
        ".mlxfs/health",
        ".mlxfs/status.json",
        ".mlxfs/catalog.json",
    ];
    let before: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(m.p(p)).unwrap()).collect();
    let mut held: Vec<fs::File> = paths
        .iter()
        .map(|p| fs::File::open(m.p(p)).unwrap())
        .collect();
    // These changes make every file above shorter.
    fs::write(mend.join("config.json"), LLAMA_CONFIG).unwrap();
    fs::write(spoil.join("config.json"), b"{not json").unwrap();
    managed_sentinel(&spoil, "");
    fs::remove_dir_all(&gone).unwrap();
    let sizes = || -> Vec<(&str, usize, u64)> {
        paths
            .iter()
            .zip(&before)
            .map(|(p, b)| (*p, b.len(), fs::metadata(m.p(p)).map_or(0, |md| md.len())))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sizes().iter().all(|(_, old, now)| *now < *old as u64) {
        assert!(
            Instant::now() < deadline,
            "not every file is shorter through the mount: {:?}",
            sizes()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    for ((p, f), old) in paths.iter().zip(&mut held).zip(&before) {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let new = fs::read(m.p(p)).unwrap();
        assert!(
            got == *old || got == new,
            "{p}: read {} bytes, neither the {} opened nor the {} now: {:?}",
            got.len(),
            old.len(),
            new.len(),
            String::from_utf8_lossy(&got)
        );
        if p.ends_with(".json") {
            serde_json::from_slice::<Value>(&got).unwrap_or_else(|e| panic!("{p}: not JSON ({e})"));
        }
    }
    // Virtual files can still be mapped (MAP_SHARED, read-only), whole.
    let f = fs::File::open(m.p(".mlxfs/models.json")).unwrap();
    let want = fs::read(m.p(".mlxfs/models.json")).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    assert_eq!(len, want.len());
    let p = map_shared(&f, len);
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap of a virtual file: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `len` bytes were mapped.
    let mapped = unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec();
    unsafe { libc::munmap(p, len) };
    assert_eq!(mapped, want);
}

/// A read-only shared mapping of `len` bytes of `f` (`MAP_FAILED` when it fails); the caller
/// keeps `f` open while it reads and unmaps it.
fn map_shared(f: &fs::File, len: usize) -> *mut libc::c_void {
    // SAFETY: a read-only shared mapping of an open file; nothing is written through it.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(f),
            0,
        )
    }
}

/// The bytes the daemon process has read so far (`rchar` of /proc/PID/io: its `pread`s of
/// backing files; with passthrough the kernel reads them, not the daemon).
fn daemon_read_bytes(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A workspace whose real folder is inside another mlxfs mount (linked into the workspace
/// home): the kernel refuses passthrough for its files (a FUSE file system stacked on one
/// that uses passthrough itself: ELOOP). Those files — and only those — are read through the
/// daemon; every other file keeps passthrough, and status.json says which file system is
/// read through the daemon, why, and which files.
#[test]
fn a_file_passthrough_refuses_is_read_through_the_daemon_alone() {
    crate::require!(Fuse, Root);
    // The first mount, with passthrough: what the second one's linked workspace lives in.
    let lower = Fx::new();
    let real = lower.workspace("remote", &good_files());
    big_file(&real.join("weights.bin"), 8);
    let lower_mount = Mount::start(&lower, &[]);
    assert_eq!(lower_mount.status()["read_mode"], "passthrough");
    let fx = Fx::new();
    let local = fx.workspace("local", &good_files());
    big_file(&local.join("weights.bin"), 8);
    symlink(lower_mount.p("remote"), fx.ws_home.join("remote")).unwrap();
    let m = Mount::start(&fx, &[]);
    let st = m.status();
    assert_eq!(st["read_mode"], "passthrough", "{st:#}");
    assert_eq!(st["read_through_daemon"], serde_json::json!([]), "{st:#}");
    // The stacked file: refused by the kernel, read through the daemon, whole.
    assert_eq!(
        sha(&m.p("remote/weights.bin")),
        sha(&real.join("weights.bin"))
    );
    assert_eq!(
        fs::read(m.p("remote/config.json")).unwrap(),
        LLAMA_CONFIG.as_bytes()
    );
    // Every other file still goes through passthrough: the daemon reads none of its bytes.
    let size = fs::metadata(local.join("weights.bin")).unwrap().len();
    let before = daemon_read_bytes(m.pid());
    assert_eq!(
        sha(&m.p("local/weights.bin")),
        sha(&local.join("weights.bin"))
    );
    let read = daemon_read_bytes(m.pid()) - before;
    assert!(
        read < size / 4,
        "the daemon read {read} of the {size} bytes of a file passthrough could take"
    );
    let st = m.status();
    assert_eq!(st["read_mode"], "passthrough", "{st:#}");
    let through = st["read_through_daemon"].as_array().unwrap();
    assert_eq!(through.len(), 1, "{st:#}");
    let fs_entry = &through[0];
    let lower_dev = fs::metadata(&lower_mount.dir).unwrap().dev();
    assert_eq!(
        fs_entry["device"],
        format!("{}:{}", libc::major(lower_dev), libc::minor(lower_dev)),
        "{st:#}"
    );
    assert_eq!(
        fs_entry["mount_point"],
        lower_mount.dir.to_string_lossy().as_ref(),
        "{st:#}"
    );
    assert!(
        fs_entry["why"].as_str().unwrap().contains("ELOOP"),
        "{st:#}"
    );
    let mut files: Vec<&str> = fs_entry["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["remote/config.json", "remote/weights.bin"],
        "{st:#}"
    );
    drop(m);
    drop(lower_mount);
}
