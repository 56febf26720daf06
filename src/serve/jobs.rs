//! A job on its way to a model's worker: the worker from the pool, the job fitted to what
//! only the loaded model knows (its vocabulary, its tokens' length, its tool calling:
//! [`fit_to_model`]), the queue
//! bound, the submission, and the worker's word that it read the job. A worker that was dead
//! before it read the job (killed while idle, by the OOM killer or `kill -9`, before the
//! server noticed) gets the job again, on a fresh worker, once.

use axum::http::StatusCode;
use std::sync::Arc;

use super::Server;
use super::catalog::Served;
use super::error::{ApiError, blocking, load_error};
use super::pool::{CancelGuard, Loaded, backend_of};
use crate::error::ErrorType;
use crate::runtime::Backend;
use crate::runtime::worker::{GenJob, JobHandle, Worker};

/// A job the worker has read: its events, and the guard that cancels it if the answer is
/// dropped before its end (a client that went away).
pub struct Started {
    pub loaded: Arc<Loaded>,
    pub handle: JobHandle,
    pub guard: CancelGuard,
}

/// Load `served` (if needed), fit `job` to it, and hand the job over. Errors: the load's
/// (503 busy with `Retry-After`, or the worker's own), the model's refusals of `job`
/// (`fit_to_model`), 503 when `--max-queue` jobs are waiting, 500 `worker_failed` when two
/// workers in a row ended before reading it.
pub async fn start(
    srv: &Arc<Server>,
    served: &Served,
    job: &mut GenJob,
) -> Result<Started, ApiError> {
    let gone = || {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::WorkerFailed,
            format!(
                "{}'s worker ended twice before it could take the request",
                served.id
            ),
        )
        .retryable(true)
    };
    for _attempt in 0..2 {
        let loaded = {
            let s = srv.clone();
            let sv = served.clone();
            blocking(move || s.pool.load(&sv))
                .await?
                .map_err(load_error)?
        };
        fit_to_model(job, &Facts::of(&loaded.worker, backend_of(&served.record)))?;
        if loaded.worker.queue_depth() >= srv.config.max_queue {
            return Err(ApiError::unavailable(
                ErrorType::ServiceUnavailable,
                format!(
                    "{} has {} requests queued or running (--max-queue): retry later",
                    served.id, srv.config.max_queue
                ),
                1,
            ));
        }
        let Ok(mut handle) = loaded.worker.submit(job.clone()) else {
            continue; // it ended after the pool handed it out: the next load starts another
        };
        let mut guard = CancelGuard::new(loaded.clone(), handle.id);
        match (&mut handle.accepted).await {
            Ok(()) => {
                return Ok(Started {
                    loaded,
                    handle,
                    guard,
                });
            }
            // It ended before reading the job: nothing of the job ran.
            Err(_) => guard.done = true,
        }
    }
    Err(gone())
}

/// What a loaded model's worker said of it at `ready` that bounds a job.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The logits a position gets ([`Worker::vocab_size`]): the bound of token ids; None for
    /// a vision or speech worker (their jobs carry no token ids) or when it is unknown.
    pub vocab_size: Option<u64>,
    /// A text model's worker (mlx-lm): token ids and `top_k` need `vocab_size`.
    pub text: bool,
    /// [`Worker::max_token_chars`].
    pub max_token_chars: Option<u64>,
    /// [`Worker::tool_calling`].
    pub tool_calling: bool,
}

impl Facts {
    pub fn of(worker: &Worker, backend: Backend) -> Facts {
        Facts {
            vocab_size: worker.vocab_size(),
            text: backend == Backend::MlxLm,
            max_token_chars: worker.max_token_chars(),
            tool_calling: worker.tool_calling(),
        }
    }
}

/// Characters of a job's text: its messages' text contents, or its completion prompt.
fn prompt_chars(job: &GenJob) -> u64 {
    let text = |v: &serde_json::Value| -> u64 {
        match v {
            serde_json::Value::String(s) => s.chars().count() as u64,
            serde_json::Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .map(|t| t.chars().count() as u64)
                .sum(),
            _ => 0,
        }
    };
    let messages: u64 = job
        .messages
        .iter()
        .flatten()
        .map(|m| text(&m["content"]))
        .sum();
    messages
        + job
            .prompt
            .as_deref()
            .map_or(0, |p| p.chars().count() as u64)
}

