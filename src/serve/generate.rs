//! `POST /v1/chat/completions` and `POST /v1/completions` (OpenAI shapes): validation of the
//! request into a [`GenJob`], the model's worker from the pool, and the answer as one JSON
//! object or as server-sent events (`data: {chunk}\n\n` … `data: [DONE]\n\n`). A client that
//! goes away cancels its generation (the stream's guard cancels the job when dropped).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::Server;

use super::catalog::Served;
use super::error::{ApiError, RequestId, blocking, load_error, worker_error};
use super::pool::CancelGuard;
use crate::error::ErrorType;
use crate::runtime::worker::{GenJob, JobEvent, JobHandle};

/// Chat or plain completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub model: String,
    pub job: GenJob,
    pub stream: bool,
    pub include_usage: bool,
    /// How many images the messages carry.
    pub images: usize,
}

fn num(body: &Value, key: &str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("`{key}` must be a number"))),
    }
}

fn int(body: &Value, key: &str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("`{key}` must be a whole number ≥ 0"))),
    }
}

/// A message's `content`: a string, or a list of parts — `text`, and `image_url` (a base64
/// data URL, checked here: PNG, JPEG or WebP within the size limit; an http(s) URL is kept as
/// `{"type": "image_remote", "url"}` for [`fetch_remote_images`]). Text-only content becomes
/// one string; with images it stays a list of `{"type": "text", "text"}` and `{"type":
/// "image", "data": BASE64}` parts. `images` counts the images.
fn content_of(c: &Value, i: usize, images: &mut usize) -> Result<Value, ApiError> {
    match c {
        Value::String(s) => Ok(json!(s)),
        Value::Null => Ok(json!("")),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut out = Vec::new();
            let mut with_images = false;
            for (j, p) in parts.iter().enumerate() {
                match p["type"].as_str() {
                    Some("text") => {
                        let Some(t) = p["text"].as_str() else {
                            return Err(ApiError::bad_request(format!(
                                "messages[{i}].content[{j}]: a text part needs `text`"
                            )));
                        };
                        text.push_str(t);
                        out.push(json!({"type": "text", "text": t}));
                    }
                    Some("image_url") => {
                        let url = p["image_url"]["url"]
                            .as_str()
                            .or_else(|| p["image_url"].as_str())
                            .ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "messages[{i}].content[{j}]: an image_url part needs `image_url.url`"
                                ))
                            })?;
                        let what = format!("messages[{i}].content[{j}]");
                        out.push(super::media::image_part(&what, url)?);
                        *images += 1;
                        with_images = true;
                    }
                    Some(other) => {
                        return Err(ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            ErrorType::ModelIncompatible,
                            format!(
                                "messages[{i}].content[{j}]: `{other}` parts are not supported \
                                 (text and image_url are; audio goes to /v1/audio/transcriptions)"
                            ),
                        ));
                    }
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "messages[{i}].content: each part needs `type`"
                        )));
                    }
                }
            }
            Ok(if with_images {
                Value::Array(out)
            } else {
                json!(text)
            })
        }
        _ => Err(ApiError::bad_request(format!(
            "messages[{i}].content must be a string or a list of parts"
        ))),
    }
}

