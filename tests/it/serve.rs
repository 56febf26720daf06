//! `mlxfs serve`: a real server on a free loopback port over a fixture catalog, driven with
//! raw HTTP (the error cases) and with the official `openai` Python client, with real
//! inference on the tiny model for the generation routes.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::*;
use crate::support::python::*;
use crate::support::serve::*;
use crate::support::*;

/// The header `name` of the answer to `GET path` with these request headers.
fn get_header(s: &Served, path: &str, headers: &[(&str, &str)], name: &str) -> Option<String> {
    let (_, hd, _) = http(&s.addr, "GET", path, headers, b"");
    header(&hd, name).map(str::to_string)
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A catalog of workspaces and hub models (healthy and broken), plus a workspace outside the
/// workspace home.
fn fleet() -> (Fx, PathBuf) {
    let fx = Fx::new();
    fx.workspace("alpha-ws", &good_files());
    fx.workspace("beta-ws", &good_files());
    fx.hub_model("org/gamma", &good_files());
    let broken = fx.hub_model("org/broken", &good_files());
    std::fs::remove_file(
        broken.join(std::fs::read_link(broken.join("model.safetensors")).unwrap()),
    )
    .unwrap();
    let outside = fx.tmp.path().join("elsewhere/outside-ws");
    write_tree(&outside, &good_files());
    (fx, outside)
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_catalog_routes_errors_and_auth() {
    crate::require!(Python);
    let (fx, _) = fleet();
    let mut s = Served::start(&fx, &["--api-key", "s3cret"]);
    let auth = [("Authorization", "Bearer s3cret")];
    // Every runnable model, workspaces and hub models together; the broken one is not.
    let (st, v) = get_json(&s.addr, "/v1/models", &auth);
    assert_eq!(st, 200, "{v}");
    assert_eq!(ids(&v), ["alpha-ws", "beta-ws", "org/gamma"]);
    let m = &v["data"][2];
    assert_eq!(
        (
            m["object"].as_str(),
            m["owned_by"].as_str(),
            m["loaded"].as_bool(),
            m["source"].as_str()
        ),
        (Some("model"), Some("mlxfs"), Some(false), Some("cache")),
        "{m}"
    );
    assert_eq!(m["context_length"], 2048);
    assert!(m["created"].as_i64().unwrap() > 1_700_000_000, "{m}");
    assert_eq!(m["capabilities"], json!(["text-generation", "chat"]));
    let (st, one) = get_json(&s.addr, "/v1/models/org/gamma", &auth);
    assert_eq!((st, one["id"].as_str()), (200, Some("org/gamma")), "{one}");
    let (st, tags) = get_json(&s.addr, "/api/tags", &auth);
    assert_eq!(st, 200);
    assert_eq!(tags["models"].as_array().unwrap().len(), 3, "{tags}");
    // Ollama's details, true: the architecture (config.json's model_type), the parameters
    // the safetensors header counts (one 2×2 tensor), the quantization config.json names.
    assert_eq!(
        tags["models"][0]["details"],
        json!({"parent_model": "", "format": "safetensors", "family": "llama",
               "families": ["llama"], "parameter_size": "4", "quantization_level": "4bit"}),
        "{tags}"
    );
    // Health needs no key; metrics are Prometheus text.
    let (st, h) = get_json(&s.addr, "/health", &[]);
    assert_eq!((st, h["status"].as_str()), (200, Some("ok")), "{h}");
    let (st, _, text) = http(&s.addr, "GET", "/metrics", &auth, b"");
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&text).contains("mlxfs_requests_total"));

    // Auth: missing and wrong keys.
    let (st, hd, body) = http(&s.addr, "GET", "/v1/models", &[], b"");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (401, Some("authentication_error")),
        "{v}"
    );
    assert_eq!(v["request_id"].as_str(), header(&hd, "x-request-id"), "{v}");
    let (st, _) = get_json(&s.addr, "/v1/models", &[("Authorization", "Bearer nope")]);
    assert_eq!(st, 401);
    // The client's request id is kept.
    let id = [("X-Request-ID", "abc-123")];
    assert_eq!(
        get_header(&s, "/health", &id, "x-request-id").as_deref(),
        Some("abc-123")
    );

    // Errors, each with the envelope.
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let cases: Vec<(u16, &str, Value)> = vec![
        (404, "model_not_found", chat("no-such-model")),
        (400, "ambiguous_match", chat("ws")),
        (422, "model_unhealthy", chat("org/broken")),
        (404, "model_not_found", chat("/etc")),
        (400, "invalid_request", json!({"model": "alpha-ws"})),
        (
            400,
            "invalid_request",
            json!({"model": "alpha-ws", "messages": [], }),
        ),
        (
            400,
            "invalid_request",
            json!({"model": "alpha-ws", "messages": [{"role": "user", "content": "x"}], "temperature": 9}),
        ),
        (
            400,
            "invalid_request",
            json!({"model": "alpha-ws", "messages": [{"role": "user", "content": "x"}], "n": 2}),
        ),
    ];
    for (want, kind, body) in cases {
        let (st, v) = post_json(&s.addr, "/v1/chat/completions", &auth, &body);
        assert_eq!(
            (st, v["error"]["type"].as_str()),
            (want, Some(kind)),
            "{body}: {v}"
        );
        assert_eq!(v["status"], "error");
        assert!(v["request_id"].is_string(), "{v}");
    }
    let (_, v) = post_json(&s.addr, "/v1/chat/completions", &auth, &chat("ws"));
    assert_eq!(v["error"]["matches"], json!(["alpha-ws", "beta-ws"]));
    let (st, _, body) = http(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[auth[0], ("Content-Type", "application/json")],
        b"{not json",
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json"),
        "{v}"
    );
    // A body announced over the limit is refused at once, before any of it is read (it was
    // answered after the 30 s body timeout).
    for route in [
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/audio/transcriptions",
    ] {
        let (head, took) = announce_body(&s.addr, route, "s3cret", 100_000_000);
        assert!(took < Duration::from_secs(5), "{route}: {took:?}");
        assert_eq!(&head, b"HTTP/1.1 413", "{route}");
    }
    // 8 MiB for most routes; chat completions carry images (32 MiB).
    for (route, mib) in [("/v1/completions", 9), ("/v1/chat/completions", 33)] {
        let big = vec![b'x'; mib * 1024 * 1024];
        let (st, _, body) = http(
            &s.addr,
            "POST",
            route,
            &[auth[0], ("Content-Type", "application/json")],
            &big,
        );
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(
            (st, v["error"]["type"].as_str()),
            (413, Some("payload_too_large")),
            "{route}: {v}"
        );
        assert_eq!(
            v["error"]["message"],
            format!(
                "the request body ({} bytes) is over the limit of {route} ({} bytes)",
                big.len(),
                (mib - 1) * 1024 * 1024
            )
        );
    }
    // A body without a length is cut at the route's limit, and its 413 says the same limit
    // (one table: the router's limits, the early 413 and the message).
    for (route, limit) in [
        ("/v1/completions", 8 * 1024 * 1024),
        ("/v1/chat/completions", 32 * 1024 * 1024),
    ] {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(c, "POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
        let chunk = vec![b' '; 1024 * 1024];
        for _ in 0..(limit / chunk.len() + 2) {
            if write!(c, "{:x}\r\n", chunk.len())
                .and_then(|()| c.write_all(&chunk))
                .and_then(|()| c.write_all(b"\r\n"))
                .is_err()
            {
                break;
            }
        }
        let _ = c.write_all(b"0\r\n\r\n");
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 413"), "{route}: {text}");
        assert!(
            text.contains(&format!(
                "\"the request body is over the limit of {route} ({limit} bytes)\""
            )),
            "{route}: {text}"
        );
    }
    let (st, v) = get_json(&s.addr, "/v2/nothing", &auth);
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );

    // The official client sees the same list.
    let script = format!(
        "import openai, json\nc = openai.OpenAI(base_url='{}/v1', api_key='s3cret')\nprint(json.dumps([m.id for m in c.models.list()]))",
        s.url()
    );
    let o = Command::new(venv_python()).args(["-c", &script]).succeeds();
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed, json!(["alpha-ws", "beta-ws", "org/gamma"]));

    assert_eq!(s.terminate(), Some(0), "{}", s.log());
}

#[test]
fn a_bad_model_is_refused_before_the_port_opens() {
    crate::require!(Python);
    let (fx, _) = fleet();
    for (spec, kind) in [
        ("no-such-model", "model_not_found"),
        ("ws", "ambiguous_match"),
        ("org/broken", "model_unhealthy"),
    ] {
        let port = free_port().to_string();
        // The listener would be up before a failed preload could print: poll while it runs.
        let (code, out, _) = match Served::try_start(&fx, &["--model", spec, "--port", &port]) {
            Ok(s) => panic!("{spec}: started: {}", s.ready),
            Err(e) => e,
        };
        assert_eq!(code, Some(1), "{spec}");
        let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        assert_eq!(v["error"]["type"], kind, "{spec}: {out}");
        assert!(
            TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
            "{spec}: something listens on {port}"
        );
    }
}

/// Port of a free loopback socket (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tiny model as the workspace `tiny` and the hub model `org/tiny`, plus a second
/// workspace copy `tiny2` (for two models loaded at once).
fn with_tiny() -> Fx {
    let fx = Fx::new();
    let ws = make_tiny(&fx, "tiny", &[]);
    let files = files_of(&ws);
    fx.hub_model("org/tiny", &files);
    write_tree(&fx.ws_home.join("tiny2"), &files);
    fx
}

