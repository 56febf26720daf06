//! `archive` / `restore`: round trips (clean, same content hash, under another HOME, HF_HOME
//! and workspace home), byte-identical archives, and every kind of hostile archive — crafted
//! here with the `tar` crate — refused with an error naming what is wrong, nothing written
//! outside the staging folder, no staging folder and no target left.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use mlxfs::archive::manifest::{Entry, Kind, MANIFEST_NAME, Manifest};
use mlxfs::archive::tarfmt::{self, What};
use mlxfs::archive::write::{Options, Plan, what, write};
use mlxfs::archive::{ArchiveError, Compression, ErrorKind, Silent, open};
use mlxfs::hash::sentinel::{self, Clean};
use proptest::prelude::*;
use serde_json::Value;

use crate::support::cli::*;
use crate::support::*;

/// A managed, clean workspace with everything an archive must carry: weights, a link in the
/// hashed part, an executable, a path over 100 bytes, and a `.hf_cache/` laid out as
/// huggingface_hub writes it (a snapshot link into `blobs/`), plus OS junk.
fn workspace(fx: &Fx, name: &str) -> PathBuf {
    let mut files = good_files();
    let long = format!("sub/{}/long.txt", "n".repeat(120));
    files.extend([
        (
            ".hf_cache/hub/models--org--m/blobs/abc".to_string(),
            b"blob".to_vec(),
        ),
        (
            ".hf_cache/hub/models--org--m/refs/main".to_string(),
            b"c1".to_vec(),
        ),
        ("sub/deeper/notes.txt".to_string(), b"notes".to_vec()),
        (long, b"long".to_vec()),
        ("bin/run.sh".to_string(), b"#!/bin/sh\n".to_vec()),
        (".DS_Store".to_string(), b"junk".to_vec()),
    ]);
    let ws = fx.workspace(name, &files);
    fs::set_permissions(ws.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let snap = ws.join(".hf_cache/hub/models--org--m/snapshots/c1");
    fs::create_dir_all(&snap).unwrap();
    symlink("../../blobs/abc", snap.join("file.txt")).unwrap();
    symlink("tokenizer.json", ws.join("tok-link.json")).unwrap();
    fs::create_dir_all(ws.join("empty-dir")).unwrap();
    managed_sentinel(&ws, "");
    sentinel::recalc(&ws).unwrap();
    ws
}

/// Every entry below `root` (OS junk aside): path, kind, bytes or link target, exec bit.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in walk(root) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".DS_Store" {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_symlink() {
            out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
        } else if md.is_dir() {
            out.push(format!("{rel}/"));
        } else {
            use sha2::Digest;
            out.push(format!(
                "{rel} {:o} {}",
                md.permissions().mode() & 0o111,
                mlxfs::text::hex(&sha2::Sha256::digest(fs::read(&p).unwrap()))
            ));
        }
    }
    out.sort();
    out
}

fn archive_to(ws: &Path, out: &Path, opts: &Options) -> mlxfs::archive::Archived {
    let plan = Plan::new(ws, opts.allow_dirty).unwrap();
    write(&plan, out, opts, &Silent).unwrap()
}

fn restore(archive: &Path, target: &Path) -> Result<mlxfs::archive::Restored, ArchiveError> {
    open(archive)?.extract(target, &Silent)
}

