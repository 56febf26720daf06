//! The error answers of `serve`: mlx-knife's envelope (errors.py) with the HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::catalog::Refusal;
use crate::error::ErrorType;
use crate::runtime::worker::JobErrorKind;

/// Largest request body accepted (bytes); more is a 413.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// An error answer: HTTP status, `error.type`, message, and extra fields.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub message: String,
    pub fields: Vec<(&'static str, Value)>,
    /// Would the same request succeed later? `None`: by the status (503 and 500 yes).
    pub retryable: Option<bool>,
    /// A 503's `Retry-After` (seconds; 1 when not set: every 503 carries one).
    pub retry_after: Option<u64>,
    /// The request's id, for errors sent inside a stream (elsewhere the layer adds it).
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorType, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            fields: Vec::new(),
            retryable: None,
            retry_after: None,
            request_id: None,
        }
    }

    /// A 503 that says when to come back (`Retry-After`, seconds).
    pub fn unavailable(kind: ErrorType, message: impl Into<String>, after_secs: u64) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, kind, message).retryable(true);
        e.retry_after = Some(after_secs.max(1));
        e
    }

    /// The same, saying whether a retry can help.
    pub fn retryable(mut self, r: bool) -> ApiError {
        self.retryable = Some(r);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequest, message)
    }

    /// A request's model that cannot be served: 404 unknown, 400 ambiguous, 422 unhealthy or
    /// not runnable.
    pub fn refused(r: Refusal) -> ApiError {
        let status = match r.kind {
            ErrorType::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorType::AmbiguousMatch | ErrorType::HashNotFound => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut e = ApiError::new(status, r.kind, r.message);
        if !r.matches.is_empty() {
            e.fields.push(("matches", json!(r.matches)));
        }
        e
    }

    /// Would the same request succeed later (busy, shutting down, a worker that died)?
    fn is_retryable(&self) -> bool {
        self.retryable.unwrap_or(matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INTERNAL_SERVER_ERROR
        ))
    }

    /// The envelope (its `request_id` is filled in by the request-id layer).
    pub fn body(&self) -> Value {
        let mut err = json!({
            "type": self.kind.as_str(),
            "message": self.message,
            "retryable": self.is_retryable(),
        });
        for (k, v) in &self.fields {
            err[*k] = v.clone();
        }
        json!({"status": "error", "error": err, "request_id": self.request_id})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(self.retry_after.unwrap_or(1)),
            );
        }
        r.extensions_mut().insert(ErrorMark);
        r
    }
}

/// Marks an error response so that the request-id layer can put the id into its body.
#[derive(Clone, Copy)]
pub struct ErrorMark;

/// The request's id, for handlers (errors sent inside a stream carry it themselves).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A job's error event (`JobEvent::Error`) as the answer: what the model refused is the
/// client's to fix (400/413/422, not retryable); a worker killed from outside (`worker_died`:
/// the OOM killer) can be retried, one that crashed by itself (`worker_crashed`) not (the same
/// request may crash it again); a stop by the server is a 503.
pub fn worker_error(kind: &JobErrorKind, message: &str) -> ApiError {
    match kind {
        JobErrorKind::InvalidRequest => ApiError::bad_request(message).retryable(false),
        JobErrorKind::ContextLengthExceeded => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorType::ContextLengthExceeded,
            message.to_string(),
        )
        .retryable(false),
        JobErrorKind::InvalidMedia => {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidMedia, message)
                .retryable(false)
        }
        JobErrorKind::MediaTooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::MediaTooLarge,
            message.to_string(),
        )
        .retryable(false),
        JobErrorKind::DecoderMissing => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::DecoderMissing,
            message.to_string(),
        )
        .retryable(false),
        JobErrorKind::WorkerDied => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::WorkerFailed,
            format!("the model's worker was killed during the request: {message}"),
        )
        .retryable(true),
        JobErrorKind::WorkerCrashed => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::WorkerFailed,
            format!("the model's worker crashed during the request: {message}"),
        )
        .retryable(false),
        JobErrorKind::WorkerStopped => stopped(),
        JobErrorKind::Other(kind) => {
            let t = ErrorType::parse(kind).unwrap_or(ErrorType::GenerationFailed);
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, t, message.to_string())
                .retryable(false)
        }
    }
}

/// A job the worker answered `cancelled` (its `finish_reason`): stopped by the server
/// (shutting down, or the model unloaded), not by the client, a 503.
pub fn stopped() -> ApiError {
    ApiError::unavailable(
        ErrorType::ServiceUnavailable,
        "the generation was stopped: the server is shutting down or unloaded the model",
        5,
    )
}

/// A model that could not be loaded: 503 (retryable) when every loaded model stayed busy,
/// else the worker's own error (not retryable: the same request fails the same way).
pub fn load_error(e: super::pool::LoadError) -> ApiError {
    if e.busy {
        return ApiError::unavailable(ErrorType::ServiceUnavailable, e.message, 5);
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        e.error
            .as_ref()
            .map_or(ErrorType::LoadFailed, |r| r.kind.error_type()),
        e.message,
    )
    .retryable(false)
}

/// Run disk or process work (catalog reads, worker start-up) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            crate::error::ErrorType::ServerError,
            e.to_string(),
        )
    })
}