/// Validate a request body. `max_tokens` is capped by `cap` (the server's `--max-tokens`).
pub fn parse(kind: Kind, body: &Value, cap: u32) -> Result<Request, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let model = match body.get("model") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => {
            return Err(ApiError::bad_request(
                "`model` is required (GET /v1/models lists them)",
            ));
        }
    };
    let mut job = GenJob::default();
    let mut image_count = 0;
    match kind {
        Kind::Chat => {
            let Some(msgs) = body.get("messages").and_then(Value::as_array) else {
                return Err(ApiError::bad_request("`messages` must be a list"));
            };
            if msgs.is_empty() {
                return Err(ApiError::bad_request("`messages` is empty"));
            }
            let mut out = Vec::with_capacity(msgs.len());
            let mut images = 0;
            for (i, m) in msgs.iter().enumerate() {
                let role = m["role"].as_str().unwrap_or_default();
                if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}].role must be system, user, assistant or tool"
                    )));
                }
                let mut msg =
                    json!({"role": role, "content": content_of(&m["content"], i, &mut images)?});
                for k in ["tool_calls", "tool_call_id", "name"] {
                    if let Some(v) = m.get(k).filter(|v| !v.is_null()) {
                        msg[k] = v.clone();
                    }
                }
                out.push(msg);
            }
            if images > crate::media::MAX_IMAGES {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorType::InvalidMedia,
                    format!(
                        "{images} images; at most {} per request",
                        crate::media::MAX_IMAGES
                    ),
                ));
            }
            job.messages = Some(out);
            image_count = images;
            if let Some(t) = body.get("tools").filter(|t| !t.is_null()) {
                if !t.is_array() {
                    return Err(ApiError::bad_request("`tools` must be a list"));
                }
                if body.get("tool_choice").and_then(Value::as_str) != Some("none") {
                    job.tools = Some(t.clone());
                }
            }
        }
        Kind::Completion => {
            let prompt = match body.get("prompt") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                    a[0].as_str().unwrap_or_default().to_string()
                }
                _ => return Err(ApiError::bad_request("`prompt` must be a string")),
            };
            job.prompt = Some(prompt);
        }
    }
    // Zero and negative counts get one message, naming the field the client sent.
    for key in ["max_completion_tokens", "max_tokens"] {
        if body.get(key).and_then(Value::as_i64).is_some_and(|n| n < 1) {
            return Err(ApiError::bad_request(format!("`{key}` must be at least 1")));
        }
    }
    let asked = int(body, "max_completion_tokens")?.or(int(body, "max_tokens")?);
    job.max_tokens = asked.map_or(cap, |n| n.min(cap as u64) as u32);
    job.temperature = num(body, "temperature")?.unwrap_or(crate::runtime::defaults::TEMPERATURE);
    if !(0.0..=2.0).contains(&job.temperature) {
        return Err(ApiError::bad_request(
            "`temperature` must be between 0 and 2",
        ));
    }
    job.top_p = num(body, "top_p")?.unwrap_or(crate::runtime::defaults::TOP_P);
    if !(job.top_p > 0.0 && job.top_p <= 1.0) {
        return Err(ApiError::bad_request(
            "`top_p` must be above 0 and at most 1",
        ));
    }
    job.top_k = match int(body, "top_k")? {
        Some(k) if k > 1_000_000 => {
            return Err(ApiError::bad_request("`top_k` must be at most 1000000"));
        }
        k => k.map(|k| k as u32),
    };
    job.min_p = num(body, "min_p")?;
    if job.min_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err(ApiError::bad_request("`min_p` must be between 0 and 1"));
    }
    job.repetition_penalty = num(body, "repetition_penalty")?;
    if job.repetition_penalty.is_some_and(|p| p <= 0.0) {
        return Err(ApiError::bad_request(
            "`repetition_penalty` must be above 0",
        ));
    }
    job.seed = match body.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|i| i as u64))
                .ok_or_else(|| ApiError::bad_request("`seed` must be a whole number"))?,
        ),
    };
    job.stop = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => {
            return Err(ApiError::bad_request(
                "`stop` must be a string or a list of strings",
            ));
        }
    };
    if job.stop.iter().any(String::is_empty) || job.stop.len() > 16 {
        return Err(ApiError::bad_request(
            "`stop`: at most 16 non-empty strings",
        ));
    }
    if int(body, "n")?.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("`n` must be 1"));
    }
    // OpenAI's penalties (-2 to 2) and logit_bias (token id → -100 to 100): mlx-lm's logits
    // processors, as mlx_lm.server applies them.
    for (key, slot) in [
        ("presence_penalty", &mut job.presence_penalty),
        ("frequency_penalty", &mut job.frequency_penalty),
    ] {
        *slot = num(body, key)?.filter(|p| *p != 0.0);
        if slot.is_some_and(|p| !(-2.0..=2.0).contains(&p)) {
            return Err(ApiError::bad_request(format!(
                "`{key}` must be between -2 and 2"
            )));
        }
    }
    job.logit_bias = match body.get("logit_bias") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.len() <= 300 => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in m {
                let id: u32 = k.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "`logit_bias`: keys are token ids (whole numbers), not {}",
                        crate::text::one_line(k)
                    ))
                })?;
                let b = v
                    .as_f64()
                    .filter(|b| (-100.0..=100.0).contains(b))
                    .ok_or_else(|| {
                        ApiError::bad_request("`logit_bias`: values are numbers from -100 to 100")
                    })?;
                out.insert(id, b);
            }
            (!out.is_empty()).then_some(out)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "`logit_bias` must be an object of at most 300 token ids",
            ));
        }
    };
    // What this server cannot honour is refused, not ignored: an answer that looks right but
    // is not what was asked for is worse.
    let unsupported = |what: &str| {
        Err(ApiError::bad_request(format!(
            "{what} is not supported by mlxfs serve"
        )))
    };
    match body.get("response_format").map(|f| &f["type"]) {
        None | Some(Value::Null) => {}
        Some(t) if t == "text" => {}
        Some(t) => {
            return unsupported(&format!(
                "`response_format` {} (the output is not constrained to JSON)",
                crate::text::one_line(&t.to_string())
            ));
        }
    }
    match body.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c == "auto" || c == "none" => {}
        Some(c) => {
            return unsupported(&format!(
                "`tool_choice` {} (only \"auto\" and \"none\": a call cannot be forced)",
                crate::text::one_line(&c.to_string())
            ));
        }
    }
    if body.get("echo").and_then(Value::as_bool) == Some(true) {
        return unsupported("`echo`");
    }
    if int(body, "best_of")?.is_some_and(|n| n > 1) {
        return unsupported("`best_of` above 1");
    }
    job.logprobs = match kind {
        Kind::Chat if body.get("logprobs").and_then(Value::as_bool) == Some(true) => {
            Some(int(body, "top_logprobs")?.unwrap_or(0).min(20) as u32)
        }
        Kind::Completion => int(body, "logprobs")?.map(|k| k.min(20) as u32),
        _ => None,
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        _ => return Err(ApiError::bad_request("`stream` must be true or false")),
    };
    let include_usage = stream && body["stream_options"]["include_usage"].as_bool() == Some(true);
    Ok(Request {
        kind,
        model,
        job,
        stream,
        include_usage,
        images: image_count,
    })
}