/// `mlxfs run`'s text for the same prompt and settings.
fn run_text(fx: &Fx, model: &str, prompt: &str, max_tokens: u32) -> String {
    mlxfs(fx)
        .args([
            "run",
            model,
            prompt,
            "--json",
            "--seed",
            "7",
            "--temperature",
            "0",
            "--repetition-penalty",
            "1",
            "--max-tokens",
            &max_tokens.to_string(),
            "--python",
        ])
        .arg(venv_dir())
        .ok()["text"]
        .as_str()
        .unwrap()
        .to_string()
}

fn health(s: &Served) -> Value {
    get_json(&s.addr, "/health", &[]).1
}

/// The tiny model as the workspace `tiny`, served with `--model tiny`.
fn serving_tiny() -> (Fx, Served) {
    let fx = Fx::new();
    make_tiny(&fx, "tiny", &[]);
    let s = Served::start(&fx, &["--model", "tiny"]);
    (fx, s)
}

/// POSTs a JSON `body` to /v1/chat/completions: the status and the raw answer (a stream's
/// events as sent).
fn post_chat_raw(addr: &str, body: &str) -> (u16, String) {
    let (st, _, raw) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (st, String::from_utf8_lossy(&raw).into_owned())
}

/// Waits (`secs` at the most) until a request is in the server's queue.
fn wait_queued(s: &Served, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while health(s)["queue_depth"].as_u64() == Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `tiny`'s chat request "Explain FUSE" with these `fields`, and `max_tokens` unless null.
fn explain_fuse(fields: Value, max_tokens: Value) -> Value {
    let mut b = json!({"model": "tiny", "messages": [{"role": "user", "content": "Explain FUSE"}]});
    for (k, v) in fields.as_object().unwrap() {
        b[k] = v.clone();
    }
    if !max_tokens.is_null() {
        b["max_tokens"] = max_tokens;
    }
    b
}

/// Sends the head of a POST to `route` with the key, announcing a body of `length` bytes of
/// which it sends only `{`: the first 12 bytes of the answer and how long they took.
fn announce_body(addr: &str, route: &str, key: &str, length: u64) -> ([u8; 12], Duration) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{").unwrap();
    let t0 = Instant::now();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).unwrap();
    (head, t0.elapsed())
}

/// A greedy stream of `tiny`'s answer to "Explain FUSE" (`max_tokens` unless null) started
/// in a thread of its own, once it is in the server's queue: the thread gives the raw answer.
fn stream_in_flight(s: &Served, max_tokens: Value) -> std::thread::JoinHandle<String> {
    let body = explain_fuse(json!({"temperature": 0, "stream": true}), max_tokens);
    let addr = s.addr.clone();
    let t = std::thread::spawn(move || post_chat_raw(&addr, &body.to_string()).1);
    wait_queued(s, 20);
    t
}

fn worker_pids(s: &Served) -> Vec<i32> {
    health(s)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect()
}

fn pid_alive(pid: i32) -> bool {
    // A zombie is gone for our purposes; /proc/<pid>/stat's third field says.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

fn wait_gone(pids: &[i32], secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if pids.iter().all(|p| !pid_alive(*p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn chat_and_completions_with_the_openai_client() {
    crate::require!(Python);
    let fx = with_tiny();
    let before = tree_state(&fx.hf_home);
    let want = run_text(&fx, "tiny", "Explain FUSE", 12);
    let mut s = Served::start(&fx, &["--model", "tiny"]);
    assert_eq!(s.ready["data"]["preloaded"], json!(["tiny"]));
    // The worker loaded the system's optimised BLAS (MLXFS_BLAS, scripts/prereqs.sh).
    let blas = health(&s)["workers"][0]["blas"].clone();
    assert!(
        blas.as_str().is_some_and(|b| b.contains("openblas")),
        "{blas}"
    );
    let url = s.url();
    let settings = "model='tiny', temperature=0, seed=7, max_tokens=12";
    let v = openai(
        &url,
        &format!(
            "r = c.chat.completions.create({settings}, messages=[{{'role':'user','content':'Explain FUSE'}}])\n\
         print(json.dumps({{'text': r.choices[0].message.content, 'finish': r.choices[0].finish_reason, 'usage': r.usage.model_dump(), 'object': r.object}}))"
        ),
    );
    assert_eq!(v["text"], want.as_str(), "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(
        matches!(v["finish"].as_str(), Some("stop" | "length")),
        "{v}"
    );
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap()
            + v["usage"]["prompt_tokens"].as_u64().unwrap(),
        v["usage"]["total_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
        "the first request has nothing cached: {v}"
    );
    // Streaming: the same text, a role first, a usage chunk, and [DONE].
    let v = openai(
        &url,
        &format!(
            "chunks = list(c.chat.completions.create({settings}, messages=[{{'role':'user','content':'Explain FUSE'}}], stream=True, stream_options={{'include_usage': True}}))\n\
         text = ''.join(ch.choices[0].delta.content or '' for ch in chunks if ch.choices)\n\
         print(json.dumps({{'text': text, 'role': chunks[0].choices[0].delta.role, 'finish': [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1], 'usage': chunks[-1].usage.model_dump() if chunks[-1].usage else None}}))"
        ),
    );
    assert_eq!(v["text"], want.as_str(), "{v}");
    assert_eq!(v["role"], "assistant");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{v}"
    );
    // The same prompt again: its prefix came from the worker's prompt cache (same text).
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached > 0 && cached < v["usage"]["prompt_tokens"].as_u64().unwrap(),
        "{v}"
    );
    let (_, _, raw) = http(&s.addr, "POST", "/v1/chat/completions", &[("Content-Type", "application/json")],
        json!({"model": "tiny", "messages": [{"role": "user", "content": "Explain FUSE"}], "stream": true, "max_tokens": 3}).to_string().as_bytes());
    assert!(
        String::from_utf8_lossy(&raw)
            .trim_end()
            .ends_with("data: [DONE]"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // stop: the text ends before the first occurrence of a stop string, in both modes.
    let words: Vec<&str> = want.split_whitespace().collect();
    if let Some(stop) = words.get(words.len() / 2).filter(|w| w.len() > 1) {
        let expect = &want[..want.find(stop).unwrap()];
        for stream in ["False", "True"] {
            let v = openai(
                &url,
                &format!(
                    "r = c.chat.completions.create({settings}, messages=[{{'role':'user','content':'Explain FUSE'}}], stop=[{stop:?}], stream={stream})\n\
                 text = ''.join(ch.choices[0].delta.content or '' for ch in r if ch.choices) if {stream} else r.choices[0].message.content\n\
                 print(json.dumps({{'text': text}}))"
                ),
            );
            assert_eq!(v["text"], expect, "stop={stop:?} stream={stream}: {v}");
        }
    }
    // Completions: raw prompt, non-streaming and streaming agree.
    let v = openai(
        &url,
        "a = c.completions.create(model='org/tiny', prompt='Once upon', temperature=0, seed=7, max_tokens=8)\n\
        b = ''.join(ch.choices[0].text for ch in c.completions.create(model='org/tiny', prompt='Once upon', temperature=0, seed=7, max_tokens=8, stream=True) if ch.choices)\n\
        print(json.dumps({'a': a.choices[0].text, 'b': b, 'object': a.object}))",
    );
    assert_eq!(v["a"], v["b"], "{v}");
    assert_eq!(v["object"], "text_completion");
    // Both models loaded (default --max-loaded is 1 here only on < 32 GiB: see the LRU test).
    let (_, models) = get_json(&s.addr, "/v1/models", &[]);
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "org/tiny" && m["loaded"] == true),
        "{models}"
    );
    // /metrics: the generations counted, time to first token as a histogram.
    let (_, _, m) = http(&s.addr, "GET", "/metrics", &[], b"");
    let m = String::from_utf8_lossy(&m).into_owned();
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
            .parse()
            .unwrap()
    };
    let count = value("mlxfs_time_to_first_token_seconds_count");
    assert!(count >= 5.0, "{m}");
    assert_eq!(
        value("mlxfs_time_to_first_token_seconds_bucket{le=\"+Inf\"}"),
        count,
        "{m}"
    );
    assert!(
        m.contains("# TYPE mlxfs_time_to_first_token_seconds histogram"),
        "{m}"
    );
    assert!(value("mlxfs_generations_total") >= 5.0, "{m}");
    // Per model (labels are catalog ids) and per status code; the totals add up.
    let gens = value("mlxfs_generations_total");
    let per_model: f64 = m
        .lines()
        .filter(|l| l.starts_with("mlxfs_model_generations_total{model="))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(per_model, gens, "{m}");
    assert!(
        value("mlxfs_model_generations_total{model=\"tiny\"}") >= 1.0,
        "{m}"
    );
    assert!(
        value("mlxfs_model_completion_tokens_total{model=\"tiny\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(value("mlxfs_model_loaded{model=\"org/tiny\"}"), 1.0, "{m}");
    assert!(value("mlxfs_responses_total{code=\"200\"}") >= 5.0, "{m}");
    // Each worker's HF_HOME is its model's isolated cache; the shared cache is untouched.
    let pids = worker_pids(&s);
    for p in &pids {
        let env = std::fs::read(format!("/proc/{p}/environ")).unwrap();
        let env = String::from_utf8_lossy(&env);
        let home = env
            .split('\0')
            .find_map(|kv| kv.strip_prefix("HF_HOME="))
            .unwrap()
            .to_string();
        assert!(
            home.ends_with(".hf_cache") || home.contains("hf-cache/models--org--tiny"),
            "{home}"
        );
    }
    assert_eq!(s.terminate(), Some(0), "{}", s.log());
    assert!(wait_gone(&pids, 10), "workers outlived the server");
    assert_eq!(
        tree_state(&fx.hf_home),
        before,
        "the shared cache was written"
    );
    assert!(!fx.home.join(".cache").exists(), "~/.cache was written");
}

#[test]
fn workers_concurrency_eviction_failures_and_shutdown() {
    crate::require!(Python);
    let fx = with_tiny();
    let want = run_text(&fx, "tiny", "Explain FUSE", 16);
    let s = Served::start(&fx, &["--max-loaded", "1"]);
    // `max` 0: no `max_tokens`, so as many as the context leaves room for.
    let chat = |model: &str, stream: bool, max: u32| {
        let mut b = json!({"model": model, "messages": [{"role": "user", "content": "Explain FUSE"}],
        "temperature": 0, "seed": 7, "stream": stream});
        if max > 0 {
            b["max_tokens"] = json!(max);
        }
        b
    };
    // 8 concurrent streams, all with the right text.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let addr = s.addr.clone();
            let body = chat("tiny", true, 16).to_string();
            std::thread::spawn(move || {
                let (st, raw) = post_chat_raw(&addr, &body);
                let text: String = raw
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .filter(|d| *d != "[DONE]")
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|v| {
                        v["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_string)
                    })
                    .collect();
                (st, text)
            })
        })
        .collect();
    for t in threads {
        let (st, text) = t.join().unwrap();
        assert_eq!((st, text.as_str()), (200, want.as_str()));
    }
    // LRU at --max-loaded 1: loading tiny2 stops tiny's worker.
    let first = worker_pids(&s);
    assert_eq!(first.len(), 1);
    let answered = || {
        let (st, v) = post_json(
            &s.addr,
            "/v1/chat/completions",
            &[],
            &chat("tiny2", false, 4),
        );
        assert_eq!(st, 200, "{v}");
    };
    answered();
    assert!(
        wait_gone(&first, 40),
        "the least recently used worker was not stopped"
    );
    assert_eq!(health(&s)["loaded_models"], json!(["tiny2"]));
    // A worker killed mid-request: that request gets a 500, the next one succeeds.
    let pid = worker_pids(&s)[0];
    let addr = s.addr.clone();
    let long = chat("tiny2", false, 0);
    let t = std::thread::spawn(move || post_json(&addr, "/v1/chat/completions", &[], &long));
    wait_queued(&s, 30);
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let (st, v) = t.join().unwrap();
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (500, Some("worker_failed")),
        "{v}"
    );
    answered();
    // A client that goes away cancels its generation.
    {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        let body = chat("tiny2", true, 0).to_string();
        write!(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut buf = [0u8; 512];
        let _ = c.read(&mut buf);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&s)["queue_depth"].as_u64() != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        health(&s)["queue_depth"],
        0,
        "the abandoned generation goes on"
    );
    // SIGKILL of the server: its workers notice and exit.
    let mut s = s;
    let pids = worker_pids(&s);
    assert!(!pids.is_empty());
    let _ = s.child.kill();
    let _ = s.child.wait();
    assert!(wait_gone(&pids, 10), "workers outlived a killed server");
}

