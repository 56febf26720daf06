//! The hub's commit API: `preupload` (which files go through LFS), the NDJSON commit, and repo
//! and branch creation.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{LocalFile, Plan, PushOptions, post_json, read_json};
use crate::hub::client::{Ctx, check, encode, network};
use crate::hub::progress::Progress;
use crate::hub::{ErrorKind, Hub, HubError, RepoSpec, Result};

pub(super) async fn create_repo(hub: &Hub, spec: &RepoSpec, private: bool) -> Result<()> {
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

pub(super) async fn create_branch(hub: &Hub, spec: &RepoSpec, branch: &str) -> Result<()> {
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

pub(super) async fn preupload(
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

pub(super) async fn commit(
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
    let v = read_json(resp, &url, &hub.endpoint).await?;
    let Some(oid) = v["commitOid"].as_str().filter(|o| !o.is_empty()) else {
        return Err(HubError::new(
            ErrorKind::Protocol,
            format!(
                "the hub's answer to the commit on {} has no commitOid",
                o.branch
            ),
        )
        .hint("The upload may have happened: check the repo on the hub before pushing again."));
    };
    let url = v["commitUrl"].as_str().unwrap_or_default().to_string();
    Ok((oid.to_string(), url))
}
