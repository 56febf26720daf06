//! The POST routes of `serve` by path, with the most a request body to each may hold: one
//! table the router's limits ([`post_route`]), the early 413 (`api::refuse_oversized`) and
//! the 413's message all read.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use std::sync::Arc;

use super::Server;
use super::error::BODY_LIMIT;

/// `POST /v1/chat/completions`.
pub const CHAT: &str = "/v1/chat/completions";
/// `POST /v1/completions`.
pub const COMPLETIONS: &str = "/v1/completions";
/// `POST /v1/audio/transcriptions`.
pub const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";
/// `POST /v1/audio/translations`.
pub const TRANSLATIONS: &str = "/v1/audio/translations";

/// Largest body of the audio routes (an audio file of [`crate::media::AUDIO_MAX_BYTES`] and
/// the form around it).
pub const AUDIO_BODY_LIMIT: usize = crate::media::AUDIO_MAX_BYTES as usize + 1024 * 1024;
/// Largest body of `/v1/chat/completions` (images travel in it, base64).
pub const CHAT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The most a route's body may hold (bytes), for the routes that take more than
/// [`BODY_LIMIT`]: chat completions (images travel in them, base64) and the audio routes (a
/// file and its form). The router's limits ([`post_route`]), the early 413
/// (`api::refuse_oversized`) and the 413's message (`api::too_large`) all read this table.
pub const BODY_LIMITS: &[(&str, usize)] = &[
    (CHAT, CHAT_BODY_LIMIT),
    (TRANSCRIPTIONS, AUDIO_BODY_LIMIT),
    (TRANSLATIONS, AUDIO_BODY_LIMIT),
];

/// The most the body of a request to `path` may hold (bytes): [`BODY_LIMITS`], else
/// [`BODY_LIMIT`].
pub fn body_limit(path: &str) -> usize {
    BODY_LIMITS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(BODY_LIMIT, |(_, n)| *n)
}

/// Add `POST path` answered by `handler`, with the route's body limit ([`body_limit`]).
pub fn post_route<H, T>(
    r: Router<Arc<Server>>,
    path: &'static str,
    handler: H,
) -> Router<Arc<Server>>
where
    H: axum::handler::Handler<T, Arc<Server>>,
    T: 'static,
{
    r.route(
        path,
        axum::routing::post(handler).layer(DefaultBodyLimit::max(body_limit(path))),
    )
}
