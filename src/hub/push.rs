//! `push`: upload a workspace to a hub repo through the hub's commit API.
//!
//! Small files travel inline (base64) in the NDJSON commit; files the hub's `preupload` answer
//! marks as LFS are uploaded first through the Git LFS batch API (`basic` single PUT or
//! `multipart` parts + completion), streamed from disk, then referenced by sha256 in the commit.
//! Files already on the hub with the same object id are skipped. Runtime caches (`.hf_cache/`),
//! the sentinel, VCS folders and editor/OS cruft are never uploaded.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{Ctx, RemoteFile, check, encode, network};
use super::download::ObjectId;
use super::progress::Progress;
use super::{ErrorKind, Hub, HubError, RepoSpec, Result};
use crate::hash::fnmatch::fnmatch;

/// Folder names never uploaded.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".hf_cache",
    "__pycache__",
    ".venv",
    "venv",
    ".Spotlight-V100",
    ".Trashes",
    ".fseventsd",
    ".TemporaryItems",
    ".ipynb_checkpoints",
];
/// File name patterns never uploaded.
const SKIP_FILES: &[&str] = &[
    ".mlxk_workspace.json",
    ".mlxk_workspace.json.tmp",
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "desktop.ini",
    "*.pyc",
    "*.incomplete",
    "*.part",
    "*~",
    ".*.swp",
    ".*.swo",
    ".hfignore",
    ".gitignore",
];

/// Options of a push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub private: bool,
    pub create: bool,
    pub branch: String,
    pub message: String,
    pub dry_run: bool,
    pub delete: bool,
}

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
    pub fn changes(&self) -> usize {
        self.added.len() + self.modified.len() + self.deleted.len()
    }
    fn upload_bytes(&self) -> u64 {
        self.local
            .iter()
            .filter(|f| self.added.contains(&f.path) || self.modified.contains(&f.path))
            .map(|f| f.size)
            .sum()
    }
}

/// The `data` of a push.
pub fn data(
    spec: &RepoSpec,
    hub: &Hub,
    o: &PushOptions,
    plan: &Plan,
    commit: Option<(&str, &str)>,
) -> Value {
    let summary = json!({"added": plan.added.len(), "modified": plan.modified.len(), "deleted": plan.deleted.len()});
    let no_changes = plan.changes() == 0 && !plan.create_repo;
    let message = if o.dry_run {
        if no_changes {
            "Dry-run: no changes".to_string()
        } else {
            format!(
                "Dry-run: would upload {} files ({}) +{} ~{} -{}",
                plan.added.len() + plan.modified.len(),
                super::progress::human_bytes(plan.upload_bytes()),
                plan.added.len(),
                plan.modified.len(),
                plan.deleted.len()
            )
        }
    } else if no_changes {
        "No changes; nothing was committed.".to_string()
    } else {
        format!(
            "Committed {} files (+{} ~{} -{}).",
            plan.added.len() + plan.modified.len(),
            plan.added.len(),
            plan.modified.len(),
            plan.deleted.len()
        )
    };
    json!({
        "repo_id": spec.repo,
        "branch": o.branch,
        "commit_sha": commit.map(|c| c.0),
        "commit_url": commit.map(|c| c.1),
        "repo_url": format!("{}/{}", hub.endpoint, spec.repo),
        "uploaded_files_count": if o.dry_run { 0 } else { plan.added.len() + plan.modified.len() },
        "local_files_count": plan.local.len(),
        "no_changes": no_changes,
        "created_repo": plan.create_repo && !o.dry_run,
        "message": message,
        "change_summary": summary,
        "dry_run": o.dry_run,
        "would_create_repo": plan.create_repo && o.dry_run,
        "would_create_branch": plan.create_branch && o.dry_run,
        "added_files": plan.added,
        "modified_files": plan.modified,
        "deleted_files": plan.deleted,
        "remote_only_files": plan.remote_only,
        "upload_bytes": plan.upload_bytes(),
    })
}