/// What review found: `--max-loaded` holds under concurrent loads, a busy model is never
/// stopped to make room (its answer is whole), `org/name@rev` is its own worker, and the
/// smaller request checks.
#[test]
fn loads_revisions_and_request_checks() {
    crate::require!(Python);
    let fx = with_tiny();
    // A second snapshot of org/tiny with other weights: its text differs.
    let other = make_tiny(&fx, "tiny-seed5", &["--seed", "5"]);
    let files = files_of(&other);
    // Only a snapshot of org/tiny, not a workspace of its own.
    std::fs::remove_dir_all(&other).unwrap();
    const OLD: &str = "1111111111111111111111111111111111111111";
    fx.hub_snapshot("org/tiny", OLD, &files, false);
    let old_text = run_text(&fx, "org/tiny@1111111", "Explain FUSE", 12);
    let cur_text = run_text(&fx, "org/tiny", "Explain FUSE", 12);
    assert_ne!(
        old_text, cur_text,
        "the fixture needs two different snapshots"
    );

    // Two preloads do not fit --max-loaded 1.
    let err = Served::try_start(
        &fx,
        &["--max-loaded", "1", "--model", "tiny", "--model", "tiny2"],
    )
    .err()
    .expect("refused");
    assert_eq!(err.0, Some(1), "{err:?}");

    let s = Served::start(&fx, &["--max-loaded", "1", "--cors-origin", "*"]);
    let chat = |model: &str, max: u32, stream: bool| {
        json!({"model": model, "messages": [{"role": "user", "content": "Explain FUSE"}],
        "temperature": 0, "seed": 7, "max_tokens": max, "stream": stream})
    };
    // @rev and the current revision are different workers, each with its own text.
    for (model, want) in [
        ("org/tiny@1111111", &old_text),
        ("org/tiny", &cur_text),
        ("org/tiny@1111111", &old_text),
    ] {
        let (st, v) = post_json(
            &s.addr,
            "/v1/chat/completions",
            &[],
            &chat(model, 12, false),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            want.as_str(),
            "{model}"
        );
    }
    // Concurrent requests for three models never load more than one at once, and a busy
    // model's answer is never cut short to make room.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let addr = s.addr.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, h) = get_json(&addr, "/health", &[]);
                most = most.max(h["workers"].as_array().map_or(0, Vec::len));
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
    let threads: Vec<_> = ["tiny", "tiny2", "org/tiny", "tiny", "tiny2", "org/tiny"]
        .into_iter()
        .map(|m| {
            let addr = s.addr.clone();
            let body = chat(m, 48, false);
            std::thread::spawn(move || post_json(&addr, "/v1/chat/completions", &[], &body))
        })
        .collect();
    for t in threads {
        let (st, v) = t.join().unwrap();
        assert_eq!(st, 200, "{v}");
        let reason = v["choices"][0]["finish_reason"].as_str().unwrap();
        let n = v["usage"]["completion_tokens"].as_u64().unwrap();
        assert!(
            reason == "length" && n == 48 || reason == "stop" && n < 48,
            "{v}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(watcher.join().unwrap(), 1, "more workers than --max-loaded");

    // Request checks.
    let (st, v) = post_json(
        &s.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_k": 99999999999u64}),
    );
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (st, v) = get_json(&s.addr, "/v1/chat/completions", &[]);
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (405, Some("invalid_request")),
        "{v}"
    );
    // CORS `*`: any origin, no credentials.
    let origin = [("Origin", "https://example.test")];
    assert_eq!(
        get_header(&s, "/v1/models", &origin, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    drop(s);
    // `bearer` in any case; a body announced and never sent is answered, not waited for.
    let s = Served::start(
        &fx,
        &[
            "--api-key",
            "k1",
            "--body-timeout",
            "1s",
            "--header-timeout",
            "1s",
        ],
    );
    // Headers that never end (or nothing at all): the connection is closed, not held.
    for partial in [&b"GET /health HTTP/1.1\r\nHost: x\r\n"[..], b""] {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(partial).unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        assert!(t0.elapsed() < Duration::from_secs(10), "held open");
        assert!(
            n == 0 || buf.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    {
        let (head, took) = announce_body(&s.addr, "/v1/chat/completions", "k1", 5000);
        assert!(took < Duration::from_secs(10));
        assert!(
            head.starts_with(b"HTTP/1.1 4"),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }
    let (st, _) = get_json(&s.addr, "/v1/models", &[("Authorization", "bearer k1")]);
    assert_eq!(st, 200);
    let auth_and_origin = [
        ("Authorization", "bearer k1"),
        ("Origin", "https://example.test"),
    ];
    assert_eq!(
        get_header(
            &s,
            "/v1/models",
            &auth_and_origin,
            "access-control-allow-origin"
        ),
        None,
        "CORS is off unless asked for"
    );
}

/// SIGTERM during a stream: the stream ends with an error event (not a normal finish), the
/// server exits 0, no worker is left.
#[test]
fn sigterm_during_a_stream_is_an_error_not_a_finish() {
    crate::require!(Python);
    let fx = with_tiny();
    let mut s = Served::start(&fx, &["--model", "tiny", "--shutdown-grace", "0"]);
    let t = stream_in_flight(&s, Value::Null);
    let pids = worker_pids(&s);
    assert_eq!(s.terminate(), Some(0), "{}", s.log());
    let raw = t.join().unwrap();
    assert!(
        raw.contains("service_unavailable"),
        "{}",
        &raw[raw.len().saturating_sub(600)..]
    );
    assert!(
        !raw.contains("\"finish_reason\":\"stop\""),
        "a cut answer looked finished"
    );
    assert!(wait_gone(&pids, 10));
}

/// Ctrl-C in the terminal that runs `serve` goes to its whole process group: the server
/// drains (a stream in flight finishes within `--shutdown-grace`) and its workers are not
/// interrupted by the terminal's signal. Before, each worker took it as a KeyboardInterrupt
/// and every stream was cut with a traceback.
#[test]
fn ctrl_c_in_the_terminal_lets_streams_finish() {
    crate::require!(Python);
    // A context of a million tokens: the answer is long enough to be in flight at the signal.
    let (fx, _ws) = with_endless_tiny();
    let mut s = Served::start_in_own_group(&fx, &["--model", "tiny", "--shutdown-grace", "120"]);
    let t = stream_in_flight(&s, json!(4000));
    let pids = worker_pids(&s);
    assert_eq!(
        s.interrupt_group(Duration::from_secs(150)),
        Some(0),
        "{}",
        s.log()
    );
    let raw = t.join().unwrap();
    let tail = &raw[raw.len().saturating_sub(600)..];
    assert!(
        raw.contains("\"finish_reason\":\"length\"") || raw.contains("\"finish_reason\":\"stop\""),
        "the stream did not finish: {tail}"
    );
    assert!(!raw.contains("\"error\""), "{tail}");
    assert!(raw.trim_end().ends_with("data: [DONE]"), "{tail}");
    assert!(!s.log().contains("KeyboardInterrupt"), "{}", s.log());
    assert!(wait_gone(&pids, 10));
}

/// With `--max-loaded` models loaded and busy, a request for another model waits
/// `--load-wait` and is then answered 503 (retryable); the busy model's answers stay whole.
#[test]
fn a_busy_model_is_not_stopped_for_another() {
    crate::require!(Python);
    let fx = with_tiny();
    let s = Served::start(
        &fx,
        &["--max-loaded", "1", "--load-wait", "0s", "--model", "tiny"],
    );
    // Seeded sampling jobs run one after another: the model stays busy for a while.
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let addr = s.addr.clone();
            let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "Explain FUSE"}],
                "temperature": 0.8, "seed": 3});
            std::thread::spawn(move || post_json(&addr, "/v1/chat/completions", &[], &body))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(&s)["queue_depth"].as_u64().unwrap_or(0) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (st, v) = post_json(
        &s.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "tiny2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (503, Some("service_unavailable")),
        "{v}"
    );
    assert_eq!(v["error"]["retryable"], true, "{v}");
    // Every 503 says when to come back.
    let (st, hd, _) = http(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "application/json")],
        json!({"model": "tiny2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
            .to_string()
            .as_bytes(),
    );
    assert_eq!((st, header(&hd, "retry-after")), (503, Some("5")));
    for t in threads {
        let (st, v) = t.join().unwrap();
        assert_eq!(
            (st, v["choices"][0]["finish_reason"].as_str()),
            (200, Some("length")),
            "{v}"
        );
    }
}

/// A model that calls a tool (scripts/make-tiny-model.py --script, with a chat template mlx-lm
/// reads as JSON tool calling): the call comes back as OpenAI `tool_calls`, whole and streamed.
#[test]
fn tool_calls_come_back_parsed() {
    crate::require!(Python);
    let fx = Fx::new();
    let call = r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#;
    make_tiny(
        &fx,
        "caller",
        &[
            "--tool-template",
            "--script",
            "<tool_call>",
            "--script",
            call,
            "--script",
            "</tool_call>",
        ],
    );
    let s = Served::start(&fx, &[]);
    let url = s.url();
    let tools = "tools=[{'type':'function','function':{'name':'get_weather','description':'Weather of a city','parameters':{'type':'object','properties':{'city':{'type':'string'}},'required':['city']}}}]";
    let ask =
        "model='caller', messages=[{'role':'user','content':'Weather in Paris?'}], max_tokens=16";
    let v = openai(
        &url,
        &format!(
            "r = c.chat.completions.create({ask}, {tools})\n\
             m = r.choices[0].message\n\
             print(json.dumps({{'finish': r.choices[0].finish_reason, 'content': m.content, 'calls': [tc.model_dump() for tc in (m.tool_calls or [])]}}))"
        ),
    );
    assert_eq!(v["finish"], "tool_calls", "{v}");
    assert!(v["content"].as_str().unwrap_or("").is_empty(), "{v}");
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{v}");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert!(
        calls[0]["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{v}"
    );

    // Streamed: the call arrives as indexed tool_calls deltas; the markers never show as text.
    let v = openai(
        &url,
        &format!(
            "chunks = list(c.chat.completions.create({ask}, {tools}, stream=True))\n\
             text = ''.join(ch.choices[0].delta.content or '' for ch in chunks if ch.choices)\n\
             calls = [tc.model_dump() for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]\n\
             print(json.dumps({{'text': text, 'calls': calls, 'finish': [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]}}))"
        ),
    );
    assert_eq!(v["finish"], "tool_calls", "{v}");
    assert_eq!(v["text"], "", "{v}");
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls[0]["index"], 0, "{v}");
    assert_eq!(calls[0]["function"]["name"], "get_weather", "{v}");
    let streamed: String = calls
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&streamed).unwrap(),
        json!({"city": "Paris"})
    );

    // Cut by max_tokens before the end marker: `length`, not a finished call.
    let v = openai(
        &url,
        &format!(
            "r = c.chat.completions.create(model='caller', messages=[{{'role':'user','content':'Weather?'}}], max_tokens=2, {tools})\n\
             print(json.dumps({{'finish': r.choices[0].finish_reason}}))"
        ),
    );
    assert_eq!(v["finish"], "length", "{v}");

    // Without tools the model's text is plain content, markers and all.
    let v = openai(
        &url,
        &format!(
            "r = c.chat.completions.create({ask})\n\
             print(json.dumps({{'finish': r.choices[0].finish_reason, 'content': r.choices[0].message.content}}))"
        ),
    );
    assert_eq!(v["finish"], "stop", "{v}");
    assert_eq!(
        v["content"],
        format!("<tool_call>{call}</tool_call>"),
        "{v}"
    );
}

