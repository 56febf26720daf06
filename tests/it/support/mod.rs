//! Fixture trees for the tests: a hub cache laid out as huggingface_hub writes it (blobs,
//! snapshot links, refs) and workspace folders, all in a temp dir; and what a suite needs
//! from the machine (FUSE, root, the Python venv), with a one-line skip where it is missing.

pub mod cli;
pub mod fakehub;
pub mod hostile_trees;
pub mod mnt;
pub mod python;
pub mod serve;
pub mod unprivileged;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use mlxfs::catalog::Locations;
use mlxfs::vfs::{DaemonInfo, ReadMode, Vfs};
use sha2::{Digest, Sha256};

/// The mount's core over `loc`, without mounting (daemon reads, mounted at the epoch).
pub fn vfs_for(loc: &Locations, mountpoint: &Path) -> Vfs {
    Vfs::new(
        loc.clone(),
        DaemonInfo {
            mountpoint: mountpoint.to_path_buf(),
            read_mode: ReadMode::Daemon,
            mounted_at: std::time::SystemTime::UNIX_EPOCH,
            refresh_error: None,
        },
    )
}

/// Locations from these variables only (everything else unset).
pub fn loc_from(vars: &[(&str, &str)]) -> Locations {
    Locations::from_vars(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
}

/// What a suite needs from the machine.
#[derive(Debug, Clone, Copy)]
pub enum Needs {
    /// A FUSE mount: `/dev/fuse`, and root or `fusermount3`.
    Fuse,
    /// Root (network namespaces with `unshare -n`, FUSE passthrough).
    Root,
    /// The test venv with mlx, mlx-lm, safetensors and huggingface_hub (`MLXFS_TEST_PYTHON`,
    /// made by scripts/test.sh).
    Python,
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(bin: &str) -> bool {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(bin).is_file())
}

/// Why this machine cannot run a suite that needs `n`, or `None` when it can.
pub fn missing(n: Needs) -> Option<String> {
    match n {
        Needs::Fuse if !Path::new("/dev/fuse").exists() => {
            Some("/dev/fuse is missing (Linux with the fuse module)".into())
        }
        Needs::Fuse if !is_root() && !on_path("fusermount3") => {
            Some("not root and no fusermount3 (apt-get install fuse3)".into())
        }
        Needs::Root if !is_root() => Some("needs root".into()),
        Needs::Python => match std::env::var_os("MLXFS_TEST_PYTHON") {
            Some(p) if Path::new(&p).is_file() => None,
            Some(p) => Some(format!(
                "MLXFS_TEST_PYTHON={} does not exist",
                p.to_string_lossy()
            )),
            None => Some("MLXFS_TEST_PYTHON is not set (scripts/test.sh makes the venv)".into()),
        },
        _ => None,
    }
}

/// Skip the calling test (print why and return true), or, when `MLXFS_REQUIRE_ALL=1` (as
/// scripts/test.sh and CI set it), fail it: there every suite must run.
pub fn skip(test: &str, why: &str) -> bool {
    if std::env::var("MLXFS_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test}: {why} (MLXFS_REQUIRE_ALL=1: every suite must run here)");
    }
    eprintln!("SKIP {test}: {why}");
    true
}

/// `require!(Fuse, Python);` at the top of a test: skip it (or fail under
/// `MLXFS_REQUIRE_ALL=1`) when the machine lacks one of these.
#[macro_export]
macro_rules! require {
    ($($n:ident),+ $(,)?) => {
        $(
            if let Some(why) = $crate::support::missing($crate::support::Needs::$n) {
                fn here() {}
                let test = std::any::type_name_of_val(&here).trim_end_matches("::here");
                if $crate::support::skip(test, &why) {
                    return;
                }
            }
        )+
    };
}

/// The string `key` of each object in the array `list`.
pub fn strs<'a>(list: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e[key].as_str().unwrap())
        .collect()
}

/// Every path below `root` (depth first, unsorted).
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// A safetensors file: u64-LE header length, JSON header, `data_len` zero bytes.
pub fn safetensors(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend(std::iter::repeat_n(0u8, data_len));
    v
}

/// A valid one-tensor safetensors file (2×2 F32).
pub fn tiny_weights() -> Vec<u8> {
    safetensors(
        r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"mlx"}}"#,
        16,
    )
}

pub const LLAMA_CONFIG: &str = r#"{"model_type": "llama", "hidden_size": 64, "max_position_embeddings": 2048, "quantization": {"group_size": 64, "bits": 4}}"#;

/// The files of a small healthy MLX llama.
pub fn good_files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("config.json".into(), LLAMA_CONFIG.as_bytes().to_vec()),
        ("model.safetensors".into(), tiny_weights()),
        ("tokenizer.json".into(), br#"{"version": "1.0"}"#.to_vec()),
        (
            "tokenizer_config.json".into(),
            br#"{"chat_template": "{{ messages }}"}"#.to_vec(),
        ),
    ]
}

pub fn files(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect()
}

pub struct Fx {
    pub tmp: tempfile::TempDir,
    pub hf_home: PathBuf,
    pub ws_home: PathBuf,
    pub home: PathBuf,
}