static NEXT: AtomicU64 = AtomicU64::new(1);

fn now() -> i64 {
    crate::timefmt::now_secs()
}

fn usage(p: u64, c: u64, cached: u64) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

fn logprob_entry(text: &str, lp: Option<f64>, top: &Option<Vec<(String, f64)>>) -> Value {
    json!({
        "token": text,
        "logprob": lp,
        "bytes": text.as_bytes(),
        "top_logprobs": top.as_ref().map(|t| t.iter().map(|(s, l)| json!({"token": s, "logprob": l, "bytes": s.as_bytes()})).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// OpenAI's `finish_reason`: `length` whenever the token limit cut the answer (a tool call
/// cut before its end marker is incomplete, whatever was parsed of it), else `tool_calls`
/// when the answer holds calls, else `stop`.
fn finish(reason: &str, tool_calls: &Option<Value>) -> &'static str {
    match (reason, tool_calls) {
        ("length", _) => "length",
        (_, Some(_)) => "tool_calls",
        _ => "stop",
    }
}

async fn handle(srv: Arc<Server>, kind: Kind, body: Bytes, rid: String) -> Response {
    let start = Instant::now();
    let result = answer(&srv, kind, body, start, rid).await;
    match result {
        Ok(r) => r,
        Err(e) => {
            srv.metrics.errors.fetch_add(1, Ordering::Relaxed);
            e.into_response()
        }
    }
}

async fn answer(
    srv: &Arc<Server>,
    kind: Kind,
    body: Bytes,
    start: Instant,
    rid: String,
) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let mut req = parse(kind, &body, srv.config.max_tokens)?;
    let served: Served = {
        let s = srv.clone();
        let name = req.model.clone();
        blocking(move || s.catalog.resolve(&name))
            .await?
            .map_err(ApiError::refused)?
    };
    super::media::check_input(&served, &req.job, req.images > 0)?;
    if req.images > 0 {
        super::media::fetch_remote_images(srv, &mut req.job).await?;
    }
    req.job.context_length = served.record.context_length;
    if let Some(ctx) = served.record.context_length {
        req.job.max_tokens = req
            .job
            .max_tokens
            .min(ctx.min(u32::MAX as u64) as u32)
            .max(1);
    }
    let loaded = {
        let s = srv.clone();
        let sv = served.clone();
        blocking(move || s.pool.load(&sv))
            .await?
            .map_err(load_error)?
    };
    if loaded.worker.queue_depth() >= srv.config.max_queue {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::ServiceUnavailable,
            format!(
                "{} has {} requests queued or running (--max-queue): retry later",
                served.id, srv.config.max_queue
            ),
        )
        .retryable(true));
    }
    let handle = loaded.worker.submit(req.job.clone()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::WorkerFailed,
            format!("the model's worker is gone ({e}); retry"),
        )
    })?;
    let guard = CancelGuard::new(loaded.clone(), handle.id);
    let id = match kind {
        Kind::Chat => format!("chatcmpl-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        Kind::Completion => format!("cmpl-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
    };
    if req.stream {
        Ok(stream(
            srv.clone(),
            req,
            served.id,
            id,
            handle,
            guard,
            start,
            rid,
        ))
    } else {
        whole(srv, req, served.id, id, handle, guard, start).await
    }
}

