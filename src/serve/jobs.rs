//! A job on its way to a model's worker: the worker from the pool, the job fitted to what
//! only the loaded model knows (its vocabulary: [`fit_to_model`]), the queue
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
use crate::runtime::worker::{GenJob, JobHandle};

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
        if backend_of(&served.record) == Backend::MlxLm {
            fit_to_model(job, loaded.worker.vocab_size())?;
        }
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

/// Bound the job by what only the loaded model knows, its vocabulary (`vocab`: the logits a
/// position gets, [`crate::runtime::worker::Worker::vocab_size`]): a `logit_bias` token id
/// past it is a 400 naming the field and the size (mlx indexes without bounds checks: the
/// worker would crash, cutting every stream of the model), and a `top_k` of the whole
/// vocabulary or more is no restriction, so it is off (mlx-lm refuses it, failing the batch).
/// Without a known size neither field can be taken.
pub fn fit_to_model(job: &mut GenJob, vocab: Option<u64>) -> Result<(), ApiError> {
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
    use super::fit_to_model;
    use crate::runtime::worker::GenJob;

    fn job(bias: &[u32], top_k: Option<u32>) -> GenJob {
        GenJob {
            logit_bias: (!bias.is_empty()).then(|| bias.iter().map(|i| (*i, 1.0)).collect()),
            top_k,
            ..GenJob::default()
        }
    }

    /// The vocabulary bounds `logit_bias` ids (400 naming the field and the size) and turns a
    /// `top_k` of all tokens or more off.
    #[test]
    fn the_vocabulary_bounds_token_ids() {
        let mut j = job(&[383], Some(384));
        fit_to_model(&mut j, Some(384)).unwrap();
        assert_eq!(j.top_k, None);
        for id in [384, 999999, u32::MAX] {
            let mut j = job(&[5, id], None);
            let e = fit_to_model(&mut j, Some(384)).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(
                e.message,
                format!(
                    "`logit_bias`: token id {id} is not in this model's vocabulary of 384 tokens (ids 0 to 383)"
                )
            );
        }
        let mut j = job(&[], Some(5));
        fit_to_model(&mut j, Some(384)).unwrap();
        assert_eq!(j.top_k, Some(5));
        assert_eq!(fit_to_model(&mut j, None).unwrap_err().status, 422);
    }
}