impl Fx {
    pub fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let hf_home = root.join("hf_home");
        let ws_home = root.join("workspaces");
        let home = root.join("home");
        for d in [&hf_home.join("hub"), &ws_home, &home] {
            fs::create_dir_all(d).unwrap();
        }
        Fx {
            tmp,
            hf_home,
            ws_home,
            home,
        }
    }

    pub fn hub(&self) -> PathBuf {
        self.hf_home.join("hub")
    }

    /// The environment the tests hand to the catalog (and to the binary).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HF_HOME", self.hf_home.to_string_lossy().into_owned()),
            (
                "MLXK_WORKSPACE_HOME",
                self.ws_home.to_string_lossy().into_owned(),
            ),
            ("HOME", self.home.to_string_lossy().into_owned()),
            ("HF_HUB_CACHE", String::new()),
        ]
    }

    pub fn locations(&self) -> Locations {
        let vars = self.vars();
        Locations::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
    }

    /// Add a snapshot of `repo` at `commit`: files become blobs named by their sha256, linked
    /// from the snapshot; `main` (when true) points refs/main at it.
    pub fn hub_snapshot(
        &self,
        repo: &str,
        commit: &str,
        files: &[(String, Vec<u8>)],
        main: bool,
    ) -> PathBuf {
        cache_snapshot(&self.hub(), repo, commit, files, main)
    }

    pub fn hub_model(&self, repo: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
        let commit: String = Sha256::digest(repo.as_bytes())
            .iter()
            .take(20)
            .map(|b| format!("{b:02x}"))
            .collect();
        self.hub_snapshot(repo, &commit, files, true)
    }

    /// A workspace folder under the workspace home with real files.
    pub fn workspace(&self, name: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
        let ws = self.ws_home.join(name);
        write_tree(&ws, files);
        ws
    }

    /// Healthy hub models ([`good_files`]) of these repo ids: their snapshots.
    pub fn good_hub_models<const N: usize>(&self, repos: [&str; N]) -> [PathBuf; N] {
        repos.map(|repo| self.hub_model(repo, &good_files()))
    }

    /// Healthy workspaces ([`good_files`]) of these names.
    pub fn good_workspaces<const N: usize>(&self, names: [&str; N]) -> [PathBuf; N] {
        names.map(|name| self.workspace(name, &good_files()))
    }

    /// A healthy workspace whose `model.safetensors` is a relative link to
    /// `weights/model.safetensors`, with a `.DS_Store` beside it (OS junk the mount hides).
    pub fn linked_workspace(&self, name: &str) -> PathBuf {
        let ws = self.workspace(name, &good_files());
        fs::create_dir_all(ws.join("weights")).unwrap();
        fs::rename(
            ws.join("model.safetensors"),
            ws.join("weights/model.safetensors"),
        )
        .unwrap();
        symlink("weights/model.safetensors", ws.join("model.safetensors")).unwrap();
        fs::write(ws.join(".DS_Store"), b"junk").unwrap();
        ws
    }
}

/// Add a snapshot of `repo` at `commit` to the hub cache folder `hub` (any cache: the shared
/// one, a workspace's `.hf_cache/hub`): files become blobs named by their sha256, linked from
/// the snapshot; `main` (when true) points refs/main at it.
pub fn cache_snapshot(
    hub: &Path,
    repo: &str,
    commit: &str,
    files: &[(String, Vec<u8>)],
    main: bool,
) -> PathBuf {
    {
        let dir = hub.join(format!("models--{}", repo.replace('/', "--")));
        let snap = dir.join("snapshots").join(commit);
        fs::create_dir_all(dir.join("blobs")).unwrap();
        fs::create_dir_all(&snap).unwrap();
        for (name, bytes) in files {
            let blob: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let bp = dir.join("blobs").join(&blob);
            if !bp.exists() {
                fs::write(&bp, bytes).unwrap();
            }
            let link = snap.join(name);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            let depth = name.matches('/').count();
            let target = format!("{}../../blobs/{blob}", "../".repeat(depth));
            symlink(target, &link).unwrap();
        }
        if main {
            fs::create_dir_all(dir.join("refs")).unwrap();
            fs::write(dir.join("refs/main"), commit).unwrap();
        }
        snap
    }
}

/// The regular files directly in `dir` with their bytes (to copy a generated model elsewhere).
pub fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

pub fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    fs::create_dir_all(root).unwrap();
    for (name, bytes) in files {
        let p = root.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
}

/// The first keys of a sentinel mlxfs writes, in mlx-knife's order.
pub const SENTINEL_HEAD: [&str; 6] = [
    "mlxk_version",
    "created_at",
    "source_repo",
    "source_revision",
    "managed",
    "operation",
];

/// A minimal managed sentinel (no hash yet).
pub fn managed_sentinel(ws: &Path, extra: &str) {
    let s = format!(
        r#"{{"mlxk_version": "2.0.8", "created_at": "2026-01-01T00:00:00Z", "source_repo": "org/x", "source_revision": null, "managed": true, "operation": "clone"{extra}}}"#
    );
    fs::write(ws.join(".mlxk_workspace.json"), s).unwrap();
}

/// Every path below `root` with its type, size, mtime and content digest: compare two of
/// these to prove that nothing was written.
pub fn tree_state(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            use std::os::unix::fs::MetadataExt;
            let sum = if md.is_file() {
                let b = fs::read(&p).unwrap();
                Sha256::digest(&b)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            } else if md.file_type().is_symlink() {
                fs::read_link(&p).unwrap().to_string_lossy().into_owned()
            } else {
                String::new()
            };
            out.push(format!(
                "{} {} {} {}.{} {}",
                p.display(),
                md.mode(),
                md.len(),
                md.mtime(),
                md.mtime_nsec(),
                sum
            ));
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A tmpfs mounted at `dir` for the test's lifetime (root, as on CI).
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn new(dir: PathBuf, opts: &str) -> Tmpfs {
        fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs needs root (run scripts/test.sh as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Every `.rs` file below `dir`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