fn note_done(srv: &Server, model: &str, p: u64, c: u64) {
    let m = &srv.metrics;
    m.generations.fetch_add(1, Ordering::Relaxed);
    m.prompt_tokens.fetch_add(p, Ordering::Relaxed);
    m.completion_tokens.fetch_add(c, Ordering::Relaxed);
    m.note_model(model, p, c);
}

fn note_first(srv: &Server, start: Instant) {
    srv.metrics.observe_ttft(start.elapsed());
}

async fn whole(
    srv: &Arc<Server>,
    req: Request,
    model: String,
    id: String,
    mut handle: JobHandle,
    mut guard: CancelGuard,
    start: Instant,
) -> Result<Response, ApiError> {
    let mut logprobs = Vec::new();
    let mut first = true;
    while let Some(ev) = handle.events.recv().await {
        match ev {
            JobEvent::Token {
                text,
                logprob,
                top_logprobs,
            } => {
                if first {
                    note_first(srv, start);
                    first = false;
                }
                if req.job.logprobs.is_some() {
                    logprobs.push(logprob_entry(&text, logprob, &top_logprobs));
                }
            }
            JobEvent::Error { kind, message } => {
                guard.done = true;
                return Err(worker_error(&kind, &message));
            }
            JobEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                text,
                tool_calls,
                ..
            } => {
                guard.done = true;
                if finish_reason == "cancelled" {
                    return Err(worker_error("cancelled", ""));
                }
                note_done(srv, &model, prompt_tokens, completion_tokens);
                let reason = finish(&finish_reason, &tool_calls);
                let lp = req.job.logprobs.map(|_| match req.kind {
                    Kind::Chat => json!({"content": logprobs}),
                    Kind::Completion => legacy_logprobs(&logprobs),
                });
                let body = match req.kind {
                    Kind::Chat => {
                        let mut message = json!({"role": "assistant", "content": text});
                        if let Some(tc) = &tool_calls {
                            message["tool_calls"] = tc.clone();
                            message["content"] = Value::Null;
                        }
                        json!({
                            "id": id, "object": "chat.completion", "created": now(), "model": model,
                            "choices": [{"index": 0, "message": message, "logprobs": lp, "finish_reason": reason}],
                            "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
                        })
                    }
                    Kind::Completion => json!({
                        "id": id, "object": "text_completion", "created": now(), "model": model,
                        "choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": reason}],
                        "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
                    }),
                };
                return Ok(axum::Json(body).into_response());
            }
        }
    }
    guard.done = true;
    Err(worker_error("worker_died", "no result"))
}

