//! The hub client: endpoint and token from the environment, one HTTP client shared with hf-hub,
//! a small tokio runtime, HTTP status → [`HubError`] mapping, and the remote listing of a
//! revision (commit id + every file with its size and object id).

use std::time::Duration;

use hf_hub::{HFClient, HFError};
use serde::Deserialize;

use super::{ErrorKind, HubError, RepoSpec, Result};
use crate::env;

/// One file of a remote revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    /// The blob name huggingface_hub uses in `blobs/`: the sha256 of an LFS file, else the git
    /// blob id.
    pub etag: String,
    pub lfs: bool,
}

/// A remote revision: the commit it resolves to and its files.
#[derive(Debug, Clone)]
pub struct RemoteSnapshot {
    pub repo: String,
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

impl RemoteSnapshot {
    /// Σ file sizes (saturating: sizes come from the hub's answer).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |n, f| n.saturating_add(f.size))
    }
}

/// A connection to a hub (the real one, a mirror, or the test suite's local hub).
pub struct Hub {
    pub endpoint: String,
    pub token: Option<String>,
    pub(crate) client: HFClient,
    pub(crate) http: reqwest::Client,
    pub(crate) rt: tokio::runtime::Runtime,
}

fn env_nonempty(k: &str) -> Option<String> {
    env::var(k).filter(|v| !v.trim().is_empty())
}

