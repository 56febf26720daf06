//! A real local stand-in for the Hugging Face Hub: an HTTP/1.1 server on 127.0.0.1 that serves
//! model repositories from plain folders with the hub's endpoints and headers, answers ranged
//! GETs, accepts uploads (`preupload`, LFS batch + basic PUT, NDJSON commit, repo creation), and
//! can fail or stall on request so tests can exercise errors and resume.
//!
//! Layout: `ROOT/<org>/<name>/**` is branch `main` of repo `<org>/<name>`;
//! `ROOT/.branches/<org>/<name>/<branch>/**` are further branches. A revision is a branch name
//! or the commit id of one. The commit id is `sha1` over `<path>\0<git oid>\n` of every file in
//! path order, so it changes whenever a file does. Files over 10,000 bytes are LFS files: their
//! etag is their sha256 (with `X-Linked-Etag`/`X-Linked-Size`), otherwise the git blob id.
//!
//! Standard library only (plus sha1/sha2), one thread per connection, bodies streamed from disk.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Files larger than this are LFS files on the hub.
pub const LFS_THRESHOLD: u64 = 10_000;
/// LFS objects larger than this are uploaded in parts (the hub uses far larger sizes).
pub const MULTIPART_THRESHOLD: u64 = 2 << 20;
pub const MULTIPART_CHUNK: u64 = 1 << 20;

#[derive(Clone)]
struct FileMeta {
    size: u64,
    git_oid: String,
    sha256: String,
}

impl FileMeta {
    fn lfs(&self) -> bool {
        self.size > LFS_THRESHOLD
    }
    fn etag(&self) -> &str {
        if self.lfs() {
            &self.sha256
        } else {
            &self.git_oid
        }
    }
}

#[derive(Default)]
struct Faults {
    /// (path suffix, bytes): serve that many bytes of a matching file, then hold the
    /// connection open without sending more until the stall is released.
    stall: Option<(String, u64)>,
    /// (path substring, status, remaining count): answer matching requests with `status`.
    fail: Vec<(String, u16, usize)>,
    /// Throttle every file body to this many bytes per second.
    rate: Option<u64>,
}

struct State {
    root: PathBuf,
    meta: Mutex<HashMap<PathBuf, (u64, i128, FileMeta)>>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<String>>,
    token: Mutex<Option<String>>,
    base: String,
    stop: AtomicBool,
}

/// A running fake hub; stops when dropped.
pub struct FakeHub {
    pub url: String,
    pub root: PathBuf,
    state: Arc<State>,
}

impl FakeHub {
    /// Serve `root` on 127.0.0.1 with an ephemeral port.
    pub fn start(root: &Path) -> FakeHub {
        FakeHub::start_on(root, 0)
    }

