//! Git LFS uploads of the files `preupload` marked as LFS: the batch API, then one PUT
//! (`basic`) or numbered parts and a completion (`multipart`), streamed from disk.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{LocalFile, post_json, read_json};
use crate::hub::client::{Ctx, check, network};
use crate::hub::progress::Progress;
use crate::hub::{ErrorKind, Hub, HubError, RepoSpec, Result};

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

pub(super) async fn upload_lfs(
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
    let v = read_json(resp, &url, &hub.endpoint).await?;
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
                let Some(off) = (n - 1).checked_mul(chunk).filter(|o| *o < f.size.max(1)) else {
                    return Err(HubError::new(
                        ErrorKind::Protocol,
                        format!(
                            "the hub's multipart upload plan for {} names part {n} beyond the file",
                            f.path
                        ),
                    ));
                };
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
                let etag = crate::hub::client::header(&resp, "etag").unwrap_or_default();
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