/// `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else `$HF_HOME/token` (huggingface_hub's order).
pub fn token_from_env() -> Option<String> {
    if let Some(t) = env_nonempty(env::HF_TOKEN) {
        return Some(t.trim().to_string());
    }
    crate::sys::read_text(&token_file()?)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The file holding the token when `HF_TOKEN` is unset: `HF_TOKEN_PATH`, else
/// `$HF_HOME/token` with `HF_HOME` as huggingface_hub computes it ([`crate::catalog::hf_home`]:
/// the variable, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`), as its
/// `HF_TOKEN_PATH` constant.
pub fn token_file() -> Option<std::path::PathBuf> {
    env_nonempty(env::HF_TOKEN_PATH)
        .map(std::path::PathBuf::from)
        .or_else(|| Some(crate::catalog::hf_home().join("token")))
}

/// huggingface_hub's offline switch (`1`, `true`, `yes`, `on`).
pub fn offline() -> bool {
    env_nonempty(env::HF_HUB_OFFLINE)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn secs_from_env(k: &str, default: u64) -> Duration {
    Duration::from_secs(
        env_nonempty(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

impl Hub {
    /// From `HF_ENDPOINT` (default https://huggingface.co) and the token variables.
    /// `MLXFS_HUB_TIMEOUT` (seconds, default 60) bounds a stalled connection.
    pub fn from_env() -> Result<Hub> {
        let endpoint = env_nonempty(env::HF_ENDPOINT)
            .unwrap_or_else(|| "https://huggingface.co".to_string())
            .trim_end_matches('/')
            .to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(HubError::new(
                ErrorKind::InvalidSpec,
                format!("HF_ENDPOINT={endpoint} is not an http(s) URL"),
            ));
        }
        let token = token_from_env();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(secs_from_env(env::MLXFS_HUB_TIMEOUT, 60))
            .user_agent(concat!("mlxfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HubError::new(ErrorKind::Network, format!("HTTP client: {e}")))?;
        let mut b = HFClient::builder()
            .endpoint(endpoint.clone())
            .client(http.clone())
            .cache_enabled(false)
            .retry_max_attempts(2);
        if let Some(t) = &token {
            b = b.token(t.clone());
        }
        let client = b
            .build()
            .map_err(|e| HubError::new(ErrorKind::Network, format!("hub client: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| HubError::io(&e, "starting the network runtime"))?;
        Ok(Hub {
            endpoint,
            token,
            client,
            http,
            rt,
        })
    }

    pub(crate) fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub(crate) fn api_url(&self, repo: &str, tail: &str) -> String {
        format!("{}/api/models/{}{}", self.endpoint, repo, tail)
    }

    /// GET a JSON API route, mapping failures.
    pub(crate) async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        ctx: &Ctx<'_>,
    ) -> Result<(T, reqwest::header::HeaderMap)> {
        if offline() {
            return Err(HubError::new(
                ErrorKind::Offline,
                "HF_HUB_OFFLINE is set: mlxfs will not contact the hub",
            )
            .hint("Unset HF_HUB_OFFLINE to download; models already in the cache or in workspaces work offline."));
        }
        let resp = self
            .auth(self.http.get(url))
            .send()
            .await
            .map_err(|e| network(e, &self.endpoint))?;
        let resp = check(resp, ctx, self.token.is_some()).await?;
        let headers = resp.headers().clone();
        let v = resp.json::<T>().await.map_err(|e| {
            HubError::new(
                ErrorKind::Protocol,
                format!("unexpected answer from {url}: {e}"),
            )
        })?;
        Ok((v, headers))
    }

    /// Resolve `spec` to a commit and list its files.
    pub fn remote_snapshot(&self, spec: &RepoSpec) -> Result<RemoteSnapshot> {
        self.rt.block_on(self.remote_snapshot_async(spec))
    }

    async fn remote_snapshot_async(&self, spec: &RepoSpec) -> Result<RemoteSnapshot> {
        #[derive(Deserialize)]
        struct Info {
            sha: Option<String>,
        }
        let ctx = Ctx {
            repo: &spec.repo,
            rev: Some(spec.revision()),
            path: None,
        };
        let url = self.api_url(
            &spec.repo,
            &format!("/revision/{}", encode(spec.revision())),
        );
        let (info, _) = self.get_json::<Info>(&url, &ctx).await?;
        let commit = info.sha.filter(|s| super::is_commit(s)).ok_or_else(|| {
            HubError::new(
                ErrorKind::Protocol,
                format!("the hub gave no commit id for {spec}"),
            )
        })?;
        let files = self.list_files(&spec.repo, &commit, &ctx).await?;
        Ok(RemoteSnapshot {
            repo: spec.repo.clone(),
            commit,
            files,
        })
    }

    /// Every file of a revision (recursive tree listing, following `Link` pagination).
    pub(crate) async fn list_files(
        &self,
        repo: &str,
        rev: &str,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<RemoteFile>> {
        #[derive(Deserialize)]
        struct Lfs {
            oid: String,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "type")]
            kind: String,
            path: String,
            #[serde(default)]
            oid: String,
            #[serde(default)]
            size: u64,
            lfs: Option<Lfs>,
        }
        let mut url = Some(self.api_url(repo, &format!("/tree/{}?recursive=true", encode(rev))));
        let mut out = Vec::new();
        while let Some(u) = url.take() {
            let (page, headers) = self.get_json::<Vec<Entry>>(&u, ctx).await?;
            for e in page {
                if e.kind != "file" {
                    continue;
                }
                let (etag, lfs) = match e.lfs {
                    Some(l) => (l.oid, true),
                    None => (e.oid, false),
                };
                // Object ids name blob files and verify downloads: sha256 for LFS files,
                // the git blob sha1 otherwise.
                let want = if lfs { 64 } else { 40 };
                if etag.len() != want || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(HubError::new(
                        ErrorKind::Protocol,
                        format!(
                            "the hub listed an unusable object id {etag:?} for {}",
                            e.path
                        ),
                    ));
                }
                if !safe_repo_path(&e.path) {
                    return Err(HubError::new(
                        ErrorKind::Protocol,
                        format!("the hub listed an unsafe file path {:?}", e.path),
                    ));
                }
                out.push(RemoteFile {
                    path: e.path,
                    size: e.size,
                    etag: etag.to_ascii_lowercase(),
                    lfs,
                });
            }
            url = next_link(&headers);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// A relative path with no empty, `.` or `..` parts.
pub fn safe_repo_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Percent-encode a revision for a URL path segment (`refs/pr/1` → `refs%2Fpr%2F1`).
pub fn encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn next_link(h: &reqwest::header::HeaderMap) -> Option<String> {
    let v = h.get("link")?.to_str().ok()?;
    v.split(',').find_map(|part| {
        let (url, rest) = part.split_once(';')?;
        rest.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// What a request was about, for error messages.
pub(crate) struct Ctx<'a> {
    pub repo: &'a str,
    pub rev: Option<&'a str>,
    pub path: Option<&'a str>,
}

pub(crate) fn network(e: reqwest::Error, endpoint: &str) -> HubError {
    let what = if e.is_timeout() {
        "the connection timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    HubError::new(
        ErrorKind::Network,
        format!("{what} ({endpoint}): {}", root_cause(&e)),
    )
    .hint("Check the network (and HF_ENDPOINT); run the same command again to resume.")
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

/// A response header as text.
pub(crate) fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Map a non-success response to a [`HubError`] (or pass the response through).
pub(crate) async fn check(
    resp: reqwest::Response,
    ctx: &Ctx<'_>,
    has_token: bool,
) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = header(&resp, "x-error-code").unwrap_or_default();
    let server_msg = header(&resp, "x-error-message");
    let url = resp.url().to_string();
    let body = resp.text().await.unwrap_or_default();
    let server_msg = server_msg.or_else(|| {
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
    });
    Err(from_status(
        status.as_u16(),
        &code,
        server_msg,
        &url,
        ctx,
        has_token,
    ))
}

pub(crate) fn from_status(
    status: u16,
    code: &str,
    server_msg: Option<String>,
    url: &str,
    ctx: &Ctx<'_>,
    has_token: bool,
) -> HubError {
    let detail = server_msg.map(|m| format!(" ({m})")).unwrap_or_default();
    let token_hint = if has_token {
        "The token in HF_TOKEN was refused: check that it is valid and has the needed access."
    } else {
        "Set HF_TOKEN to an access token (private and gated repos need one)."
    };
    match (status, code) {
        (401, "RepoNotFound") | (404, "RepoNotFound") => HubError::new(
            ErrorKind::RepoNotFound,
            format!("Repository not found: {}{detail}", ctx.repo),
        )
        .hint(format!(
            "Check the name (it is `org/name`). {}",
            if has_token { "" } else { "Private repos need HF_TOKEN." }
        )),
        (404, "RevisionNotFound") => HubError::new(
            ErrorKind::RevisionNotFound,
            format!(
                "Revision not found: {}@{}{detail}",
                ctx.repo,
                ctx.rev.unwrap_or("main")
            ),
        )
        .hint("Give an existing branch, tag or commit after `@`."),
        (404, "EntryNotFound") => HubError::new(
            ErrorKind::EntryNotFound,
            format!(
                "File not found in {}: {}{detail}",
                ctx.repo,
                ctx.path.unwrap_or("?")
            ),
        ),
        (404, _) => HubError::new(
            ErrorKind::RepoNotFound,
            format!("Not found: {url}{detail}"),
        )
        .hint(format!("Check the name. {token_hint}")),
        (401, _) => HubError::new(
            ErrorKind::Auth,
            format!("Authentication required for {}{detail}", ctx.repo),
        )
        .hint(token_hint),
        (403, _) => HubError::new(
            ErrorKind::AccessDenied,
            format!("Access denied to {}{detail}", ctx.repo),
        )
        .hint("For a gated repo, accept its conditions on the hub; otherwise use a token with access (write access to push)."),
        (409, _) => HubError::new(ErrorKind::Conflict, format!("Conflict at {url}{detail}")),
        (429, _) => HubError::new(ErrorKind::Server, format!("Rate limited by the hub{detail}"))
            .hint("Wait a while and run the same command again."),
        (s, _) if s >= 500 => HubError::new(
            ErrorKind::Server,
            format!("The hub answered {s} for {url}{detail}"),
        )
        .hint("The hub has a problem; run the same command again later to resume."),
        (s, _) if (400..500).contains(&s) => HubError::new(
            ErrorKind::Rejected,
            format!("The hub refused the request ({s}) at {url}{detail}"),
        ),
        (s, _) => HubError::new(
            ErrorKind::Protocol,
            format!("Unexpected answer {s} for {url}{detail}"),
        ),
    }
}

/// Map an hf-hub error.
pub(crate) fn from_hf(e: HFError, ctx: &Ctx<'_>, hub: &Hub) -> HubError {
    let has_token = hub.token.is_some();
    match e {
        HFError::AuthRequired { context } => from_status(
            401,
            context.error_code.as_deref().unwrap_or(""),
            context.server_message,
            &context.url,
            ctx,
            has_token,
        ),
        HFError::Forbidden { context } => from_status(
            403,
            "",
            context.server_message,
            &context.url,
            ctx,
            has_token,
        ),
        HFError::RepoNotFound { .. } => from_status(404, "RepoNotFound", None, "", ctx, has_token),
        HFError::RevisionNotFound { .. } => {
            from_status(404, "RevisionNotFound", None, "", ctx, has_token)
        }
        HFError::EntryNotFound { .. } => {
            from_status(404, "EntryNotFound", None, "", ctx, has_token)
        }
        HFError::Http { context }
        | HFError::Conflict { context }
        | HFError::RateLimited { context, .. } => from_status(
            context.status.as_u16(),
            context.error_code.as_deref().unwrap_or(""),
            context.server_message,
            &context.url,
            ctx,
            has_token,
        ),
        HFError::Request { source, .. } => network(source, &hub.endpoint),
        HFError::Io(e) => HubError::io(&e, "download"),
        other => HubError::new(ErrorKind::Server, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_revisions() {
        assert_eq!(encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode("v1.0"), "v1.0");
    }

    #[test]
    fn link_pagination() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "link",
            "<https://hub/api/x?cursor=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://hub/api/x?cursor=2"));
    }

    #[test]
    fn paths() {
        assert!(safe_repo_path("a/b.txt"));
        for p in ["", "/a", "a/../b", "a//b", "./a"] {
            assert!(!safe_repo_path(p), "{p}");
        }
    }
}
