//! Hostile trees on disk: hub caches and workspace homes built from a hostile alphabet
//! (the `hostile` suite's property tests generate them; the `mount` suite mounts a few), and
//! the tree of every kind of input that once crashed or hung mlxfs.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use mlxfs::catalog::Locations;

use super::unprivileged::mkfifo;

// ------------------------------------------------------------------ the hostile alphabet

/// Pieces hostile names are made of.
pub const PIECES: &[&[u8]] = &[
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
pub const SPECIAL: &[&[u8]] = &[
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
pub fn name() -> impl Strategy<Value = Vec<u8>> {
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
pub fn commit() -> impl Strategy<Value = Vec<u8>> {
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
pub enum Cfg {
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

pub fn cfg() -> impl Strategy<Value = Cfg> {
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

pub fn cfg_bytes(c: &Cfg) -> Option<Vec<u8>> {
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
pub fn safetensors() -> impl Strategy<Value = Vec<u8>> {
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
pub enum Extra {
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

pub fn extra() -> impl Strategy<Value = Extra> {
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
pub struct ModelFiles {
    cfg: Cfg,
    weights: Option<Vec<u8>>,
    extras: Vec<Extra>,
    /// A real `.mlxfs` inside the model (file when true, folder when false).
    meta: Option<bool>,
}

pub fn model_files() -> impl Strategy<Value = ModelFiles> {
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
pub enum Snap {
    Files(Vec<u8>, ModelFiles),
    /// A snapshot that is a file.
    File(Vec<u8>),
}

#[derive(Debug, Clone)]
pub enum MainRef {
    Absent,
    Empty,
    Garbage(Vec<u8>),
    /// The n-th snapshot's name.
    Snapshot(usize),
    NoSnapshot,
}

#[derive(Debug, Clone)]
pub struct Repo {
    /// The folder's name after `models--`.
    id: Vec<u8>,
    snaps: Vec<Snap>,
    main: MainRef,
    /// Files as huggingface_hub writes them (links into blobs/) or plain files.
    blobs: bool,
    /// `snapshots/` itself missing.
    no_snapshots_dir: bool,
}

pub fn repo() -> impl Strategy<Value = Repo> {
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
pub struct Workspace {
    name: Vec<u8>,
    files: ModelFiles,
    /// The sentinel's bytes, when there is one.
    sentinel: Option<Vec<u8>>,
}

pub fn workspace() -> impl Strategy<Value = Workspace> {
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

pub fn catalog() -> impl Strategy<Value = Catalog> {
    (
        prop::collection::vec(repo(), 0..4),
        prop::collection::vec(workspace(), 0..4),
    )
        .prop_map(|(repos, workspaces)| Catalog { repos, workspaces })
}

// ------------------------------------------------------------------ writing it to disk

pub fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// Create a new file (never through a link, never over anything that is there — a FIFO, a
/// link to a system file — and never waiting on a FIFO). Generated trees hold links to
/// `/etc/passwd`: the generator must not write through them.
pub fn create(p: &Path, bytes: &[u8]) {
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
pub fn mkdir(p: &Path) -> bool {
    fs::create_dir(p).is_ok()
}

pub fn write_model(dir: &Path, f: &ModelFiles, blobs: Option<&Path>) {
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

// ------------------------------------------------------------------ fixed regression cases

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