/// Names listed in the workspace's `.hfignore` (one pattern a line, `#` comments).
fn hfignore(ws: &Path) -> Vec<String> {
    fs::read_to_string(ws.join(".hfignore"))
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
fn file_digest(p: &Path, lfs: bool, size: u64) -> Result<String> {
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

/// Upload the plan's changes in one commit. Returns (commit id, commit URL).
pub fn push(
    hub: &Hub,
    spec: &RepoSpec,
    o: &PushOptions,
    plan: &Plan,
    progress: &Arc<dyn Progress>,
) -> Result<Option<(String, String)>> {
    if hub.token.is_none() {
        return Err(HubError::new(ErrorKind::Auth, "HF_TOKEN not set")
            .hint("Set HF_TOKEN to a token with write access (--dry-run works without one)."));
    }
    hub.rt.block_on(async {
        if plan.create_repo {
            create_repo(hub, spec, o.private).await?;
        }
        if plan.create_branch {
            create_branch(hub, spec, &o.branch).await?;
        }
        if plan.changes() == 0 {
            return Ok(None);
        }
        let upload: Vec<&LocalFile> = plan
            .local
            .iter()
            .filter(|f| plan.added.contains(&f.path) || plan.modified.contains(&f.path))
            .collect();
        progress.start(
            &format!("push {}", spec.repo),
            upload.len(),
            upload.iter().map(|f| f.size).sum(),
        );
        let modes = preupload(hub, spec, &o.branch, &upload).await?;
        let mut lfs: BTreeMap<String, (String, u64)> = BTreeMap::new();
        let lfs_files: Vec<&LocalFile> = upload
            .iter()
            .copied()
            .filter(|f| modes.get(&f.path).is_some_and(|m| m == "lfs"))
            .collect();
        for f in &lfs_files {
            let abs = f.abs.clone();
            let size = f.size;
            let oid = tokio::task::spawn_blocking(move || file_digest(&abs, true, size))
                .await
                .map_err(|e| HubError::new(ErrorKind::Io, e.to_string()))??;
            lfs.insert(f.path.clone(), (oid, f.size));
        }
        let r = async {
            if !lfs_files.is_empty() {
                upload_lfs(hub, spec, &o.branch, &lfs_files, &lfs, progress).await?;
            }
            commit(hub, spec, o, plan, &upload, &lfs, progress.as_ref()).await
        }
        .await;
        progress.finish();
        r.map(Some)
    })
}

async fn post_json(hub: &Hub, url: &str, body: &Value, ctx: &Ctx<'_>) -> Result<Value> {
    let resp = hub
        .auth(hub.http.post(url))
        .json(body)
        .send()
        .await
        .map_err(|e| network(e, &hub.endpoint))?;
    let resp = check(resp, ctx, hub.token.is_some()).await?;
    let text = resp.text().await.map_err(|e| network(e, &hub.endpoint))?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn create_repo(hub: &Hub, spec: &RepoSpec, private: bool) -> Result<()> {
    let (org, name) = spec.owner_name();
    let mut body = json!({"name": name, "type": "model", "private": private});
    if !org.is_empty() {
        body["organization"] = json!(org);
    }
    let ctx = Ctx {
        repo: &spec.repo,
        rev: None,
        path: None,
    };
    match post_json(
        hub,
        &format!("{}/api/repos/create", hub.endpoint),
        &body,
        &ctx,
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::Conflict => Ok(()), // created meanwhile
        Err(e) => Err(e),
    }
}

async fn create_branch(hub: &Hub, spec: &RepoSpec, branch: &str) -> Result<()> {
    let ctx = Ctx {
        repo: &spec.repo,
        rev: Some(branch),
        path: None,
    };
    let url = hub.api_url(&spec.repo, &format!("/branch/{}", encode(branch)));
    match post_json(hub, &url, &json!({}), &ctx).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::Conflict => Ok(()),
        Err(e) => Err(e),
    }
}

async fn preupload(
    hub: &Hub,
    spec: &RepoSpec,
    branch: &str,
    files: &[&LocalFile],
) -> Result<HashMap<String, String>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Mode {
        path: String,
        upload_mode: String,
    }
    #[derive(Deserialize)]
    struct Resp {
        files: Vec<Mode>,
    }
    let mut out = HashMap::new();
    let ctx = Ctx {
        repo: &spec.repo,
        rev: Some(branch),
        path: None,
    };
    for chunk in files.chunks(256) {
        let mut entries = Vec::new();
        for f in chunk {
            let mut sample = vec![0u8; 512.min(f.size as usize)];
            fs::File::open(&f.abs)
                .and_then(|mut h| h.read_exact(&mut sample))
                .map_err(|e| HubError::io(&e, &format!("reading {}", f.path)))?;
            entries.push(json!({"path": f.path, "size": f.size,
                "sample": base64::engine::general_purpose::STANDARD.encode(&sample)}));
        }
        let url = hub.api_url(&spec.repo, &format!("/preupload/{}", encode(branch)));
        let v = post_json(hub, &url, &json!({"files": entries}), &ctx).await?;
        let r: Resp = serde_json::from_value(v).map_err(|e| {
            HubError::new(
                ErrorKind::Protocol,
                format!("unexpected preupload answer: {e}"),
            )
        })?;
        for m in r.files {
            out.insert(m.path, m.upload_mode);
        }
    }
    Ok(out)
}

/// A request body streaming `len` bytes of `path` from `offset`, counting progress.
fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    progress: &Arc<dyn Progress>,
) -> Result<reqwest::Body> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(path)
        .map_err(|e| HubError::io(&e, &format!("reading {}", path.display())))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| HubError::io(&e, "seeking"))?;
    let progress = progress.clone();
    let stream = futures::stream::unfold((f, len), move |(mut f, left)| {
        let progress = progress.clone();
        async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; (1 << 20).min(left as usize)];
            match f.read_exact(&mut buf) {
                Ok(()) => {
                    progress.advance(buf.len() as u64);
                    let n = buf.len() as u64;
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                        (f, left - n),
                    ))
                }
                Err(e) => Some((Err(e), (f, 0))),
            }
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

