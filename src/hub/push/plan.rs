//! The upload plan: which files of the workspace a push takes (skip rules, `.hfignore`, links
//! that must stay inside), and how they compare with the remote branch (by git/sha256 ids).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::PushOptions;
use crate::hash::fnmatch::fnmatch;
use crate::hub::client::{Ctx, RemoteFile};
use crate::hub::download::ObjectId;
use crate::hub::{ErrorKind, Hub, HubError, RepoSpec, Result};

/// Folder names never uploaded.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".hf_cache",
    "__pycache__",
    ".venv",
    "venv",
    ".ipynb_checkpoints",
];
/// File name patterns never uploaded.
const SKIP_FILES: &[&str] = &[
    ".mlxk_workspace.json",
    ".mlxk_workspace.json.tmp",
    "*.pyc",
    "*.incomplete",
    "*.part",
    "*~",
    ".*.swp",
    ".*.swo",
    ".hfignore",
    ".gitignore",
];

/// A file of the workspace to upload.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: String,
    pub abs: PathBuf,
    pub size: u64,
}

/// What would change (or changed).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub local: Vec<LocalFile>,
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
    pub remote_only: Vec<String>,
    pub create_repo: bool,
    pub create_branch: bool,
}

impl Plan {
    /// Files added, modified or deleted.
    pub fn changes(&self) -> usize {
        self.added.len() + self.modified.len() + self.deleted.len()
    }
    /// Bytes of the files to upload.
    pub fn upload_bytes(&self) -> u64 {
        self.local
            .iter()
            .filter(|f| self.added.contains(&f.path) || self.modified.contains(&f.path))
            .map(|f| f.size)
            .sum()
    }
}

/// Names listed in the workspace's `.hfignore` (one pattern a line, `#` comments).
fn hfignore(ws: &Path) -> Vec<String> {
    crate::sys::read_text(&ws.join(".hfignore"))
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.trim_end_matches('/').to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A repo path the upload rules would never take from a workspace.
fn skipped_path(path: &str, extra: &[String]) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().unwrap_or("");
    parts.iter().any(|d| {
        SKIP_DIRS.contains(d) || d.starts_with(".mlxfs-") || extra.iter().any(|x| fnmatch(d, x))
    }) || skipped_file(name, extra)
}

fn skipped_file(name: &str, extra: &[String]) -> bool {
    SKIP_FILES.iter().any(|p| fnmatch(name, p)) || extra.iter().any(|p| fnmatch(name, p))
}

/// Every file of the workspace that a push would upload, sorted by path. Links must stay
/// inside the workspace; anything unreadable or unnamable is an error naming the file.
pub fn local_files(ws: &Path) -> Result<Vec<LocalFile>> {
    let root =
        fs::canonicalize(ws).map_err(|e| HubError::io(&e, &format!("reading {}", ws.display())))?;
    let extra = hfignore(&root);
    let mut out = Vec::new();
    walk(&root, &root, &extra, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, extra: &[String], out: &mut Vec<LocalFile>) -> Result<()> {
    let bad = |why: String| HubError::new(ErrorKind::InvalidTarget, why);
    let rd =
        fs::read_dir(dir).map_err(|e| HubError::io(&e, &format!("reading {}", dir.display())))?;
    for e in rd {
        let e = e.map_err(|e| HubError::io(&e, &format!("reading {}", dir.display())))?;
        let p = e.path();
        // OS junk (`._*` sidecars, `.DS_Store`, …) is never a model file: not even looked at.
        if crate::osjunk::is_os_junk(&e.file_name()) {
            continue;
        }
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            return Err(bad(format!(
                "{} has a name that is not UTF-8; the hub cannot store it",
                p.display()
            )));
        };
        let ft = e
            .file_type()
            .map_err(|e| HubError::io(&e, &format!("reading {}", p.display())))?;
        let (real, md) = if ft.is_symlink() {
            let real = fs::canonicalize(&p)
                .map_err(|_| bad(format!("{} is a dangling link", p.display())))?;
            if !real.starts_with(root) {
                return Err(bad(format!(
                    "{} links outside the workspace (to {}); copy the file in or remove the link",
                    p.display(),
                    real.display()
                )));
            }
            let md = fs::metadata(&real)
                .map_err(|e| HubError::io(&e, &format!("reading {}", p.display())))?;
            (real, md)
        } else {
            let md = e
                .metadata()
                .map_err(|e| HubError::io(&e, &format!("reading {}", p.display())))?;
            (p.clone(), md)
        };
        if md.is_dir() {
            if SKIP_DIRS.contains(&name.as_str())
                || name.starts_with(".mlxfs-")
                || extra.iter().any(|x| fnmatch(&name, x))
            {
                continue;
            }
            if ft.is_symlink() {
                continue; // linked folders would upload content twice
            }
            walk(root, &p, extra, out)?;
        } else if md.is_file() {
            if skipped_file(&name, extra) {
                continue;
            }
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            out.push(LocalFile {
                path: rel,
                abs: real,
                size: md.len(),
            });
        }
    }
    Ok(())
}