/// Fit `job` to what only the loaded model knows (`model`), before it is queued:
/// - a prompt of more characters than the context length times the most characters one of
///   the model's tokens stands for is over the context whatever it encodes to: 400
///   `context_length_exceeded` at once, before the worker spends time encoding it;
/// - `tools` to a model without a chat template or a tool-call format mlx-lm parses: 422
///   `model_incompatible` (the calls could be neither asked for nor read back);
/// - a `logit_bias` token id past the vocabulary: 400 naming the field and the size (mlx
///   indexes without bounds checks: the worker would crash, cutting every stream of the
///   model); a `top_k` of the whole vocabulary or more is no restriction, so it is off
///   (mlx-lm refuses it, failing the batch). Without a known size neither can be taken
///   (422). worker.py `Worker._prepare` applies the same rule, in the same words.
pub fn fit_to_model(job: &mut GenJob, model: &Facts) -> Result<(), ApiError> {
    if let (Some(ctx), Some(per_token)) = (job.context_length, model.max_token_chars)
        && job.audio.is_none()
    {
        let chars = prompt_chars(job);
        if chars > ctx.saturating_mul(per_token) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorType::ContextLengthExceeded,
                format!(
                    "the prompt is at least {} tokens ({chars} characters; one token of this \
                     model stands for at most {per_token}); this model's context length is {ctx}",
                    chars.div_ceil(per_token)
                ),
            )
            .retryable(false));
        }
    }
    if job.tools.is_some() && !model.tool_calling {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::ModelIncompatible,
            "`tools` cannot be used with this model: it has no chat template with a tool-call \
             format mlx-lm can read back (send the request without `tools`)",
        ));
    }
    if !model.text {
        return Ok(());
    }
    let vocab = model.vocab_size;
    let unknown = |field: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::ModelIncompatible,
            format!(
                "`{field}` is not available for this model: its vocabulary size is unknown \
                 (its worker could not measure it)"
            ),
        )
    };
    if let Some(bias) = &job.logit_bias {
        let Some(n) = vocab else {
            return Err(unknown("logit_bias"));
        };
        if let Some(id) = bias.keys().find(|id| u64::from(**id) >= n) {
            return Err(ApiError::bad_request(format!(
                "`logit_bias`: token id {id} is not in this model's vocabulary of {n} tokens \
                 (ids 0 to {})",
                n.saturating_sub(1)
            )));
        }
    }
    if let Some(k) = job.top_k {
        match vocab {
            Some(n) if u64::from(k) >= n => job.top_k = None,
            Some(_) => {}
            None => return Err(unknown("top_k")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Facts, fit_to_model};
    use crate::runtime::worker::GenJob;
    use serde_json::json;

    fn job(bias: &[u32], top_k: Option<u32>) -> GenJob {
        GenJob {
            logit_bias: (!bias.is_empty()).then(|| bias.iter().map(|i| (*i, 1.0)).collect()),
            top_k,
            ..GenJob::default()
        }
    }

    fn text_model(vocab: Option<u64>) -> Facts {
        Facts {
            vocab_size: vocab,
            text: true,
            max_token_chars: Some(13),
            tool_calling: false,
        }
    }

    /// The vocabulary bounds `logit_bias` ids (400 naming the field and the size) and turns a
    /// `top_k` of all tokens or more off.
    #[test]
    fn the_vocabulary_bounds_token_ids() {
        let m = text_model(Some(384));
        let mut j = job(&[383], Some(384));
        fit_to_model(&mut j, &m).unwrap();
        assert_eq!(j.top_k, None);
        for id in [384, 999999, u32::MAX] {
            let mut j = job(&[5, id], None);
            let e = fit_to_model(&mut j, &m).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(
                e.message,
                format!(
                    "`logit_bias`: token id {id} is not in this model's vocabulary of 384 tokens (ids 0 to 383)"
                )
            );
        }
        let mut j = job(&[], Some(5));
        fit_to_model(&mut j, &m).unwrap();
        assert_eq!(j.top_k, Some(5));
        assert_eq!(
            fit_to_model(&mut j, &text_model(None)).unwrap_err().status,
            422
        );
    }

    /// Issue 25 review §1: a prompt of more characters than the context length times the
    /// longest token is refused before the worker sees it (the reviewer's 7.8 MB prompt to a
    /// 512-token model took 11.2 s to be refused and held every other request); one within
    /// the bound goes on (the worker counts its tokens).
    #[test]
    fn a_prompt_too_long_for_any_encoding_is_refused_at_once() {
        let m = text_model(Some(384));
        let long = "The quick brown fox jumps. ".repeat(290_000);
        let mut j = GenJob {
            prompt: Some(long.clone()),
            context_length: Some(512),
            ..GenJob::default()
        };
        let e = fit_to_model(&mut j, &m).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.kind.as_str()),
            (400, "context_length_exceeded")
        );
        assert_eq!(
            e.message,
            "the prompt is at least 602308 tokens (7830000 characters; one token of this model \
             stands for at most 13); this model's context length is 512"
        );
        // Messages count their text contents, parts too.
        let mut j = GenJob {
            messages: Some(vec![
                json!({"role": "system", "content": "x".repeat(6000)}),
                json!({"role": "user", "content": [{"type": "text", "text": "y".repeat(700)}]}),
            ]),
            context_length: Some(512),
            ..GenJob::default()
        };
        assert_eq!(fit_to_model(&mut j, &m).unwrap_err().status, 400);
        // 512 × 13 = 6656 characters may still fit: the worker decides.
        let mut j = GenJob {
            prompt: Some("z".repeat(6656)),
            context_length: Some(512),
            ..GenJob::default()
        };
        fit_to_model(&mut j, &m).unwrap();
        // No bound known (a tokenizer that may fold text), or no context: nothing refused.
        let mut j = GenJob {
            prompt: Some(long),
            context_length: Some(512),
            ..GenJob::default()
        };
        fit_to_model(
            &mut j,
            &Facts {
                max_token_chars: None,
                ..m.clone()
            },
        )
        .unwrap();
    }

    /// Issue 25 review §2: `tools` to a model that cannot call them is a 422, as images to a
    /// text model are.
    #[test]
    fn tools_need_a_model_that_calls_them() {
        let mut j = GenJob {
            tools: Some(json!([{"type": "function", "function": {"name": "f"}}])),
            ..GenJob::default()
        };
        let e = fit_to_model(&mut j, &text_model(Some(384))).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.kind.as_str()),
            (422, "model_incompatible")
        );
        assert!(
            e.message
                .starts_with("`tools` cannot be used with this model"),
            "{}",
            e.message
        );
        let calls = Facts {
            tool_calling: true,
            ..text_model(Some(384))
        };
        fit_to_model(&mut j, &calls).unwrap();
    }
}