    pub fn start_on(root: &Path, port: u16) -> FakeHub {
        fs::create_dir_all(root).unwrap();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let state = Arc::new(State {
            root: root.to_path_buf(),
            meta: Mutex::default(),
            faults: Mutex::default(),
            log: Mutex::default(),
            token: Mutex::new(None),
            base: url.clone(),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(&st, conn);
                });
            }
        });
        FakeHub {
            url,
            root: root.to_path_buf(),
            state,
        }
    }

    /// Write a repo's files (branch `main`), replacing what was there.
    pub fn put_repo(&self, repo: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
        let dir = self.root.join(repo);
        let _ = fs::remove_dir_all(&dir);
        write_files(&dir, files);
        dir
    }

    /// Write a further branch of a repo.
    pub fn put_branch(&self, repo: &str, branch: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
        let dir = self.root.join(".branches").join(repo).join(branch);
        let _ = fs::remove_dir_all(&dir);
        write_files(&dir, files);
        dir
    }

    /// The commit id the hub reports for a repo's branch right now.
    pub fn commit(&self, repo: &str, branch: &str) -> String {
        let dir = branch_dir(&self.state.root, repo, branch).expect("branch exists");
        commit_of(&self.state, &dir).0
    }

    /// Hold the body of a file whose path ends with `suffix` after `after` bytes.
    pub fn stall(&self, suffix: &str, after: u64) {
        self.state.faults.lock().unwrap().stall = Some((suffix.to_string(), after));
    }
    /// Let stalled bodies continue; stop stalling.
    pub fn release(&self) {
        self.state.faults.lock().unwrap().stall = None;
    }
    /// Answer the next `times` requests whose path contains `substr` with `status`.
    pub fn fail(&self, substr: &str, status: u16, times: usize) {
        self.state
            .faults
            .lock()
            .unwrap()
            .fail
            .push((substr.to_string(), status, times));
    }
    /// Throttle file bodies (bytes per second); `None` for full speed.
    pub fn throttle(&self, rate: Option<u64>) {
        self.state.faults.lock().unwrap().rate = rate;
    }
    /// Require `Authorization: Bearer <token>` on every request.
    pub fn require_token(&self, token: &str) {
        *self.state.token.lock().unwrap() = Some(token.to_string());
    }
    /// The requests served so far: `<METHOD> <path> range=<Range> -> <status>`.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
    pub fn clear_requests(&self) {
        self.state.log.lock().unwrap().clear();
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.release();
        // Wake the accept loop.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    fs::create_dir_all(dir).unwrap();
}

fn valid_repo(repo: &str) -> bool {
    let parts: Vec<&str> = repo.split('/').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.starts_with(".branches"))
}

/// The folder of `repo`'s `branch` (`main` = the repo folder itself).
fn branch_dir(root: &Path, repo: &str, branch: &str) -> Option<PathBuf> {
    if !valid_repo(repo) || branch.contains('/') || branch.starts_with('.') || branch.is_empty() {
        return None;
    }
    let d = if branch == "main" {
        root.join(repo)
    } else {
        root.join(".branches").join(repo).join(branch)
    };
    d.is_dir().then_some(d)
}

fn branches(root: &Path, repo: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Some(d) = branch_dir(root, repo, "main") {
        out.push(("main".to_string(), d));
    }
    if let Ok(rd) = fs::read_dir(root.join(".branches").join(repo)) {
        let mut names: Vec<String> = rd
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in names {
            out.push((n.clone(), root.join(".branches").join(repo).join(n)));
        }
    }
    out
}