async fn upload_lfs(
    hub: &Hub,
    spec: &RepoSpec,
    branch: &str,
    files: &[&LocalFile],
    lfs: &BTreeMap<String, (String, u64)>,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    let ctx = Ctx {
        repo: &spec.repo,
        rev: Some(branch),
        path: None,
    };
    let objects: Vec<Value> = files
        .iter()
        .map(|f| json!({"oid": lfs[&f.path].0, "size": f.size}))
        .collect();
    let url = format!("{}/{}.git/info/lfs/objects/batch", hub.endpoint, spec.repo);
    let body = json!({"operation": "upload", "transfers": ["basic", "multipart"], "objects": objects,
                      "hash_algo": "sha256", "ref": {"name": format!("refs/heads/{branch}")}});
    let resp = hub
        .auth(hub.http.post(&url))
        .header("Accept", "application/vnd.git-lfs+json")
        .header("Content-Type", "application/vnd.git-lfs+json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| network(e, &hub.endpoint))?;
    let resp = check(resp, &ctx, hub.token.is_some()).await?;
    let v: Value = resp.json().await.map_err(|e| network(e, &hub.endpoint))?;
    let by_oid: HashMap<&str, &LocalFile> = files
        .iter()
        .map(|f| (lfs[&f.path].0.as_str(), *f))
        .collect();
    for obj in v["objects"].as_array().cloned().unwrap_or_default() {
        let oid = obj["oid"].as_str().unwrap_or("");
        let Some(f) = by_oid.get(oid) else { continue };
        if let Some(err) = obj.get("error") {
            return Err(HubError::new(
                ErrorKind::Rejected,
                format!("LFS upload of {} refused: {err}", f.path),
            ));
        }
        let Some(up) = obj["actions"].get("upload") else {
            progress.advance(f.size); // already on the hub
            continue;
        };
        let href = up["href"].as_str().unwrap_or("").to_string();
        let header: BTreeMap<String, String> = up["header"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), String::from),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(chunk) = header.get("chunk_size").and_then(|c| c.parse::<u64>().ok()) {
            // Multipart: numbered part URLs in the header, then a completion POST.
            let mut parts = Vec::new();
            let mut nums: Vec<(u64, &String)> = header
                .iter()
                .filter_map(|(k, v)| k.parse::<u64>().ok().map(|n| (n, v)))
                .collect();
            nums.sort();
            if nums.first().is_some_and(|(n, _)| *n == 0) || chunk == 0 {
                return Err(HubError::new(
                    ErrorKind::Protocol,
                    format!(
                        "the hub's multipart upload plan for {} is malformed",
                        f.path
                    ),
                ));
            }
            for (n, part_url) in nums {
                let off = (n - 1) * chunk;
                let len = chunk.min(f.size.saturating_sub(off));
                let resp = hub
                    .http
                    .put(part_url.as_str())
                    .header("Content-Length", len)
                    .body(file_body(&f.abs, off, len, progress)?)
                    .send()
                    .await
                    .map_err(|e| network(e, &hub.endpoint))?;
                let resp = check(resp, &ctx, true).await?;
                let etag = super::client::header(&resp, "etag").unwrap_or_default();
                parts.push(json!({"partNumber": n, "etag": etag}));
            }
            post_json(hub, &href, &json!({"oid": oid, "parts": parts}), &ctx).await?;
        } else {
            let mut rb = hub.http.put(&href).header("Content-Length", f.size);
            for (k, v) in &header {
                rb = rb.header(k.as_str(), v.as_str());
            }
            let resp = rb
                .body(file_body(&f.abs, 0, f.size, progress)?)
                .send()
                .await
                .map_err(|e| network(e, &hub.endpoint))?;
            check(resp, &ctx, true).await?;
        }
        if let Some(verify) = obj["actions"].get("verify") {
            let href = verify["href"].as_str().unwrap_or("");
            post_json(hub, href, &json!({"oid": oid, "size": f.size}), &ctx).await?;
        }
    }
    Ok(())
}

