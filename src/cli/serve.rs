//! `mlxfs serve`: the OpenAI-compatible server over the whole catalog (see [`crate::serve`]).

use clap::Args;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

use super::output::{CliError, Output};
use crate::catalog::Locations;
use crate::error::ErrorType;
use crate::serve::{self, Config, RemoteImages, Server, catalog::Served};
use crate::text::one_line;

#[derive(Args, Debug)]
#[command(after_help = "\
Every runnable model of the catalog (workspaces by their folder name, hub models as
org/name) is listed by GET /v1/models and can be named in a request's `model`; nothing
outside the catalog is ever loaded (no hub ids, no paths from requests). Each loaded
model runs in its own Python worker under the model's isolated cache (as `mlxfs run`):
<workspace>/.hf_cache, or a per-model folder for a hub model; nothing is written to your
shared Hugging Face cache.

Endpoints: POST /v1/chat/completions, POST /v1/completions (streaming with
\"stream\": true), POST /v1/audio/transcriptions and /v1/audio/translations
(multipart: file, model, language, prompt, response_format json|text|verbose_json|srt|vtt,
temperature, timestamp_granularities[] segment|word — word timestamps in verbose_json),
GET /v1/models[/ID], GET /health, GET /metrics (Prometheus), GET /api/tags (Ollama's model
list: architecture, parameter count, quantization such as 4bit, MXFP4, BF16).

Every request is checked before it reaches a model: a value the server cannot honour or a
model cannot take is refused (HTTP 400 naming the field; 422 when the model cannot take it),
never ignored — a field it does not take (`suffix`, `functions`, audio output,
`parallel_tool_calls: false`, any unknown field; no-ops such as `user` or `store: false` are
taken), a field given twice, a `logit_bias` token id outside the model's vocabulary,
`top_logprobs` over 20, `n` above 1, token-id prompts, `tools` for a model that cannot call
them (422), an unknown form field, messages the model's chat template refuses
(docs/ERRORS.md lists the fields). Prompt and answer must fit the model's context length: a
prompt that leaves no room, or a `max_tokens` that does not fit beside it, is refused
(context_length_exceeded); without `max_tokens`, the answer is cut to what fits. The
`developer` role is taken as `system` unless the chat template renders it as a role it
knows. A changed model folder (replaced, re-cloned, restored) gets a new worker at the next
request. `retryable` in an error is true only where a retry can succeed; every 503 has
Retry-After.

Vision models (capability `vision`) run with mlx-vlm and take `image_url` parts as base64
data URLs (PNG, JPEG or WebP, at most 10 MiB each); http(s) URLs only with
--allow-remote-images (public addresses only; =any for every address). Whisper models (capability `audio`) run with mlx-whisper and answer
the audio routes. A model that cannot take the input gets HTTP 422.

Every --model is checked before the port is bound: a name that does not resolve, an
unhealthy or unrunnable model is an error and nothing listens. With --json one line
{\"status\":\"success\",\"command\":\"serve\",\"data\":{\"url\":…}} is printed once the server
listens. SIGINT/SIGTERM stop it (Ctrl-C in its terminal reaches the server alone, never
its workers): the port closes (new connections are refused; a new request on an open
connection gets 503), requests in flight get --shutdown-grace to finish, then every worker
is stopped.

Examples:
  mlxfs serve
  mlxfs serve --model ./my-ws --port 8080 --api-key-file ~/.config/mlxfs/key
  curl localhost:8000/v1/chat/completions -d '{\"model\":\"my-ws\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'")]
pub struct ServeArgs {
    /// A model to load before serving (name, path, or a folder of an mlxfs mount); repeatable
    #[arg(long = "model", value_name = "MODEL")]
    pub models: Vec<String>,
    /// Address to bind (loopback by default; anything else wants --api-key)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0: any free port; the ready line says which)
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Most models loaded at once; the least recently used is stopped first (default: 1 with
    /// under 32 GiB of memory, else 2)
    #[arg(long = "max-loaded", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_loaded: Option<u16>,
    /// Stop a model's worker after it was idle this long: `300`, `90s`, `5m`, `1h`
    #[arg(long = "keep-alive", value_name = "DUR", default_value = "5m", value_parser = duration)]
    pub keep_alive: Duration,
    /// When --max-loaded models are loaded and all busy, how long a request for another model
    /// waits for one to become idle before it gets HTTP 503 (a busy model is never stopped)
    #[arg(long = "load-wait", value_name = "DUR", default_value = "60s", value_parser = duration)]
    pub load_wait: Duration,
    /// The most tokens a request may ask for (`max_tokens`), and what it gets without asking
    /// (cut to what fits the model's context)
    #[arg(long = "max-tokens", value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// Most requests queued or running per model; more get HTTP 503 (retryable)
    #[arg(long = "max-queue", value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue: u32,
    /// How long a request body may take to arrive; a slower one is answered 400
    #[arg(long = "body-timeout", value_name = "DUR", default_value = "30s", value_parser = duration)]
    pub body_timeout: Duration,
    /// How long a client may take to send a request's headers (on a new or an idle kept-alive
    /// connection); a slower one is disconnected
    #[arg(long = "header-timeout", value_name = "DUR", default_value = "30s", value_parser = duration)]
    pub header_timeout: Duration,
    /// Require `Authorization: Bearer KEY` on every route but /health
    #[arg(long = "api-key", value_name = "KEY", conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// Read the API key from this file (first line)
    #[arg(long = "api-key-file", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Allow browser requests from this origin (CORS); repeatable. Off by default
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// After SIGINT/SIGTERM, how long requests in flight get to finish before they are cut
    /// (with an error, never as a normal finish)
    #[arg(long = "shutdown-grace", value_name = "DUR", default_value = "5s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// The Python environment for the workers (a venv folder or an interpreter), as `run`
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Forbid runtime downloads in the workers (HF_HUB_OFFLINE=1)
    #[arg(long)]
    pub offline: bool,
    /// Fetch `image_url` parts that are http(s) URLs (at most 10 MiB each, 10 s, 3
    /// redirects). `public` (the value when none is given): only from public addresses,
    /// connecting directly (no proxy), so that a client cannot reach this machine, its
    /// networks or a cloud metadata service through the server; `any`: from any address,
    /// through the environment's proxy if set. Off by default: the server never fetches on a
    /// client's behalf, and such a part is refused (send images as base64 data URLs)
    #[arg(
        long = "allow-remote-images",
        value_name = "FROM",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "public",
        value_parser = ["public", "any"]
    )]
    pub allow_remote_images: Option<String>,
}

/// `300`, `500ms`, `90s`, `5m`, `1h` → a duration.
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 300, 500ms, 90s, 5m, 1h)"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("`{s}`: the unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// 1 worker on a machine with less than 32 GiB, else 2 (issue 11).
fn default_max_loaded() -> usize {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let bytes = (pages.max(0) as u64).saturating_mul(size.max(0) as u64);
    if bytes >= 32 << 30 { 2 } else { 1 }
}