/// A prompt longer than the model's context is refused with 400 `context_length_exceeded`
/// before any token is processed (a long prefill held the model for minutes), plain and
/// streamed; the next request is answered at once.
#[test]
fn a_prompt_over_the_context_length_is_refused() {
    crate::require!(Python);
    let fx = with_tiny();
    let s = Served::start(&fx, &["--model", "tiny"]);
    let ctx = get_json(&s.addr, "/v1/models/tiny", &[]).1["context_length"]
        .as_u64()
        .unwrap();
    let v = openai(
        &s.url(),
        &format!(
            r#"
long = "word " * {n}
out = []
for stream in (False, True):
    try:
        r = c.chat.completions.create(model="tiny", max_tokens=4, stream=stream,
                                      messages=[{{"role": "user", "content": long}}])
        if stream:
            for _ in r:
                pass
        out.append("answered")
    except openai.APIError as e:
        out.append([getattr(e, "status_code", None), (e.body or {{}}).get("type"), e.message])
r = c.chat.completions.create(model="tiny", max_tokens=4, messages=[{{"role": "user", "content": "hi"}}])
out.append(r.choices[0].finish_reason)
print(json.dumps(out))
"#,
            n = ctx * 2
        ),
    );
    assert_eq!(v[0][0], 400, "{v}");
    assert_eq!(v[0][1], "context_length_exceeded", "{v}");
    assert!(
        v[0][2]
            .as_str()
            .unwrap()
            .contains(&format!("context length is {ctx}")),
        "{v}"
    );
    // Streamed: the refusal arrives as the stream's error.
    assert!(v[1].is_array(), "{v}");
    assert!(v[1].to_string().contains("context length"), "{v}");
    assert!(matches!(v[2].as_str(), Some("stop" | "length")), "{v}");
}

