//! `POST /v1/chat/completions` and `POST /v1/completions` (OpenAI shapes): the request checked
//! ([`super::request`]), the job handed to the model's worker ([`super::jobs`]), and the answer
//! as one JSON object or as server-sent events (`data: {chunk}\n\n` … `data: [DONE]\n\n`). A
//! client that goes away cancels its generation (the stream's guard cancels the job when
//! dropped).
//!
//! Logprobs describe the generated tokens, OpenAI's way: one entry per token (the end of text
//! excepted), its own text and bytes even when it is part of a character (`token` then holds
//! U+FFFD where the bytes are not a whole character; `bytes` are the token's own), top
//! alternatives with their own bytes. A streamed chunk carries the entries of the tokens
//! whose text it completes (a token that only begins a character comes with the one that ends
//! it, so a chunk may carry an entry and no text). With `stop`, the tokens whose text begins
//! before the stop sequence keep their entries; the stop sequence's own tokens are dropped
//! with its text (OpenAI's answers show no trace of a stop sequence: neither its text nor
//! its tokens), so the entries' bytes spell at least the text. The completions API gets its
//! own shape
//! (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`), streamed too.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::Server;

use super::catalog::Served;
use super::error::{ApiError, RequestId, blocking, stopped, worker_error};
use super::pool::CancelGuard;
use super::request::{Kind, Request, parse};
use crate::runtime::worker::{JobErrorKind, JobEvent, JobHandle, TokenLogprob};

static NEXT: AtomicU64 = AtomicU64::new(1);

fn now() -> i64 {
    crate::timefmt::now_secs()
}

fn usage(p: u64, c: u64, cached: u64) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

/// A token's entry in the chat shape (`logprobs.content[]`).
fn chat_logprob(t: &TokenLogprob) -> Value {
    json!({
        "token": t.token,
        "logprob": t.logprob,
        "bytes": t.bytes,
        "top_logprobs": t.top.iter().map(|(s, b, l)| json!({"token": s, "logprob": l, "bytes": b})).collect::<Vec<_>>(),
    })
}

/// The logprobs of some tokens in a kind's shape: `{"content": [...]}` for chat, the
/// completions API's own for completions.
fn logprobs_of(kind: Kind, entries: &[TokenLogprob]) -> Value {
    match kind {
        Kind::Chat => json!({"content": entries.iter().map(chat_logprob).collect::<Vec<_>>()}),
        Kind::Completion => legacy_logprobs(entries),
    }
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
    answer(&srv, kind, body, start, rid)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(
    srv: &Arc<Server>,
    kind: Kind,
    body: Bytes,
    start: Instant,
    rid: String,
) -> Result<Response, ApiError> {
    let body = super::request::body_json(&body)?;
    let mut req = parse(kind, &body, srv.config.max_tokens)?;
    let served: Served = {
        let s = srv.clone();
        let name = req.model.clone();
        blocking(move || s.catalog.resolve(&name))
            .await?
            .map_err(ApiError::refused)?
    };
    super::images::check_input(&served, &req.job, req.images > 0)?;
    if req.images > 0 {
        super::images::fetch_remote_images(srv, &mut req.job).await?;
    }
    // The worker holds prompt and completion to it (generate.py `fit_completion`): an
    // explicit `max_tokens` that does not fit is refused, a default one cut to what fits.
    req.job.context_length = served.record.context_length;
    let started = super::jobs::start(srv, &served, &mut req.job).await?;
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
            started.handle,
            started.guard,
            start,
            rid,
        ))
    } else {
        whole(
            srv,
            req,
            served.id,
            id,
            started.handle,
            started.guard,
            start,
        )
        .await
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
                logprobs: entries, ..
            } => {
                if first {
                    note_first(srv, start);
                    first = false;
                }
                logprobs.extend(entries.unwrap_or_default());
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
                    return Err(stopped());
                }
                note_done(srv, &model, prompt_tokens, completion_tokens);
                let reason = finish(&finish_reason, &tool_calls);
                let lp = req.job.logprobs.map(|_| logprobs_of(req.kind, &logprobs));
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
    Err(worker_error(&JobErrorKind::WorkerDied, "no result"))
}

/// The completions API's own logprobs shape: `tokens`, `token_logprobs`, `top_logprobs`
/// (token → logprob maps; two alternatives with the same text, as two parts of characters
/// both shown as U+FFFD, share a key there — the chat shape keeps both), `text_offset`
/// (where each token's text begins in the generated text, in characters).
fn legacy_logprobs(entries: &[TokenLogprob]) -> Value {
    json!({
        "tokens": entries.iter().map(|e| e.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| {
            let mut m = serde_json::Map::new();
            for (t, _, l) in &e.top {
                m.entry(t.clone()).or_insert(json!(l));
            }
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
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
    // A stream that ends with an error event: counted once among the errors (its status was
    // 200), with the request's id.
    let failed = |srv: &Server, mut e: ApiError, rid: &str| -> Bytes {
        srv.metrics.errors.fetch_add(1, Ordering::Relaxed);
        e.request_id = Some(rid.to_string());
        Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body()))
    };
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
                Some(JobEvent::Token { text, logprobs }) => {
                    if st.first_token {
                        note_first(&srv, start);
                        st.first_token = false;
                    }
                    let lp = want_lp.then(|| logprobs_of(kind, &logprobs.unwrap_or_default()));
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
                    failed(&srv, stopped(), &rid)
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
                    failed(&srv, worker_error(&k, &message), &rid)
                }
                None => {
                    st.guard.done = true;
                    st.finished = true;
                    failed(
                        &srv,
                        worker_error(&JobErrorKind::WorkerDied, "the event stream ended"),
                        &rid,
                    )
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

/// Add the generation routes (their body limits: [`super::routes::BODY_LIMITS`]).
pub fn routes(r: Router<Arc<Server>>) -> Router<Arc<Server>> {
    let r = super::routes::post_route(r, Kind::Chat.route(), chat);
    super::routes::post_route(r, Kind::Completion.route(), completions)
}