/// Every regular file under `dir` as (repo path, absolute path), sorted by path.
fn repo_files(dir: &Path) -> Vec<(String, PathBuf)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, PathBuf)>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(base, &p, out);
            } else if ft.is_file() {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
                out.push((rel, p));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn file_meta(st: &State, p: &Path) -> io::Result<FileMeta> {
    let md = fs::metadata(p)?;
    let mtime = md
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    if let Some((size, m, meta)) = st.meta.lock().unwrap().get(p)
        && *size == md.len()
        && *m == mtime
    {
        return Ok(meta.clone());
    }
    let mut f = fs::File::open(p)?;
    let mut s1 = Sha1::new();
    s1.update(format!("blob {}\0", md.len()).as_bytes());
    let mut s256 = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s1.update(&buf[..n]);
        s256.update(&buf[..n]);
    }
    let meta = FileMeta {
        size: md.len(),
        git_oid: hex(&s1.finalize()),
        sha256: hex(&s256.finalize()),
    };
    st.meta
        .lock()
        .unwrap()
        .insert(p.to_path_buf(), (md.len(), mtime, meta.clone()));
    Ok(meta)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A revision: its commit and its files as (path, absolute path, metadata).
type Revision = (String, Vec<(String, PathBuf, FileMeta)>);

/// The revision a branch folder holds now.
fn commit_of(st: &State, dir: &Path) -> Revision {
    let mut h = Sha1::new();
    let mut out = Vec::new();
    for (rel, abs) in repo_files(dir) {
        let Ok(m) = file_meta(st, &abs) else { continue };
        h.update(format!("{rel}\0{}\n", m.git_oid).as_bytes());
        out.push((rel, abs, m));
    }
    (hex(&h.finalize()), out)
}

/// Find the branch folder for `rev` (a branch name or the commit of one).
fn resolve_rev(st: &State, repo: &str) -> impl Fn(&str) -> Option<Revision> {
    let all = branches(&st.root, repo);
    move |rev: &str| {
        for (name, dir) in &all {
            if name == rev {
                return Some(commit_of(st, dir));
            }
        }
        if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
            for (_, dir) in &all {
                let c = commit_of(st, dir);
                if c.0 == rev {
                    return Some(c);
                }
            }
        }
        None
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    File {
        path: PathBuf,
        start: u64,
        len: u64,
        rel: String,
    },
}

impl Response {
    fn json(status: u16, v: serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(serde_json::to_vec(&v).unwrap()),
        }
    }
    fn error(status: u16, code: &str, message: &str) -> Response {
        let mut r = Response::json(status, serde_json::json!({ "error": message }));
        r.headers.push(("X-Error-Code".into(), code.into()));
        r.headers.push(("X-Error-Message".into(), message.into()));
        r
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 3 <= b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut sz = String::new();
            r.read_line(&mut sz)?;
            let n =
                usize::from_str_radix(sz.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end)?;
                break;
            }
            let at = body.len();
            body.resize(at + n, 0);
            r.read_exact(&mut body[at..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    Ok(Some(Request {
        method,
        path: percent_decode(&path),
        query,
        headers,
        body,
    }))
}

fn serve_connection(st: &State, conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    while let Some(req) = read_request(&mut reader)? {
        let resp = route(st, &req);
        let range = req.headers.get("range").cloned().unwrap_or_default();
        st.log.lock().unwrap().push(format!(
            "{} {} range={} -> {}",
            req.method, req.path, range, resp.status
        ));
        write_response(st, &mut out, &req, resp)?;
        if req
            .headers
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            break;
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(
    st: &State,
    out: &mut TcpStream,
    req: &Request,
    resp: Response,
) -> io::Result<()> {
    let len = match &resp.body {
        Body::Bytes(b) => b.len() as u64,
        Body::File { len, .. } => *len,
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    out.write_all(head.as_bytes())?;
    if req.method == "HEAD" {
        return Ok(());
    }
    match resp.body {
        Body::Bytes(b) => out.write_all(&b),
        Body::File {
            path,
            start,
            len,
            rel,
        } => send_file(st, out, &path, start, len, &rel),
    }
}

fn send_file(
    st: &State,
    out: &mut TcpStream,
    path: &Path,
    start: u64,
    len: u64,
    rel: &str,
) -> io::Result<()> {
    use std::io::Seek;
    let mut f = fs::File::open(path)?;
    f.seek(io::SeekFrom::Start(start))?;
    let (stall, rate) = {
        let fl = st.faults.lock().unwrap();
        let stall = fl
            .stall
            .as_ref()
            .filter(|(s, _)| rel.ends_with(s.as_str()))
            .map(|(_, n)| *n);
        (stall, fl.rate)
    };
    let mut sent = 0u64;
    if let Some(after) = stall {
        // Bytes up to `after` (of the file, not of this range), then hold.
        let first = after.saturating_sub(start).min(len);
        io::copy(&mut (&mut f).take(first), out)?;
        out.flush()?;
        sent = first;
        while st.faults.lock().unwrap().stall.is_some() && !st.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(rate) = rate {
        let chunk = (rate / 20).max(1);
        while sent < len {
            let n = chunk.min(len - sent);
            io::copy(&mut (&mut f).take(n), out)?;
            sent += n;
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(());
    }
    // File → socket: std uses sendfile/splice here.
    io::copy(&mut f.take(len - sent), out)?;
    Ok(())
}

fn authorized(st: &State, req: &Request) -> bool {
    match &*st.token.lock().unwrap() {
        None => true,
        Some(t) => req
            .headers
            .get("authorization")
            .is_some_and(|a| a == &format!("Bearer {t}")),
    }
}

fn route(st: &State, req: &Request) -> Response {
    {
        let mut fl = st.faults.lock().unwrap();
        if let Some(i) = fl
            .fail
            .iter()
            .position(|(s, _, n)| *n > 0 && req.path.contains(s.as_str()))
        {
            fl.fail[i].2 -= 1;
            let status = fl.fail[i].1;
            return Response::error(status, "InjectedFailure", "injected failure");
        }
    }
    // Upload URLs handed out by the LFS batch answer are pre-signed (as the hub's are).
    if !authorized(st, req)
        && !req.path.starts_with("/lfs-upload/")
        && !req.path.starts_with("/lfs-part/")
    {
        return Response::error(
            401,
            "Unauthorized",
            "Invalid credentials in Authorization header",
        );
    }
    let p = req.path.trim_end_matches('/');
    let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("GET" | "HEAD", ["api", "whoami-v2"]) => {
            Response::json(200, serde_json::json!({"name": "tester", "type": "user"}))
        }
        ("POST", ["api", "repos", "create"]) => create_repo(st, req),
        ("GET" | "HEAD", ["api", "models", org, name]) => {
            info(st, &format!("{org}/{name}"), "main")
        }
        ("GET" | "HEAD", ["api", "models", org, name, "revision", rev]) => {
            info(st, &format!("{org}/{name}"), rev)
        }
        ("GET" | "HEAD", ["api", "models", org, name, "tree", rev, rest @ ..]) => tree(
            st,
            &format!("{org}/{name}"),
            rev,
            &rest.join("/"),
            req.query.contains("recursive=true") || req.query.contains("recursive=True"),
        ),
        ("POST", ["api", "models", _org, _name, "preupload", _rev]) => preupload(req),
        ("POST", ["api", "models", org, name, "branch", branch]) => {
            create_branch(st, &format!("{org}/{name}"), branch)
        }
        ("POST", ["api", "models", org, name, "commit", rev]) => {
            commit(st, &format!("{org}/{name}"), rev, &req.body)
        }
        ("POST", [org, name_git, "info", "lfs", "objects", "batch"])
            if name_git.ends_with(".git") =>
        {
            lfs_batch(st, &req.body, org)
        }
        ("PUT", ["lfs-upload", oid]) => lfs_put(st, oid, &req.body),
        ("PUT", ["lfs-part", oid, n]) => lfs_part(st, oid, n, &req.body),
        ("POST", ["lfs-complete", oid]) => lfs_complete(st, oid, &req.body),
        ("GET" | "HEAD", [org, name, "resolve", rev, rest @ ..]) if !rest.is_empty() => {
            resolve(st, req, &format!("{org}/{name}"), rev, &rest.join("/"))
        }
        _ => Response::error(404, "NotFound", &format!("no route {}", req.path)),
    }
}

fn repo_not_found() -> Response {
    Response::error(404, "RepoNotFound", "Repository not found")
}

fn lookup(st: &State, repo: &str, rev: &str) -> Result<Revision, Response> {
    if branch_dir(&st.root, repo, "main").is_none() {
        return Err(repo_not_found());
    }
    resolve_rev(st, repo)(rev)
        .ok_or_else(|| Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}")))
}

fn info(st: &State, repo: &str, rev: &str) -> Response {
    let (commit, files) = match lookup(st, repo, rev) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let siblings: Vec<_> = files
        .iter()
        .map(|(p, _, _)| serde_json::json!({ "rfilename": p }))
        .collect();
    Response::json(
        200,
        serde_json::json!({
            "_id": commit, "id": repo, "modelId": repo, "sha": commit, "private": false,
            "gated": false, "disabled": false, "siblings": siblings, "tags": [],
            "downloads": 0, "likes": 0, "lastModified": "2026-01-01T00:00:00.000Z",
        }),
    )
}

fn tree(st: &State, repo: &str, rev: &str, sub: &str, recursive: bool) -> Response {
    let (_, files) = match lookup(st, repo, rev) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let prefix = if sub.is_empty() {
        String::new()
    } else {
        format!("{sub}/")
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (rel, _, m) in &files {
        let Some(rest) = rel.strip_prefix(&prefix) else {
            continue;
        };
        let comps: Vec<&str> = rest.split('/').collect();
        let dirs = if recursive {
            comps.len() - 1
        } else {
            comps.len().min(2) - 1
        };
        for i in 0..dirs {
            let d = format!("{prefix}{}", comps[..=i].join("/"));
            if seen.insert(d.clone()) {
                let mut h = Sha1::new();
                h.update(d.as_bytes());
                out.push(serde_json::json!({"type": "directory", "oid": hex(&h.finalize()), "size": 0, "path": d}));
            }
        }
        if !recursive && comps.len() > 1 {
            continue;
        }
        let mut e =
            serde_json::json!({"type": "file", "oid": m.git_oid, "size": m.size, "path": rel});
        if m.lfs() {
            e["lfs"] = serde_json::json!({"oid": m.sha256, "size": m.size, "pointerSize": 134});
        }
        out.push(e);
    }
    Response::json(200, serde_json::Value::Array(out))
}

fn resolve(st: &State, req: &Request, repo: &str, rev: &str, path: &str) -> Response {
    let (commit, files) = match lookup(st, repo, rev) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some((_, abs, m)) = files.iter().find(|(p, _, _)| p == path) else {
        let mut r = Response::error(404, "EntryNotFound", &format!("{path} does not exist"));
        r.body = Body::Bytes(Vec::new());
        r.headers.push(("X-Repo-Commit".into(), commit));
        return r;
    };
    let mut headers = vec![
        ("ETag".to_string(), format!("\"{}\"", m.etag())),
        ("X-Repo-Commit".to_string(), commit),
        ("Accept-Ranges".to_string(), "bytes".to_string()),
        (
            "Content-Type".to_string(),
            "application/octet-stream".to_string(),
        ),
    ];
    if m.lfs() {
        headers.push(("X-Linked-Etag".into(), format!("\"{}\"", m.sha256)));
        headers.push(("X-Linked-Size".into(), m.size.to_string()));
    }
    let size = m.size;
    let mut status = 200;
    let (mut start, mut len) = (0, size);
    if let Some(r) = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        && let Some((a, b)) = r.split_once('-')
        && (a.is_empty() || a.chars().all(|c| c.is_ascii_digit()))
        && (b.is_empty() || b.chars().all(|c| c.is_ascii_digit()))
        && !(a.is_empty() && b.is_empty())
    {
        let (s, e) = if a.is_empty() {
            let n: u64 = b.parse().unwrap_or(0);
            (size.saturating_sub(n), size.saturating_sub(1))
        } else {
            let s: u64 = a.parse().unwrap_or(0);
            let e = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                b.parse::<u64>().unwrap_or(0).min(size.saturating_sub(1))
            };
            (s, e)
        };
        if s >= size || s > e {
            headers.push(("Content-Range".into(), format!("bytes */{size}")));
            return Response {
                status: 416,
                headers,
                body: Body::Bytes(Vec::new()),
            };
        }
        status = 206;
        start = s;
        len = e - s + 1;
        headers.push(("Content-Range".into(), format!("bytes {s}-{e}/{size}")));
    }
    Response {
        status,
        headers,
        body: Body::File {
            path: abs.clone(),
            start,
            len,
            rel: path.to_string(),
        },
    }
}

fn create_repo(st: &State, req: &Request) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let name = v["name"].as_str().unwrap_or("");
    let org = v["organization"].as_str().unwrap_or("tester");
    let repo = format!("{org}/{name}");
    if !valid_repo(&repo) {
        return Response::error(400, "BadRequest", "invalid repo name");
    }
    let dir = st.root.join(&repo);
    if dir.exists() {
        return Response::error(409, "Conflict", "You already created this model repo");
    }
    fs::create_dir_all(&dir).unwrap();
    Response::json(
        200,
        serde_json::json!({"url": format!("{}/{repo}", st.base), "name": repo, "id": repo}),
    )
}

fn preupload(req: &Request) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let files: Vec<_> = v["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let size = f["size"].as_u64().unwrap_or(0);
            serde_json::json!({
                "path": f["path"], "uploadMode": if size > LFS_THRESHOLD { "lfs" } else { "regular" },
                "shouldIgnore": false,
            })
        })
        .collect();
    Response::json(
        200,
        serde_json::json!({ "files": files, "commitOid": null }),
    )
}

fn lfs_dir(st: &State) -> PathBuf {
    st.root.join(".lfs")
}

fn lfs_batch(st: &State, body: &[u8], _org: &str) -> Response {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let objects: Vec<_> = v["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| {
            let oid = o["oid"].as_str().unwrap_or("").to_string();
            let mut e = serde_json::json!({"oid": oid, "size": o["size"], "authenticated": true});
            let size = o["size"].as_u64().unwrap_or(0);
            if !lfs_dir(st).join(&oid).exists() && size > MULTIPART_THRESHOLD {
                // The hub's multipart transfer: numbered part URLs, then a completion POST.
                let mut header = serde_json::Map::new();
                header.insert("chunk_size".into(), serde_json::json!(MULTIPART_CHUNK.to_string()));
                for n in 1..=size.div_ceil(MULTIPART_CHUNK) {
                    header.insert(format!("{n:05}"), serde_json::json!(format!("{}/lfs-part/{oid}/{n}", st.base)));
                }
                e["actions"] = serde_json::json!({"upload": {
                    "href": format!("{}/lfs-complete/{oid}", st.base), "header": header,
                }});
            } else if !lfs_dir(st).join(&oid).exists() {
                e["actions"] = serde_json::json!({"upload": {
                    "href": format!("{}/lfs-upload/{oid}", st.base), "header": {}, "expires_in": 86400
                }});
            }
            e
        })
        .collect();
    let mut r = Response::json(
        200,
        serde_json::json!({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}),
    );
    r.headers[0].1 = "application/vnd.git-lfs+json".into();
    r
}

fn lfs_put(st: &State, oid: &str, body: &[u8]) -> Response {
    if hex(&Sha256::digest(body)) != oid {
        return Response::error(400, "BadRequest", "sha256 mismatch");
    }
    fs::create_dir_all(lfs_dir(st)).unwrap();
    let tmp = lfs_dir(st).join(format!("{oid}.tmp"));
    fs::write(&tmp, body).unwrap();
    fs::rename(&tmp, lfs_dir(st).join(oid)).unwrap();
    Response {
        status: 200,
        headers: vec![],
        body: Body::Bytes(Vec::new()),
    }
}

/// A new branch `branch` of `repo` with the files of `main` (its folder); the branch's folder.
fn branch_from(st: &State, repo: &str, branch: &str, main: &Path) -> PathBuf {
    let d = st.root.join(".branches").join(repo).join(branch);
    fs::create_dir_all(&d).unwrap();
    for (rel, abs) in repo_files(main) {
        let t = d.join(&rel);
        fs::create_dir_all(t.parent().unwrap()).unwrap();
        fs::copy(abs, t).unwrap();
    }
    d
}

fn create_branch(st: &State, repo: &str, branch: &str) -> Response {
    let Some(main) = branch_dir(&st.root, repo, "main") else {
        return repo_not_found();
    };
    if branch_dir(&st.root, repo, branch).is_some() {
        return Response::error(409, "Conflict", "Reference already exists");
    }
    if branch.contains('/') || branch.starts_with('.') {
        return Response::error(400, "BadRequest", "invalid branch name");
    }
    branch_from(st, repo, branch, &main);
    Response::json(200, serde_json::json!({}))
}

fn lfs_part(st: &State, oid: &str, n: &str, body: &[u8]) -> Response {
    if n.parse::<u64>().is_err() || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Response::error(400, "BadRequest", "bad part");
    }
    let d = lfs_dir(st).join("parts").join(oid);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(n), body).unwrap();
    let mut r = Response {
        status: 200,
        headers: vec![],
        body: Body::Bytes(Vec::new()),
    };
    r.headers
        .push(("ETag".into(), format!("\"{}\"", hex(&Sha256::digest(body)))));
    r
}

