//! The model worker of `mlxfs serve`: one long-lived Python process per loaded model
//! (worker.py), and its handle here.
//!
//! The process loads the model once, under the model's isolated cache (the same variables
//! `run` sets, on its own environment: the server's stays untouched), then takes jobs on its
//! stdin, one JSON line each, and answers on an event pipe of its own (as `run`'s subprocess:
//! stdout is captured and stderr forwarded live, the last lines of each kept). One dispatcher
//! thread per worker reads the events and routes each by job id to its [`JobHandle`].
//!
//! Jobs share one continuous batch (mlx-lm's BatchGenerator), admitted in arrival order; a job
//! with a seed and a temperature above 0 runs alone (worker.py's docstring says why). A job
//! gives the same text as `mlxfs run` for the same prompt and settings.
//!
//! No orphan: on Linux the process gets SIGKILL when the thread that started it ends (the
//! dispatcher, which lives as long as the process, so in effect when mlxfs dies), and on every
//! system it exits as soon as its stdin closes (mlxfs ended or dropped the [`Worker`]).

use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::capture::{self, Captured, Tee};
use super::{PythonEnv, RunError, RunErrorKind, SHARED};
use crate::error::ErrorType;

/// The worker's code (it imports every module of [`SHARED`], passed in its last argument).
pub const WORKER_PY: &str = include_str!("worker.py");

/// How long [`Drop`] lets a worker finish before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(1);

/// What to load, and how.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The folder mlx-lm loads (may be inside an mlxfs mount: the weights are read through it).
    pub model_path: PathBuf,
    /// The isolated cache: `HF_HOME` and every other cache variable point into it (created if
    /// missing).
    pub cache_dir: PathBuf,
    pub python: PythonEnv,
    /// Forbid downloads (`HF_HUB_OFFLINE=1`, `TRANSFORMERS_OFFLINE=1`).
    pub offline: bool,
    /// The user's token file, for `HF_TOKEN_PATH`: `cli::run::python_token_file()` (as `run`).
    pub token_file: Option<PathBuf>,
    /// The library the worker runs the model with: mlx-lm (continuous batching), mlx-vlm or
    /// mlx-whisper (one job at a time).
    pub backend: super::Backend,
}

/// One generation.
#[derive(Debug, Clone, Default)]
pub struct GenJob {
    /// Chat: OpenAI messages (`role`, `content` a string or a list of `{type: "text", text}`),
    /// through the model's chat template with the generation prompt (without a template, the
    /// contents joined by newlines).
    pub messages: Option<Vec<Value>>,
    /// Completions: the raw prompt, no template (used when `messages` is None).
    pub prompt: Option<String>,
    /// Passed to the chat template (`tools=`); with a tokenizer that supports tool calling,
    /// the calls are parsed into [`JobEvent::Done`]'s `tool_calls` and never streamed.
    pub tools: Option<Value>,
    /// Most tokens to generate (at least 1). With a `context_length`, the worker holds prompt
    /// and completion to it (generate.py `fit_completion`): an explicit one
    /// (`max_tokens_explicit`) that does not fit beside the prompt is refused with
    /// `context_length_exceeded`, a default one cut to what fits.
    pub max_tokens: u32,
    /// The client gave `max_tokens` (else it is the server's default).
    pub max_tokens_explicit: bool,
    /// 0: greedy.
    pub temperature: f64,
    /// 1: off.
    pub top_p: f64,
    pub top_k: Option<u32>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    /// Seeds MLX's generator just before this job (same seed, same text).
    pub seed: Option<u64>,
    /// Generation ends at the first of these; the text excludes it, and text that could be the
    /// start of one is held back until it cannot be (never streamed in part).
    pub stop: Vec<String>,
    /// None: off; Some(k): each token's log-probability (natural log, after the repetition
    /// penalty, before temperature) and, for k > 0, the k likeliest tokens with theirs.
    pub logprobs: Option<u32>,
    /// A transcription (mlx-whisper workers): the audio file's bytes, base64, and a name for
    /// messages: `{"data", "name"}`. With it, `prompt` is Whisper's initial prompt.
    pub audio: Option<Value>,
    /// The spoken language of `audio` (None: detected).
    pub language: Option<String>,
    /// Translate `audio` into English instead of transcribing it.
    pub translate: bool,
    /// A transcription's word timestamps (mlx-whisper's `word_timestamps`): `Done`'s media
    /// then carries `words` (`[{"word", "start", "end"}]`, seconds).
    pub word_timestamps: bool,
    /// OpenAI's `presence_penalty` and `frequency_penalty` (None: off), mlx-lm's processors.
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// OpenAI's `logit_bias`: token id → bias added to its logit.
    pub logit_bias: Option<std::collections::BTreeMap<u32, f64>>,
    /// The model's context length (config.json): a prompt that leaves no room for the
    /// completion is refused with a `context_length_exceeded` error before any of it is
    /// processed, and `max_tokens` is held to what fits (None: not checked).
    pub context_length: Option<u64>,
}

