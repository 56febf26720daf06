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

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use proptest::prelude::*;

use mlxfs::catalog::Locations;
use mlxfs::cli::health::{HealthArgs, run as health};
use mlxfs::cli::list::{ListArgs, run as list};
use mlxfs::cli::show::{ShowArgs, run as show};
use mlxfs::vfs::{Content, Inodes, Virtual, build, diff};

// ------------------------------------------------------------------ the hostile alphabet

/// Pieces hostile names are made of.
const PIECES: &[&[u8]] = &[
    b"a",
    b"Z9",
    "é".as_bytes(),
    "😀".as_bytes(),
    "u\u{308}".as_bytes(),
    b"\n",
    b"\t",
    b"\r",
    b"\x1b[31m",
    b"\x7f",
    "\u{85}".as_bytes(),
    "\u{2028}".as_bytes(),
    b"\xff",
    b"\xc3",
    b"-",
    b".",
    b"@",
    b"--",
    b"%",
    b"%2F",
    b" ",
    b"\\",
    b"*",
];

/// Whole names with a meaning somewhere in mlxfs.
const SPECIAL: &[&[u8]] = &[
    b".mlxfs",
    b"-rf",
    b"--json",
    b".hidden",
    b"@hub",
    b"x@hub",
    b"config.json",
    b"model.safetensors",
    b".hf_cache",
    b".mlxk_workspace.json",
    b".DS_Store",
    b"x.incomplete",
    b"mlx-community",
];

/// A file-name component: never empty, `.`, `..`, or with `/` or NUL; at most 255 bytes.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(prop::sample::select(PIECES), 1..6).prop_map(|p| p.concat()),
        2 => prop::sample::select(SPECIAL).prop_map(|s| s.to_vec()),
        1 => (0usize..4).prop_map(|k| {
            // 255 bytes with a multi-byte character at each offset around the end.
            let mut v = vec![b'a'; 253 - k];
            v.extend_from_slice("é".as_bytes());
            v.truncate(255);
            v
        }),
    ]
    .prop_map(|mut v| {
        v.retain(|b| *b != b'/' && *b != 0);
        v.truncate(255);
        if v.is_empty() || v == b"." || v == b".." {
            v = b"n".to_vec();
        }
        v
    })
}

/// A snapshot folder name: a real commit, a short one, or anything.
fn commit() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[0-9a-f]{40}".prop_map(String::into_bytes),
        1 => "[0-9a-f]{1,16}".prop_map(String::into_bytes),
        1 => Just("abcdefé12".as_bytes().to_vec()),
        1 => Just("1234567890abcdef".as_bytes().to_vec()),
        2 => name(),
    ]
}

/// What a `config.json` holds.
#[derive(Debug, Clone)]
enum Cfg {
    Missing,
    Llama,
    Empty,
    /// 10 MB of valid JSON.
    Huge,
    Array,
    WrongTypes,
    /// 200 levels of nesting.
    Deep,
    NotJson,
    NotUtf8,
    /// A dangling symlink.
    Dangling,
    /// A folder named config.json.
    Folder,
}

fn cfg() -> impl Strategy<Value = Cfg> {
    prop_oneof![
        6 => Just(Cfg::Llama),
        1 => Just(Cfg::Missing),
        1 => Just(Cfg::Empty),
        1 => Just(Cfg::Array),
        2 => Just(Cfg::WrongTypes),
        1 => Just(Cfg::Deep),
        1 => Just(Cfg::NotJson),
        1 => Just(Cfg::NotUtf8),
        1 => Just(Cfg::Dangling),
        1 => Just(Cfg::Folder),
        // Rare: each one writes 10 MB.
        1 => prop::bool::weighted(0.08).prop_map(|b| if b { Cfg::Huge } else { Cfg::Llama }),
    ]
}

