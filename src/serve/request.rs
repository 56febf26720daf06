//! The bodies of `POST /v1/chat/completions` and `POST /v1/completions` (OpenAI shapes),
//! checked into a [`GenJob`]. Nothing reaches a worker unchecked: every value that becomes an
//! index, a size or a shape on the Python side is bounded here ([`parse`]) or, where only the
//! loaded model knows the bound (its vocabulary, its tokens' length), by `jobs::fit_to_model`
//! before the job is queued.
//!
//! Every field of a body is one of three kinds ([`FIELDS`]): honoured; a known no-op, taken
//! only with the values that change nothing a client could observe (`user`, `store: false`,
//! `parallel_tool_calls: true`, …); or refused with 400 naming it ("`suffix` is not supported
//! by mlxfs serve"). A field this server does not know is refused too, never ignored; a field
//! given twice is refused ([`body_json`]). A null value is taken as the field not given.

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

impl Kind {
    /// The route, for messages.
    pub const fn route(self) -> &'static str {
        match self {
            Kind::Chat => super::routes::CHAT,
            Kind::Completion => super::routes::COMPLETIONS,
        }
    }
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
/// Largest `top_k` before the model's vocabulary is known (then `jobs::fit_to_model` applies).
pub const MAX_TOP_K: u64 = 1_000_000;

/// How a route takes one field of its body.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// Honoured: [`parse`] checks its value and the job carries it.
    Honoured,
    /// Changes nothing a client could observe, with the values `fine` accepts; any other value
    /// is refused, `why` saying what mlxfs does instead.
    NoOp {
        fine: fn(&Value) -> bool,
        why: &'static str,
    },
    /// Not supported: refused whatever its (non-null) value, `why` saying why.
    Refused { why: &'static str },
}

fn is_string(v: &Value) -> bool {
    v.is_string()
}
fn is_false(v: &Value) -> bool {
    *v == Value::Bool(false)
}
fn is_true(v: &Value) -> bool {
    *v == Value::Bool(true)
}
fn is_empty_string(v: &Value) -> bool {
    v.as_str() == Some("")
}
fn is_string_map(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.values().all(Value::is_string))
}
fn is_default_tier(v: &Value) -> bool {
    matches!(v.as_str(), Some("auto" | "default"))
}
fn is_text_only(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().all(|m| m.as_str() == Some("text")))
}