impl GenJob {
    fn command(&self, id: u64) -> Value {
        if let Some(audio) = &self.audio {
            return json!({
                "op": "transcribe",
                "id": id,
                "audio": audio,
                "prompt": self.prompt,
                "language": self.language,
                "task": if self.translate { "translate" } else { "transcribe" },
                "temperature": self.temperature,
                "word_timestamps": self.word_timestamps,
            });
        }
        json!({
            "op": "generate",
            "id": id,
            "messages": self.messages,
            "prompt": self.prompt,
            "tools": self.tools,
            "max_tokens": self.max_tokens,
            "max_tokens_explicit": self.max_tokens_explicit,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "stop": self.stop,
            "logprobs": self.logprobs,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": self.logit_bias,
            "context_length": self.context_length,
        })
    }
}

/// A submitted job: its id (for [`Worker::cancel`]) and its events. The last event is a
/// `Done` or an `Error`; nothing follows it.
#[derive(Debug)]
pub struct JobHandle {
    pub id: u64,
    pub events: UnboundedReceiver<JobEvent>,
    /// Resolves (`Ok`) once the process has read the job, before any of its events; an `Err`
    /// means the process ended without reading it: the job never reached the model, so it
    /// can go to a fresh worker unchanged (whatever ended the process, it was not this job).
    pub accepted: tokio::sync::oneshot::Receiver<()>,
}

/// One generated token's log-probability (OpenAI's `logprobs.content[]` entry, with
/// `offset`: where its text begins in the generated text, in characters).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's own text: its bytes as UTF-8, U+FFFD for a part of a character.
    pub token: String,
    /// The bytes the token stands for (a part of a character is its own bytes).
    pub bytes: Vec<u8>,
    /// Natural log (OpenAI's -9999 for minus infinity).
    pub logprob: f64,
    pub offset: u64,
    /// The k likeliest tokens at this position, likeliest first: (text, bytes, logprob).
    pub top: Vec<(String, Vec<u8>, f64)>,
}

/// What a job produced.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// Text that may be shown now, and with logprobs (`Some`) the entries of the generated
    /// tokens whose text it completes, in order (worker.py `_Job` says which: a token that is
    /// only part of a character comes with the one that ends it; a stop sequence's tokens are
    /// dropped with it). Either may be empty, not both.
    Token {
        text: String,
        logprobs: Option<Vec<TokenLogprob>>,
    },
    /// The end: `finish_reason` is `stop` (end of text or a stop sequence), `length`
    /// (max_tokens) or `cancelled`; `text` is the whole text shown (stop sequence and tool
    /// calls excluded); `tool_calls` the OpenAI `tool_calls` array, when the model made some;
    /// `cached_tokens` how many of the prompt's tokens came from the worker's prompt cache.
    Done {
        finish_reason: String,
        prompt_tokens: u64,
        completion_tokens: u64,
        cached_tokens: u64,
        text: String,
        tool_calls: Option<Value>,
        /// Vision and speech jobs: `{"images": N}`, or a transcription's `{"segments",
        /// "words", "language", "audio_seconds", "decoder"}` (`words`: null unless asked for).
        media: Option<Value>,
    },
    /// The job failed, the worker living on: `invalid_request` (what only the model can
    /// refuse: messages its chat template cannot render, an empty prompt),
    /// `context_length_exceeded`, `generation_failed`, and for media jobs `invalid_media`,
    /// `media_too_large`, `decoder_missing`. Or the process ended: `worker_died` (killed from
    /// outside — SIGKILL as the OOM killer sends, SIGTERM, SIGINT, SIGHUP: a retry can succeed),
    /// `worker_crashed` (it crashed or exited by itself: the same job may crash it again), each
    /// message with the end of its stderr; or `worker_stopped` ([`Worker::stop`]).
    Error { kind: JobErrorKind, message: String },
}