/// The completions API's own logprobs shape (`tokens`, `token_logprobs`, `top_logprobs` as
/// token → logprob maps, `text_offset`), from the chat shape's entries.
fn legacy_logprobs(entries: &[Value]) -> Value {
    let mut offset = 0usize;
    let mut offsets = Vec::new();
    for e in entries {
        offsets.push(offset);
        offset += e["token"].as_str().map_or(0, str::len);
    }
    json!({
        "tokens": entries.iter().map(|e| e["token"].clone()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e["logprob"].clone()).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| {
            let mut m = serde_json::Map::new();
            for t in e["top_logprobs"].as_array().into_iter().flatten() {
                if let Some(k) = t["token"].as_str() {
                    m.insert(k.to_string(), t["logprob"].clone());
                }
            }
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// Streamed tool calls carry their position (`index`), as OpenAI's deltas do.
fn indexed(tool_calls: &Value) -> Value {
    match tool_calls {
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    if c.is_object() {
                        c["index"] = json!(i);
                    }
                    c
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

#[allow(clippy::too_many_arguments)]
fn stream(
    srv: Arc<Server>,
    req: Request,
    model: String,
    id: String,
    handle: JobHandle,
    guard: CancelGuard,
    start: Instant,
    rid: String,
) -> Response {
    let created = now();
    let model_id = model.clone();
    let chunk = move |choice: Value, kind: Kind| -> Value {
        match kind {
            Kind::Chat => {
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]})
            }
            Kind::Completion => {
                json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": [choice]})
            }
        }
    };
    struct St {
        handle: JobHandle,
        guard: CancelGuard,
        started: bool,
        finished: bool,
        first_token: bool,
    }
    let st = St {
        handle,
        guard,
        started: false,
        finished: false,
        first_token: true,
    };
    let kind = req.kind;
    let want_lp = req.job.logprobs.is_some();
    let include_usage = req.include_usage;
    let s = futures::stream::unfold(st, move |mut st| {
        let chunk = chunk.clone();
        let srv = srv.clone();
        let rid = rid.clone();
        let model_id = model_id.clone();
        async move {
            if st.finished {
                return None;
            }
            if !st.started && kind == Kind::Chat {
                st.started = true;
                let c = chunk(
                    json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
                    kind,
                );
                return Some((Ok::<Bytes, std::convert::Infallible>(sse(&c)), st));
            }
            let out = match st.handle.events.recv().await {
                Some(JobEvent::Token {
                    text,
                    logprob,
                    top_logprobs,
                }) => {
                    if st.first_token {
                        note_first(&srv, start);
                        st.first_token = false;
                    }
                    let lp = want_lp.then(
                        || json!({"content": [logprob_entry(&text, logprob, &top_logprobs)]}),
                    );
                    let c = match kind {
                        Kind::Chat => chunk(
                            json!({"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}),
                            kind,
                        ),
                        Kind::Completion => chunk(
                            json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": null}),
                            kind,
                        ),
                    };
                    sse(&c)
                }
                Some(JobEvent::Done { finish_reason, .. }) if finish_reason == "cancelled" => {
                    st.guard.done = true;
                    st.finished = true;
                    let mut e = worker_error("cancelled", "");
                    e.request_id = Some(rid.clone());
                    Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body()))
                }
                Some(JobEvent::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                    tool_calls,
                    ..
                }) => {
                    st.guard.done = true;
                    st.finished = true;
                    note_done(&srv, &model_id, prompt_tokens, completion_tokens);
                    let reason = finish(&finish_reason, &tool_calls);
                    let mut last = match kind {
                        Kind::Chat => {
                            let mut delta = json!({});
                            if let Some(tc) = &tool_calls {
                                delta["tool_calls"] = indexed(tc);
                            }
                            chunk(
                                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason}),
                                kind,
                            )
                        }
                        Kind::Completion => chunk(
                            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason}),
                            kind,
                        ),
                    };
                    let mut text = format!("data: {last}\n\n");
                    if include_usage {
                        last["choices"] = json!([]);
                        last["usage"] = usage(prompt_tokens, completion_tokens, cached_tokens);
                        text.push_str(&format!("data: {last}\n\n"));
                    }
                    text.push_str("data: [DONE]\n\n");
                    Bytes::from(text)
                }
                Some(JobEvent::Error { kind: k, message }) => {
                    st.guard.done = true;
                    st.finished = true;
                    srv.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    let mut e = worker_error(&k, &message);
                    e.request_id = Some(rid.clone());
                    Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body()))
                }
                None => {
                    st.guard.done = true;
                    st.finished = true;
                    let mut e = worker_error("worker_died", "the event stream ended");
                    e.request_id = Some(rid.clone());
                    Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body()))
                }
            };
            Some((Ok(out), st))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(s))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn chat(
    State(srv): State<Arc<Server>>,
    axum::Extension(rid): axum::Extension<RequestId>,
    body: Bytes,
) -> Response {
    handle(srv, Kind::Chat, body, rid.0).await
}

