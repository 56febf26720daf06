//! `POST /v1/audio/transcriptions` / `/v1/audio/translations` in `serve` (multipart, as
//! OpenAI's API: `file`, `model`, `language`, `prompt`, `response_format`, `temperature`),
//! answered by the model's mlx-whisper worker.

use axum::Router;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Server;
use super::catalog::Served;
use super::error::ApiError;
use super::images::media_error;
use crate::catalog::capability;
use crate::error::ErrorType;
use crate::media;
use crate::runtime::worker::{GenJob, JobErrorKind, JobEvent};

/// `response_format` of the audio routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    VerboseJson,
    Srt,
    Vtt,
}

/// A form's fields, as the audio routes read them.
#[derive(Default)]
struct Form {
    file: Option<(String, Vec<u8>)>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    format: Option<String>,
    temperature: Option<String>,
    /// `timestamp_granularities[]` (repeated): `segment`, `word`.
    granularities: Vec<String>,
}

/// The fields of OpenAI's transcription and translation forms that are not honoured, with
/// the values that ask for nothing more than what is done anyway (the OpenAI SDK sends a
/// field only when the caller gives it).
const TAKEN_AS_DONE: &[(&str, &[&str])] =
    &[("stream", &["false"]), ("chunking_strategy", &["auto"])];

/// The form of an audio request to `route`. Each field once (`timestamp_granularities[]`
/// may repeat): a field given twice is refused, never the last one taken silently.
async fn read_form(mut mp: Multipart, route: &str) -> Result<Form, ApiError> {
    let mut f = Form::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorType::MediaTooLarge,
                format!(
                    "the upload is over the limit of {route} ({} bytes; audio files at most {} \
                     bytes)",
                    super::routes::body_limit(route),
                    media::AUDIO_MAX_BYTES
                ),
            )
        } else {
            ApiError::bad_request(format!("the multipart form cannot be read: {e}"))
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let repeats = matches!(
            name.as_str(),
            "timestamp_granularities[]" | "timestamp_granularities"
        );
        if !repeats && !seen.insert(name.clone()) {
            return Err(ApiError::bad_request(format!(
                "`{}` is given twice: the form takes each field once \
                 (`timestamp_granularities[]` may repeat)",
                crate::text::one_line(&name)
            )));
        }
        if name == "file" {
            let filename = field.file_name().unwrap_or("the upload").to_string();
            let bytes = field.bytes().await.map_err(bad)?;
            f.file = Some((filename, bytes.to_vec()));
            continue;
        }
        let shown = crate::text::one_line(&name).into_owned();
        let text = field.text().await.map_err(bad)?;
        let slot = match name.as_str() {
            "model" => &mut f.model,
            "language" => &mut f.language,
            "prompt" => &mut f.prompt,
            "response_format" => &mut f.format,
            "temperature" => &mut f.temperature,
            "timestamp_granularities[]" | "timestamp_granularities" => {
                f.granularities.push(text.trim().to_string());
                continue;
            }
            other => {
                // Refused, never ignored: an answer without what was asked for looks right.
                match TAKEN_AS_DONE.iter().find(|(k, _)| *k == other) {
                    Some((_, fine)) if fine.contains(&text.trim()) => continue,
                    Some(_) => {
                        return Err(ApiError::bad_request(format!(
                            "`{shown}` {} is not supported by mlxfs serve",
                            crate::text::one_line(text.trim())
                        )));
                    }
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "`{shown}` is not a field mlxfs serve takes here (file, model, \
                             language, prompt, response_format, temperature, \
                             timestamp_granularities[])"
                        )));
                    }
                }
            }
        };
        *slot = Some(text).filter(|t| !t.trim().is_empty());
    }
    Ok(f)
}

fn timestamp(secs: f64, sep: char) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Segments as SubRip or WebVTT cues.
fn subtitles(segments: &[Value], vtt: bool) -> String {
    let mut out = if vtt {
        String::from("WEBVTT\n\n")
    } else {
        String::new()
    };
    for (i, s) in segments.iter().enumerate() {
        let (a, b) = (
            s["start"].as_f64().unwrap_or(0.0),
            s["end"].as_f64().unwrap_or(0.0),
        );
        let text = s["text"].as_str().unwrap_or_default().trim();
        if vtt {
            out.push_str(&format!(
                "{} --> {}\n{text}\n\n",
                timestamp(a, '.'),
                timestamp(b, '.')
            ));
        } else {
            out.push_str(&format!(
                "{}\n{} --> {}\n{text}\n\n",
                i + 1,
                timestamp(a, ','),
                timestamp(b, ',')
            ));
        }
    }
    out
}