/// The kind of a job's [`JobEvent::Error`]: what the worker named (its `type`), or how its
/// process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobErrorKind {
    /// `invalid_request`: what only the model can refuse.
    InvalidRequest,
    ContextLengthExceeded,
    InvalidMedia,
    MediaTooLarge,
    DecoderMissing,
    /// `worker_died`: killed from outside (a retry can succeed).
    WorkerDied,
    /// `worker_crashed`: it crashed or exited by itself.
    WorkerCrashed,
    /// `worker_stopped`: stopped by [`Worker::stop`].
    WorkerStopped,
    /// Any other kind the worker named (`generation_failed`, ...).
    Other(String),
}

impl JobErrorKind {
    pub fn parse(kind: &str) -> JobErrorKind {
        match kind {
            "invalid_request" => JobErrorKind::InvalidRequest,
            "context_length_exceeded" => JobErrorKind::ContextLengthExceeded,
            "invalid_media" => JobErrorKind::InvalidMedia,
            "media_too_large" => JobErrorKind::MediaTooLarge,
            "decoder_missing" => JobErrorKind::DecoderMissing,
            "worker_died" => JobErrorKind::WorkerDied,
            "worker_crashed" => JobErrorKind::WorkerCrashed,
            "worker_stopped" => JobErrorKind::WorkerStopped,
            other => JobErrorKind::Other(other.to_string()),
        }
    }

    /// The kind's name, as the worker writes it.
    pub fn as_str(&self) -> &str {
        match self {
            JobErrorKind::InvalidRequest => "invalid_request",
            JobErrorKind::ContextLengthExceeded => "context_length_exceeded",
            JobErrorKind::InvalidMedia => "invalid_media",
            JobErrorKind::MediaTooLarge => "media_too_large",
            JobErrorKind::DecoderMissing => "decoder_missing",
            JobErrorKind::WorkerDied => "worker_died",
            JobErrorKind::WorkerCrashed => "worker_crashed",
            JobErrorKind::WorkerStopped => "worker_stopped",
            JobErrorKind::Other(k) => k,
        }
    }
}

impl PartialEq<&str> for JobErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The worker process has ended (or is stopping): it takes no more jobs.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the model worker has ended")]
pub struct WorkerGone;