fn api_key(a: &ServeArgs) -> Result<Option<String>, CliError> {
    if let Some(k) = &a.api_key {
        if k.trim().is_empty() {
            return Err(CliError::new(ErrorType::CommandError, "--api-key is empty"));
        }
        return Ok(Some(k.trim().to_string()));
    }
    let Some(f) = &a.api_key_file else {
        return Ok(None);
    };
    let text = crate::sys::read_text(f).map_err(|e| {
        CliError::new(
            ErrorType::CommandError,
            format!("cannot read --api-key-file {}: {e}", f.display()),
        )
    })?;
    let key = text.lines().next().unwrap_or_default().trim().to_string();
    if key.is_empty() {
        return Err(CliError::new(
            ErrorType::CommandError,
            format!("--api-key-file {} holds no key", f.display()),
        ));
    }
    Ok(Some(key))
}

/// A `--model`: resolved, checked, and for a mount path read through the mount.
fn preload(spec: &str, loc: &Locations) -> Result<Served, CliError> {
    // As `run` locates it: a folder of an mlxfs mount is read through the mount.
    let (m, weights) = super::run::locate(spec, loc)?;
    serve::catalog::check(m, weights).map_err(|r| {
        let mut e = CliError::new(r.kind, r.message);
        if !r.matches.is_empty() {
            e.fields.push(("matches", json!(r.matches)));
        }
        e
    })
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `*`, or `scheme://host[:port]` as browsers send it in `Origin`.
fn check_origin(o: &str) -> Result<(), CliError> {
    let ok = o == "*"
        || (o.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && !rest.is_empty()
                && !rest.contains('/')
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        }) && axum::http::HeaderValue::from_str(o).is_ok());
    if ok {
        Ok(())
    } else {
        Err(CliError::new(
            ErrorType::CommandError,
            format!(
                "--cors-origin {}: not an origin (scheme://host[:port], or *)",
                one_line(o)
            ),
        ))
    }
}

