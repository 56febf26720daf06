//! `push`: upload a workspace to a hub repo through the hub's commit API.
//!
//! Small files travel inline (base64) in the NDJSON commit; files the hub's `preupload` answer
//! marks as LFS are uploaded first through the Git LFS batch API (`basic` single PUT or
//! `multipart` parts + completion), streamed from disk, then referenced by sha256 in the commit.
//! Files already on the hub with the same object id are skipped. Runtime caches (`.hf_cache/`),
//! the sentinel, VCS folders and editor/OS cruft are never uploaded.
//!
//! - `plan`: the workspace's files, the skip rules, the comparison with the remote branch;
//! - `lfs`: the Git LFS upload of large files;
//! - `commit`: `preupload`, the NDJSON commit, repo and branch creation.

mod commit;
mod lfs;
mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::client::{Ctx, check, network};
use super::progress::Progress;
use super::{ErrorKind, Hub, HubError, RepoSpec, Result};
use commit::{commit, create_branch, create_repo, preupload};
use lfs::upload_lfs;
use plan::file_digest;
pub use plan::{LocalFile, Plan, local_files, plan};

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

/// POST a JSON body and read the JSON answer (an answer that is not JSON is the hub's
/// protocol error; a body cut short is the network's).
async fn post_json(hub: &Hub, url: &str, body: &Value, ctx: &Ctx<'_>) -> Result<Value> {
    let resp = hub
        .auth(hub.http.post(url))
        .json(body)
        .send()
        .await
        .map_err(|e| network(e, &hub.endpoint))?;
    let resp = check(resp, ctx, hub.token.is_some()).await?;
    read_json(resp, url, &hub.endpoint).await
}

/// The JSON body of a response: `Network` when the body cannot be read to its end,
/// `Protocol` when it is not JSON (as `client.rs` classes the same failure). An empty body is
/// `null`.
async fn read_json(resp: reqwest::Response, what: &str, endpoint: &str) -> Result<Value> {
    let text = resp.text().await.map_err(|e| network(e, endpoint))?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| {
        HubError::new(
            ErrorKind::Protocol,
            format!("unexpected answer from {what}: {e}"),
        )
    })
}
