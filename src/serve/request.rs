//! The bodies of `POST /v1/chat/completions` and `POST /v1/completions` (OpenAI shapes),
//! checked into a [`GenJob`]. Nothing reaches a worker unchecked: every value that becomes an
//! index, a size or a shape on the Python side is bounded here ([`parse`]) or, where only the
//! loaded model knows the bound (its vocabulary), by `jobs::fit_to_model` before the job is
//! queued. What the server cannot honour is refused with 400, never ignored.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::error::ErrorType;
use crate::runtime::worker::GenJob;

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

/// Most `top_logprobs` (chat) or `logprobs` (completions): OpenAI's bound, 20.
pub const MAX_TOP_LOGPROBS: u64 = 20;
/// Most `stop` strings (OpenAI takes 4; more cost nothing here).
pub const MAX_STOPS: usize = 16;
/// Most characters of one `stop` string: held-back text is searched for each at every token,
/// so an unbounded one would slow every request batched with it.
pub const MAX_STOP_CHARS: usize = 1000;
/// Most `logit_bias` entries (OpenAI's bound).
pub const MAX_LOGIT_BIAS: usize = 300;
/// Largest `top_k` before the model's vocabulary is known (then [`fit_to_model`] applies).
pub const MAX_TOP_K: u64 = 1_000_000;

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

fn boolean(body: &Value, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{key}` must be true or false"
        ))),
    }
}

/// A message's `content`: a string, or a list of parts — `text`, and `image_url` (a base64
/// data URL, checked here: PNG, JPEG or WebP within the size limit; an http(s) URL is kept as
/// `{"type": "image_remote", "url"}` for `media::fetch_remote_images`). Text-only content
/// becomes one string; with images it stays a list of `{"type": "text", "text"}` and
/// `{"type": "image", "data": BASE64}` parts. `images` counts the images.
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
                                "messages[{i}].content[{j}]: a text part needs `text` (a string)"
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
                                "messages[{i}].content[{j}]: `{}` parts are not supported \
                                 (text and image_url are; audio goes to /v1/audio/transcriptions)",
                                crate::text::one_line(other)
                            ),
                        ));
                    }
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "messages[{i}].content[{j}] needs `type` (\"text\" or \"image_url\")"
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

/// An assistant message's `tool_calls` (OpenAI: `[{"id", "type": "function", "function":
/// {"name", "arguments"}}]`), with each call's `arguments` — a JSON text in OpenAI's shape —
/// parsed into its value, as mlx_lm.server does: chat templates iterate the arguments (Qwen's
/// `arguments|items`) and fail on a string.
fn tool_calls_of(v: &Value, i: usize) -> Result<Value, ApiError> {
    let Some(calls) = v.as_array() else {
        return Err(ApiError::bad_request(format!(
            "messages[{i}].tool_calls must be a list"
        )));
    };
    let mut out = Vec::with_capacity(calls.len());
    for (j, c) in calls.iter().enumerate() {
        let at = format!("messages[{i}].tool_calls[{j}]");
        if !c.is_object() {
            return Err(ApiError::bad_request(format!("{at} must be an object")));
        }
        match c.get("type") {
            None | Some(Value::Null) => {}
            Some(t) if t == "function" => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.type must be \"function\""
                )));
            }
        }
        let id = match c.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ApiError::bad_request(format!("{at}.id must be a string")));
            }
        };
        let f = &c["function"];
        let Some(name) = f["name"].as_str() else {
            return Err(ApiError::bad_request(format!(
                "{at}.function needs `name` (a string)"
            )));
        };
        let arguments = match f.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| {
                ApiError::bad_request(format!(
                    "{at}.function.arguments is not valid JSON ({e}): it must be the call's \
                     arguments as a JSON text"
                ))
            })?,
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.function.arguments must be a JSON text (a string)"
                )));
            }
        };
        let mut call =
            json!({"type": "function", "function": {"name": name, "arguments": arguments}});
        if let Some(id) = id {
            call["id"] = json!(id);
        }
        out.push(call);
    }
    Ok(Value::Array(out))
}

/// One chat message, checked: `role` (`developer` is kept: the worker takes it as `system`
/// unless the model's chat template knows it), `content`, and the optional `name`,
/// `tool_call_id` (strings) and `tool_calls`.
fn message(m: &Value, i: usize, images: &mut usize) -> Result<Value, ApiError> {
    if !m.is_object() {
        return Err(ApiError::bad_request(format!(
            "messages[{i}] must be an object with `role` and `content`"
        )));
    }
    let role = m["role"].as_str().unwrap_or_default();
    if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
        return Err(ApiError::bad_request(format!(
            "messages[{i}].role must be system, developer, user, assistant or tool"
        )));
    }
    let mut msg = json!({"role": role, "content": content_of(&m["content"], i, images)?});
    for k in ["tool_call_id", "name"] {
        match m.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => msg[k] = json!(s),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].{k} must be a string"
                )));
            }
        }
    }
    if let Some(tc) = m.get("tool_calls").filter(|v| !v.is_null()) {
        if role != "assistant" {
            return Err(ApiError::bad_request(format!(
                "messages[{i}]: only assistant messages carry `tool_calls`"
            )));
        }
        msg["tool_calls"] = tool_calls_of(tc, i)?;
    }
    Ok(msg)
}