/// `logit_bias` reaches the model (a +100 bias makes every generated token that one) and the
/// penalties are accepted; a `response_format` the server cannot honour is a 400.
#[test]
fn logit_bias_and_penalties_reach_the_model() {
    crate::require!(Python);
    let fx = with_tiny();
    let s = Served::start(&fx, &["--model", "tiny"]);
    let v = openai(
        &s.url(),
        r#"
def toks(**kw):
    r = c.completions.create(model="tiny", prompt="Explain FUSE", max_tokens=4, temperature=0,
                             logprobs=0, **kw)
    return r.choices[0].logprobs.tokens
out = {"plain": toks(), "biased": toks(logit_bias={"65": 100}),
       "penalised": toks(presence_penalty=1.5, frequency_penalty=1.0)}
try:
    c.chat.completions.create(model="tiny", max_tokens=2, response_format={"type": "json_object"},
                              messages=[{"role": "user", "content": "hi"}])
    out["json_object"] = "answered"
except openai.APIStatusError as e:
    out["json_object"] = e.status_code
print(json.dumps(out))
"#,
    );
    let biased: Vec<&str> = v["biased"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(biased.len(), 4, "{v}");
    assert!(biased.iter().all(|t| *t == biased[0]), "{v}");
    assert_ne!(v["plain"], v["biased"], "{v}");
    assert_eq!(v["penalised"].as_array().map(Vec::len), Some(4), "{v}");
    assert_eq!(v["json_object"], 400, "{v}");
}

/// The tiny model with a context of 4096 tokens (its config's), so that one stream can run
/// for seconds.
fn with_long_context(fx: &Fx, name: &str) -> PathBuf {
    let ws = make_tiny(fx, name, &[]);
    let cfg = ws.join("config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["max_position_embeddings"] = json!(4096);
    std::fs::write(&cfg, v.to_string()).unwrap();
    ws
}

/// `/metrics` as (series with labels → value).
fn metrics(s: &Served) -> std::collections::BTreeMap<String, f64> {
    let (_, _, m) = http(&s.addr, "GET", "/metrics", &[], b"");
    String::from_utf8_lossy(&m)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// Every value of issue 25 §1 that once reached the worker unchecked (and crashed it, or
/// made Python raise): (route, body, status, what the message says).
fn bad_requests() -> Vec<(&'static str, Value, u16, &'static str)> {
    let chat = |extra: Value| {
        let mut b = json!({"model": "tiny", "max_tokens": 4,
                           "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        ("/v1/chat/completions", b)
    };
    let completion = |extra: Value| {
        let mut b = json!({"model": "tiny", "max_tokens": 4, "prompt": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        ("/v1/completions", b)
    };
    let msg = |m: Value| chat(json!({"messages": [m]}));
    let vocab = "not in this model's vocabulary of 384 tokens (ids 0 to 383)";
    let seed = "`seed` must be a whole number";
    let max_tokens = "`max_tokens` must be a whole number from 1 to 3000";
    let cases: Vec<((&'static str, Value), u16, &'static str)> = vec![
        (completion(json!({"logit_bias": {"384": 1}})), 400, vocab),
        (chat(json!({"logit_bias": {"999999": 1}})), 400, vocab),
        (
            completion(json!({"logit_bias": {"4294967295": -1}})),
            400,
            vocab,
        ),
        (
            completion(json!({"logit_bias": {"-1": 1}})),
            400,
            "token ids",
        ),
        (completion(json!({"logprobs": 21})), 400, "from 0 to 20"),
        (
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            400,
            "from 0 to 20",
        ),
        (
            chat(json!({"top_logprobs": 3})),
            400,
            "needs `\"logprobs\": true`",
        ),
        (chat(json!({"n": 2})), 400, "`n` must be 1"),
        (chat(json!({"n": 0})), 400, "`n` must be 1"),
        (completion(json!({"seed": 1.5})), 400, seed),
        (completion(json!({"seed": 1e30})), 400, seed),
        (completion(json!({"max_tokens": 0})), 400, max_tokens),
        (completion(json!({"max_tokens": -1e30})), 400, max_tokens),
        (
            completion(json!({"suffix": "end"})),
            400,
            "`suffix` \"end\" is not supported",
        ),
        (
            completion(json!({"logit_bias": {"5 ": 1, "5": 2}})),
            400,
            "`logit_bias` names token 5 twice",
        ),
        (
            chat(json!({"parallel_tool_calls": false})),
            400,
            "`parallel_tool_calls` false is not supported",
        ),
        (
            chat(json!({"stream_options": {"include_usage": true}})),
            400,
            "only taken with `\"stream\": true`",
        ),
        (
            chat(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})),
            422,
            "`tools` cannot be used with this model",
        ),
        (chat(json!({"max_tokens": 4000})), 400, max_tokens),
        (
            completion(json!({"top_k": 1_000_001})),
            400,
            "`top_k` must be a whole number from 0 to 1000000",
        ),
        (
            completion(json!({"stop": vec!["x"; 17]})),
            400,
            "at most 16",
        ),
        (
            completion(json!({"stop": "y".repeat(5000)})),
            400,
            "1000 characters",
        ),
        (completion(json!({"prompt": ""})), 400, "`prompt` is empty"),
        (completion(json!({"prompt": [1, 2, 3]})), 400, "token ids"),
        (
            completion(json!({"prompt": ["a", "b"]})),
            400,
            "one prompt per request",
        ),
        (
            msg(json!({"role": "user", "content": "x", "name": 5})),
            400,
            "messages[0].name must be a string",
        ),
        (
            msg(json!({"role": "user", "content": [{"text": "x"}]})),
            400,
            "needs `type`",
        ),
        (
            msg(json!({"role": "user", "content": [{"type": "input_audio"}]})),
            422,
            "not supported",
        ),
        (
            msg(
                json!({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}),
            ),
            400,
            "messages[0].tool_calls[0].function.arguments is not valid JSON",
        ),
        (
            msg(json!({"role": "assistant", "tool_calls": "f"})),
            400,
            "tool_calls must be a list",
        ),
        (
            msg(json!({"role": "tool", "content": "x", "tool_call_id": 7})),
            400,
            "tool_call_id must be a string",
        ),
        (
            msg(
                json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"}}]}),
            ),
            422,
            "cannot take images",
        ),
    ];
    cases
        .into_iter()
        .map(|((r, b), st, says)| (r, b, st, says))
        .collect()
}

/// Issue 25 §1 and its "done when": while a stream through the `openai` client runs, another
/// client sends every bad value; each gets its 4xx naming the field (no Python traceback, no
/// 500), the stream finishes with the text it has alone, the worker is the same process, and
/// `/metrics` adds up (requests = Σ responses by status; errors = responses ≥ 400, each once).
#[test]
fn bad_values_never_reach_the_worker_and_harm_no_stream() {
    crate::require!(Python);
    let fx = Fx::new();
    with_long_context(&fx, "tiny");
    let s = Served::start(&fx, &["--model", "tiny", "--max-tokens", "3000"]);
    let pid = worker_pids(&s);
    assert_eq!(pid.len(), 1);
    let stream = "r = c.chat.completions.create(model='tiny', temperature=0, max_tokens=2500, stream=True, messages=[{'role':'user','content':'Explain FUSE'}])\n\
                  chunks = [ch for ch in r if ch.choices]\n\
                  print(json.dumps({'text': ''.join(ch.choices[0].delta.content or '' for ch in chunks), 'finish': chunks[-1].choices[0].finish_reason}))";
    // The stream's text alone.
    let alone = openai(&s.url(), stream);
    let script = format!(
        "import openai, json\nc = openai.OpenAI(base_url='{}/v1', api_key='k', max_retries=0)\n{stream}",
        s.url()
    );
    let mut child = Command::new(venv_python())
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_queued(&s, 30);
    let mut rounds_during_stream = 0;
    let mut sent = 0u64;
    loop {
        for (route, body, want, says) in bad_requests() {
            let (st, v) = post_json(&s.addr, route, &[], &body);
            sent += 1;
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert_eq!(st, want, "{route} {body}: {v}");
            assert!(message.contains(says), "{route} {body}: {v}");
            assert!(!message.contains("Traceback"), "{v}");
            assert_eq!(v["error"]["retryable"], false, "{v}");
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        rounds_during_stream += 1;
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rounds_during_stream >= 1,
        "the stream ended before one round"
    );
    assert_eq!(streamed, alone, "the stream was harmed");
    assert_eq!(streamed["finish"], "length", "{streamed}");
    // Valid values at the edges are taken: the last token id, a top_k of the whole vocabulary
    // (no restriction), 20 alternatives, a negative seed.
    let (st, v) = post_json(
        &s.addr,
        "/v1/completions",
        &[],
        &json!({"model": "tiny", "prompt": "hi", "max_tokens": 3, "logit_bias": {"383": 5},
                "top_k": 384, "logprobs": 20, "seed": -1, "temperature": 0.5}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["choices"][0]["logprobs"]["top_logprobs"][0]
            .as_object()
            .map(|m| m.len() > 1),
        Some(true),
        "{v}"
    );
    assert_eq!(worker_pids(&s), pid, "the worker changed");
    assert_eq!(health(&s)["status"], "ok");
    let m = metrics(&s);
    let responses: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("mlxfs_responses_total{"))
        .map(|(_, v)| v)
        .sum();
    let failed: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix("mlxfs_responses_total{code=\"")
                .and_then(|c| c[..3].parse::<u16>().ok())
                .is_some_and(|c| c >= 400)
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(m["mlxfs_requests_total"], responses, "{m:?}");
    assert_eq!(m["mlxfs_errors_total"], failed, "{m:?}");
    assert!(failed >= sent as f64, "{m:?}");
}

/// Issue 25 §1: a worker that died while idle (`kill -9`, as the OOM killer does) is
/// replaced by the next request, 5 times out of 5 (the request handed to the dead worker goes
/// to a fresh one); a worker killed from outside during a request is `retryable`, one that
/// crashed by itself (SIGSEGV) is not: the same request could crash the next one.
#[test]
fn a_dead_worker_is_replaced_and_retryable_says_the_truth() {
    crate::require!(Python);
    let (_fx, s) = serving_tiny();
    // 0: no `max_tokens`, so the default: as many as the context leaves room for.
    let ask = |max: u32| {
        let max = if max > 0 { json!(max) } else { Value::Null };
        explain_fuse(json!({"temperature": 0}), max)
    };
    for round in 0..5 {
        let pid = worker_pids(&s)[0];
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let (st, v) = post_json(&s.addr, "/v1/chat/completions", &[], &ask(4));
        assert_eq!(st, 200, "round {round}: {v}");
        assert_ne!(worker_pids(&s), [pid], "round {round}");
    }
    assert_eq!(metrics(&s)["mlxfs_worker_restarts_total"], 5.0);
    for (signal, retryable, says) in [
        (libc::SIGKILL, true, "was killed"),
        (libc::SIGSEGV, false, "crashed"),
    ] {
        let pid = worker_pids(&s)[0];
        let addr = s.addr.clone();
        let body = ask(0);
        let t = std::thread::spawn(move || post_json(&addr, "/v1/chat/completions", &[], &body));
        wait_queued(&s, 30);
        std::thread::sleep(Duration::from_millis(100));
        unsafe { libc::kill(pid, signal) };
        let (st, v) = t.join().unwrap();
        assert_eq!(
            (
                st,
                v["error"]["type"].as_str(),
                v["error"]["retryable"].as_bool()
            ),
            (500, Some("worker_failed"), Some(retryable)),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{v}"
        );
        let (st, v) = post_json(&s.addr, "/v1/chat/completions", &[], &ask(2));
        assert_eq!(st, 200, "{v}");
    }
}

/// A chat template in the style of Qwen's: it refuses roles it does not know and a
/// conversation without a user message (`raise_exception`), and iterates an earlier tool
/// call's arguments as a mapping (`|items`).
const STRICT_TEMPLATE: &str = "{%- if not (messages | selectattr('role', 'equalto', 'user') | list) %}{{ raise_exception('No user query found in messages.') }}{%- endif %}\
{%- for message in messages %}\
{%- if message.role not in ['system', 'user', 'assistant', 'tool'] %}{{ raise_exception('Unexpected message role.') }}{%- endif %}\
<|{{ message.role }}|>{{ message.content or '' }}\
{%- for tc in message.tool_calls or [] %}<tool_call>{{ tc.function.name }}({% for k, v in tc.function.arguments | items %}{{ k }}={{ v }}{% endfor %})</tool_call>{%- endfor %}</s>\n\
{%- endfor %}{%- if add_generation_prompt %}<|assistant|>{%- endif %}";

/// Issue 25 §2: logprobs describe the generated tokens (a character split over two tokens:
/// each its own bytes, `token` U+FFFD, the pair streamed with the character; with a stop
/// sequence its tokens are dropped, not empty entries), in the chat and the completions
/// shapes, whole and streamed; an earlier tool call's `arguments` (a JSON text) reaches the
/// template as a mapping; `developer` is `system`; a conversation the template refuses is a
/// 400 with the template's words.
#[test]
fn logprobs_tool_arguments_and_roles_as_openai_means_them() {
    crate::require!(Python);
    let fx = Fx::new();
    // "alpha", then é as its two UTF-8 bytes (C3 A9: `Ã`, `©` in the byte-level alphabet),
    // "beta", "gamma", "delta".
    make_tiny(
        &fx,
        "split",
        &[
            "--script", "alpha", "--script", "Ã", "--script", "©", "--script", "beta", "--script",
            "gamma", "--script", "delta",
        ],
    );
    let strict = make_tiny(&fx, "strict", &[]);
    let tc = strict.join("tokenizer_config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&tc).unwrap()).unwrap();
    cfg["chat_template"] = json!(STRICT_TEMPLATE);
    std::fs::write(&tc, cfg.to_string()).unwrap();
    let s = Served::start(&fx, &["--max-loaded", "2"]);
    let v = openai(
        &s.url(),
        r#"
def chat(**kw):
    return c.chat.completions.create(model="split", messages=[{"role": "user", "content": "hi"}],
                                     max_tokens=10, logprobs=True, **kw)
out = {}
for stop in (None, "tagam"):
    r = chat(top_logprobs=1, stop=stop)
    out[f"chat {stop}"] = {"text": r.choices[0].message.content,
        "entries": [[e.token, e.bytes, [[t.token, t.bytes] for t in e.top_logprobs]] for e in r.choices[0].logprobs.content]}
    chunks = [ch.choices[0] for ch in chat(stop=stop, stream=True) if ch.choices]
    out[f"chat stream {stop}"] = [[ch.delta.content, [e.bytes for e in ch.logprobs.content] if ch.logprobs else None]
                                  for ch in chunks if ch.delta.content or ch.logprobs]
    r = c.completions.create(model="split", prompt="hi", max_tokens=10, logprobs=1, stop=stop)
    lp = r.choices[0].logprobs
    out[f"completion {stop}"] = [r.choices[0].text, lp.tokens, lp.text_offset, [len(t) for t in lp.top_logprobs]]
    chunks = [ch.choices[0] for ch in c.completions.create(model="split", prompt="hi", max_tokens=10, logprobs=1, stop=stop, stream=True) if ch.choices]
    out[f"completion stream {stop}"] = [[ch.text, ch.logprobs.tokens if ch.logprobs else None] for ch in chunks if ch.text or ch.logprobs]
def strict(messages):
    try:
        r = c.chat.completions.create(model="strict", messages=messages, max_tokens=2)
        return r.choices[0].finish_reason
    except openai.APIStatusError as e:
        return [e.status_code, e.body.get("type"), e.body.get("message"), e.body.get("retryable")]
call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
out["tool turn"] = strict([{"role": "user", "content": "Weather?"},
                           {"role": "assistant", "content": None, "tool_calls": [call]},
                           {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
out["developer"] = strict([{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}])
out["system only"] = strict([{"role": "system", "content": "Be brief."}])
print(json.dumps(out))
"#,
    );
    let e = |t: &str, b: &[u8]| json!([t, b]);
    let c3 = [0xC3u8];
    let a9 = [0xA9u8];
    // Each token its own text and bytes; the top alternative (greedy: the token itself) too.
    let entries: Vec<Value> = v["chat None"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| json!([x[0], x[1]]))
        .collect();
    assert_eq!(v["chat None"]["text"], "alphaébetagammadelta", "{v}");
    assert_eq!(
        entries,
        [
            e("alpha", b"alpha"),
            e("\u{fffd}", &c3),
            e("\u{fffd}", &a9),
            e("beta", b"beta"),
            e("gamma", b"gamma"),
            e("delta", b"delta")
        ],
        "{v}"
    );
    assert_eq!(
        v["chat None"]["entries"][1][2],
        json!([["\u{fffd}", [0xC3]]]),
        "{v}"
    );
    // With the stop sequence "tagam" (across beta and gamma): beta keeps its entry (its text
    // begins before the cut), gamma's is dropped with the stop sequence.
    assert_eq!(v["chat tagam"]["text"], "alphaébe", "{v}");
    assert_eq!(
        v["chat tagam"]["entries"].as_array().unwrap().len(),
        4,
        "{v}"
    );
    assert_eq!(v["chat tagam"]["entries"][3][0], "beta", "{v}");
    // Streamed: the two halves of é come with é; beta's entry with the last text it has.
    assert_eq!(
        v["chat stream None"],
        json!([
            ["alpha", [b"alpha"]],
            ["é", [[0xC3], [0xA9]]],
            ["beta", [b"beta"]],
            ["gamma", [b"gamma"]],
            ["delta", [b"delta"]]
        ]),
        "{v}"
    );
    assert_eq!(
        v["chat stream tagam"],
        json!([
            ["alpha", [b"alpha"]],
            ["é", [[0xC3], [0xA9]]],
            ["be", []],
            ["", [b"beta"]]
        ]),
        "{v}"
    );
    // The completions shape: tokens, offsets in characters, one alternative each.
    assert_eq!(
        v["completion None"],
        json!([
            "alphaébetagammadelta",
            ["alpha", "\u{fffd}", "\u{fffd}", "beta", "gamma", "delta"],
            [0, 5, 5, 6, 10, 15],
            [1, 1, 1, 1, 1, 1]
        ]),
        "{v}"
    );
    assert_eq!(
        v["completion tagam"],
        json!([
            "alphaébe",
            ["alpha", "\u{fffd}", "\u{fffd}", "beta"],
            [0, 5, 5, 6],
            [1, 1, 1, 1]
        ]),
        "{v}"
    );
    assert_eq!(
        v["completion stream tagam"],
        json!([
            ["alpha", ["alpha"]],
            ["é", ["\u{fffd}", "\u{fffd}"]],
            ["be", []],
            ["", ["beta"]]
        ]),
        "{v}"
    );
    // The second turn of a tool conversation and the developer role are answered; a
    // conversation the template refuses is the client's to fix.
    assert!(
        matches!(v["tool turn"].as_str(), Some("length" | "stop")),
        "{v}"
    );
    assert!(
        matches!(v["developer"].as_str(), Some("length" | "stop")),
        "{v}"
    );
    assert_eq!(v["system only"][0], 400, "{v}");
    assert_eq!(v["system only"][1], "invalid_request", "{v}");
    assert_eq!(v["system only"][3], false, "{v}");
    let says = v["system only"][2].as_str().unwrap();
    assert!(
        says.contains("chat template") && says.contains("No user query found in messages."),
        "{v}"
    );
    assert!(!says.contains("Traceback"), "{v}");
}

/// The pid of the worker `serve` started for the model folder `path` (its config argument
/// names the folder), once there is one.
fn worker_for(s: &Served, path: &std::path::Path, within: Duration) -> Option<i32> {
    let needle = format!("\"model_path\":\"{}\"", path.display());
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if ppid == Some(s.child.id()) && String::from_utf8_lossy(&cmd).contains(&needle) {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Issue 25 §1: a model whose load blocks (its tokenizer.json became a FIFO after the server
/// checked it: Python's open() waits for a writer for ever, as a stuck network disk would)
/// holds up neither another model's load nor its requests nor /health; with no room left
/// (--max-loaded 1), another model's request waits --load-wait and gets a 503 with
/// Retry-After. When the file arrives, the stuck request is answered too.
#[test]
fn a_stuck_load_holds_up_no_other_model() {
    crate::require!(Python);
    let fx = Fx::new();
    let stuck = make_tiny(&fx, "stuck", &[]);
    write_tree(&fx.ws_home.join("other"), &files_of(&stuck));
    write_tree(&fx.ws_home.join("third"), &files_of(&stuck));
    let tokenizer = stuck.join("tokenizer.json");
    let saved = fx.tmp.path().join("tokenizer.json.real");
    let ask = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
    for max_loaded in ["2", "1"] {
        let s = Served::start(&fx, &["--max-loaded", max_loaded, "--load-wait", "2s"]);
        let (tx, stuck_answer) = std::sync::mpsc::channel();
        {
            let addr = s.addr.clone();
            let body = ask("stuck");
            std::thread::spawn(move || {
                let _ = tx.send(post_json(&addr, "/v1/chat/completions", &[], &body));
            });
        }
        // The worker is starting (its imports take a second or more): the file becomes a
        // FIFO before the loader opens it.
        assert!(
            worker_for(&s, &stuck, Duration::from_secs(30)).is_some(),
            "no worker started for the stuck model"
        );
        std::fs::rename(&tokenizer, &saved).unwrap();
        let c = std::ffi::CString::new(tokenizer.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::thread::sleep(Duration::from_secs(3));
        assert!(stuck_answer.try_recv().is_err(), "the load did not block");
        let t0 = Instant::now();
        let (st, h) = get_json(&s.addr, "/health", &[]);
        assert_eq!((st, h["status"].as_str()), (200, Some("ok")), "{h}");
        let (tx, other) = std::sync::mpsc::channel();
        {
            let addr = s.addr.clone();
            let body = ask("other");
            std::thread::spawn(move || {
                let _ = tx.send(http(
                    &addr,
                    "POST",
                    "/v1/chat/completions",
                    &[("Content-Type", "application/json")],
                    body.to_string().as_bytes(),
                ));
            });
        }
        let (st, headers, body) = other
            .recv_timeout(Duration::from_secs(60))
            .expect("another model's request hung behind the stuck load");
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if max_loaded == "2" {
            assert_eq!(st, 200, "{v}");
        } else {
            // No room: the stuck load holds the only one. Answered after --load-wait.
            assert_eq!(
                (
                    st,
                    v["error"]["type"].as_str(),
                    header(&headers, "retry-after").is_some()
                ),
                (503, Some("service_unavailable"), true),
                "{v}"
            );
            assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        }
        assert!(
            stuck_answer.try_recv().is_err(),
            "the stuck model answered early"
        );
        // The file arrives: the FIFO's reader gets it, later opens get the real file.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(&tokenizer)
            .unwrap();
        std::fs::rename(&saved, &tokenizer).unwrap();
        w.write_all(&std::fs::read(&tokenizer).unwrap()).unwrap();
        drop(w);
        let (st, v) = stuck_answer.recv_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(st, 200, "{v}");
    }
}

/// Issue 25 §5: a model folder replaced on disk (another folder moved in its place, as
/// `convert` + `mv`, `restore` or a re-clone do) or edited (its weights rewritten) gets a new
/// worker at the next request — the new weights' text, not the old until --keep-alive — while
/// the old worker finishes the stream it was serving, and is stopped after.
#[test]
fn a_changed_model_folder_gets_a_new_worker() {
    crate::require!(Python);
    let fx = Fx::new();
    let tiny = make_tiny(&fx, "tiny", &[]);
    let other = make_tiny(&fx, "tiny-seed5", &["--seed", "5"]);
    let aside = fx.tmp.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    std::fs::rename(&other, aside.join("new")).unwrap();
    let s = Served::start(&fx, &["--max-loaded", "2", "--keep-alive", "1h"]);
    let text = || {
        let (st, v) = post_json(
            &s.addr,
            "/v1/chat/completions",
            &[],
            &json!({"model": "tiny", "messages": [{"role": "user", "content": "Explain FUSE"}],
                    "temperature": 0, "max_tokens": 12}),
        );
        assert_eq!(st, 200, "{v}");
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old_text = text();
    let old_pid = worker_pids(&s);
    assert_eq!(old_pid.len(), 1);
    // A long stream on the old worker while the folder is replaced.
    let addr = s.addr.clone();
    let stream = std::thread::spawn(move || {
        let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "Explain FUSE"}],
                          "temperature": 0, "max_tokens": 400, "stream": true});
        post_chat_raw(&addr, &body.to_string())
    });
    wait_queued(&s, 30);
    std::fs::rename(&tiny, aside.join("old")).unwrap();
    std::fs::rename(aside.join("new"), &tiny).unwrap();
    let new_text = text();
    assert_ne!(new_text, old_text, "the old weights answered");
    // Two workers while the stream runs: the old one finishing it, the new one.
    let new_pid = worker_pids(&s);
    assert!(
        new_pid.iter().any(|p| *p != old_pid[0]),
        "no new worker: {new_pid:?}"
    );
    // The stream the old worker was serving ends normally; then that worker is stopped.
    let (st, raw) = stream.join().unwrap();
    assert_eq!(st, 200);
    assert!(
        raw.contains("\"finish_reason\":\"length\""),
        "{}",
        &raw[raw.len().saturating_sub(400)..]
    );
    assert!(
        wait_gone(&old_pid, 20),
        "the replaced model's worker was kept"
    );
    assert_eq!(
        get_json(&s.addr, "/v1/models", &[]).1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Edited in place: the old weights written over the new ones.
    let before = worker_pids(&s);
    std::fs::copy(
        aside.join("old/model.safetensors"),
        tiny.join("model.safetensors"),
    )
    .unwrap();
    assert_eq!(text(), old_text);
    assert_ne!(worker_pids(&s), before);
    // Unchanged files: the same worker.
    let same = worker_pids(&s);
    text();
    assert_eq!(worker_pids(&s), same);
}

/// Issue 25 review §1: a prompt no encoding could fit in the context (more characters than
/// the context length times the most characters one token stands for, which the worker
/// measures at load) is refused at once, before the worker spends time encoding it. Before,
/// a 7.8 MB prompt to the tiny model (context 512) took 11.2 s to be refused, holding every
/// other request to the model meanwhile.
#[test]
fn a_prompt_no_encoding_could_fit_is_refused_at_once() {
    crate::require!(Python);
    let (_fx, s) = serving_tiny();
    let big = "The quick brown fox jumps. ".repeat(290_000);
    let small = json!({"model": "tiny", "prompt": "hi", "max_tokens": 3});
    for (route, body) in [
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": big, "max_tokens": 4}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "max_tokens": 4,
                   "messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": [{"type": "text", "text": big}]}]}),
        ),
    ] {
        let t0 = Instant::now();
        let (st, v) = post_json(&s.addr, route, &[], &body);
        let took = t0.elapsed();
        assert_eq!(
            (st, v["error"]["type"].as_str()),
            (400, Some("context_length_exceeded")),
            "{route}: {v}"
        );
        let chars = if route == "/v1/completions" {
            7_830_000
        } else {
            7_830_009
        };
        assert_eq!(
            v["error"]["message"],
            format!(
                "the prompt is at least {} tokens ({chars} characters; one token of this model stands for at most 13); this model's context length is 512",
                (chars as u64).div_ceil(13)
            ),
            "{route}"
        );
        assert_eq!(v["error"]["retryable"], false);
        assert!(took < Duration::from_secs(4), "{route}: {took:?}");
        let t0 = Instant::now();
        let (st, v) = post_json(&s.addr, "/v1/completions", &[], &small);
        assert_eq!(st, 200, "{v}");
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    }
}

/// Issue 25 review §2 and §6: every field of the JSON routes is honoured, a no-op with a value
/// that changes nothing, or refused naming it (they were accepted and ignored: `suffix`,
/// `functions`, `modalities: ["audio"]`, `parallel_tool_calls: false`, `stream_options`
/// without `stream`); `tools` to a model that cannot call them is a 422 as images to a text
/// model are; whole numbers may be written as floats. What the `openai` SDK and the common
/// clients send by default is taken.
#[test]
fn fields_are_honoured_no_ops_or_refused() {
    crate::require!(Python);
    let fx = Fx::new();
    make_tiny(&fx, "tiny", &[]);
    let plain = make_tiny(&fx, "plain", &[]);
    let tc = plain.join("tokenizer_config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&tc).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&tc, cfg.to_string()).unwrap();
    let s = Served::start(&fx, &["--max-loaded", "2"]);
    let hi = json!([{"role": "user", "content": "hi"}]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
                        "parameters": {"type": "object", "properties": {}}}}]);
    for (route, body, want, kind, says) in [
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "hi", "max_tokens": 2, "suffix": "end"}),
            400,
            "invalid_request",
            "`suffix` \"end\" is not supported by mlxfs serve",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": hi, "max_tokens": 2,
                   "functions": [{"name": "f", "parameters": {}}], "function_call": "auto"}),
            400,
            "invalid_request",
            "`functions` is not supported by mlxfs serve",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": hi, "max_tokens": 2,
                   "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}),
            400,
            "invalid_request",
            "`modalities` [\"text\",\"audio\"] is not supported by mlxfs serve",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": hi, "max_tokens": 2, "parallel_tool_calls": false}),
            400,
            "invalid_request",
            "`parallel_tool_calls` false is not supported by mlxfs serve",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": hi, "max_tokens": 2,
                   "stream_options": {"include_usage": true}}),
            400,
            "invalid_request",
            "`stream_options` is only taken with `\"stream\": true`",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": hi, "max_tokens": 2, "tools": tools}),
            422,
            "model_incompatible",
            "`tools` cannot be used with this model",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "plain", "messages": hi, "max_tokens": 2, "tools": tools}),
            422,
            "model_incompatible",
            "`tools` cannot be used with this model",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": hi, "max_tokens": -1e30}),
            400,
            "invalid_request",
            "`max_tokens` must be a whole number from 1 to 4096",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": hi, "max_tokens": 2, "guided_json": {}}),
            400,
            "invalid_request",
            "`guided_json` is not supported by mlxfs serve",
        ),
    ] {
        let (st, v) = post_json(&s.addr, route, &[], &body);
        assert_eq!(
            (st, v["error"]["type"].as_str()),
            (want, Some(kind)),
            "{body}: {v}"
        );
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(says), "{body}: {m}");
    }
    // 1.0 is a whole number (OpenAI takes it so).
    let (st, v) = post_json(
        &s.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "tiny", "messages": hi, "n": 1.0, "max_tokens": 5.0}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() <= 5,
        "{v}"
    );
    // What clients send by default: the openai SDK only what it is given; LangChain's
    // ChatOpenAI `stream` (false) and `n`; Open WebUI and the Vercel AI SDK `stream_options`
    // with a stream, `user`; OpenAI's own answer sent back as history.
    let v = openai(
        &s.url(),
        r#"
out = {}
hi = [{"role": "user", "content": "hi"}]
r = c.chat.completions.create(model="tiny", messages=hi, max_tokens=3)
out["plain"] = r.choices[0].finish_reason
history = hi + [r.choices[0].message.model_dump()] + [{"role": "user", "content": "more"}]
r = c.chat.completions.create(model="tiny", messages=history, max_tokens=3, user="u-1", n=1,
                              store=False, parallel_tool_calls=True, metadata={"app": "x"},
                              extra_body={"stream": False})
out["langchain"] = r.choices[0].finish_reason
chunks = list(c.chat.completions.create(model="tiny", messages=hi, max_tokens=3, stream=True,
                                        stream_options={"include_usage": True}))
out["usage"] = chunks[-1].usage.completion_tokens
with c.chat.completions.with_streaming_response.create(model="tiny", messages=hi, max_tokens=3) as resp:
    out["raw"] = resp.http_response.status_code
r = c.completions.create(model="tiny", prompt="hi", max_tokens=3, user="u-1", echo=False, best_of=1)
out["completion"] = r.choices[0].finish_reason
print(json.dumps(out))
"#,
    );
    for k in ["plain", "langchain", "completion"] {
        assert!(matches!(v[k].as_str(), Some("stop" | "length")), "{k}: {v}");
    }
    assert!(v["usage"].as_u64().is_some_and(|n| n <= 3), "{v}");
    assert_eq!(v["raw"], 200, "{v}");
}

