//! The HTTP surface of `serve` (axum): routes, the error envelope, request ids, the API key.
//!
//! Every response carries `X-Request-ID` (the client's, when it sent a sane one, else a new
//! one). Errors use mlx-knife's envelope `{"status":"error","error":{"type","message",
//! "retryable"},"request_id"}` (mlx-knife errors.py; `error.message`/`error.type` are what
//! OpenAI clients read).

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::catalog::{model_object, ollama_tag};
use super::error::{ApiError, BODY_LIMIT, ErrorMark, RequestId};
use super::{Server, metrics};
use crate::error::ErrorType;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A request id: the client's `X-Request-ID` when it is short printable ASCII, else a new one
/// (`req-<pid>-<n>`).
fn request_id(h: &HeaderMap) -> String {
    h.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "req-{}-{}",
                std::process::id(),
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            )
        })
}

/// `X-Request-ID` on every response, and in the body of every error envelope.
async fn with_request_id(mut req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if resp.extensions().get::<ErrorMark>().is_some() {
        let (mut parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .unwrap_or_default();
        let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if v.is_object() {
            v["request_id"] = json!(id);
        }
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        parts.headers.remove(header::CONTENT_LENGTH);
        resp = Response::from_parts(parts, Body::from(bytes));
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Equal in time independent of where two byte strings differ (the API key check).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

/// With an API key set, every route but `GET /health` needs `Authorization: Bearer KEY`.
async fn require_key(State(srv): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let Some(key) = &srv.config.api_key else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), key.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            "the API key is wrong",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            "an API key is required: send `Authorization: Bearer KEY`",
        )
        .into_response(),
    }
}

/// While shutting down, new requests get 503. Every answer is counted here, once: the
/// request, its status, and an error when the status is one (a stream that ends with an error
/// event was a 200: the stream counts that error).
async fn refuse_when_stopping(
    State(srv): State<Arc<Server>>,
    req: Request,
    next: Next,
) -> Response {
    let resp = if srv.stopping() && req.uri().path() != "/health" {
        ApiError::unavailable(
            ErrorType::ServiceUnavailable,
            "the server is shutting down",
            5,
        )
        .into_response()
    } else {
        next.run(req).await
    };
    srv.metrics.note_status(resp.status().as_u16());
    resp
}

/// A body announced (`Content-Length`) over the route's limit is a 413 at once, before any of
/// it is read (not after the body timeout, nor after reading what the limit allows).
async fn refuse_oversized(req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = announced
        && n > super::routes::body_limit(req.uri().path()) as u64
    {
        return too_large(req.uri().path(), Some(n)).into_response();
    }
    next.run(req).await
}

/// The 413 of a body over `path`'s limit (`announced`: its `Content-Length`, when known).
pub fn too_large(path: &str, announced: Option<u64>) -> ApiError {
    let size = announced.map_or(String::new(), |n| format!(" ({n} bytes)"));
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorType::PayloadTooLarge,
        format!(
            "the request body{size} is over the limit of {} ({} bytes)",
            crate::text::one_line(path),
            super::routes::body_limit(path)
        ),
    )
}

/// The catalog's models, read on a blocking thread (a listing reads the disk).
async fn models(srv: &Arc<Server>) -> Vec<super::catalog::Served> {
    let s = srv.clone();
    tokio::task::spawn_blocking(move || s.catalog.models())
        .await
        .unwrap_or_default()
}

async fn list_models(State(srv): State<Arc<Server>>) -> Response {
    let loaded: BTreeSet<String> = srv.loaded_ids();
    let data: Vec<Value> = models(&srv)
        .await
        .iter()
        .map(|s| model_object(s, &loaded))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_model(State(srv): State<Arc<Server>>, Path(id): Path<String>) -> Response {
    let loaded = srv.loaded_ids();
    match models(&srv).await.iter().find(|s| s.id == id) {
        Some(s) => axum::Json(model_object(s, &loaded)).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::ModelNotFound,
            format!("No model with id '{id}' (GET /v1/models lists them)"),
        )
        .into_response(),
    }
}

async fn health(State(srv): State<Arc<Server>>) -> Response {
    let status = if srv.stopping() { "stopping" } else { "ok" };
    axum::Json(json!({
        "status": status,
        "service": concat!("mlxfs-", env!("CARGO_PKG_VERSION")),
        "loaded_models": srv.loaded_ids(),
        "queue_depth": srv.queue_depth(),
        "workers": srv.pool.workers().into_iter().map(|(model, pid, q, blas)| json!({"model": model, "pid": pid, "queue_depth": q, "blas": blas})).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn ollama_tags(State(srv): State<Arc<Server>>) -> Response {
    // Each entry reads its model's config and safetensors headers.
    let s = srv.clone();
    let models: Vec<Value> = tokio::task::spawn_blocking(move || {
        let served = s.catalog.models();
        crate::par::par_map(&served, ollama_tag)
    })
    .await
    .unwrap_or_default();
    axum::Json(json!({"models": models})).into_response()
}

async fn prometheus(State(srv): State<Arc<Server>>) -> Response {
    let text = metrics::render(&srv);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorType::NotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
    .into_response()
}

/// Turn axum's own rejections (bad JSON, too large) into the envelope.
async fn envelope_rejections(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if resp.extensions().get::<ErrorMark>().is_some() || resp.status().is_success() {
        return resp;
    }
    let status = resp.status();
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => return too_large(&path, None).into_response(),
        StatusCode::NOT_FOUND => ErrorType::NotFound,
        s if s.is_client_error() => ErrorType::InvalidRequest,
        _ => return resp,
    };
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method".to_string(),
        _ if text.is_empty() => status.to_string(),
        _ => text,
    };
    ApiError::new(status, kind, message).into_response()
}

/// The whole router.
pub fn router(srv: Arc<Server>) -> Router {
    let mut r = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/api/tags", get(ollama_tags));
    r = super::generate::routes(r);
    r = super::audio::routes(r);
    let mut r = r
        .fallback(not_found)
        .layer(middleware::from_fn(envelope_rejections))
        .layer(middleware::from_fn(refuse_oversized))
        .layer(middleware::from_fn_with_state(srv.clone(), require_key))
        .layer(middleware::from_fn_with_state(
            srv.clone(),
            refuse_when_stopping,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            srv.config.body_timeout,
        ));
    if !srv.config.cors_origins.is_empty() {
        use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
        // `*` is any origin (never with credentials); otherwise exactly the origins given.
        let origin = if srv.config.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                srv.config
                    .cors_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        r = r.layer(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers(AllowHeaders::mirror_request())
                .expose_headers([axum::http::HeaderName::from_static("x-request-id")]),
        );
    }
    r.layer(middleware::from_fn(with_request_id))
        .with_state(srv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