async fn audio(srv: Arc<Server>, translate: bool, mp: Multipart) -> Result<Response, ApiError> {
    let form = read_form(
        mp,
        if translate {
            TRANSLATIONS
        } else {
            TRANSCRIPTIONS
        },
    )
    .await?;
    let Some(model) = form.model else {
        return Err(ApiError::bad_request(
            "`model` is required (GET /v1/models lists them)",
        ));
    };
    let Some((filename, bytes)) = form.file else {
        return Err(ApiError::bad_request("`file` (the audio) is required"));
    };
    let format = match form.format.as_deref().unwrap_or("json") {
        "json" => Format::Json,
        "text" => Format::Text,
        "verbose_json" => Format::VerboseJson,
        "srt" => Format::Srt,
        "vtt" => Format::Vtt,
        other => {
            return Err(ApiError::bad_request(format!(
                "`response_format` `{other}`: json, text, verbose_json, srt or vtt"
            )));
        }
    };
    let language = match form.language.as_deref() {
        None => None,
        Some(l) => Some(
            media::whisper_language(l)
                .map_err(|why| ApiError::bad_request(format!("`language`: {why}")))?,
        ),
    };
    // OpenAI's granularities: `segment` (the default) and `word` (mlx-whisper's word
    // timestamps), both only in verbose_json.
    let mut words = false;
    let mut segments = form.granularities.is_empty();
    for g in &form.granularities {
        match g.as_str() {
            "word" => words = true,
            "segment" => segments = true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "`timestamp_granularities[]` `{}`: word or segment",
                    crate::text::one_line(other)
                )));
            }
        }
    }
    if !form.granularities.is_empty() && format != Format::VerboseJson {
        return Err(ApiError::bad_request(
            "`timestamp_granularities[]` needs `response_format` verbose_json",
        ));
    }
    let temperature = match form.temperature.as_deref() {
        None => 0.0,
        Some(t) => t
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| ApiError::bad_request("`temperature` must be between 0 and 1"))?,
    };
    let served: Served = {
        let s = srv.clone();
        let name = model.clone();
        super::error::blocking(move || s.catalog.resolve(&name))
            .await?
            .map_err(ApiError::refused)?
    };
    let inputs = capability::Inputs {
        audio: true,
        translate,
        ..Default::default()
    };
    capability::serves(&served.record, &served.model.path, &inputs)
        .map_err(|r| super::images::refused(r, &served.id))?;
    let shown = crate::text::one_line(&filename).into_owned();
    media::check_audio(&shown, bytes.len() as u64, &bytes).map_err(media_error)?;
    let mut job = GenJob {
        audio: Some(json!({
            "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
            "name": shown,
        })),
        prompt: form.prompt,
        language,
        translate,
        temperature,
        word_timestamps: words,
        max_tokens: 1,
        top_p: 1.0,
        ..GenJob::default()
    };
    drop(bytes);
    let super::jobs::Started {
        mut handle,
        mut guard,
        ..
    } = super::jobs::start(&srv, &served, &mut job).await?;
    let (text, media) = loop {
        match handle.events.recv().await {
            Some(JobEvent::Token { .. }) => {}
            Some(JobEvent::Done {
                finish_reason,
                text,
                completion_tokens,
                media,
                ..
            }) => {
                guard.done = true;
                if finish_reason == "cancelled" {
                    return Err(super::error::stopped());
                }
                srv.metrics.generations.fetch_add(1, Ordering::Relaxed);
                srv.metrics
                    .completion_tokens
                    .fetch_add(completion_tokens, Ordering::Relaxed);
                break (text, media.unwrap_or(Value::Null));
            }
            Some(JobEvent::Error { kind, message }) => {
                guard.done = true;
                return Err(super::error::worker_error(&kind, &message));
            }
            None => {
                guard.done = true;
                return Err(super::error::worker_error(
                    &JobErrorKind::WorkerDied,
                    "no result",
                ));
            }
        }
    };
    let segments_wanted = segments;
    let segments = media["segments"].as_array().cloned().unwrap_or_default();
    let plain =
        |body: String, mime: &'static str| ([(header::CONTENT_TYPE, mime)], body).into_response();
    Ok(match format {
        Format::Json => axum::Json(json!({"text": text})).into_response(),
        Format::Text => plain(format!("{text}\n"), "text/plain; charset=utf-8"),
        Format::Srt => plain(subtitles(&segments, false), "text/plain; charset=utf-8"),
        Format::Vtt => plain(subtitles(&segments, true), "text/vtt; charset=utf-8"),
        Format::VerboseJson => {
            let mut v = json!({
                "task": if translate { "translate" } else { "transcribe" },
                "language": media["language"],
                "duration": media["audio_seconds"],
                "text": text,
            });
            if segments_wanted {
                v["segments"] = json!(segments);
            }
            if words {
                v["words"] = media["words"].clone();
            }
            axum::Json(v).into_response()
        }
    })
}

/// The audio routes.
use super::routes::{TRANSCRIPTIONS, TRANSLATIONS};

async fn transcriptions(State(srv): State<Arc<Server>>, mp: Multipart) -> Response {
    finish(audio(srv, false, mp).await)
}

async fn translations(State(srv): State<Arc<Server>>, mp: Multipart) -> Response {
    finish(audio(srv, true, mp).await)
}

fn finish(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Add the audio routes (their body limits: [`super::routes::BODY_LIMITS`]).
pub fn routes(r: Router<Arc<Server>>) -> Router<Arc<Server>> {
    let r = super::routes::post_route(r, TRANSCRIPTIONS, transcriptions);
    super::routes::post_route(r, TRANSLATIONS, translations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtitle_formats() {
        let segs = vec![
            json!({"start": 0.0, "end": 1.5, "text": " Hello"}),
            json!({"start": 3661.25, "end": 3662.0, "text": "world"}),
        ];
        assert_eq!(
            subtitles(&segs, false),
            "1\n00:00:00,000 --> 00:00:01,500\nHello\n\n2\n01:01:01,250 --> 01:01:02,000\nworld\n\n"
        );
        assert!(
            subtitles(&segs, true).starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello\n")
        );
    }
}