fn lfs_complete(st: &State, oid: &str, body: &[u8]) -> Response {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let d = lfs_dir(st).join("parts").join(oid);
    let mut all = Vec::new();
    for p in v["parts"].as_array().cloned().unwrap_or_default() {
        let n = p["partNumber"].as_u64().unwrap_or(0);
        let Ok(data) = fs::read(d.join(n.to_string())) else {
            return Response::error(400, "BadRequest", &format!("part {n} missing"));
        };
        if p["etag"].as_str() != Some(&format!("\"{}\"", hex(&Sha256::digest(&data)))) {
            return Response::error(400, "BadRequest", &format!("part {n}: wrong etag"));
        }
        all.extend_from_slice(&data);
    }
    let r = lfs_put(st, oid, &all);
    if r.status == 200 {
        let _ = fs::remove_dir_all(&d);
    }
    r
}

fn commit(st: &State, repo: &str, rev: &str, body: &[u8]) -> Response {
    let Some(main) = branch_dir(&st.root, repo, "main") else {
        return repo_not_found();
    };
    let dir = match branch_dir(&st.root, repo, rev) {
        Some(d) => d,
        None if !rev.contains('/') && !rev.starts_with('.') => {
            // A new branch starts from main.
            branch_from(st, repo, rev, &main)
        }
        None => return Response::error(400, "BadRequest", "invalid revision"),
    };
    let mut changes: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut lfs: BTreeMap<String, String> = BTreeMap::new();
    use base64::Engine;
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return Response::error(400, "BadRequest", "bad NDJSON line");
        };
        let path = v["value"]["path"].as_str().unwrap_or("").to_string();
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
            && v["key"] != "header"
        {
            return Response::error(400, "BadRequest", "bad path");
        }
        match v["key"].as_str() {
            Some("header") => {}
            Some("file") => {
                let Ok(data) = base64::engine::general_purpose::STANDARD
                    .decode(v["value"]["content"].as_str().unwrap_or(""))
                else {
                    return Response::error(400, "BadRequest", "bad base64");
                };
                changes.insert(path, Some(data));
            }
            Some("lfsFile") => {
                let oid = v["value"]["oid"].as_str().unwrap_or("").to_string();
                if !lfs_dir(st).join(&oid).exists() {
                    return Response::error(
                        400,
                        "BadRequest",
                        &format!("LFS object {oid} was not uploaded"),
                    );
                }
                lfs.insert(path, oid);
            }
            Some("deletedFile") => {
                changes.insert(path, None);
            }
            _ => return Response::error(400, "BadRequest", "unknown key"),
        }
    }
    for (path, data) in changes {
        let t = dir.join(&path);
        match data {
            Some(d) => {
                fs::create_dir_all(t.parent().unwrap()).unwrap();
                fs::write(&t, d).unwrap();
            }
            None => {
                let _ = fs::remove_file(&t);
            }
        }
    }
    for (path, oid) in lfs {
        let t = dir.join(&path);
        fs::create_dir_all(t.parent().unwrap()).unwrap();
        fs::copy(lfs_dir(st).join(&oid), &t).unwrap();
    }
    let (commit, _) = commit_of(st, &dir);
    Response::json(
        200,
        serde_json::json!({
            "commitUrl": format!("{}/{repo}/commit/{commit}", st.base),
            "commitOid": commit, "commitMessage": "", "pullRequestUrl": null,
        }),
    )
}
