//! Images and audio in `serve`: `image_url` parts of chat messages (base64 data URLs; http(s)
//! URLs only with `--allow-remote-images`), the input a model can take (HTTP 422 when it
//! cannot), and `POST /v1/audio/transcriptions` / `/v1/audio/translations` (multipart, as
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

use super::catalog::Served;
use super::error::ApiError;
use super::pool::backend_of;
use super::{RemoteImages, Server};
use crate::error::ErrorType;
use crate::media::{self, MediaError, MediaErrorKind};
use crate::runtime::Backend;
use crate::runtime::worker::{GenJob, JobEvent};

fn media_error(e: MediaError) -> ApiError {
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
    let incompatible = |m: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::ModelIncompatible,
            m,
        )
    };
    match backend_of(&served.record) {
        Backend::MlxWhisper => Err(incompatible(format!(
            "{} is a speech-to-text model: send audio to POST /v1/audio/transcriptions",
            served.id
        ))),
        Backend::MlxVlm => {
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
        Backend::MlxLm if has_images => Err(incompatible(format!(
            "{} cannot take images: it has no `vision` capability (GET /v1/models lists each \
             model's capabilities)",
            served.id
        ))),
        _ => Ok(()),
    }
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
            let bytes = fetch(&url, srv.config.remote_images).await.map_err(|why| {
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

async fn fetch(url: &str, from: RemoteImages) -> Result<Vec<u8>, String> {
    const REDIRECTS: usize = 3;
    let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    let builder = if from == RemoteImages::Any {
        builder.redirect(reqwest::redirect::Policy::limited(REDIRECTS))
    } else {
        let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        if let Some(why) = refused_literal(&parsed) {
            return Err(why);
        }
        // A name is resolved by `PublicOnly` (on every connection, so a redirect or a name
        // that resolves elsewhere the second time is held to it too); an address written in
        // the URL is not resolved, so each hop's is checked here. A proxy would make the
        // connection to itself, not to the host checked: none is used.
        builder
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() > REDIRECTS {
                    return attempt.error(format!("more than {REDIRECTS} redirects"));
                }
                match refused_literal(attempt.url()) {
                    Some(why) => attempt.error(why),
                    None => attempt.follow(),
                }
            }))
    };
    let client = builder.build().map_err(|e| e.to_string())?;
    let mut resp = client.get(url).send().await.map_err(|e| chain(&e))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
        out.extend_from_slice(&chunk);
        if out.len() as u64 > media::IMAGE_MAX_BYTES {
            return Err(format!("it is over {} bytes", media::IMAGE_MAX_BYTES));
        }
    }
    Ok(out)
}

/// An error and its sources, `: `-joined (reqwest's own text hides why a connection failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        if !out.contains(&t) {
            out = format!("{out}: {t}");
        }
        next = s.source();
    }
    out
}

const ANY_HINT: &str = "start serve with --allow-remote-images=any to fetch from any address";

/// Why a URL whose host is an IP address is not fetched under [`RemoteImages::Public`].
fn refused_literal(url: &reqwest::Url) -> Option<String> {
    // The URL parser reads an IPv4 host in any of its forms (`2130706433`, `0x7f.1`, `127.1`)
    // as the address it means and writes it dotted, an IPv6 one in brackets; any other host
    // is a name, which `PublicOnly` resolves and checks.
    let host = url.host_str()?;
    let ip: std::net::IpAddr = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?.parse().ok()?,
        None => host.parse().ok()?,
    };
    (!fetchable(ip)).then(|| format!("{ip} is not a public address ({ANY_HINT})"))
}

/// May an image be fetched from `ip` under [`RemoteImages::Public`]? A public address
/// ([`is_public`]) that is not one of this machine's own (a service listening on all
/// addresses is reachable through the machine's public one too).
/// An IPv6 address that embeds an IPv4 one is checked under both (a NAT64 or 6to4 gateway
/// leads to the IPv4 one). A public address that reaches this machine through a 1:1 NAT
/// (a cloud VM's public address, on no interface of it) is not recognised.
fn fetchable(ip: std::net::IpAddr) -> bool {
    let embedded = match ip {
        std::net::IpAddr::V6(a) => embedded_v4(a),
        std::net::IpAddr::V4(_) => None,
    };
    is_public(ip) && !is_this_machine(ip) && !embedded.is_some_and(|v4| is_this_machine(v4.into()))
}