/// The routing table the dispatcher and [`Worker::submit`] share.
#[derive(Default)]
struct Jobs {
    /// The event channel is still open (the process lives).
    open: bool,
    /// [`Worker::stop`] was called.
    stopping: bool,
    senders: HashMap<u64, UnboundedSender<JobEvent>>,
    /// Jobs the process has not said it read yet.
    unread: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running model worker. Every method takes `&self`: share it in an `Arc`.
pub struct Worker {
    pid: u32,
    info: Value,
    stdin: Mutex<Option<ChildStdin>>,
    child: Arc<Mutex<Child>>,
    jobs: Arc<Mutex<Jobs>>,
    next_id: AtomicU64,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

/// What the dispatcher hands [`Worker::start`] once the model is loaded.
struct Ready {
    info: Value,
    child: Arc<Mutex<Child>>,
    stdin: ChildStdin,
}

impl Worker {
    /// Start the process and block until the model is loaded or failed to load (no time
    /// limit: loading a large model takes what it takes). Errors, each with what Python
    /// printed: the interpreter cannot be started (`python_not_found`); the cache folder
    /// cannot be made (`cache_dir_failed`); the Python side reported `missing_dependency`,
    /// `load_failed` or `remote_code_required` (with `run`'s message and hint); the process
    /// ended without a word (`python_failed`, with its exit status).
    pub fn start(spec: &WorkerSpec) -> Result<Worker, RunError> {
        let failed = |m: String| RunError::new(RunErrorKind::PythonFailed, m, None);
        std::fs::create_dir_all(&spec.cache_dir).map_err(|e| {
            RunError::new(
                RunErrorKind::Reported(ErrorType::CacheDirFailed),
                format!("cannot create {}: {e}", spec.cache_dir.display()),
                None,
            )
        })?;
        let (events, events_w) =
            super::event_pipe().map_err(|e| failed(format!("cannot make the event pipe: {e}")))?;
        let fd = events_w.as_raw_fd();
        let config =
            json!({"model_path": spec.model_path, "backend": spec.backend.as_str()}).to_string();
        let mut cmd = Command::new(&spec.python.python);
        cmd.arg("-c")
            .arg(WORKER_PY)
            .arg(fd.to_string())
            .arg(config)
            .arg(super::shared_arg(&SHARED))
            .envs(super::isolated_env(
                &spec.cache_dir,
                spec.offline,
                spec.token_file.as_deref(),
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SIGKILL when the starting thread (the dispatcher) ends: mlxfs died.
        super::python_child(&mut cmd, fd);
        // A process group of its own: a terminal's Ctrl-C (or SIGHUP) goes to the whole
        // foreground group, and would interrupt the worker in the middle of its streams; the
        // server takes the signal alone and stops its workers after the drain.
        cmd.process_group(0);
        let jobs = Arc::new(Mutex::new(Jobs::default()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let python = spec.python.clone();
        let dispatcher_jobs = jobs.clone();
        let dispatcher = std::thread::Builder::new()
            .name("mlxfs-worker".into())
            .spawn(move || dispatch(cmd, events, events_w, python, dispatcher_jobs, ready_tx))
            .map_err(|e| failed(format!("cannot start the worker's thread: {e}")))?;
        let ready = match ready_rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = dispatcher.join();
                return Err(e);
            }
            Err(_) => {
                let _ = dispatcher.join();
                return Err(failed(
                    "the worker's thread ended before the model loaded".into(),
                ));
            }
        };
        let pid = lock(&ready.child).id();
        Ok(Worker {
            pid,
            info: ready.info,
            stdin: Mutex::new(Some(ready.stdin)),
            child: ready.child,
            jobs,
            next_id: AtomicU64::new(1),
            dispatcher: Mutex::new(Some(dispatcher)),
        })
    }

    /// The `ready` event: the interpreter (`executable`, `prefix`, `python`), the caches the
    /// libraries resolved (`hf_home`, `hub_cache`, `caches`), `offline`, `blas` (the BLAS
    /// library loaded for mlx, or `"bundled"`: see generate.py `_fast_blas`), `chat_template` and
    /// `tool_calling` (booleans), `scheduling` (`"continuous-batching"`), `vocab_size`,
    /// `max_token_chars`.
    pub fn info(&self) -> &Value {
        &self.info
    }

    /// How many logits the model gives a position (token ids below it exist), as the worker
    /// measured it with one step of the model: the bound of `logit_bias` ids and `top_k`.
    /// None for a vision or speech worker, or when the step failed.
    pub fn vocab_size(&self) -> Option<u64> {
        self.info["vocab_size"].as_u64()
    }

    /// The most characters one token of the model's vocabulary stands for (its longest token,
    /// times what its normalizer may fold into one character): a prompt of more characters
    /// than the context length times this is over the context, whatever it encodes to. None
    /// when the worker could not bound it (a tokenizer that drops or folds runs of text:
    /// whitespace splitting, stripping, unknown-token fusing; or no tokenizer).
    pub fn max_token_chars(&self) -> Option<u64> {
        self.info["max_token_chars"].as_u64().filter(|n| *n > 0)
    }

    /// The BLAS library the worker loaded for mlx (`"bundled"`: mlx's own; generate.py
    /// `_fast_blas`).
    pub fn blas(&self) -> &str {
        self.info["blas"].as_str().unwrap_or("bundled")
    }

    /// The model can be given `tools`: it has a chat template and its tokenizer a tool-call
    /// format mlx-lm parses (`chat_template` and `tool_calling` at `ready`).
    pub fn tool_calling(&self) -> bool {
        self.info["chat_template"] == true && self.info["tool_calling"] == true
    }

    /// Queue a generation; returns at once. Events arrive on [`JobHandle::events`] (a dropped
    /// receiver does not cancel the job: call [`Worker::cancel`]).
    pub fn submit(&self, job: GenJob) -> Result<JobHandle, WorkerGone> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = unbounded_channel();
        let (ack, accepted) = tokio::sync::oneshot::channel();
        {
            let mut jobs = lock(&self.jobs);
            if !jobs.open || jobs.stopping {
                return Err(WorkerGone);
            }
            jobs.senders.insert(id, tx);
            jobs.unread.insert(id, ack);
        }
        if !self.send_line(&job.command(id)) {
            let mut jobs = lock(&self.jobs);
            jobs.senders.remove(&id);
            jobs.unread.remove(&id);
            return Err(WorkerGone);
        }
        Ok(JobHandle {
            id,
            events: rx,
            accepted,
        })
    }

    /// Stop a queued job at once or a running one within one token; its handle then gets
    /// `Done { finish_reason: "cancelled" }` (the text so far), or nothing more when it had
    /// already ended. An unknown id is ignored.
    pub fn cancel(&self, id: u64) {
        self.send_line(&json!({"op": "cancel", "id": id}));
    }

    fn send_line(&self, v: &Value) -> bool {
        let mut stdin = lock(&self.stdin);
        let Some(w) = stdin.as_mut() else {
            return false;
        };
        writeln!(w, "{v}").and_then(|()| w.flush()).is_ok()
    }

    /// The process still runs (false once it ended: every pending job then got an `Error`
    /// of kind `worker_died`).
    pub fn alive(&self) -> bool {
        lock(&self.jobs).open && matches!(lock(&self.child).try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Jobs queued or running.
    pub fn queue_depth(&self) -> usize {
        lock(&self.jobs).senders.len()
    }

    /// Ask the process to exit (running and queued jobs end `cancelled`), wait up to `grace`,
    /// then SIGKILL; reaps it. Jobs still pending then get `Error { kind: "worker_stopped" }`.
    /// Idempotent.
    pub fn stop(&self, grace: Duration) {
        lock(&self.jobs).stopping = true;
        self.send_line(&json!({"op": "exit"}));
        let deadline = Instant::now() + grace;
        loop {
            let mut child = lock(&self.child);
            match child.try_wait() {
                Ok(None) if Instant::now() < deadline => {}
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                _ => break,
            }
            drop(child);
            std::thread::sleep(Duration::from_millis(5));
        }
        lock(&self.stdin).take();
        if let Some(d) = lock(&self.dispatcher).take() {
            let _ = d.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop(DROP_GRACE);
    }
}

/// The dispatcher thread: starts the process (so that its parent-death signal follows this
/// thread, which lives as long as the process), reports the load to [`Worker::start`], then
/// routes events until the pipe ends, and fails every pending job.
fn dispatch(
    mut cmd: Command,
    events: std::io::PipeReader,
    events_w: OwnedFd,
    python: PythonEnv,
    jobs: Arc<Mutex<Jobs>>,
    ready_tx: mpsc::Sender<Result<Ready, RunError>>,
) {
    let failed = |m: String| RunError::new(RunErrorKind::PythonFailed, m, None);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = ready_tx.send(Err(RunError::new(
                RunErrorKind::PythonNotFound,
                format!("cannot start {}: {e}", python.python.display()),
                Some("point --python (or MLXFS_PYTHON) at a Python environment with mlx-lm".into()),
            )));
            return;
        }
    };
    // The child holds the only write end now: its end ends the event stream.
    drop(events_w);
    drop(cmd);
    let (stdin, out, err) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let tees = match (out, err) {
        (Some(out), Some(err)) => Tee::spawn("worker-stdout", out, None)
            .and_then(|o| Tee::spawn("worker-stderr", err, capture::stderr_copy()).map(|e| (o, e))),
        _ => Err(std::io::Error::other("no pipe to the worker")),
    };
    let (Some(stdin), Ok((out, err))) = (stdin, tees) else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = ready_tx.send(Err(failed("cannot read the worker process".into())));
        return;
    };
    let pid = child.id();
    let child = Arc::new(Mutex::new(child));
    let mut stdin = Some(stdin);
    let mut loaded = false;
    let mut reported: Option<(String, String)> = None;
    for line in super::lines_of(events) {
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if !loaded {
            match v["event"].as_str() {
                Some("ready") => {
                    loaded = true;
                    if let Some(stdin) = stdin.take() {
                        lock(&jobs).open = true;
                        let ready = Ready {
                            info: v,
                            child: child.clone(),
                            stdin,
                        };
                        if ready_tx.send(Ok(ready)).is_err() {
                            break;
                        }
                    }
                }
                Some("error") => {
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                    reported = Some((s("type"), s("message")));
                    // Closing stdin ends the process, if the error did not.
                    stdin = None;
                }
                _ => {}
            }
            continue;
        }
        route(&jobs, &v);
    }
    // The process ended (or closed its channel: then it is of no use, and is killed).
    let status = reap(&child);
    let output = Captured {
        stdout: out.finish(),
        stderr: err.finish(),
    };
    if !loaded {
        let err = match reported {
            Some((kind, message)) => {
                let (kind, message, hint) = super::reported_error(&python, &kind, &message);
                RunError::new(RunErrorKind::Reported(kind), message, hint)
            }
            None => failed(format!(
                "{} ended ({}) before the model was loaded",
                python.python.display(),
                status.map_or("status unknown".into(), |s| s.to_string())
            )),
        };
        let _ = ready_tx.send(Err(err.with_output(output)));
        return;
    }
    let mut j = lock(&jobs);
    j.open = false;
    // Dropped: jobs never read learn that from `accepted`.
    j.unread.clear();
    let (kind, message) = if j.stopping {
        (
            JobErrorKind::WorkerStopped,
            "the model worker was stopped".to_string(),
        )
    } else {
        let mut m = format!(
            "the model worker (pid {pid}) ended ({})",
            status.map_or("status unknown".into(), |s| s.to_string())
        );
        if !output.stderr.is_empty() {
            m.push_str("; its stderr ended with:\n");
            m.push_str(&output.stderr.join("\n"));
        }
        (death_kind(status), m)
    };
    for (_, tx) in j.senders.drain() {
        let _ = tx.send(JobEvent::Error {
            kind: kind.clone(),
            message: message.clone(),
        });
    }
}

/// `worker_died` when a signal from outside ended the process (SIGKILL — what the OOM killer
/// sends —, SIGTERM, SIGINT, SIGHUP): a retry can succeed. `worker_crashed` otherwise (a crash
/// signal such as SIGSEGV or SIGABRT, or an exit of its own): the job it ran may crash the
/// next worker the same way.
fn death_kind(status: Option<ExitStatus>) -> JobErrorKind {
    use std::os::unix::process::ExitStatusExt;
    match status.and_then(|s| s.signal()) {
        Some(libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGHUP) => {
            JobErrorKind::WorkerDied
        }
        _ => JobErrorKind::WorkerCrashed,
    }
}

/// The exit status, waiting up to a second for the process to end after its channel did, then
/// killing it.
fn reap(child: &Mutex<Child>) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut c = lock(child);
        match c.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = c.kill();
                return c.wait().ok();
            }
            Ok(None) => {}
            Err(_) => return None,
        }
        drop(c);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One entry of a token event's `logprobs` (worker.py `_Job._entry`).
fn token_logprob(v: &Value) -> TokenLogprob {
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b.as_u64())
                    .map(|b| b as u8)
                    .collect()
            })
            .unwrap_or_default()
    };
    let text = |v: &Value| v["token"].as_str().unwrap_or_default().to_string();
    let lp = |v: &Value| v["logprob"].as_f64().unwrap_or(-9999.0);
    TokenLogprob {
        token: text(v),
        bytes: bytes(&v["bytes"]),
        logprob: lp(v),
        offset: v["offset"].as_u64().unwrap_or(0),
        top: v["top_logprobs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| (text(t), bytes(&t["bytes"]), lp(t)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Send one event to its job (a closed receiver is ignored); a `done` or an `error` ends it.
fn route(jobs: &Mutex<Jobs>, v: &Value) {
    let Some(id) = v["id"].as_u64() else { return };
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    let (event, last) = match v["event"].as_str() {
        Some("accepted") => {
            if let Some(ack) = lock(jobs).unread.remove(&id) {
                let _ = ack.send(());
            }
            return;
        }
        Some("token") => (
            JobEvent::Token {
                text: s("text"),
                logprobs: v["logprobs"]
                    .as_array()
                    .map(|a| a.iter().map(token_logprob).collect()),
            },
            false,
        ),
        Some("done") => (
            JobEvent::Done {
                finish_reason: s("finish_reason"),
                prompt_tokens: u("prompt_tokens"),
                completion_tokens: u("completion_tokens"),
                cached_tokens: u("cached_tokens"),
                text: s("text"),
                tool_calls: Some(v["tool_calls"].clone()).filter(|t| !t.is_null()),
                media: Some(v["media"].clone()).filter(|t| !t.is_null()),
            },
            true,
        ),
        Some("error") => (
            JobEvent::Error {
                kind: JobErrorKind::parse(&s("type")),
                message: s("message"),
            },
            true,
        ),
        _ => return,
    };
    let mut j = lock(jobs);
    let tx = if last {
        j.senders.remove(&id)
    } else {
        j.senders.get(&id).cloned()
    };
    drop(j);
    if let Some(tx) = tx {
        let _ = tx.send(event);
    }
}