fn cfg_bytes(c: &Cfg) -> Option<Vec<u8>> {
    Some(match c {
        Cfg::Llama => br#"{"model_type": "llama", "max_position_embeddings": 2048, "quantization": {"bits": 4, "group_size": 64}}"#.to_vec(),
        Cfg::Empty => Vec::new(),
        Cfg::Huge => {
            let mut v = br#"{"model_type": "llama", "pad": ""#.to_vec();
            v.extend(std::iter::repeat_n(b'x', 10 << 20));
            v.extend_from_slice(br#""}"#);
            v
        }
        Cfg::Array => b"[1, 2, {\"model_type\": \"llama\"}]".to_vec(),
        Cfg::WrongTypes => br#"{"model_type": 5, "architectures": "LlamaForCausalLM", "quantization": [], "max_position_embeddings": -1, "text_config": 7, "vision_config": "yes", "audio_config": {"a": 1}, "model_file": false, "quantization_config": {"bits": {"x": 1}}, "n_positions": 1e400}"#.to_vec(),
        Cfg::Deep => {
            let mut v = b"{\"model_type\": \"llama\", \"x\": ".to_vec();
            v.extend(std::iter::repeat_n(b'[', 200));
            v.extend(std::iter::repeat_n(b']', 200));
            v.push(b'}');
            v
        }
        Cfg::NotJson => b"{model_type: llama".to_vec(),
        Cfg::NotUtf8 => b"{\"model_type\": \"\xff\xfe\"}".to_vec(),
        Cfg::Missing | Cfg::Dangling | Cfg::Folder => return None,
    })
}

/// A safetensors file that may lie.
fn safetensors() -> impl Strategy<Value = Vec<u8>> {
    let header = |h: &str, data: usize| {
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data));
        v
    };
    let good = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    prop_oneof![
        4 => Just(header(good, 16)),
        1 => Just(Vec::new()),
        1 => Just(vec![1, 2, 3]),
        1 => Just(u64::MAX.to_le_bytes().to_vec()),
        1 => Just({ let mut v = (99u64 << 20).to_le_bytes().to_vec(); v.extend_from_slice(b"{}"); v }),
        1 => Just(header(good, 4)),
        1 => Just(header("[1,2]", 0)),
        1 => Just(header(r#"{"w":{"data_offsets":[-1,"x"]}}"#, 8)),
        1 => Just(header(r#"{"w":{"data_offsets":[0,18446744073709551615]}}"#, 8)),
        1 => Just(header("\u{fffd}\u{0}", 0)),
    ]
}

/// One file of a model (by name, with its bytes or as a special kind).
#[derive(Debug, Clone)]
enum Extra {
    File(Vec<u8>, Vec<u8>),
    /// A link whose target is any text.
    Link(Vec<u8>, Vec<u8>),
    /// `a -> b`, `b -> a`.
    Loop,
    Dir(Vec<u8>),
    /// 200 nested folders with a file at the bottom.
    Deep,
    /// A FIFO (not a file, folder or link).
    Fifo(Vec<u8>),
    /// A file whose mtime is this many seconds from the epoch (far future, before 1970).
    Timed(Vec<u8>, i64),
}

fn extra() -> impl Strategy<Value = Extra> {
    prop_oneof![
        4 => (name(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(n, b)| Extra::File(n, b)),
        2 => (name(), prop_oneof![
            Just(b"../../../../etc/passwd".to_vec()),
            Just(b"/etc/hostname".to_vec()),
            Just(b"config.json".to_vec()),
            Just(b"nowhere".to_vec()),
            Just(b".".to_vec()),
            name(),
        ]).prop_map(|(n, t)| Extra::Link(n, t)),
        1 => Just(Extra::Loop),
        1 => name().prop_map(Extra::Dir),
        1 => prop::bool::weighted(0.2).prop_map(|b| if b { Extra::Deep } else { Extra::Loop }),
        1 => name().prop_map(Extra::Fifo),
        1 => (name(), prop_oneof![Just(99_999_999_999i64), Just(-86_400i64 * 365 * 80), Just(i64::MAX / 2_000_000_000)])
            .prop_map(|(n, t)| Extra::Timed(n, t)),
    ]
}

#[derive(Debug, Clone)]
struct ModelFiles {
    cfg: Cfg,
    weights: Option<Vec<u8>>,
    extras: Vec<Extra>,
    /// A real `.mlxfs` inside the model (file when true, folder when false).
    meta: Option<bool>,
}

fn model_files() -> impl Strategy<Value = ModelFiles> {
    (
        cfg(),
        prop::option::weighted(0.8, safetensors()),
        prop::collection::vec(extra(), 0..3),
        prop::option::weighted(0.1, any::<bool>()),
    )
        .prop_map(|(cfg, weights, extras, meta)| ModelFiles {
            cfg,
            weights,
            extras,
            meta,
        })
}

#[derive(Debug, Clone)]
enum Snap {
    Files(Vec<u8>, ModelFiles),
    /// A snapshot that is a file.
    File(Vec<u8>),
}

#[derive(Debug, Clone)]
enum MainRef {
    Absent,
    Empty,
    Garbage(Vec<u8>),
    /// The n-th snapshot's name.
    Snapshot(usize),
    NoSnapshot,
}

#[derive(Debug, Clone)]
struct Repo {
    /// The folder's name after `models--`.
    id: Vec<u8>,
    snaps: Vec<Snap>,
    main: MainRef,
    /// Files as huggingface_hub writes them (links into blobs/) or plain files.
    blobs: bool,
    /// `snapshots/` itself missing.
    no_snapshots_dir: bool,
}

fn repo() -> impl Strategy<Value = Repo> {
    (
        prop_oneof![
            3 => (name(), name()).prop_map(|(o, n)| [o, b"--".to_vec(), n].concat()),
            1 => name(),
            1 => Just(Vec::new()),
        ],
        prop::collection::vec(
            prop_oneof![
                6 => (commit(), model_files()).prop_map(|(c, f)| Snap::Files(c, f)),
                1 => commit().prop_map(Snap::File),
            ],
            0..3,
        ),
        prop_oneof![
            1 => Just(MainRef::Absent),
            1 => Just(MainRef::Empty),
            1 => prop::collection::vec(any::<u8>(), 1..60).prop_map(MainRef::Garbage),
            4 => (0usize..3).prop_map(MainRef::Snapshot),
            1 => Just(MainRef::NoSnapshot),
        ],
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(id, snaps, main, blobs, no_snapshots_dir)| Repo {
            id,
            snaps,
            main,
            blobs,
            no_snapshots_dir,
        })
}

#[derive(Debug, Clone)]
struct Workspace {
    name: Vec<u8>,
    files: ModelFiles,
    /// The sentinel's bytes, when there is one.
    sentinel: Option<Vec<u8>>,
}

fn workspace() -> impl Strategy<Value = Workspace> {
    (
        name(),
        model_files(),
        prop::option::weighted(
            0.3,
            prop_oneof![
                Just(br#"{"managed": true, "hash_algorithm": "v2", "content_hash": "sha256:0", "file_index": [{"path": "../x"}], "exclude_patterns": [1, "*"]}"#.to_vec()),
                Just(br#"{"managed": true, "hash_algorithm": "v2", "content_hash": "\n\nforged\thealthy", "file_index": [], "exclude_patterns": ["**********x", "[!", "["]}"#.to_vec()),
                Just(b"[]".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                prop::collection::vec(any::<u8>(), 0..50),
            ],
        ),
    )
        .prop_map(|(name, files, sentinel)| Workspace {
            name,
            files,
            sentinel,
        })
}

/// A whole catalog: a hub cache and a workspace home.
#[derive(Debug, Clone)]
pub struct Catalog {
    repos: Vec<Repo>,
    workspaces: Vec<Workspace>,
}

fn catalog() -> impl Strategy<Value = Catalog> {
    (
        prop::collection::vec(repo(), 0..4),
        prop::collection::vec(workspace(), 0..4),
    )
        .prop_map(|(repos, workspaces)| Catalog { repos, workspaces })
}

// ------------------------------------------------------------------ writing it to disk

fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// Create a new file (never through a link, never over anything that is there — a FIFO, a
/// link to a system file — and never waiting on a FIFO). Generated trees hold links to
/// `/etc/passwd`: the generator must not write through them.
fn create(p: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(mut f) = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
    {
        let _ = f.write_all(bytes);
    }
}

/// Set a file's mtime (not following a link) to `secs` from the epoch.
pub fn set_mtime(p: &Path, secs: i64) {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return;
    };
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    // SAFETY: utimensat with a valid path and two timespecs.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

/// Create a new folder (never through a link).
fn mkdir(p: &Path) -> bool {
    fs::create_dir(p).is_ok()
}

fn write_model(dir: &Path, f: &ModelFiles, blobs: Option<&Path>) {
    if !mkdir(dir) {
        return; // taken (two snapshots or workspaces with one name): the first one stays
    }
    let mut n = 0;
    let mut put = |rel: &OsStr, bytes: &[u8]| {
        let p = dir.join(rel);
        match blobs {
            Some(b) => {
                n += 1;
                let blob = b.join(format!("blob{n}-{}", bytes.len()));
                create(&blob, bytes);
                let _ = symlink(Path::new("../../blobs").join(blob.file_name().unwrap()), &p);
            }
            None => create(&p, bytes),
        }
    };
    match (&f.cfg, cfg_bytes(&f.cfg)) {
        (_, Some(b)) => put(OsStr::new("config.json"), &b),
        (Cfg::Dangling, _) => {
            let _ = symlink("missing-target", dir.join("config.json"));
        }
        (Cfg::Folder, _) => {
            mkdir(&dir.join("config.json"));
        }
        _ => {}
    }
    if let Some(w) = &f.weights {
        put(OsStr::new("model.safetensors"), w);
    }
    for e in &f.extras {
        match e {
            Extra::File(n, b) => put(&os(n), b),
            Extra::Link(n, t) => {
                let _ = symlink(os(t), dir.join(os(n)));
            }
            Extra::Loop => {
                let _ = symlink("loop-b", dir.join("loop-a"));
                let _ = symlink("loop-a", dir.join("loop-b"));
            }
            Extra::Dir(n) => {
                let d = dir.join(os(n));
                if mkdir(&d) && mkdir(&d.join("sub")) {
                    create(&d.join("sub/file.txt"), b"x");
                }
            }
            Extra::Deep => {
                let mut p = dir.join("deep");
                let mut made = mkdir(&p);
                for _ in 0..200 {
                    p.push("d");
                    made = made && mkdir(&p);
                }
                if made {
                    create(&p.join("bottom.txt"), b"bottom");
                }
            }
            Extra::Timed(n, secs) => {
                let p = dir.join(os(n));
                create(&p, b"timed");
                set_mtime(&p, *secs);
            }
            Extra::Fifo(n) => {
                let c = std::ffi::CString::new(dir.join(os(n)).into_os_string().into_vec());
                if let Ok(c) = c {
                    // SAFETY: mkfifo with a valid NUL-terminated path.
                    unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
                }
            }
        }
    }
    match f.meta {
        Some(true) => create(&dir.join(".mlxfs"), b"a real file"),
        Some(false) if mkdir(&dir.join(".mlxfs")) => {
            mkdir(&dir.join(".mlxfs/model.json"));
        }
        Some(false) => {}
        None => {}
    }
}

/// Write the catalog under `root`: `root/hf/hub` and `root/ws`. Returns the locations.
pub fn materialize(c: &Catalog, root: &Path) -> Locations {
    let hub = root.join("hf/hub");
    let ws_home = root.join("ws");
    materialize_into(c, &hub, &ws_home);
    let vars = [
        ("HF_HOME", root.join("hf")),
        ("MLXK_WORKSPACE_HOME", ws_home),
        ("HOME", root.to_path_buf()),
    ];
    Locations::from_vars(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    })
}

/// Write the catalog into a hub cache and a workspace home (names already there stay as they
/// are: several catalogs can share one pair of folders).
pub fn materialize_into(c: &Catalog, hub: &Path, ws_home: &Path) {
    fs::create_dir_all(hub).unwrap();
    fs::create_dir_all(ws_home).unwrap();
    for r in &c.repos {
        let dir = hub.join(os(&[b"models--".as_slice(), &r.id].concat()));
        if !mkdir(&dir) {
            continue; // taken, or a name the file system refuses (too long with the prefix)
        }
        let blobs = dir.join("blobs");
        if r.blobs {
            mkdir(&blobs);
        }
        if !r.no_snapshots_dir {
            mkdir(&dir.join("snapshots"));
        }
        let mut names = Vec::new();
        for s in &r.snaps {
            match s {
                Snap::Files(c, f) => {
                    let p = dir.join("snapshots").join(os(c));
                    write_model(&p, f, r.blobs.then_some(blobs.as_path()));
                    names.push(c.clone());
                }
                Snap::File(c) => {
                    create(&dir.join("snapshots").join(os(c)), b"not a folder");
                    names.push(c.clone());
                }
            }
        }
        let main: Option<Vec<u8>> = match &r.main {
            MainRef::Absent => None,
            MainRef::Empty => Some(Vec::new()),
            MainRef::Garbage(g) => Some(g.clone()),
            MainRef::Snapshot(i) => names.get(*i).cloned(),
            MainRef::NoSnapshot => Some(b"0123456789abcdef0123456789abcdef01234567".to_vec()),
        };
        if let Some(m) = main {
            mkdir(&dir.join("refs"));
            create(&dir.join("refs/main"), &m);
        }
    }
    for w in &c.workspaces {
        let dir = ws_home.join(os(&w.name));
        write_model(&dir, &w.files, None);
        if let Some(s) = &w.sentinel {
            create(&dir.join(".mlxk_workspace.json"), s);
        }
    }
}

/// `n` catalogs drawn with a fixed seed (the same ones every run), for the real mount test.
pub fn fixed_catalogs(n: usize) -> Vec<Catalog> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[9u8; 32]),
    );
    (0..n)
        .map(|_| catalog().new_tree(&mut runner).unwrap().current())
        .collect()
}

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

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "{}",
        p.display()
    );
}

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

/// A hub cache and workspace home holding each kind of input that once crashed or hung
/// mlxfs (see [`each_kind_that_once_failed`]; the real-mount test mounts it too).
pub fn regression_tree(hub: &Path, ws: &Path) {
    let good = br#"{"model_type": "llama"}"#;
    let put = |p: PathBuf, b: &[u8]| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b).unwrap();
    };
    // The issue: two snapshots, one cut by byte index inside `é`.
    put(
        hub.join("models--org--m/snapshots/1234567890abcdef/config.json"),
        good,
    );
    put(
        hub.join("models--org--m/snapshots/abcdefé12/config.json"),
        good,
    );
    set_mtime(
        &hub.join("models--org--m/snapshots/abcdefé12"),
        1_546_300_800,
    );
    // A hub folder whose name is not UTF-8.
    put(
        hub.join(os(b"models--a--\xff"))
            .join("snapshots/c/config.json"),
        good,
    );
    // FIFOs.
    put(hub.join("models--org--fifo/snapshots/c/config.json"), good);
    fs::create_dir_all(hub.join("models--org--fifo/refs")).unwrap();
    mkfifo(&hub.join("models--org--fifo/refs/main"));
    fs::create_dir_all(ws.join("fifo")).unwrap();
    mkfifo(&ws.join("fifo/config.json"));
    put(ws.join("fifo2/config.json"), good);
    mkfifo(&ws.join("fifo2/.mlxk_workspace.json"));
    mkfifo(&ws.join("fifo2/tokenizer_config.json"));
    mkfifo(&ws.join("fifo2/README.md"));
    // Links to an endless device.
    fs::create_dir_all(ws.join("zero")).unwrap();
    symlink("/dev/zero", ws.join("zero/config.json")).unwrap();
    symlink("/dev/zero", ws.join("zero/tokenizer.json")).unwrap();
    // Shard-like names with multi-byte characters.
    put(ws.join("shards/config.json"), good);
    put(ws.join("shards/ééééééééééé.safetensors"), b"x");
    put(ws.join("shards/é-model-00001-of-00002.safetensors"), b"x");
    put(ws.join("shards/model-0000é-of-00002.safetensors"), b"x");
    // A file dated far in the future, hashed by the clean check.
    put(ws.join("future/config.json"), good);
    put(ws.join("future/when.txt"), b"later");
    set_mtime(&ws.join("future/when.txt"), 99_999_999_999);
    put(
        ws.join("future/.mlxk_workspace.json"),
        br#"{"managed": true, "hash_algorithm": "v2", "content_hash": "sha256:0", "file_index": []}"#,
    );
    // Names two models would share in the mount, and an org that ends like a partial file.
    put(ws.join("x.incomplete/config.json"), good);
    put(
        hub.join("models--x.incomplete/snapshots/c/config.json"),
        good,
    );
    put(
        hub.join(os(b"models--x.incomplete--\xff"))
            .join("snapshots/c/config.json"),
        good,
    );
    put(
        hub.join("models--o--m@abc1234/snapshots/c/config.json"),
        good,
    );
    put(hub.join("models--o--m/snapshots/abc1234/config.json"), good);
    put(hub.join("models--o--m/snapshots/def5678/config.json"), good);
    put(hub.join("models--o--m/refs/main"), b"def5678");
    // A workspace named like the mount's folder, and one holding a real .mlxfs.
    put(ws.join(".mlxfs/config.json"), good);
    put(ws.join("meta/config.json"), good);
    put(ws.join("meta/.mlxfs"), b"mine");
}

/// Each kind of input that once crashed or hung mlxfs (found by the properties above or by
/// review), as one plain case ([`regression_tree`]): the issue's snapshot name cut inside `é`, a hub folder whose
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