/// A chat template in the style of Qwen's smaller ones: system, user and assistant only, any
/// other role an exception that names `developer`.
const NO_DEVELOPER_TEMPLATE: &str = "{%- for message in messages %}\
{%- if message.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('Only user, assistant and system roles are supported (no tool or developer).') }}{%- endif %}\
<|{{ message.role }}|>{{ message.content }}</s>\n{%- endfor %}{%- if add_generation_prompt %}<|assistant|>{%- endif %}";

/// A chat template that skips roles it does not know, with a default system prompt that
/// mentions a developer.
const SKIPPING_TEMPLATE: &str = "{%- if messages[0].role != 'system' %}<|system|>You are an assistant made by a developer.</s>\n{%- endif %}\
{%- for message in messages %}{%- if message.role in ['system', 'user', 'assistant'] %}<|{{ message.role }}|>{{ message.content }}</s>\n{%- endif %}{%- endfor %}\
{%- if add_generation_prompt %}<|assistant|>{%- endif %}";

/// A chat template that knows the developer role (as gpt-oss's does): its instructions go
/// in a section of their own.
const DEVELOPER_TEMPLATE: &str = "{%- for message in messages %}\
{%- if message.role == 'developer' %}<|system|># Instructions from the developer: {{ message.content }}</s>\n\
{%- else %}<|{{ message.role }}|>{{ message.content }}</s>\n{%- endif %}{%- endfor %}{%- if add_generation_prompt %}<|assistant|>{%- endif %}";