async fn completions(
    State(srv): State<Arc<Server>>,
    axum::Extension(rid): axum::Extension<RequestId>,
    body: Bytes,
) -> Response {
    handle(srv, Kind::Completion, body, rid.0).await
}

/// Add the generation routes.
pub fn routes(r: Router<Arc<Server>>) -> Router<Arc<Server>> {
    r.route(
        "/v1/chat/completions",
        post(chat).layer(axum::extract::DefaultBodyLimit::max(
            super::media::CHAT_BODY_LIMIT,
        )),
    )
    .route("/v1/completions", post(completions))
}

#[cfg(test)]
mod tests {
    use super::{Kind, parse};
    use serde_json::json;

    /// Zero and negative token counts get the same message, naming the field sent.
    #[test]
    fn token_counts_below_one() {
        for (key, n) in [
            ("max_tokens", 0),
            ("max_tokens", -5),
            ("max_completion_tokens", -1),
        ] {
            let body = json!({"model": "m", "prompt": "hi", key: n});
            let e = parse(Kind::Completion, &body, 256).err().unwrap();
            assert_eq!(
                e.message,
                format!("`{key}` must be at least 1"),
                "{key} {n}"
            );
        }
        let body = json!({"model": "m", "prompt": "hi", "max_tokens": 10_000});
        assert_eq!(
            parse(Kind::Completion, &body, 256).unwrap().job.max_tokens,
            256
        );
    }

    /// Penalties and logit_bias are checked and passed on; what cannot be honoured is
    /// refused, not ignored.
    #[test]
    fn sampling_fields_and_refusals() {
        let req = |extra: serde_json::Value| {
            let mut body = json!({"model": "m", "prompt": "hi"});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            parse(Kind::Completion, &body, 256)
        };
        let ok = req(json!({"presence_penalty": 0.5, "frequency_penalty": -1,
                             "logit_bias": {"42": 100, " 7": -5.5}}))
        .unwrap();
        assert_eq!(ok.job.presence_penalty, Some(0.5));
        assert_eq!(ok.job.frequency_penalty, Some(-1.0));
        assert_eq!(
            ok.job.logit_bias,
            Some([(7, -5.5), (42, 100.0)].into_iter().collect())
        );
        for (extra, says) in [
            (json!({"presence_penalty": 3}), "between -2 and 2"),
            (json!({"logit_bias": {"abc": "x"}}), "token ids"),
            (json!({"logit_bias": {"1": 101}}), "-100 to 100"),
            (json!({"logit_bias": [1]}), "must be an object"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (json!({"echo": true}), "echo"),
            (json!({"best_of": 3}), "best_of"),
        ] {
            let e = req(extra.clone()).err().unwrap();
            assert!(e.message.contains(says), "{extra}: {}", e.message);
        }
        for fine in [
            json!({"response_format": {"type": "text"}}),
            json!({"tool_choice": "auto"}),
            json!({"echo": false, "best_of": 1, "presence_penalty": 0}),
        ] {
            assert!(req(fine.clone()).is_ok(), "{fine}");
        }
    }
}