#[test]
fn archive_round_trip_under_another_home_is_clean_with_the_same_hash() {
    let a = Fx::new();
    let ws = workspace(&a, "my-ws");
    let stored = sentinel::read(&ws)
        .sentinel()
        .unwrap()
        .content_hash()
        .unwrap()
        .to_string();
    let out = a.tmp.path().join("my-ws.tar");
    let o = with_vars(&a.vars())
        .args(["archive", "my-ws", out.to_str().unwrap(), "--json"])
        .out();
    let v = exited(&o, 0);
    assert_eq!(v["command"], "archive");
    let d = &v["data"];
    assert_eq!(d["content_hash"], stored.as_str());
    assert_eq!(d["clean"], true);
    assert_eq!(d["compression"], "none");
    assert_eq!(d["skipped"], serde_json::json!([".DS_Store"]));
    assert_eq!(d["bytes"], fs::metadata(&out).unwrap().len());
    // Plain tar: standard tools read it too.
    let listing = Command::new("tar").arg("-tf").arg(&out).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.lines().next(), Some(MANIFEST_NAME));
    assert!(listing.contains(".hf_cache/hub/models--org--m/snapshots/c1/file.txt"));
    assert!(!listing.contains(".DS_Store"));

    // Another machine: other HOME, HF_HOME and workspace home; default target by name.
    let b = Fx::new();
    let o = with_vars(&b.vars())
        .args(["restore", out.to_str().unwrap(), "--json"])
        .out();
    let v = exited(&o, 0);
    let target = b.ws_home.join("my-ws");
    assert_eq!(v["data"]["path"], target.to_str().unwrap());
    assert_eq!(v["data"]["content_hash"], stored.as_str());
    assert_eq!(v["data"]["source_repo"], "org/x");
    assert_eq!(tree(&target), tree(&ws));
    // Clean by stat: the files got the times their sentinel records.
    let clean = sentinel::clean_check(&target, &sentinel::read(&target));
    assert_eq!(
        clean,
        Clean::Clean {
            stored: Some(stored.clone())
        }
    );
    let (h, _) = mlxfs::hash::compute_v2(&target, &mlxfs::hash::Excludes::default_list()).unwrap();
    assert_eq!(h, stored);
    let shown = envelope(&with_vars(&b.vars()).args(["show", "my-ws", "--json"]).out());
    assert_eq!(shown["data"]["model"]["clean"], true, "{shown}");
    // Nothing but the workspace next to it (no staging folder).
    let names: Vec<_> = fs::read_dir(&b.ws_home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["my-ws"]);

    // The target rules are clone's: an existing, non-empty target is refused.
    let o = with_vars(&b.vars())
        .args(["restore", out.to_str().unwrap(), "--json"])
        .out();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(envelope(&o)["error"]["type"], "InvalidTargetError");
}