pub fn run(a: &ServeArgs, loc: &Locations, json_mode: bool) -> Result<Output, CliError> {
    let key = api_key(a)?;
    for o in &a.cors_origins {
        check_origin(o)?;
    }
    let max_loaded = a.max_loaded.map_or_else(default_max_loaded, usize::from);
    if a.models.len() > max_loaded {
        return Err(CliError::new(
            ErrorType::CommandError,
            format!(
                "{} models to preload, but at most {max_loaded} can be loaded at once",
                a.models.len()
            ),
        )
        .hint("raise --max-loaded, or preload fewer models"));
    }
    let mut preloads = Vec::new();
    for spec in &a.models {
        preloads.push(preload(spec, loc)?);
    }
    let python = crate::runtime::python::find(a.python.as_deref())?;
    if !is_loopback(&a.host) && key.is_none() {
        crate::note!(
            "warning: serving on {} without an API key: anyone who can reach this address can use your models (--api-key)",
            one_line(&a.host)
        );
    }
    let config = Config {
        host: a.host.clone(),
        port: a.port,
        max_loaded,
        keep_alive: a.keep_alive,
        load_wait: a.load_wait,
        max_tokens: a.max_tokens,
        max_queue: a.max_queue as usize,
        body_timeout: a.body_timeout,
        header_timeout: a.header_timeout,
        api_key: key,
        cors_origins: a.cors_origins.clone(),
        python,
        offline: a.offline,
        token_file: super::run::python_token_file(),
        remote_images: match a.allow_remote_images.as_deref() {
            None => RemoteImages::Off,
            Some("any") => RemoteImages::Any,
            Some(_) => RemoteImages::Public,
        },
    };
    let server = Server::new(config, loc.clone());
    for p in &preloads {
        server.catalog.pin(p.clone());
    }
    let preloaded: Vec<String> = preloads.iter().map(|p| p.id.clone()).collect();
    serve::run(server, preloads, a.shutdown_grace, |addr, srv| {
        let url = format!("http://{addr}");
        let data = json!({
            "url": url,
            "host": addr.ip().to_string(),
            "port": addr.port(),
            "preloaded": preloaded,
            "max_loaded": srv.config.max_loaded,
            "pid": std::process::id(),
        });
        if json_mode {
            let env = json!({"status": "success", "command": "serve", "data": data, "error": Value::Null});
            super::output::emit(&env.to_string());
        } else {
            crate::note!(
                "mlxfs serve: listening on {url} (OpenAI API at {url}/v1; Ctrl-C stops){}",
                if preloaded.is_empty() {
                    String::new()
                } else {
                    format!("; loaded: {}", one_line(&preloaded.join(", ")))
                }
            );
        }
    })
    .map_err(|e| {
        let err = CliError::new(e.kind, e.message);
        match e.hint {
            Some(h) => err.hint(h),
            None => err,
        }
    })?;
    Ok(Output::new(json!({"stopped": true}), String::new()).silent())
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(duration("5d").unwrap_err().contains("ms, s, m or h"));
        assert!(duration("-1s").is_err());
        assert!(duration("").is_err());
    }
}