/// A completion's `prompt`: one string. A list of one string is that string; token ids and
/// several prompts are refused, saying so.
fn prompt_of(v: Option<&Value>) -> Result<String, ApiError> {
    let prompt = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            return Err(ApiError::bad_request(format!(
                "`prompt`: one prompt per request ({} were sent)",
                a.len()
            )));
        }
        Some(Value::Array(a))
            if !a.is_empty() && a.iter().all(|x| x.is_number() || x.is_array()) =>
        {
            return Err(ApiError::bad_request(
                "`prompt` as token ids is not supported by mlxfs serve: send the prompt as text",
            ));
        }
        _ => return Err(ApiError::bad_request("`prompt` must be a string")),
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request(
            "`prompt` is empty: a completion continues a text",
        ));
    }
    Ok(prompt)
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
                out.push(message(m, i, &mut images)?);
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
                let Some(tools) = t.as_array() else {
                    return Err(ApiError::bad_request("`tools` must be a list"));
                };
                for (j, tool) in tools.iter().enumerate() {
                    if tool["type"] != "function" || !tool["function"]["name"].is_string() {
                        return Err(ApiError::bad_request(format!(
                            "tools[{j}] must be {{\"type\": \"function\", \"function\": {{\"name\", …}}}}"
                        )));
                    }
                }
                if body.get("tool_choice").and_then(Value::as_str) != Some("none") {
                    job.tools = Some(t.clone());
                }
            }
        }
        Kind::Completion => job.prompt = Some(prompt_of(body.get("prompt"))?),
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
        Some(k) if k > MAX_TOP_K => {
            return Err(ApiError::bad_request(format!(
                "`top_k` must be at most {MAX_TOP_K}"
            )));
        }
        // 0: off, as mlx-lm takes it.
        k => k.filter(|k| *k > 0).map(|k| k as u32),
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
    // OpenAI's seeds are 64-bit signed; mlx's generator takes 64 unsigned bits: a negative
    // seed is the same bits (two's complement), so every seed names one random state.
    job.seed = match body.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|i| i as u64))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`seed` must be a whole number from {} to {}",
                        i64::MIN,
                        u64::MAX
                    ))
                })?,
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
    if job.stop.iter().any(String::is_empty)
        || job.stop.len() > MAX_STOPS
        || job.stop.iter().any(|s| s.chars().count() > MAX_STOP_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "`stop`: at most {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters"
        )));
    }
    if body.get("n").and_then(Value::as_i64).is_some_and(|n| n < 1) {
        return Err(ApiError::bad_request("`n` must be 1"));
    }
    if int(body, "n")?.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(
            "`n` must be 1 (one choice per request)",
        ));
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
        Some(Value::Object(m)) if m.len() <= MAX_LOGIT_BIAS => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in m {
                let id: u32 = k.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "`logit_bias`: keys are token ids (whole numbers ≥ 0), not {}",
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
            return Err(ApiError::bad_request(format!(
                "`logit_bias` must be an object of at most {MAX_LOGIT_BIAS} token ids"
            )));
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
    let over =
        |key: &str| ApiError::bad_request(format!("`{key}` must be from 0 to {MAX_TOP_LOGPROBS}"));
    job.logprobs = match kind {
        Kind::Chat => {
            let top = int(body, "top_logprobs")?;
            if top.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
                return Err(over("top_logprobs"));
            }
            match boolean(body, "logprobs")? {
                Some(true) => Some(top.unwrap_or(0) as u32),
                _ if top.is_some() => {
                    return Err(ApiError::bad_request(
                        "`top_logprobs` needs `\"logprobs\": true`",
                    ));
                }
                _ => None,
            }
        }
        Kind::Completion => match int(body, "logprobs")? {
            Some(k) if k > MAX_TOP_LOGPROBS => return Err(over("logprobs")),
            k => k.map(|k| k as u32),
        },
    };
    let stream = boolean(body, "stream")?.unwrap_or(false);
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

#[cfg(test)]
mod tests {
    use super::{Kind, parse};
    use serde_json::{Value, json};