/// The fields of both routes' bodies (OpenAI's Chat Completions and Completions APIs, and
/// mlx-lm's `top_k`, `min_p`, `repetition_penalty`), each with the routes that take it and how
/// (docs/ERRORS.md lists them). A field not here is refused.
pub const FIELDS: &[(&str, &[Kind], Field)] = {
    use Field::{Honoured, NoOp, Refused};
    use Kind::{Chat, Completion};
    const BOTH: &[Kind] = &[Chat, Completion];
    const CHAT: &[Kind] = &[Chat];
    const COMPLETION: &[Kind] = &[Completion];
    &[
        ("model", BOTH, Honoured),
        ("messages", CHAT, Honoured),
        ("prompt", COMPLETION, Honoured),
        ("max_tokens", BOTH, Honoured),
        ("max_completion_tokens", BOTH, Honoured),
        ("temperature", BOTH, Honoured),
        ("top_p", BOTH, Honoured),
        ("top_k", BOTH, Honoured),
        ("min_p", BOTH, Honoured),
        ("repetition_penalty", BOTH, Honoured),
        ("presence_penalty", BOTH, Honoured),
        ("frequency_penalty", BOTH, Honoured),
        ("logit_bias", BOTH, Honoured),
        ("seed", BOTH, Honoured),
        ("stop", BOTH, Honoured),
        ("n", BOTH, Honoured),
        ("logprobs", BOTH, Honoured),
        ("top_logprobs", CHAT, Honoured),
        ("stream", BOTH, Honoured),
        ("stream_options", BOTH, Honoured),
        ("tools", CHAT, Honoured),
        ("tool_choice", CHAT, Honoured),
        ("response_format", CHAT, Honoured),
        ("echo", COMPLETION, Honoured),
        ("best_of", COMPLETION, Honoured),
        (
            "user",
            BOTH,
            NoOp {
                fine: is_string,
                why: "an end-user id for the provider's abuse monitoring: a string",
            },
        ),
        (
            "safety_identifier",
            CHAT,
            NoOp {
                fine: is_string,
                why: "an end-user id for the provider's abuse monitoring: a string",
            },
        ),
        (
            "metadata",
            CHAT,
            NoOp {
                fine: is_string_map,
                why: "tags of a stored completion (mlxfs stores none): an object of strings",
            },
        ),
        (
            "store",
            CHAT,
            NoOp {
                fine: is_false,
                why: "mlxfs serve stores no completions: only false",
            },
        ),
        (
            "parallel_tool_calls",
            CHAT,
            NoOp {
                fine: is_true,
                why: "the model may make several calls in one answer; mlxfs cannot hold it to \
                      one: only true",
            },
        ),
        (
            "service_tier",
            CHAT,
            NoOp {
                fine: is_default_tier,
                why: "one tier here: only \"auto\" or \"default\"",
            },
        ),
        (
            "prompt_cache_key",
            CHAT,
            NoOp {
                fine: is_string,
                why: "a prompt-cache routing hint (mlxfs's prompt cache matches prompts by \
                      prefix): a string",
            },
        ),
        (
            "modalities",
            CHAT,
            NoOp {
                fine: is_text_only,
                why: "the answer is text: only [\"text\"]",
            },
        ),
        (
            "suffix",
            COMPLETION,
            NoOp {
                fine: is_empty_string,
                why: "a completion continues its prompt; it does not fill in before a suffix",
            },
        ),
        (
            "audio",
            CHAT,
            Refused {
                why: "the answer is text (audio goes to /v1/audio/transcriptions)",
            },
        ),
        (
            "functions",
            CHAT,
            Refused {
                why: "send `tools` (OpenAI's successor of `functions`)",
            },
        ),
        (
            "function_call",
            CHAT,
            Refused {
                why: "send `tools` and `tool_choice` (OpenAI's successors of `functions`)",
            },
        ),
        (
            "reasoning_effort",
            CHAT,
            Refused {
                why: "the model reasons as its chat template has it",
            },
        ),
        (
            "verbosity",
            CHAT,
            Refused {
                why: "the answer's length is the model's (and `max_tokens`')",
            },
        ),
        (
            "prediction",
            CHAT,
            Refused {
                why: "no predicted outputs",
            },
        ),
        (
            "web_search_options",
            CHAT,
            Refused {
                why: "no web search",
            },
        ),
    ]
};

/// Refuse what a body asks that this server cannot honour: every field is in [`FIELDS`] for
/// `kind`'s route with a value it takes (a null value is the field not given).
pub fn check_fields(kind: Kind, body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in body {
        if value.is_null() {
            continue;
        }
        let shown = crate::text::one_line(key);
        let entry = FIELDS
            .iter()
            .find(|(k, routes, _)| *k == key && routes.contains(&kind));
        match entry.map(|(_, _, f)| *f) {
            Some(Field::Honoured) => {}
            Some(Field::NoOp { fine, .. }) if fine(value) => {}
            Some(Field::NoOp { why, .. }) => {
                return Err(ApiError::bad_request(format!(
                    "`{shown}` {} is not supported by mlxfs serve ({why})",
                    crate::text::one_line(&value.to_string())
                )));
            }
            Some(Field::Refused { why }) => {
                return Err(ApiError::bad_request(format!(
                    "`{shown}` is not supported by mlxfs serve ({why})"
                )));
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "`{shown}` is not supported by mlxfs serve: it is not a field of POST {} \
                     this server knows (docs/ERRORS.md lists the fields it takes)",
                    kind.route()
                )));
            }
        }
    }
    Ok(())
}