/// The IPv4 address an IPv6 one carries: IPv4-mapped (::ffff:0:0/96), IPv4-translated
/// (::ffff:0:0:0/96), NAT64 (64:ff9b::/96), 6to4 (2002::/16).
fn embedded_v4(a: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = a.segments();
    let v4 = |hi: u16, lo: u16| {
        std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
    };
    if let Some(m) = a.to_ipv4_mapped() {
        return Some(m);
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(v4(s[6], s[7]));
    }
    (s[0] == 0x2002).then(|| v4(s[1], s[2]))
}

/// Is `ip` an address of this machine? Binding a socket to an address succeeds only for a
/// local one (with `net.ipv4.ip_nonlocal_bind` set, every address seems local: then no
/// address is fetched from, the safe way to be wrong).
fn is_this_machine(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind(std::net::SocketAddr::new(ip, 0)).is_ok()
}

/// reqwest's resolver under [`RemoteImages::Public`]: the system's answer (getaddrinfo),
/// without the addresses [`fetchable`] refuses; an error when none is left. The error says
/// the same whether the name has no address or only refused ones, and names none of them
/// (what internal names exist and where they lead is not the client's business): the
/// server's log (stderr) has them.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let refused = |why: String| -> Box<dyn std::error::Error + Send + Sync> {
                crate::note!("mlxfs serve: an image URL's host {host}: {why}");
                format!("{host} has no public address ({ANY_HINT})").into()
            };
            let all: Vec<std::net::SocketAddr> =
                match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(all) => all.collect(),
                    Err(e) => return Err(refused(format!("cannot be resolved: {e}"))),
                };
            let public: Vec<std::net::SocketAddr> =
                all.iter().copied().filter(|a| fetchable(a.ip())).collect();
            if public.is_empty() {
                let seen: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
                return Err(refused(format!(
                    "resolves to no public address ({})",
                    seen.join(", ")
                )));
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Is `ip` an address of the public internet? Not this machine, not a private or shared
/// network, not link-local (where cloud metadata services answer, 169.254.169.254), and none
/// of the other special-purpose blocks of the IANA registries (RFC 6890 and its updates):
/// unspecified, "this network" (0/8), shared address space (100.64/10, RFC 6598), IETF
/// protocol assignments (192.0.0/24), documentation, the 6to4 relay anycast (192.88.99/24),
/// benchmarking (198.18/15), reserved (240/4), broadcast, multicast, and Azure's host
/// service (168.63.129.16, a public address that answers inside every Azure VM); for IPv6
/// also unique-local (fc00::/7), link- and site-local, documentation (2001:db8::/32,
/// 3fff::/20), discard-only (100::/64), the IETF protocol assignments 2001::/23 (Teredo,
/// benchmarking, ORCHID), local-use NAT64 (64:ff9b:1::/48, RFC 8215: it may lead to private
/// IPv4 networks), SRv6 SIDs (5f00::/16) and the rest of ::/96. An address that embeds an
/// IPv4 one (IPv4-mapped ::ffff:0:0/96, IPv4-translated ::ffff:0:0:0/96, NAT64
/// 64:ff9b::/96, 6to4 2002::/16) is judged by it. (Rust's `IpAddr::is_global` is not stable
/// yet.)
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && o[1] & 0xc0 == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 192 && o[1] == 88 && o[2] == 99)
                || (o[0] == 198 && o[1] & 0xfe == 18)
                || o == [168, 63, 129, 16]
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_v4(a) {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(s[..6] == [0; 6] // ::, ::1 and the deprecated IPv4-compatible ::/96
                || a.is_multicast()
                || s[0] & 0xfe00 == 0xfc00
                || s[0] & 0xffc0 == 0xfe80
                || s[0] & 0xffc0 == 0xfec0
                || s[..4] == [0x100, 0, 0, 0]
                || (s[0] == 0x2001 && s[1] < 0x200)
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x3fff && s[1] < 0x1000)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || s[0] == 0x5f00)
        }
    }
}

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
    let incompatible = |m: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::ModelIncompatible,
            m,
        )
    };
    if backend_of(&served.record) != Backend::MlxWhisper {
        return Err(incompatible(format!(
            "{} cannot transcribe audio: it is not a speech-to-text model (capability `audio`; \
             GET /v1/models lists them)",
            served.id
        )));
    }
    if let Err(why) = crate::catalog::detect::whisper_layout(&served.model.path) {
        return Err(incompatible(format!(
            "{} is a speech model mlxfs cannot run: mlxfs runs Whisper checkpoints in \
             mlx-whisper's layout, and {why}",
            served.id
        )));
    }
    if translate
        && !served
            .record
            .capabilities
            .contains(&crate::catalog::verdict::Capability::AudioTranslateEn)
    {
        return Err(incompatible(format!(
            "{} cannot translate: English-only and turbo Whisper models only transcribe",
            served.id
        )));
    }
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
                    return Err(super::error::worker_error("cancelled", ""));
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
                return Err(super::error::worker_error("worker_died", "no result"));
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

    #[test]
    fn public_addresses() {
        let public = |t: &str| is_public(t.parse().unwrap());
        for t in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(public(t), "{t} is public");
        }
        for t in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "203.0.113.7",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "192.88.99.1",
            "168.63.129.16",
            "::ffff:0:a00:1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::808:808",
            "100::1",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
        ] {
            assert!(!public(t), "{t} is not public");
        }
        // Just outside the blocks.
        for t in [
            "192.88.100.1",
            "168.63.129.17",
            "2001:200::1",
            "3fff:1000::1",
        ] {
            assert!(public(t), "{t} is public");
        }
    }

    /// This machine's own addresses are refused even when public ones: a service listening
    /// on all of them is reachable through each.
    #[test]
    fn this_machine_is_not_fetched_from() {
        assert!(is_this_machine("127.0.0.1".parse().unwrap()));
        assert!(!fetchable("127.0.0.1".parse().unwrap()));
        for (v6, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:0:7f00:1", "127.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            ("2002:7f00:1::1", "127.0.0.1"),
        ] {
            let inner = embedded_v4(v6.parse().unwrap());
            assert_eq!(inner, Some(v4.parse().unwrap()), "{v6}");
            assert!(is_this_machine(inner.unwrap().into()), "{v6}");
        }
        assert_eq!(embedded_v4("2606:4700::1111".parse().unwrap()), None);
        // A public address of this machine's (where it has one), also in its NAT64 and 6to4
        // forms.
        if let Some(mine) = own_public_v4() {
            let [a, b, c, d] = mine.octets();
            let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            for ip in [
                std::net::IpAddr::V4(mine),
                format!("64:ff9b::{hi:x}:{lo:x}").parse().unwrap(),
                format!("2002:{hi:x}:{lo:x}::1").parse().unwrap(),
            ] {
                assert!(!fetchable(ip), "{ip} is this machine's");
            }
        }
        // 192.0.2.0/24 is documentation: no machine has it (unless nonlocal binds are on,
        // which makes every address look like this machine's: nothing is fetched then).
        let binds_anything = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind")
            .is_ok_and(|v| v.trim() == "1");
        if !binds_anything {
            assert!(!is_this_machine("192.0.2.1".parse().unwrap()));
        }
    }

    /// A public IPv4 address of one of this machine's interfaces, if it has one.
    fn own_public_v4() -> Option<std::net::Ipv4Addr> {
        let text = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
        let mut last: Option<std::net::Ipv4Addr> = None;
        for line in text.lines() {
            let t = line.trim_start_matches([' ', '|', '-', '+']);
            if let Ok(a) = t.trim().parse::<std::net::Ipv4Addr>() {
                last = Some(a);
            } else if t.contains("/32 host LOCAL")
                && let Some(a) = last
                && is_public(a.into())
            {
                return Some(a);
            }
        }
        None
    }

    #[test]
    fn literal_hosts_are_checked() {
        let refused = |u: &str| refused_literal(&reqwest::Url::parse(u).unwrap());
        assert!(refused("http://127.0.0.1:8080/a.png").is_some());
        assert!(refused("http://[::1]/a.png").is_some());
        assert!(refused("http://169.254.169.254/latest/meta-data").is_some());
        // The URL parser's own forms of an address: decimal, hex, short.
        assert!(refused("http://2130706433/a.png").is_some());
        assert!(refused("http://0x7f.1/a.png").is_some());
        assert!(refused("http://127.1/a.png").is_some());
        assert!(refused("http://8.8.8.8/a.png").is_none());
        // Names are the resolver's to judge.
        assert!(refused("http://localhost/a.png").is_none());
    }

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