async fn commit(
    hub: &Hub,
    spec: &RepoSpec,
    o: &PushOptions,
    plan: &Plan,
    upload: &[&LocalFile],
    lfs: &BTreeMap<String, (String, u64)>,
    progress: &dyn Progress,
) -> Result<(String, String)> {
    let mut body = Vec::new();
    let mut line = |v: Value| {
        body.extend_from_slice(v.to_string().as_bytes());
        body.push(b'\n');
    };
    line(json!({"key": "header", "value": {"summary": o.message, "description": ""}}));
    for f in upload {
        if let Some((oid, size)) = lfs.get(&f.path) {
            line(
                json!({"key": "lfsFile", "value": {"path": f.path, "algo": "sha256", "oid": oid, "size": size}}),
            );
        } else {
            let data =
                fs::read(&f.abs).map_err(|e| HubError::io(&e, &format!("reading {}", f.path)))?;
            progress.advance(f.size);
            line(
                json!({"key": "file", "value": {"content": base64::engine::general_purpose::STANDARD.encode(&data),
                        "path": f.path, "encoding": "base64"}}),
            );
        }
    }
    for d in &plan.deleted {
        line(json!({"key": "deletedFile", "value": {"path": d}}));
    }
    let ctx = Ctx {
        repo: &spec.repo,
        rev: Some(&o.branch),
        path: None,
    };
    let url = hub.api_url(&spec.repo, &format!("/commit/{}", encode(&o.branch)));
    let resp = hub
        .auth(hub.http.post(&url))
        .header("Content-Type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .map_err(|e| network(e, &hub.endpoint))?;
    let resp = check(resp, &ctx, true).await?;
    let v: Value = resp.json().await.map_err(|e| network(e, &hub.endpoint))?;
    Ok((
        v["commitOid"].as_str().unwrap_or("").to_string(),
        v["commitUrl"].as_str().unwrap_or("").to_string(),
    ))
}