/// A request body as JSON, every object's fields given once: a field given twice (whose
/// value would otherwise be the last one, silently) is an error naming it and where.
pub fn body_json(bytes: &[u8]) -> Result<Value, ApiError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Once.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            // Only `Once` raises data errors: a field given twice.
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::bad_request(format!(
                "the body is not valid JSON ({e}): this route takes a JSON object \
                 (Content-Type: application/json)"
            ))
        }
    })
}

/// A JSON value whose objects name each field once (serde_json keeps the last of two).
struct Once;

impl<'de> serde::de::DeserializeSeed<'de> for Once {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Once)
    }
}

impl<'de> serde::de::Visitor<'de> for Once {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(json!(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(json!(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(json!(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Once)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        use serde::de::Error;
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!(
                    "`{}` is given twice (a JSON object names each field once)",
                    crate::text::one_line(&key)
                )));
            }
            let v = map.next_value_seed(Once)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A whole number within `lo..=hi`: an integer, or a number with no fractional part (`1.0`,
/// as OpenAI takes it); None when the field is absent or null. The message says the range.
fn whole(body: &Value, key: &str, lo: i128, hi: i128) -> Result<Option<i128>, ApiError> {
    let v = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let n = v
        .as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .or_else(|| {
            v.as_f64()
                .filter(|x| x.is_finite() && x.fract() == 0.0 && x.abs() < 1e38)
                .map(|x| x as i128)
        });
    match n {
        Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::bad_request(format!(
            "`{key}` must be a whole number from {lo} to {hi}"
        ))),
    }
}

/// A number for which `ok` holds (`range` says which, for the message); None when absent or
/// null.
fn number(
    body: &Value,
    key: &str,
    range: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && ok(*x))
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("`{key}` must be a number {range}"))),
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
/// `{"type": "image_remote", "url"}` for `images::fetch_remote_images`). Text-only content
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
                        out.push(super::images::image_part(&what, url)?);
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
/// unless the model's chat template renders it), `content`, and the optional `name`,
/// `tool_call_id`, `reasoning_content` (strings, passed to the chat template as they are)
/// and `tool_calls`. What OpenAI's own answers carry and clients send back unchanged —
/// `refusal`, `annotations`, `audio`, `function_call` — is taken when empty (null, "" or []);
/// any other field, or one of these with a value, is refused naming it.
fn message(m: &Value, i: usize, images: &mut usize) -> Result<Value, ApiError> {
    let Some(fields) = m.as_object() else {
        return Err(ApiError::bad_request(format!(
            "messages[{i}] must be an object with `role` and `content`"
        )));
    };
    let role = m["role"].as_str().unwrap_or_default();
    if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
        return Err(ApiError::bad_request(format!(
            "messages[{i}].role must be system, developer, user, assistant or tool"
        )));
    }
    let mut msg = json!({"role": role, "content": content_of(&m["content"], i, images)?});
    for k in ["tool_call_id", "name", "reasoning_content"] {
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
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    for (k, v) in fields {
        let taken = matches!(
            k.as_str(),
            "role" | "content" | "tool_call_id" | "name" | "reasoning_content" | "tool_calls"
        );
        if !taken && !empty(v) {
            return Err(ApiError::bad_request(format!(
                "messages[{i}].{} is not supported by mlxfs serve (a message carries `role`, \
                 `content`, `name`, `tool_calls`, `tool_call_id` and `reasoning_content`)",
                crate::text::one_line(k)
            )));
        }
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

/// Validate a request body (see [`check_fields`] for its fields). `cap` is the server's
/// `--max-tokens`: the most a request may ask for, and `max_tokens` when it asks for none
/// (then `max_tokens_explicit` is false: the worker cuts it to what fits the context).
pub fn parse(kind: Kind, body: &Value, cap: u32) -> Result<Request, ApiError> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    check_fields(kind, fields)?;
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
    // Two names of one setting: both may be given only when they agree.
    let tokens = |key: &str| {
        whole(body, key, 1, i128::from(cap)).map_err(|mut e| {
            e.message
                .push_str(&format!(" ({cap}: the server's --max-tokens)"));
            e
        })
    };
    let asked = match (tokens("max_completion_tokens")?, tokens("max_tokens")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(format!(
                "`max_completion_tokens` ({a}) and `max_tokens` ({b}) disagree: give one"
            )));
        }
        (a, b) => a.or(b),
    };
    job.max_tokens = asked.map_or(cap, |n| n as u32);
    job.max_tokens_explicit = asked.is_some();
    job.temperature = number(body, "temperature", "from 0 to 2", |t| {
        (0.0..=2.0).contains(&t)
    })?
    .unwrap_or(crate::runtime::defaults::TEMPERATURE);
    job.top_p = number(body, "top_p", "above 0 and at most 1", |p| {
        p > 0.0 && p <= 1.0
    })?
    .unwrap_or(crate::runtime::defaults::TOP_P);
    // 0: off, as mlx-lm takes it.
    job.top_k = whole(body, "top_k", 0, i128::from(MAX_TOP_K))?
        .filter(|k| *k > 0)
        .map(|k| k as u32);
    job.min_p = number(body, "min_p", "from 0 to 1", |p| (0.0..=1.0).contains(&p))?;
    job.repetition_penalty = number(body, "repetition_penalty", "above 0", |p| p > 0.0)?;
    // OpenAI's seeds are 64-bit signed; mlx's generator takes 64 unsigned bits: a negative
    // seed is the same bits (two's complement), so every seed names one random state.
    job.seed = whole(body, "seed", i128::from(i64::MIN), i128::from(u64::MAX))?
        .map(|s| if s < 0 { s as i64 as u64 } else { s as u64 });
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
    if whole(body, "n", 1, 1).is_err() {
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
        *slot =
            number(body, key, "from -2 to 2", |p| (-2.0..=2.0).contains(&p))?.filter(|p| *p != 0.0);
    }
    job.logit_bias = match body.get("logit_bias") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.len() <= MAX_LOGIT_BIAS => {
            let mut out = std::collections::BTreeMap::new();
            let mut keys = std::collections::BTreeMap::new();
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
                // "5", " 5" and "05" name one token: which bias it gets is not for the
                // server to guess.
                if let Some(first) = keys.insert(id, k) {
                    return Err(ApiError::bad_request(format!(
                        "`logit_bias` names token {id} twice ({} and {}): give each token once",
                        json!(first),
                        json!(k)
                    )));
                }
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
    if boolean(body, "echo")? == Some(true) {
        return unsupported("`echo`");
    }
    if whole(body, "best_of", 1, i128::from(u64::MAX))?.is_some_and(|n| n > 1) {
        return unsupported("`best_of` above 1");
    }
    let top = |key: &str| whole(body, key, 0, i128::from(MAX_TOP_LOGPROBS));
    job.logprobs = match kind {
        Kind::Chat => {
            let top = top("top_logprobs")?;
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
        Kind::Completion => top("logprobs")?.map(|k| k as u32),
    };
    let stream = boolean(body, "stream")?.unwrap_or(false);
    let mut include_usage = false;
    match body.get("stream_options") {
        None | Some(Value::Null) => {}
        Some(_) if !stream => {
            // OpenAI's rule too: the options are the stream's.
            return Err(ApiError::bad_request(
                "`stream_options` is only taken with `\"stream\": true`",
            ));
        }
        Some(Value::Object(o)) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    (_, Value::Null) => {}
                    ("include_usage", Value::Bool(b)) => include_usage = *b,
                    // OpenAI pads its chunks against side channels; a local server's need
                    // no padding, and a client reads none.
                    ("include_obfuscation", Value::Bool(_)) => {}
                    ("include_usage" | "include_obfuscation", _) => {
                        return Err(ApiError::bad_request(format!(
                            "`stream_options.{k}` must be true or false"
                        )));
                    }
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "`stream_options.{}` is not supported by mlxfs serve \
                             (include_usage is)",
                            crate::text::one_line(k)
                        )));
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request("`stream_options` must be an object"));
        }
    }
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

    /// Token counts: whole numbers from 1 to the server's cap, the message saying the range
    /// (issue 25 review §6: 1.0 is whole; -1e30 is below 1, not "≥ 0"); over the cap is
    /// refused, not silently lowered; two names of one setting must agree.
    #[test]
    fn token_counts_and_their_range() {
        for (key, n) in [
            ("max_tokens", json!(0)),
            ("max_tokens", json!(-5)),
            ("max_tokens", json!(-1e30)),
            ("max_tokens", json!(5.5)),
            ("max_tokens", json!(10_000)),
            ("max_tokens", json!(1e30)),
            ("max_completion_tokens", json!(-1)),
        ] {
            let body = json!({"model": "m", "prompt": "hi", key: n});
            let e = parse(Kind::Completion, &body, 256).err().unwrap();
            assert_eq!(
                e.message,
                format!(
                    "`{key}` must be a whole number from 1 to 256 (256: the server's --max-tokens)"
                ),
                "{key} {n}"
            );
        }
        for (n, want) in [(json!(5.0), 5), (json!(5), 5), (json!(256), 256)] {
            let body = json!({"model": "m", "prompt": "hi", "max_tokens": n, "n": 1.0});
            let r = parse(Kind::Completion, &body, 256).unwrap();
            assert_eq!((r.job.max_tokens, r.job.max_tokens_explicit), (want, true));
        }
        let r = parse(
            Kind::Completion,
            &json!({"model": "m", "prompt": "hi"}),
            256,
        )
        .unwrap();
        assert_eq!((r.job.max_tokens, r.job.max_tokens_explicit), (256, false));
        let body =
            json!({"model": "m", "prompt": "hi", "max_tokens": 9, "max_completion_tokens": 9.0});
        assert_eq!(
            parse(Kind::Completion, &body, 256).unwrap().job.max_tokens,
            9
        );
        let body =
            json!({"model": "m", "prompt": "hi", "max_tokens": 9, "max_completion_tokens": 8});
        assert_eq!(
            parse(Kind::Completion, &body, 256).err().unwrap().message,
            "`max_completion_tokens` (8) and `max_tokens` (9) disagree: give one"
        );
    }

    /// Every numeric field's message says its real range; integral floats are whole.
    #[test]
    fn numbers_say_their_range() {
        #[rustfmt::skip]
        let cases = [
            (json!({"n": 2}), "`n` must be 1 (one choice per request)"),
            (json!({"n": 0}), "`n` must be 1 (one choice per request)"),
            (json!({"n": 1.5}), "`n` must be 1 (one choice per request)"),
            (json!({"top_k": -1}), "`top_k` must be a whole number from 0 to 1000000"),
            (json!({"top_k": 2.5}), "`top_k` must be a whole number from 0 to 1000000"),
            (json!({"logprobs": 21}), "`logprobs` must be a whole number from 0 to 20"),
            (json!({"logprobs": -1}), "`logprobs` must be a whole number from 0 to 20"),
            (json!({"best_of": 0}), "`best_of` must be a whole number from 1 to"),
            (json!({"seed": 1.5}), "`seed` must be a whole number from -9223372036854775808 to 18446744073709551615"),
            (json!({"seed": 1e30}), "`seed` must be a whole number from -9223372036854775808"),
            (json!({"temperature": 2.5}), "`temperature` must be a number from 0 to 2"),
            (json!({"temperature": "hot"}), "`temperature` must be a number from 0 to 2"),
            (json!({"top_p": 0}), "`top_p` must be a number above 0 and at most 1"),
            (json!({"min_p": 1.5}), "`min_p` must be a number from 0 to 1"),
            (json!({"repetition_penalty": 0}), "`repetition_penalty` must be a number above 0"),
            (json!({"presence_penalty": 3}), "`presence_penalty` must be a number from -2 to 2"),
            (json!({"frequency_penalty": -2.5}), "`frequency_penalty` must be a number from -2 to 2"),
        ];
        for (extra, says) in cases {
            let e = req(Kind::Completion, extra.clone()).err().unwrap();
            assert!(e.message.starts_with(says), "{extra}: {}", e.message);
        }
        let r = req(
            Kind::Completion,
            json!({"n": 1.0, "top_k": 40.0, "seed": 7.0, "logprobs": 2.0, "best_of": 1.0}),
        )
        .unwrap();
        assert_eq!(
            (r.job.top_k, r.job.seed, r.job.logprobs),
            (Some(40), Some(7), Some(2))
        );
        let r = req(Kind::Chat, json!({"logprobs": true, "top_logprobs": 3.0})).unwrap();
        assert_eq!(r.job.logprobs, Some(3));
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
            (
                json!({"seed": 18446744073709551616.0}),
                "`seed` must be a whole number from",
            ),
            (
                json!({"top_k": 1_000_001}),
                "`top_k` must be a whole number from 0 to 1000000",
            ),
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
            json!({"echo": false, "best_of": 1, "presence_penalty": 0}),
            json!({"logprobs": 20, "top_k": 0, "prompt": ["one"]}),
        ] {
            assert!(req(Kind::Completion, fine.clone()).is_ok(), "{fine}");
        }
        for fine in [
            json!({"response_format": {"type": "text"}}),
            json!({"tool_choice": "auto"}),
        ] {
            assert!(req(Kind::Chat, fine.clone()).is_ok(), "{fine}");
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
                "`top_logprobs` must be a whole number from 0 to 20",
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

    /// Issue 25 review §2: every field is honoured, a known no-op with a value that changes
    /// nothing, or refused naming it — never ignored.
    #[test]
    fn every_field_is_honoured_a_no_op_or_refused() {
        for (kind, extra, says) in [
            (
                Kind::Completion,
                json!({"suffix": "end"}),
                "`suffix` \"end\" is not supported by mlxfs serve",
            ),
            (
                Kind::Chat,
                json!({"functions": [{"name": "f"}], "function_call": "auto"}),
                "is not supported by mlxfs serve (send `tools`",
            ),
            (
                Kind::Chat,
                json!({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}),
                "is not supported by mlxfs serve",
            ),
            (
                Kind::Chat,
                json!({"audio": {"voice": "alloy"}}),
                "`audio` is not supported by mlxfs serve",
            ),
            (
                Kind::Chat,
                json!({"parallel_tool_calls": false}),
                "`parallel_tool_calls` false is not supported by mlxfs serve",
            ),
            (
                Kind::Chat,
                json!({"stream_options": {"include_usage": true}}),
                "`stream_options` is only taken with `\"stream\": true`",
            ),
            (
                Kind::Completion,
                json!({"stream": false, "stream_options": {"include_usage": true}}),
                "only taken with",
            ),
            (
                Kind::Chat,
                json!({"stream": true, "stream_options": {"continuous_usage_stats": true}}),
                "`stream_options.continuous_usage_stats` is not supported",
            ),
            (
                Kind::Chat,
                json!({"store": true}),
                "`store` true is not supported by mlxfs serve (mlxfs serve stores no completions",
            ),
            (
                Kind::Chat,
                json!({"service_tier": "priority"}),
                "`service_tier` \"priority\" is not supported",
            ),
            (
                Kind::Chat,
                json!({"reasoning_effort": "high"}),
                "`reasoning_effort` is not supported by mlxfs serve",
            ),
            (
                Kind::Chat,
                json!({"prediction": {"type": "content", "content": "x"}}),
                "`prediction` is not supported",
            ),
            (
                Kind::Chat,
                json!({"user": 5}),
                "`user` 5 is not supported by mlxfs serve (an end-user id",
            ),
            (
                Kind::Chat,
                json!({"echo": true}),
                "`echo` is not supported by mlxfs serve: it is not a field of POST /v1/chat/completions",
            ),
            (
                Kind::Completion,
                json!({"tools": []}),
                "`tools` is not supported by mlxfs serve: it is not a field of POST /v1/completions",
            ),
            (
                Kind::Chat,
                json!({"chat_template_kwargs": {"enable_thinking": false}}),
                "`chat_template_kwargs` is not supported by mlxfs serve: it is not a field",
            ),
            (
                Kind::Chat,
                json!({"messages": [{"role": "user", "content": "hi", "cache": 1}]}),
                "messages[0].cache is not supported by mlxfs serve",
            ),
            (
                Kind::Chat,
                json!({"messages": [{"role": "assistant", "content": "", "function_call": {"name": "f"}}]}),
                "messages[0].function_call is not supported",
            ),
        ] {
            let e = req(kind, extra.clone())
                .err()
                .unwrap_or_else(|| panic!("{extra} was taken"));
            assert!(
                e.message.starts_with(says) || e.message.contains(says),
                "{extra}: {}",
                e.message
            );
            assert_eq!(e.status, 400, "{extra}");
        }
        // What real clients send by default (the openai SDK nothing it was not given;
        // LangChain `stream: false`; Open WebUI and the Vercel AI SDK `stream_options` with a
        // stream; OpenAI's answers sent back as history) and the no-ops' harmless values.
        for (kind, fine) in [
            (
                Kind::Chat,
                json!({"stream": false, "n": 1, "user": "u-1", "store": false, "metadata": {"a": "b"},
                                "parallel_tool_calls": true, "service_tier": "auto", "modalities": ["text"],
                                "safety_identifier": "s", "prompt_cache_key": "k", "audio": null,
                                "functions": null, "seed": null}),
            ),
            (
                Kind::Chat,
                json!({"stream": true, "stream_options": {"include_usage": true, "include_obfuscation": false}}),
            ),
            (
                Kind::Chat,
                json!({"messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo", "refusal": null, "annotations": [], "audio": null,
                 "function_call": null, "tool_calls": null, "reasoning_content": "thought"}]}),
            ),
            (
                Kind::Completion,
                json!({"suffix": "", "user": "u", "echo": false, "best_of": 1, "stream": true, "stream_options": {"include_usage": false}}),
            ),
        ] {
            assert!(
                req(kind, fine.clone()).is_ok(),
                "{fine}: {:?}",
                req(kind, fine.clone()).err()
            );
        }
        let r = req(
            Kind::Chat,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        )
        .unwrap();
        assert!(r.include_usage);
        let r = req(
            Kind::Chat,
            json!({"messages": [{"role": "assistant", "content": "a", "reasoning_content": "r"}]}),
        )
        .unwrap();
        assert_eq!(r.job.messages.unwrap()[0]["reasoning_content"], "r");
    }

    /// Issue 25 review §5: a field given twice is refused, in the body as in `logit_bias`
    /// ("5 " and "5" name one token).
    #[test]
    fn a_field_given_twice_is_refused() {
        let e = req(Kind::Completion, json!({"logit_bias": {"5 ": 1, "5": 2}}))
            .err()
            .unwrap();
        assert_eq!(
            e.message,
            "`logit_bias` names token 5 twice (\"5 \" and \"5\"): give each token once"
        );
        let e = req(Kind::Completion, json!({"logit_bias": {"05": 1, "5": 2}}))
            .err()
            .unwrap();
        assert!(e.message.contains("names token 5 twice"), "{}", e.message);
        for (body, key) in [
            (
                r#"{"model": "whisper", "prompt": "hi", "model": "tiny"}"#,
                "model",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "a", "content": "b"}]}"#,
                "content",
            ),
            (
                r#"{"model": "m", "prompt": "hi", "temperature": 0.5, "temperature": 0.9}"#,
                "temperature",
            ),
        ] {
            let e = super::body_json(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(
                e.message.starts_with(&format!(
                    "`{key}` is given twice (a JSON object names each field once) at line 1 column"
                )),
                "{}",
                e.message
            );
        }
        let v = super::body_json(br#"{"a": [1, {"b": null, "c": 2.5}], "d": "e"}"#).unwrap();
        assert_eq!(v, json!({"a": [1, {"b": null, "c": 2.5}], "d": "e"}));
        let e = super::body_json(b"{\"a\": ").unwrap_err();
        assert!(
            e.message.starts_with("the body is not valid JSON"),
            "{}",
            e.message
        );
        let e = super::body_json(b"{} {}").unwrap_err();
        assert!(
            e.message.starts_with("the body is not valid JSON"),
            "{}",
            e.message
        );
    }
}