/// Issue 25 review §3: whether a model takes the `developer` role is decided by rendering its
/// chat template once at load, not by the word appearing in it: a template that raises on
/// the role ("… (no tool or developer)") gets it as `system` (it was a 400), one that skips
/// unknown roles but mentions a developer gets it as `system` (it was dropped: the same
/// prompt_tokens with and without it), one that renders it keeps it; a template that writes
/// any role name as it is (the tiny model's) gets `system`, the role its model knows.
#[test]
fn the_developer_role_is_decided_by_rendering_the_template() {
    crate::require!(Python);
    let fx = Fx::new();
    for (name, template) in [
        ("raising", Some(NO_DEVELOPER_TEMPLATE)),
        ("skipping", Some(SKIPPING_TEMPLATE)),
        ("knowing", Some(DEVELOPER_TEMPLATE)),
        ("generic", None),
    ] {
        let ws = make_tiny(&fx, name, &[]);
        if let Some(t) = template {
            let tc = ws.join("tokenizer_config.json");
            let mut cfg: Value = serde_json::from_slice(&std::fs::read(&tc).unwrap()).unwrap();
            cfg["chat_template"] = json!(t);
            std::fs::write(&tc, cfg.to_string()).unwrap();
        }
    }
    let s = Served::start(&fx, &["--max-loaded", "1"]);
    let prompt_tokens = |model: &str, first: Option<&str>| {
        let mut messages = Vec::new();
        if let Some(role) = first {
            messages.push(json!({"role": role, "content": "Answer in French, please."}));
        }
        messages.push(json!({"role": "user", "content": "hi"}));
        let (st, v) = post_json(
            &s.addr,
            "/v1/chat/completions",
            &[],
            &json!({"model": model, "messages": messages, "max_tokens": 1}),
        );
        assert_eq!(st, 200, "{model} {first:?}: {v}");
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    for model in ["raising", "skipping", "generic"] {
        let developer = prompt_tokens(model, Some("developer"));
        assert_eq!(developer, prompt_tokens(model, Some("system")), "{model}");
        assert_ne!(developer, prompt_tokens(model, None), "{model}");
    }
    let developer = prompt_tokens("knowing", Some("developer"));
    let system = prompt_tokens("knowing", Some("system"));
    // "# Instructions from the developer: " is in the prompt.
    assert!(developer > system + 3, "{developer} {system}");
}

/// Issue 25 review §4: one rule for generating past the context, in `run` and `serve`
/// (generate.py `fit_completion`): a `max_tokens` the client or user gave that does not fit
/// beside the prompt is refused with `context_length_exceeded` in OpenAI's words (`serve`
/// capped it at the context length silently, so 1 + 512 tokens overflowed a 512 context;
/// `run --max-tokens 1500` generated all 1500); a default one is cut to what fits, the text
/// ending with `length` there.
#[test]
fn max_tokens_beside_the_prompt_one_rule_for_run_and_serve() {
    crate::require!(Python);
    let (fx, s) = serving_tiny();
    let ask = |max_tokens: Value| {
        let b = explain_fuse(json!({"logit_bias": {"2": -100}}), max_tokens);
        post_json(&s.addr, "/v1/chat/completions", &[], &b)
    };
    // The default (--max-tokens 4096) is cut to the room the prompt leaves.
    let (st, v) = ask(Value::Null);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    let p = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        p + v["usage"]["completion_tokens"].as_u64().unwrap(),
        512,
        "{v}"
    );
    let room = 512 - p;
    let (st, v) = ask(json!(room));
    assert_eq!(st, 200, "{v}");
    for asked in [512, 1500] {
        let (st, v) = ask(json!(asked));
        assert_eq!(
            (st, v["error"]["type"].as_str()),
            (400, Some("context_length_exceeded")),
            "{v}"
        );
        let m = v["error"]["message"].as_str().unwrap().to_string();
        assert_eq!(
            m,
            format!(
                "this model's context length is 512 tokens, but you requested {} tokens ({p} in the prompt, {asked} for the completion): ask for at most {room} completion tokens, or shorten the prompt",
                p + asked
            )
        );
        // `run` says the same of the same prompt (its chat template, one user message).
        let o = mlxfs(&fx)
            .args(["run", "tiny", "Explain FUSE", "--json", "--max-tokens"])
            .arg(asked.to_string())
            .arg("--python")
            .arg(venv_dir())
            .output()
            .unwrap();
        let r: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        assert_eq!(r["error"]["type"], "context_length_exceeded", "{r}");
        assert_eq!(r["error"]["message"], m.as_str(), "{r}");
    }
    // `run` without --max-tokens (256) and a prompt that leaves less room: cut to it.
    let long = "Tokens stream to the terminal as they come. ".repeat(20);
    let o = mlxfs(&fx)
        .args(["run", "tiny", &long, "--json", "--python"])
        .arg(venv_dir())
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert_eq!(r["status"], "success", "{r}");
    let (p, n) = (
        r["data"]["prompt_tokens"].as_u64().unwrap(),
        r["data"]["generation_tokens"].as_u64().unwrap(),
    );
    assert!(p > 256 && p < 512, "{r}");
    assert!(p + n <= 512, "{p} + {n}: {r}");
    if r["data"]["finish_reason"] == "length" {
        assert_eq!(p + n, 512, "{r}");
    }
}