    fn req(kind: Kind, extra: Value) -> Result<super::Request, super::ApiError> {
        let mut body = match kind {
            Kind::Chat => json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            Kind::Completion => json!({"model": "m", "prompt": "hi"}),
        };
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        parse(kind, &body, 256)
    }

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
        let ok = req(
            Kind::Completion,
            json!({"presence_penalty": 0.5, "frequency_penalty": -1,
                             "logit_bias": {"42": 100, " 7": -5.5}}),
        )
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
            (json!({"logit_bias": {"-1": 1}}), "token ids"),
            (json!({"logit_bias": {"1": 101}}), "-100 to 100"),
            (json!({"logit_bias": [1]}), "must be an object"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (json!({"echo": true}), "echo"),
            (json!({"best_of": 3}), "best_of"),
            (json!({"logprobs": 21}), "`logprobs` must be from 0 to 20"),
            (json!({"n": 0}), "`n` must be 1"),
            (json!({"n": 2}), "`n` must be 1"),
            (json!({"seed": 1.5}), "`seed` must be a whole number from"),
            (
                json!({"seed": 18446744073709551616.0}),
                "`seed` must be a whole number from",
            ),
            (json!({"top_k": 1_000_001}), "`top_k` must be at most"),
            (json!({"stop": "x".repeat(1001)}), "at most 1000 characters"),
            (json!({"stop": vec!["a"; 17]}), "at most 16"),
            (json!({"stop": [""]}), "non-empty"),
            (json!({"stream": "yes"}), "`stream` must be true or false"),
            (json!({"prompt": ""}), "`prompt` is empty"),
            (json!({"prompt": [1, 2, 3]}), "as token ids"),
            (json!({"prompt": [[1, 2]]}), "as token ids"),
            (json!({"prompt": ["a", "b"]}), "one prompt per request"),
            (json!({"prompt": 5}), "`prompt` must be a string"),
        ] {
            let e = req(Kind::Completion, extra.clone()).err().unwrap();
            assert!(e.message.contains(says), "{extra}: {}", e.message);
            assert_eq!(e.status, 400, "{extra}");
        }
        for fine in [
            json!({"response_format": {"type": "text"}}),
            json!({"tool_choice": "auto"}),
            json!({"echo": false, "best_of": 1, "presence_penalty": 0}),
            json!({"logprobs": 20, "top_k": 0, "prompt": ["one"]}),
        ] {
            assert!(req(Kind::Completion, fine.clone()).is_ok(), "{fine}");
        }
        // Negative seeds are the same 64 bits; top_k 0 is off.
        let r = req(Kind::Completion, json!({"seed": -1, "top_k": 0})).unwrap();
        assert_eq!((r.job.seed, r.job.top_k), (Some(u64::MAX), None));
    }

    /// Chat: `top_logprobs` within 0–20 and only with `logprobs: true`; message shapes.
    #[test]
    fn chat_logprobs_and_messages() {
        let r = req(Kind::Chat, json!({"logprobs": true, "top_logprobs": 20})).unwrap();
        assert_eq!(r.job.logprobs, Some(20));
        let r = req(Kind::Chat, json!({"logprobs": false})).unwrap();
        assert_eq!(r.job.logprobs, None);
        let msg = |m: Value| json!({"messages": [m]});
        for (extra, says) in [
            (
                json!({"logprobs": true, "top_logprobs": 21}),
                "`top_logprobs` must be from 0 to 20",
            ),
            (json!({"top_logprobs": 2}), "needs `\"logprobs\": true`"),
            (json!({"logprobs": 1}), "`logprobs` must be true or false"),
            (msg(json!("hi")), "messages[0] must be an object"),
            (msg(json!({"role": "bot", "content": "x"})), "developer"),
            (
                msg(json!({"role": "user", "content": "x", "name": 5})),
                "messages[0].name must be a string",
            ),
            (
                msg(json!({"role": "tool", "content": "x", "tool_call_id": []})),
                "messages[0].tool_call_id must be a string",
            ),
            (
                msg(json!({"role": "user", "content": "x", "tool_calls": []})),
                "only assistant messages",
            ),
            (
                msg(json!({"role": "assistant", "content": null, "tool_calls": {}})),
                "messages[0].tool_calls must be a list",
            ),
            (
                msg(json!({"role": "assistant", "tool_calls": [5]})),
                "messages[0].tool_calls[0] must be an object",
            ),
            (
                msg(
                    json!({"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}),
                ),
                "messages[0].tool_calls[0].function needs `name`",
            ),
            (
                msg(
                    json!({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]}),
                ),
                "messages[0].tool_calls[0].function.arguments is not valid JSON",
            ),
            (
                msg(json!({"role": "user", "content": [{"text": "x"}]})),
                "messages[0].content[0] needs `type`",
            ),
            (
                msg(json!({"role": "user", "content": [{"type": "text", "text": 5}]})),
                "a text part needs `text`",
            ),
            (json!({"tools": [{"type": "function"}]}), "tools[0] must be"),
        ] {
            let e = req(Kind::Chat, extra.clone()).err().unwrap();
            assert!(e.message.contains(says), "{extra}: {}", e.message);
        }
        // An earlier call's arguments (a JSON text) reach the template as their value.
        let r = req(
            Kind::Chat,
            msg(
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"city\": \"Paris\"}"}}]}),
            ),
        )
        .unwrap();
        let call = &r.job.messages.unwrap()[0]["tool_calls"][0];
        assert_eq!(
            call,
            &json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"city": "Paris"}}})
        );
    }
}