/// The hub's object id of a local file (see [`ObjectId`]).
pub(super) fn file_digest(p: &Path, lfs: bool, size: u64) -> Result<String> {
    let mut f =
        fs::File::open(p).map_err(|e| HubError::io(&e, &format!("reading {}", p.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut id = ObjectId::new(lfs, size);
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| HubError::io(&e, &format!("reading {}", p.display())))?;
        if n == 0 {
            break;
        }
        id.update(&buf[..n]);
    }
    Ok(id.finish())
}

/// Compare the workspace with the remote branch.
pub fn plan(hub: &Hub, ws: &Path, spec: &RepoSpec, o: &PushOptions) -> Result<Plan> {
    let local = local_files(ws)?;
    let extra = hfignore(ws);
    let mut plan = Plan {
        local,
        ..Plan::default()
    };
    let ctx = Ctx {
        repo: &spec.repo,
        rev: Some(&o.branch),
        path: None,
    };
    let remote: Vec<RemoteFile> = match hub.rt.block_on(hub.list_files(&spec.repo, &o.branch, &ctx))
    {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::RepoNotFound => {
            if !o.create {
                return Err(HubError::new(
                    ErrorKind::RepoNotFound,
                    format!("Repository not found: {}", spec.repo),
                )
                .hint("Add --create to create it (with --private for a private repo)."));
            }
            plan.create_repo = true;
            plan.create_branch = o.branch != "main";
            Vec::new()
        }
        Err(e) if e.kind == ErrorKind::RevisionNotFound => {
            plan.create_branch = true;
            hub.rt
                .block_on(hub.list_files(&spec.repo, "main", &ctx))
                .unwrap_or_default()
        }
        Err(e) => return Err(e),
    };
    let by_path: HashMap<&str, &RemoteFile> = remote.iter().map(|r| (r.path.as_str(), r)).collect();
    for f in &plan.local {
        match by_path.get(f.path.as_str()) {
            None => plan.added.push(f.path.clone()),
            Some(r) if r.size != f.size => plan.modified.push(f.path.clone()),
            Some(r) => {
                if file_digest(&f.abs, r.lfs, f.size)? != r.etag.to_ascii_lowercase() {
                    plan.modified.push(f.path.clone());
                }
            }
        }
    }
    let local: std::collections::HashSet<&str> =
        plan.local.iter().map(|f| f.path.as_str()).collect();
    for r in &remote {
        if !local.contains(r.path.as_str()) && r.path != ".gitattributes" {
            // Never delete what the workspace only chose not to upload.
            if o.delete && !skipped_path(&r.path, &extra) {
                plan.deleted.push(r.path.clone());
            } else {
                plan.remote_only.push(r.path.clone());
            }
        }
    }
    Ok(plan)
}
