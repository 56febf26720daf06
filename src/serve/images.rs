//! `image_url` parts of chat messages in `serve`: base64 data URLs decoded and checked, http(s)
//! URLs only with `--allow-remote-images` (fetched by [`super::remote`]), and the input a model
//! can take (HTTP 422 when it cannot).

use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;

use super::catalog::Served;
use super::error::ApiError;
use super::{RemoteImages, Server};
use crate::catalog::capability::{self, Modality, Refusal};
use crate::error::ErrorType;
use crate::media::{self, MediaError, MediaErrorKind};
use crate::runtime::worker::GenJob;

pub(super) fn media_error(e: MediaError) -> ApiError {
    match e.kind {
        MediaErrorKind::Invalid => {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidMedia, e.message)
        }
        MediaErrorKind::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::MediaTooLarge,
            e.message,
        ),
    }
}

/// Check image bytes and make the worker's part `{"type": "image", "data": BASE64}`.
fn image_data(what: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    media::check_image(what, bytes.len() as u64, bytes).map_err(media_error)?;
    Ok(json!({
        "type": "image",
        "data": base64::engine::general_purpose::STANDARD.encode(bytes),
    }))
}

/// An `image_url`'s URL as a worker's part: a base64 data URL decoded and checked; an
/// http(s) URL kept for [`fetch_remote_images`]; anything else refused.
pub fn image_part(what: &str, url: &str) -> Result<Value, ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(ApiError::bad_request(format!(
                "{what}: a data URL needs a `,` before its data"
            )));
        };
        if !meta.split(';').any(|p| p.eq_ignore_ascii_case("base64")) {
            return Err(ApiError::bad_request(format!(
                "{what}: only base64 data URLs are read (data:image/png;base64,…)"
            )));
        }
        let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(clean.as_bytes())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(clean.as_bytes()))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorType::InvalidMedia,
                    format!("{what}: the data URL is not valid base64: {e}"),
                )
            })?;
        return image_data(what, &bytes);
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(json!({"type": "image_remote", "url": url, "what": what}));
    }
    Err(ApiError::bad_request(format!(
        "{what}: an image_url must be a base64 data URL (data:image/png;base64,…)"
    )))
}

/// Refuse, with HTTP 422, a chat or completion request the model cannot take: any request to
/// a speech-to-text model, images to a model without the `vision` capability, and for a vision
/// model the fields its worker does not pass to mlx-vlm (`logprobs`, `tools`, `top_k`,
/// `min_p`, `presence_penalty`, `frequency_penalty`, `logit_bias`): refused, never ignored.
pub fn check_input(served: &Served, job: &GenJob, has_images: bool) -> Result<(), ApiError> {
    let inputs = capability::Inputs {
        images: usize::from(has_images),
        ..Default::default()
    };
    match capability::serves(&served.record, &served.model.path, &inputs) {
        Err(r) => Err(refused(r, &served.id)),
        Ok(Modality::Vision) => {
            let asked: Vec<&str> = [
                ("logprobs", job.logprobs.is_some()),
                ("tools", job.tools.is_some()),
                ("top_k", job.top_k.is_some()),
                ("min_p", job.min_p.is_some()),
                ("presence_penalty", job.presence_penalty.is_some()),
                ("frequency_penalty", job.frequency_penalty.is_some()),
                ("logit_bias", job.logit_bias.is_some()),
            ]
            .into_iter()
            .filter_map(|(k, on)| on.then_some(k))
            .collect();
            if asked.is_empty() {
                return Ok(());
            }
            Err(incompatible(format!(
                "{} is a vision model (served by mlx-vlm): `{}` {} not available for it",
                served.id,
                asked.join("`, `"),
                if asked.len() == 1 { "is" } else { "are" }
            )))
        }
        Ok(_) => Ok(()),
    }
}

/// HTTP 422 `model_incompatible`.
fn incompatible(m: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorType::ModelIncompatible,
        m,
    )
}

/// A refusal of the core rule ([`capability::serves`]) for the served model `id`, as `serve`
/// words it: HTTP 422 `model_incompatible`.
pub(super) fn refused(r: Refusal, id: &str) -> ApiError {
    incompatible(match r {
        Refusal::SpeechNeedsAudio => {
            format!("{id} is a speech-to-text model: send audio to POST /v1/audio/transcriptions")
        }
        Refusal::NoVision => format!(
            "{id} cannot take images: it has no `vision` capability (GET /v1/models lists each \
             model's capabilities)"
        ),
        Refusal::NotSpeech | Refusal::NoAudio | Refusal::AudioInChat => format!(
            "{id} cannot transcribe audio: it is not a speech-to-text model (capability `audio`; \
             GET /v1/models lists them)"
        ),
        Refusal::UnsupportedLayout(why) => format!(
            "{id} is a speech model mlxfs cannot run: mlxfs runs Whisper checkpoints in \
             mlx-whisper's layout, and {why}"
        ),
        Refusal::CannotTranslate => {
            format!("{id} cannot translate: English-only and turbo Whisper models only transcribe")
        }
        Refusal::TooManyImages { given } => {
            format!("{given} images given; at most {}", crate::media::MAX_IMAGES)
        }
        Refusal::Unhealthy { reason, .. }
        | Refusal::Incompatible(reason)
        | Refusal::NeedsForce(reason)
        | Refusal::IncompatibleForced(reason) => format!("{id} cannot run: {reason}"),
    })
}

/// Fetch the http(s) images of a request when the server allows it (`--allow-remote-images`),
/// each at most [`media::IMAGE_MAX_BYTES`] within 10 s, and refuse them otherwise.
pub async fn fetch_remote_images(srv: &Arc<Server>, job: &mut GenJob) -> Result<(), ApiError> {
    let Some(messages) = job.messages.as_mut() else {
        return Ok(());
    };
    for m in messages.iter_mut() {
        let Some(parts) = m["content"].as_array_mut() else {
            continue;
        };
        for p in parts.iter_mut() {
            if p["type"] != "image_remote" {
                continue;
            }
            let url = p["url"].as_str().unwrap_or_default().to_string();
            let what = p["what"].as_str().unwrap_or("an image").to_string();
            if srv.config.remote_images == RemoteImages::Off {
                return Err(ApiError::bad_request(format!(
                    "{what}: the server does not fetch image URLs on a client's behalf; send \
                     the image as a base64 data URL (or start serve with --allow-remote-images)"
                )));
            }
            let bytes = super::remote::fetch(&url, srv.config.remote_images)
                .await
                .map_err(|why| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorType::InvalidMedia,
                        format!("{what}: cannot fetch {url}: {why}"),
                    )
                })?;
            *p = image_data(&what, &bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        let png = base64::engine::general_purpose::STANDARD
            .encode(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01rest");
        let p = image_part("x", &format!("data:image/png;base64,{png}")).unwrap();
        assert_eq!(p["type"], "image");
        assert_eq!(
            image_part("x", "data:image/png;base64,R0lGODlh")
                .unwrap_err()
                .kind,
            ErrorType::InvalidMedia
        );
        assert_eq!(
            image_part("x", "https://example.org/a.png").unwrap()["type"],
            "image_remote"
        );
        assert_eq!(
            image_part("x", "file:///etc/passwd").unwrap_err().kind,
            ErrorType::InvalidRequest
        );
    }
}