#[test]
fn archive_twice_gives_the_same_bytes() {
    let fx = Fx::new();
    let ws = workspace(&fx, "w");
    let dir = fx.tmp.path();
    for (opts, ext) in [
        (Options::default(), "tar"),
        (
            Options {
                compression: Compression::Zstd,
                zstd_threads: 1,
                ..Options::default()
            },
            "tar.zst",
        ),
    ] {
        let one = dir.join(format!("one.{ext}"));
        let two = dir.join(format!("two.{ext}"));
        archive_to(&ws, &one, &opts);
        // Touching times and the workspace's own location changes nothing.
        let moved = fx.ws_home.join("elsewhere").join("w");
        fs::create_dir_all(moved.parent().unwrap()).unwrap();
        fs::rename(&ws, &moved).unwrap();
        archive_to(&moved, &two, &opts);
        fs::rename(&moved, &ws).unwrap();
        assert_eq!(fs::read(&one).unwrap(), fs::read(&two).unwrap(), "{ext}");
        let t = dir.join(format!("restored-{}", ext.replace('.', "-")));
        let r = restore(&two, &t).unwrap();
        assert_eq!(r.compression, opts.compression);
        assert_eq!(tree(&t), tree(&ws));
    }
    // zstd: any number of worker threads gives the same bytes.
    let four = dir.join("four.tar.zst");
    archive_to(
        &ws,
        &four,
        &Options {
            compression: Compression::Zstd,
            zstd_threads: 2,
            ..Options::default()
        },
    );
    assert_eq!(
        fs::read(&four).unwrap(),
        fs::read(dir.join("one.tar.zst")).unwrap()
    );
    // No user, group or host name, no time in any header.
    let bytes = fs::read(dir.join("one.tar")).unwrap();
    let mut a = tar::Archive::new(&bytes[..]);
    for e in a.entries().unwrap() {
        let h = e.unwrap().header().clone();
        assert_eq!(
            (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
            (0, 0, 0)
        );
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
    }
}

#[test]
fn archive_refuses_what_it_cannot_carry() {
    let fx = Fx::new();
    let out = fx.tmp.path().join("x.tar");
    // A dirty workspace: refused, or archived without a content hash.
    let ws = workspace(&fx, "dirty");
    fs::write(ws.join("config.json"), "{\"changed\": 1}").unwrap();
    let archive = |args: &[&str]| with_vars(&fx.vars()).arg("archive").args(args).out();
    let o = archive(&["dirty", out.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(envelope(&o)["error"]["type"], "workspace_modified");
    assert!(!out.exists());
    let o = archive(&["dirty", out.to_str().unwrap(), "--json", "--allow-dirty"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(envelope(&o)["data"]["content_hash"], Value::Null);
    assert_eq!(envelope(&o)["data"]["clean"], false);
    let t = fx.tmp.path().join("dirty-back");
    let r = restore(&out, &t).unwrap();
    assert_eq!(r.content_hash, None);
    assert_eq!(tree(&t), tree(&ws));
    // OUT exists: refused without --force; inside the workspace: refused.
    let o = archive(&["dirty", out.to_str().unwrap(), "--allow-dirty", "--json"]);
    assert_eq!(envelope(&o)["error"]["type"], "InvalidTargetError");
    let o = archive(&[
        "dirty",
        out.to_str().unwrap(),
        "--allow-dirty",
        "--force",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let inside = ws.join("self.tar");
    let o = archive(&["dirty", inside.to_str().unwrap(), "--allow-dirty", "--json"]);
    assert_eq!(envelope(&o)["error"]["type"], "InvalidTargetError");
    assert!(!inside.exists());

    // A hub model is not a workspace.
    fx.hub_model("org/hubby", &good_files());
    let o = archive(&["org/hubby", "--json"]);
    assert_eq!(envelope(&o)["error"]["type"], "workspace_not_found");

    // A link out of the workspace, a FIFO: refused, naming them; no temp file left.
    let ws = workspace(&fx, "linky");
    symlink("../../outside", ws.join("escape")).unwrap();
    let e = Plan::new(&ws, true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unarchivable);
    assert!(
        e.message.contains("'escape'") && e.message.contains("leads out"),
        "{e}"
    );
    fs::remove_file(ws.join("escape")).unwrap();
    symlink("/etc/passwd", ws.join("abs")).unwrap();
    assert_eq!(
        Plan::new(&ws, true).unwrap_err().kind,
        ErrorKind::Unarchivable
    );
    fs::remove_file(ws.join("abs")).unwrap();
    let fifo = std::ffi::CString::new(ws.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let e = Plan::new(&ws, true).unwrap_err();
    assert!(
        e.message.contains("'pipe'") && e.message.contains("FIFO"),
        "{e}"
    );
    let leftovers: Vec<_> = fs::read_dir(fx.tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("mlxfs-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

// ---------------------------------------------------------------------------------------
// Hostile archives, crafted by hand.

/// A tar stream built entry by entry: canonical entries as mlxfs writes them, and raw ones.
struct Craft(Vec<u8>);

impl Craft {
    fn new(m: &Manifest) -> Craft {
        Craft::with_manifest_text(&m.to_bytes())
    }

    /// A stream that starts with this text as its manifest, whatever it says.
    fn with_manifest_text(text: &[u8]) -> Craft {
        let mut c = Craft(Vec::new());
        c.data(
            &tarfmt::header_bytes(
                MANIFEST_NAME,
                What::File {
                    size: text.len() as u64,
                    executable: false,
                },
            ),
            text,
        );
        c
    }
    fn data(&mut self, header: &[u8], data: &[u8]) {
        self.0.extend_from_slice(header);
        self.0.extend_from_slice(data);
        self.0
            .resize(self.0.len() + tarfmt::padding(data.len() as u64), 0);
    }
    /// The manifest's entry with these bytes, as mlxfs writes it.
    fn entry(&mut self, e: &Entry, data: &[u8]) {
        self.data(&tarfmt::header_bytes(&e.path, what(e)), data);
    }
    /// A header made with the tar crate, its name written raw (the crate refuses `..`).
    fn raw(&mut self, kind: tar::EntryType, name: &[u8], link: Option<&[u8]>, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        let mut hdr = Vec::new();
        hdr.extend_from_slice(h.as_bytes());
        self.data(&hdr, data);
    }
    fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&tarfmt::END);
        self.0
    }
}

/// The honest parts of a hostile archive: a workspace, its manifest, and each file's bytes.
struct Hostile {
    fx: Fx,
    /// Where the crafted archives go (outside the folder compared before and after).
    files: tempfile::TempDir,
    ws: PathBuf,
    manifest: Manifest,
    good: Vec<u8>,
}

impl Hostile {
    fn new() -> Hostile {
        let fx = Fx::new();
        let ws = workspace(&fx, "victim");
        let good_path = fx.tmp.path().join("good.tar");
        archive_to(&ws, &good_path, &Options::default());
        let manifest = open(&good_path).unwrap().manifest;
        let good = fs::read(&good_path).unwrap();
        fs::create_dir_all(fx.tmp.path().join("dest")).unwrap();
        let h = Hostile {
            fx,
            files: tempfile::tempdir().unwrap(),
            ws,
            manifest,
            good,
        };
        // The crafting is exact: all honest, it is the archive mlxfs wrote.
        assert!(h.craft(&h.manifest, usize::MAX, |_| {}) == h.good);
        h
    }
    fn bytes_of(&self, e: &Entry) -> Vec<u8> {
        match e.kind {
            Kind::File { .. } => fs::read(self.ws.join(&e.path)).unwrap(),
            _ => Vec::new(),
        }
    }
    /// The archive of `m` with every entry honest, `tweak` called before entry `at`
    /// (`usize::MAX`: before the end) to add or replace.
    fn craft(&self, m: &Manifest, at: usize, tweak: impl Fn(&mut Craft)) -> Vec<u8> {
        let mut c = Craft::new(m);
        for (i, e) in m.entries.iter().enumerate() {
            if i == at {
                tweak(&mut c);
            }
            c.entry(e, &self.bytes_of(e));
        }
        if at == usize::MAX {
            tweak(&mut c);
        }
        c.end()
    }
    /// Restore `bytes`: must fail as invalid with a message holding every one of `says`,
    /// leaving the destination folder (and the folder above it) as they were.
    fn refused(&self, label: &str, bytes: &[u8], says: &[&str]) -> ArchiveError {
        let root = self.fx.tmp.path();
        let file = self.files.path().join(format!("{label}.tar"));
        fs::write(&file, bytes).unwrap();
        let dest = root.join("dest");
        let before = tree(root);
        let err = restore(&file, &dest.join("target")).expect_err(label);
        assert_eq!(err.kind, ErrorKind::Invalid, "{label}: {err}");
        for s in says {
            assert!(err.message.contains(s), "{label}: `{err}` lacks `{s}`");
        }
        assert!(err.hint.is_some());
        assert_eq!(tree(root), before, "{label}: something was left behind");
        assert!(!root.join("evil").exists() && !Path::new("/tmp/mlxfs-evil").exists());
        err
    }
    fn index_of(&self, path: &str) -> usize {
        self.manifest
            .entries
            .iter()
            .position(|e| e.path == path)
            .unwrap()
    }
}

#[test]
fn archive_hostile_paths_links_and_devices_are_refused() {
    let h = Hostile::new();
    let m = &h.manifest;
    let cfg = h.index_of("config.json");
    // `..` and absolute paths, listed honestly in the manifest: refused before any write.
    for (p, says) in [("../evil", "'..'"), ("/tmp/mlxfs-evil", "absolute")] {
        let mut lying = m.clone();
        lying.entries.insert(
            0,
            Entry {
                path: p.into(),
                kind: Kind::Dir,
            },
        );
        h.refused("listed", &h.craft(&lying, usize::MAX, |_| {}), &[says]);
    }
    // … or smuggled into the tar stream in place of a listed entry.
    for (p, says) in [(&b"../evil"[..], "'..'"), (b"/tmp/mlxfs-evil", "absolute")] {
        let bytes = h.craft(m, cfg, |c| {
            c.raw(tar::EntryType::Regular, p, None, b"pwned")
        });
        h.refused("smuggled", &bytes, &["refused", says]);
    }
    // A link that leaves the workspace: in the manifest, in the stream, or through another
    // link (lexically inside, really outside).
    let mut lying = m.clone();
    lying.entries.push(Entry {
        path: "zz-out".into(),
        kind: Kind::Symlink {
            target: "../../etc".into(),
        },
    });
    h.refused(
        "link-listed",
        &h.craft(&lying, usize::MAX, |_| {}),
        &["'zz-out'", "leads out"],
    );
    let bytes = h.craft(m, cfg, |c| {
        c.raw(
            tar::EntryType::Symlink,
            b"aaa-out",
            Some(b"../../../etc"),
            b"",
        )
    });
    h.refused("link-smuggled", &bytes, &["'aaa-out'", "leads out"]);
    let mut chain = m.clone();
    chain.entries.extend([
        Entry {
            path: "zz1".into(),
            kind: Kind::Symlink { target: ".".into() },
        },
        Entry {
            path: "zz2".into(),
            kind: Kind::Symlink {
                target: "zz1/../evil".into(),
            },
        },
    ]);
    h.refused(
        "link-chain",
        &h.craft(&chain, usize::MAX, |_| {}),
        &["'zz2'", "leads out"],
    );
    // Devices, FIFOs, hard links, PAX headers: never in an mlxfs archive.
    for (kind, says) in [
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "FIFO"),
        (tar::EntryType::Link, "hard link"),
        (tar::EntryType::XHeader, "PAX"),
    ] {
        let bytes = h.craft(m, cfg, |c| {
            c.raw(kind, b"config.json", Some(b"/etc/passwd"), b"")
        });
        h.refused("special", &bytes, &["'config.json'", says, "refused"]);
    }
    // A file below a listed link, a folder the manifest does not list.
    let mut below = m.clone();
    let link = below
        .entries
        .iter()
        .position(|e| e.path == "tok-link.json")
        .unwrap();
    below.entries.insert(
        link + 1,
        Entry {
            path: "tok-link.json/x".into(),
            kind: Kind::Dir,
        },
    );
    h.refused(
        "below-link",
        &h.craft(&below, usize::MAX, |_| {}),
        &["without its folder"],
    );
}

#[test]
fn archive_duplicates_lies_and_truncation_are_refused() {
    let h = Hostile::new();
    let m = &h.manifest;
    let cfg = h.index_of("config.json");
    let cfg_entry = m.entries[cfg].clone();
    // Duplicate entries: in the stream, or in the manifest.
    let cfg_bytes = h.bytes_of(&cfg_entry);
    let bytes = h.craft(m, cfg + 1, |c| c.entry(&cfg_entry, &cfg_bytes));
    h.refused("dup-stream", &bytes, &["'config.json'", "twice"]);
    let mut dup = m.clone();
    dup.entries.insert(cfg, cfg_entry.clone());
    h.refused(
        "dup-manifest",
        &h.craft(&dup, usize::MAX, |_| {}),
        &["'config.json'", "twice"],
    );
    // An entry the manifest does not list, at the end.
    let extra = Entry {
        path: "zz-extra".into(),
        kind: Kind::Dir,
    };
    let bytes = h.craft(m, usize::MAX, |c| c.entry(&extra, b""));
    h.refused("unlisted", &bytes, &["'zz-extra'", "does not list"]);
    // A manifest that lies: about a size, about a sha256, about the content hash.
    let mut size = m.clone();
    if let Kind::File { size: s, .. } = &mut size.entries[cfg].kind {
        *s += 1;
    }
    let bytes = {
        let mut c = Craft::new(&size);
        for e in &m.entries {
            c.entry(e, &h.bytes_of(e));
        }
        c.end()
    };
    h.refused("size-lie", &bytes, &["'config.json'", "bytes"]);
    let mut sha = m.clone();
    if let Kind::File { sha256, .. } = &mut sha.entries[cfg].kind {
        sha256[0] ^= 1;
    }
    h.refused(
        "sha-lie",
        &h.craft(&sha, usize::MAX, |_| {}),
        &["'config.json'", "sha256"],
    );
    let mut ch = m.clone();
    ch.content_hash = Some(format!("sha256:{}", "a".repeat(64)));
    h.refused(
        "hash-lie",
        &h.craft(&ch, usize::MAX, |_| {}),
        &["content hash"],
    );
    // A manifest edited without fixing its checksum.
    let text = String::from_utf8(m.to_bytes())
        .unwrap()
        .replace("org/x", "org/y");
    let mut c = Craft::with_manifest_text(text.as_bytes());
    for e in &m.entries {
        c.entry(e, &h.bytes_of(e));
    }
    h.refused("manifest-edit", &c.end(), &["checksum"]);
    // Truncated: inside a file, between entries, in the end marker.
    let weights = h.index_of("model.safetensors");
    let offset = {
        let mut c = Craft::new(m);
        for e in &m.entries[..weights] {
            c.entry(e, &h.bytes_of(e));
        }
        c.0.len() + tarfmt::BLOCK + 40
    };
    h.refused(
        "cut-in-file",
        &h.good[..offset],
        &["truncated", "'model.safetensors'"],
    );
    let cut = h.good.len() - 2 * tarfmt::BLOCK;
    h.refused(
        "cut-at-entry",
        &h.good[..cut - 3 * tarfmt::BLOCK],
        &["truncated"],
    );
    h.refused("cut-end", &h.good[..h.good.len() - 100], &["truncated"]);
    h.refused("no-end", &h.good[..cut], &["truncated"]);
    // Data after the end, and not an mlxfs archive at all.
    let mut more = h.good.clone();
    more.extend_from_slice(&[0u8; 512]);
    h.refused("trailing", &more, &["after its end"]);
    let plain = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(&h.ws)
        .arg("config.json")
        .output()
        .unwrap()
        .stdout;
    h.refused("foreign", &plain, &["not an mlxfs archive"]);
}

#[test]
fn archive_every_flipped_byte_is_refused() {
    let h = Hostile::new();
    // Every header and padding byte position of interest, and a spread through the data.
    let n = h.good.len();
    let mut at: Vec<usize> = (0..n).step_by(97).collect();
    at.extend([
        0,
        1,
        100,
        148,
        155,
        156,
        257,
        511,
        512,
        600,
        n - 1025,
        n - 513,
        n - 1,
    ]);
    for &i in &at {
        let mut b = h.good.clone();
        b[i] ^= 0x20;
        h.refused(&format!("flip-{i}"), &b, &[]);
    }
    // Compressed: a flipped byte anywhere is caught too (zstd's checksum, then ours).
    let z = h.fx.tmp.path().join("good.tar.zst");
    archive_to(
        &h.ws,
        &z,
        &Options {
            compression: Compression::Zstd,
            ..Options::default()
        },
    );
    let good = fs::read(&z).unwrap();
    // The frame header (the window size, an unused bit) and the seal after the last frame too.
    let n = good.len();
    for i in (0..n).step_by(n / 40 + 1).chain(0..16).chain(n - 60..n) {
        let mut b = good.clone();
        b[i] ^= 0x01;
        h.refused(&format!("zflip-{i}"), &b, &[]);
    }
}

#[test]
fn archive_restore_cli_says_what_is_wrong_and_leaves_no_target() {
    let h = Hostile::new();
    let mut b = h.good.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    let file = h.fx.tmp.path().join("flipped.tar");
    fs::write(&file, &b).unwrap();
    let before = tree(&h.fx.ws_home);
    let o = with_vars(&h.fx.vars())
        .args(["restore", file.to_str().unwrap(), "copy", "--json"])
        .out();
    let v = exited(&o, 1);
    assert_eq!(v["status"], "error");
    assert_eq!(v["error"]["type"], "invalid_archive");
    assert!(!h.fx.ws_home.join("copy").exists());
    assert_eq!(tree(&h.fx.ws_home), before);
    let o = with_vars(&h.fx.vars())
        .args(["restore", file.to_str().unwrap(), "copy"])
        .out();
    stderr_has(&o, "nothing was restored");
}

/// OS junk names that the content hash counts (`.hidden`, `autorun.inf`, `.localized`, and a
/// `.DS_Store` under a sentinel whose own exclude list lacks it) are part of the workspace:
/// archived, so that the restored copy still matches its hash. Junk the hash leaves out is
/// left out of the archive too.
#[test]
fn archive_keeps_the_junk_names_the_content_hash_counts() {
    let a = Fx::new();
    let ws = workspace(&a, "j");
    for (rel, body) in [
        (".hidden", "x"),
        ("autorun.inf", "x"),
        ("sub/.localized", "y"),
    ] {
        fs::write(ws.join(rel), body).unwrap();
    }
    sentinel::recalc(&ws).unwrap();
    let out = a.tmp.path().join("j.tar");
    archive_to(&ws, &out, &Options::default());
    let b = Fx::new();
    let target = b.ws_home.join("j");
    let r = restore(&out, &target).unwrap();
    assert!(r.content_hash.is_some());
    for rel in [".hidden", "autorun.inf", "sub/.localized"] {
        assert!(target.join(rel).is_file(), "{rel} was left out");
    }
    assert!(
        !target.join(".DS_Store").exists(),
        "excluded junk is left out"
    );
    assert!(matches!(
        sentinel::clean_check(&target, &sentinel::read(&target)),
        Clean::Clean { .. }
    ));

    // A sentinel whose exclude list does not name .DS_Store: the hash counts it, so it stays.
    let ws2 = workspace(&a, "k");
    let sp = ws2.join(".mlxk_workspace.json");
    let mut sv: Value = serde_json::from_slice(&fs::read(&sp).unwrap()).unwrap();
    sv["exclude_patterns"] = serde_json::json!([".hf_cache/", ".mlxk_workspace.json"]);
    fs::write(&sp, serde_json::to_vec(&sv).unwrap()).unwrap();
    let (h, index) = mlxfs::hash::compute_v2(
        &ws2,
        &mlxfs::hash::Excludes::new(&[".hf_cache/", ".mlxk_workspace.json"]),
    )
    .unwrap();
    sv["content_hash"] = Value::from(h);
    sv["file_index"] = Value::Array(
        index
            .iter()
            .map(mlxfs::hash::sentinel::index_entry_json)
            .collect(),
    );
    fs::write(&sp, serde_json::to_vec(&sv).unwrap()).unwrap();
    let out2 = a.tmp.path().join("k.tar");
    archive_to(&ws2, &out2, &Options::default());
    let target2 = b.ws_home.join("k");
    restore(&out2, &target2).unwrap();
    assert!(target2.join(".DS_Store").is_file());
}

/// An `--allow-dirty` archive carries no content hash: its restored files keep the times of
/// their restore, so an edited file is never made to look like the one the stale file index
/// describes.
#[test]
fn a_dirty_archive_restores_as_not_clean() {
    let a = Fx::new();
    let ws = workspace(&a, "d");
    let p = ws.join("sub/deeper/notes.txt");
    fs::write(&p, "NOTES").unwrap(); // same size, other bytes
    let out = a.tmp.path().join("d.tar");
    let opts = Options {
        allow_dirty: true,
        ..Options::default()
    };
    archive_to(&ws, &out, &opts);
    let b = Fx::new();
    let target = b.ws_home.join("d");
    let r = restore(&out, &target).unwrap();
    assert!(r.content_hash.is_none());
    assert!(matches!(
        sentinel::clean_check(&target, &sentinel::read(&target)),
        Clean::Modified { .. }
    ));
}

/// Targets where a new workspace does harm are refused before anything is written; leftovers
/// of a killed restore or archive are removed by the next one.
#[test]
fn restore_refuses_harmful_targets_and_sweeps_what_a_killed_run_left() {
    let a = Fx::new();
    let ws = workspace(&a, "t");
    let out = a.tmp.path().join("t.tar");
    archive_to(&ws, &out, &Options::default());
    let vars = a.vars();
    let arch = out.to_str().unwrap();
    let refused = |target: &str, cwd: Option<&Path>, want: &str| {
        let mut c = with_vars(&vars);
        c.args(["restore", arch, target, "--json"]);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let o = c.output().unwrap();
        let v = envelope(&o);
        assert_eq!(o.status.code(), Some(1), "{target}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{target}: {msg}");
    };
    let before = tree(&ws);
    refused(
        ws.join("nested").to_str().unwrap(),
        None,
        "inside the model folder",
    );
    assert_eq!(tree(&ws), before, "the workspace is untouched");
    refused(a.ws_home.to_str().unwrap(), None, "workspace home");
    let empty = a.tmp.path().join("here");
    fs::create_dir_all(&empty).unwrap();
    refused(".", Some(&empty), "current folder");
    if crate::support::missing(Needs::Root).is_none() {
        let mp = a.tmp.path().join("mnt");
        let _t = Tmpfs::new(mp.clone(), "size=1m");
        refused(mp.to_str().unwrap(), None, "mount point");
    }

    // A staging folder and a temp file of processes that are gone: removed, and said so.
    let dead = 0x3ffff0; // above any pid this test machine hands out
    let stale = a.ws_home.join(format!(".mlxfs-restore-{dead}-0000abcd"));
    fs::create_dir_all(stale.join("x")).unwrap();
    let tmp = a.tmp.path().join(format!(".t.tar.mlxfs-tmp-{dead}"));
    fs::write(&tmp, "half").unwrap();
    let o = with_vars(&vars).args(["restore", arch, "t2"]).out();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(!stale.exists());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("left by an archive or restore that was killed")
    );
    let o = with_vars(&vars)
        .args([
            "archive",
            "t",
            a.tmp.path().join("t3.tar").to_str().unwrap(),
        ])
        .out();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(!tmp.exists());
}

// ---------------------------------------------------------------------------------------
// Properties.

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("B".to_string()),
        Just("é".to_string()),
        Just("sp ace".to_string()),
        Just("-dash".to_string()),
        Just(".dot".to_string()),
        Just("x".repeat(101)),
        Just("model.safetensors".to_string()),
        "[a-z]{1,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any tree of folders, files (any bytes, executable or not) and inside links comes back
    /// the same, clean, with the same content hash; archiving twice gives the same bytes.
    #[test]
    fn archive_round_trip_of_arbitrary_trees(
        files in prop::collection::vec(
            (prop::collection::vec(name(), 1..4), prop::collection::vec(any::<u8>(), 0..3000), any::<bool>()),
            0..10),
        links in prop::collection::vec((name(), name()), 0..3),
    ) {
        let fx = Fx::new();
        let ws = fx.ws_home.join("prop");
        write_tree(&ws, &[("config.json".to_string(), LLAMA_CONFIG.as_bytes().to_vec())]);
        for (parts, bytes, exec) in &files {
            let p = ws.join(parts.join("/"));
            if fs::create_dir_all(p.parent().unwrap()).is_err() || p.exists() {
                continue;
            }
            // Any bytes for a safetensors name would make the hash fail: give it a header.
            let data = if p.extension().is_some_and(|x| x == "safetensors") { tiny_weights() } else { bytes.clone() };
            fs::write(&p, data).unwrap();
            if *exec {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        for (l, t) in &links {
            let _ = symlink(t, ws.join(format!("link-{l}")));
        }
        managed_sentinel(&ws, "");
        sentinel::recalc(&ws).unwrap();
        let one = fx.tmp.path().join("one.tar");
        let two = fx.tmp.path().join("two.tar");
        archive_to(&ws, &one, &Options::default());
        archive_to(&ws, &two, &Options::default());
        prop_assert_eq!(fs::read(&one).unwrap(), fs::read(&two).unwrap());
        let back = fx.tmp.path().join("back");
        let r = restore(&one, &back).unwrap();
        prop_assert_eq!(tree(&back), tree(&ws));
        let stored = sentinel::read(&ws).sentinel().unwrap().content_hash().map(str::to_string);
        prop_assert_eq!(&r.content_hash, &stored);
        let clean = sentinel::clean_check(&back, &sentinel::read(&back));
        prop_assert_eq!(clean, Clean::Clean { stored });
    }

    /// The streaming hasher gives `hash_file`'s answer whatever the chunking (safetensors
    /// headers split anywhere, lying lengths, short files).
    #[test]
    fn archive_stream_hasher_matches_hash_file(
        body in prop::collection::vec(any::<u8>(), 0..600),
        header_len in prop_oneof![Just(0u64), 1u64..200, Just(u64::MAX)],
        cuts in prop::collection::vec(0usize..700, 0..5),
        safetensors in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let name = if safetensors { "w.safetensors" } else { "w.bin" };
        let mut data = header_len.to_le_bytes().to_vec();
        data.extend_from_slice(&body);
        let p = tmp.path().join(name);
        fs::write(&p, &data).unwrap();
        let mut h = mlxfs::hash::stream::FileHasher::new(name.as_bytes());
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            h.update(&data[at..c]);
            at = c;
        }
        let sums = h.finish();
        prop_assert_eq!(sums.v2, mlxfs::hash::hash_file(&p, name).ok());
        prop_assert_eq!(sums.len, data.len() as u64);
        use sha2::Digest;
        prop_assert_eq!(&sums.sha256[..], &sha2::Sha256::digest(&data)[..]);
    }
}

/// The workspace name an archive carries is untrusted: one with control characters is not
/// made a folder by default; with a target folder given, the archive restores.
#[test]
fn a_name_with_control_characters_needs_a_target() {
    let a = Fx::new();
    let ws = a.workspace("two\nlines", &good_files());
    managed_sentinel(&ws, "");
    sentinel::recalc(&ws).unwrap();
    let out = a.tmp.path().join("ws.tar");
    archive_to(&ws, &out, &Options::default());
    let b = Fx::new();
    let o = with_vars(&b.vars())
        .args(["restore", out.to_str().unwrap(), "--json"])
        .out();
    let v = exited(&o, 1);
    error_is(&v, "InvalidTargetError", "control characters");
    assert_eq!(fs::read_dir(&b.ws_home).unwrap().count(), 0);
    let target = b.tmp.path().join("restored");
    let o = with_vars(&b.vars())
        .args([
            "restore",
            out.to_str().unwrap(),
            target.to_str().unwrap(),
            "--json",
        ])
        .out();
    assert_eq!(o.status.code(), Some(0), "{}", envelope(&o));
    assert!(target.join("config.json").is_file());
}

/// `-` is not a file name for an archive (it conventionally means stdout): refused, and no
/// file `-` is written.
#[test]
fn archive_to_dash_is_refused() {
    let a = Fx::new();
    a.workspace("w", &good_files());
    let o = with_vars(&a.vars())
        .args(["archive", "w", "-", "--json", "--allow-dirty"])
        .out();
    let v = exited(&o, 1);
    assert_eq!(v["error"]["type"], "InvalidTargetError", "{v}");
    assert!(!Path::new("-").exists());
}
