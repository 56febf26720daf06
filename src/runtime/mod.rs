//! `mlxfs run`: the Python side of running a model — finding the environment, the isolated
//! cache, and generation in an embedded interpreter (pyo3) or, when the venv does not match
//! the linked libpython (or mlxfs was built without the `python` feature), in a subprocess of
//! the venv's `python` running the same code.

pub mod capture;
pub mod convert;
#[cfg(feature = "python")]
mod embedded;
pub mod python;
pub mod stop;
pub mod worker;

use serde::Deserialize;
use serde_json::{Number, Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use capture::{Captured, Stdout};
pub use python::PythonEnv;

use capture::Tee;

use crate::error::{Diagnostic, ErrorType};

/// The generation code both modes run (`run`'s script, and the module `mlxfs_generate` of
/// worker.py).
pub const GENERATE_PY: &str = include_str!("generate.py");

/// The Python modules the scripts import, as `(name, source)` in the order they import each
/// other: what every script shares (imports, environment report, guards, events, signals,
/// the job wrapper), the audio decoding, and generate.py. A script takes a prefix of it
/// ([`Script::shared`], worker.rs all of it): the embedded interpreter creates them as modules
/// before the script, a subprocess gets them as its last argument ([`shared_arg`]).
pub const SHARED: [(&str, &str); 3] = [
    ("mlxfs_common", include_str!("mlxfs_common.py")),
    ("mlxfs_audio", include_str!("mlxfs_audio.py")),
    ("mlxfs_generate", GENERATE_PY),
];

/// The shared modules as a subprocess's last argument: a JSON list of `[name, source]`
/// pairs, which the script's `__main__` block puts in `sys.modules` before its imports
/// (mlxfs_common.py's `install`).
pub(crate) fn shared_arg(modules: &[(&str, &str)]) -> String {
    serde_json::to_string(modules).unwrap_or_default()
}

/// The Python code a job runs: `run(request, emit, should_stop)` of generate.py or of
/// convert.py.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Generate,
    Convert,
}

impl Script {
    fn source(self) -> &'static str {
        match self {
            Script::Generate => GENERATE_PY,
            Script::Convert => convert::CONVERT_PY,
        }
    }

    /// The modules of [`SHARED`] the script imports.
    fn shared(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Script::Generate => &SHARED[..2],
            Script::Convert => &SHARED[..1],
        }
    }
}

pub use stop::STOP;

/// The Python library that runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Text models (mlx-lm).
    #[default]
    MlxLm,
    /// Vision-language models given images (mlx-vlm), loaded from the model's folder.
    MlxVlm,
    /// Whisper speech to text (mlx-whisper: Whisper's tokenizer files ship inside the package,
    /// so no Whisper repo needs processor files or a download).
    MlxWhisper,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::MlxLm => "mlx-lm",
            Backend::MlxVlm => "mlx-vlm",
            Backend::MlxWhisper => "mlx-whisper",
        }
    }
}

/// The sampling defaults of `run` and `serve`: mlx-lm's own (mlx_lm/generate.py
/// `DEFAULT_TEMP`, `DEFAULT_TOP_P`; `mlx_lm.server` takes the same), so that the same prompt
/// gives the same text in `mlxfs run`, `mlxfs serve`, `mlx_lm.generate` and `mlx_lm.server`.
/// Temperature 0 is greedy (the likeliest token every time); no repetition penalty unless
/// asked for.
pub mod defaults {
    /// 0: greedy.
    pub const TEMPERATURE: f64 = 0.0;
    /// 1: nucleus sampling off.
    pub const TOP_P: f64 = 1.0;
    /// `run`'s `--max-tokens` when none is given (then cut to what fits the context).
    pub const MAX_TOKENS: u32 = 256;
}

/// What to generate.
#[derive(Debug, Clone, Default)]
pub struct GenRequest {
    pub backend: Backend,
    pub model_path: PathBuf,
    pub prompt: String,
    /// Most tokens to generate; held to the context with the prompt (generate.py
    /// `fit_completion`): refused when `max_tokens_explicit` (the user gave it) and it does
    /// not fit, else cut to what fits.
    pub max_tokens: u32,
    pub max_tokens_explicit: bool,
    pub temperature: f64,
    pub top_p: f64,
    pub repetition_penalty: Option<f64>,
    pub seed: Option<u64>,
    pub chat_template: bool,
    /// Speculative decoding: the draft model, as a folder or a hub id mlx-lm downloads into
    /// the isolated cache.
    pub draft_model: Option<String>,
    pub num_draft_tokens: u32,
    /// Images for a vision model (checked: PNG, JPEG or WebP within the size limit).
    pub images: Vec<PathBuf>,
    /// Audio for a speech-to-text model (checked like the images).
    pub audio: Option<PathBuf>,
    /// The spoken language (a Whisper language code); None: detected.
    pub language: Option<String>,
    /// Translate the speech into English instead of transcribing it.
    pub translate: bool,
    /// The model's context length (config.json): a longer prompt is refused with
    /// `context_length_exceeded` before any of it is processed. None: unknown, not checked.
    pub context_length: Option<u64>,
}

impl GenRequest {
    pub fn to_json(&self) -> String {
        json!({
            "model_path": self.model_path,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "max_tokens_explicit": self.max_tokens_explicit,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "chat_template": self.chat_template,
            "draft_model": self.draft_model,
            "num_draft_tokens": self.num_draft_tokens,
            "backend": self.backend.as_str(),
            "images": self.images,
            "audio": self.audio,
            "language": self.language,
            "task": if self.translate { "translate" } else { "transcribe" },
            "context_length": self.context_length,
        })
        .to_string()
    }
}

/// One event from the generation code.
#[derive(Debug, Clone)]
pub enum Event {
    Env(Box<Env>),
    Token(String),
    Done(Done),
    Error {
        kind: String,
        message: String,
    },
    /// How far a long job is (`plan`, `progress`, `shard` of convert.py).
    Progress(Progress),
}

/// convert.py's progress events (its docstring is the protocol). A count Python did not send
/// is 0.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// `plan`: what will be written: tensors and bytes in all, and the shards.
    Plan {
        tensors: u64,
        bytes: u64,
        shards: usize,
    },
    /// `progress`: tensors and bytes evaluated so far (cumulative).
    Done { tensors: u64, bytes: u64 },
    /// `shard`: one output file written (or kept from an earlier run): its name and size, and
    /// the event as Python wrote it, for `convert --json`'s `shards`.
    Shard { file: String, size: u64, raw: Value },
}

impl Progress {
    fn parse(v: Value) -> Option<Progress> {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Some(match v["event"].as_str()? {
            "plan" => Progress::Plan {
                tensors: n("tensors"),
                bytes: n("bytes"),
                shards: v["shards"].as_array().map_or(0, Vec::len),
            },
            "progress" => Progress::Done {
                tensors: n("tensors"),
                bytes: n("bytes"),
            },
            "shard" => Progress::Shard {
                file: v["file"].as_str().unwrap_or_default().to_string(),
                size: n("size"),
                raw: v,
            },
            _ => return None,
        })
    }
}

/// The `env` event: the interpreter and where the libraries cache (generate.py's
/// `env_info`; convert.py adds the `mlx` and `mlx_lm` versions). A field Python did not send
/// is `None`, shown as null.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Env {
    pub executable: Option<String>,
    pub prefix: Option<String>,
    /// The interpreter's version.
    pub python: Option<String>,
    pub hf_home: Option<String>,
    pub hub_cache: Option<String>,
    /// Where each library caches, as the libraries resolved it (in their order).
    pub caches: Option<Value>,
    pub offline: Option<bool>,
    pub blas: Option<String>,
    pub mlx: Option<String>,
    pub mlx_lm: Option<String>,
}

/// The `done` event: a generation's (generate.py) or a conversion's (convert.py), told apart
/// by their fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Done {
    Generated(Box<Generated>),
    Converted(Box<Converted>),
}

/// What a generation (`run`) produced. The counts and rates are kept as Python wrote them
/// (an integer stays one), for the JSON of `run --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Generated {
    pub text: String,
    pub prompt_tokens: Number,
    pub generation_tokens: Number,
    pub prompt_tps: Number,
    pub generation_tps: Number,
    /// `stop`, `length` or `interrupted`.
    pub finish_reason: String,
    pub chat_template: bool,
    /// With a draft model, how many generated tokens it proposed and the model accepted.
    pub draft_tokens: Option<u64>,
    /// Speech to text: the audio's length in seconds, the decoder that read it, the language
    /// spoken and the transcript's segments.
    #[serde(default)]
    pub audio_seconds: Option<Number>,
    #[serde(default)]
    pub decoder: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub segments: Option<Vec<Value>>,
}

impl Generated {
    /// The result of a run stopped before Python answered one.
    pub fn interrupted() -> Generated {
        Generated {
            text: String::new(),
            prompt_tokens: 0.into(),
            generation_tokens: 0.into(),
            prompt_tps: Number::from_f64(0.0).unwrap_or_else(|| 0.into()),
            generation_tps: Number::from_f64(0.0).unwrap_or_else(|| 0.into()),
            finish_reason: "interrupted".into(),
            chat_template: false,
            draft_tokens: None,
            audio_seconds: None,
            decoder: None,
            language: None,
            segments: None,
        }
    }
}

/// What a conversion produced: the facts `convert` reports, kept as Python wrote them.
#[derive(Debug, Clone, Deserialize)]
pub struct Converted {
    pub tensors: Value,
    pub bytes: Value,
    pub quantization: Value,
    /// Present (not null) for a quantized conversion, with `unquantized`.
    #[serde(default)]
    pub quantized_layers: Option<Value>,
    #[serde(default)]
    pub unquantized: Value,
    #[serde(default)]
    pub peak_memory_gb: Value,
    #[serde(default)]
    pub seconds: Value,
    #[serde(default)]
    pub phases: Value,
    #[serde(default)]
    pub resumed_shards: Value,
}

impl Event {
    pub fn parse(line: &str) -> Option<Event> {
        let v: Value = serde_json::from_str(line).ok()?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Some(match v["event"].as_str()? {
            "env" => Event::Env(serde_json::from_value(v).ok()?),
            "token" => Event::Token(s("text")),
            "done" => Event::Done(serde_json::from_value(v).ok()?),
            "plan" | "progress" | "shard" => Event::Progress(Progress::parse(v)?),
            "error" => Event::Error {
                kind: s("type"),
                message: s("message"),
            },
            _ => return None,
        })
    }
}

/// How generation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Subprocess,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::Subprocess => "subprocess",
        }
    }
}

/// What kept Python from running the generation, by what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunErrorKind {
    /// No interpreter where `--python`, `MLXFS_PYTHON`, `VIRTUAL_ENV` or PATH point.
    PythonNotFound,
    /// The subprocess Python could not be waited for, or exited with an error.
    PythonFailed,
    /// The embedded interpreter did not start.
    PythonInitFailed,
    /// The embedded interpreter raised out of the generation code.
    PythonError,
    /// The Python side reported an error of this type (`missing_dependency`, `load_failed`,
    /// `remote_code_required`, ...), or mlxfs could not prepare its run (`cache_dir_failed`).
    Reported(ErrorType),
}

impl RunErrorKind {
    pub fn error_type(self) -> ErrorType {
        match self {
            RunErrorKind::PythonNotFound => ErrorType::PythonNotFound,
            RunErrorKind::PythonFailed => ErrorType::PythonFailed,
            RunErrorKind::PythonInitFailed => ErrorType::PythonInitFailed,
            RunErrorKind::PythonError => ErrorType::PythonError,
            RunErrorKind::Reported(t) => t,
        }
    }
}

/// Why generation could not run, with what Python printed before (the `python_output` field
/// of the JSON error, when there is any).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    pub kind: RunErrorKind,
    pub message: String,
    pub hint: Option<String>,
    pub output: Captured,
}

impl RunError {
    pub fn new(kind: RunErrorKind, message: impl Into<String>, hint: Option<String>) -> RunError {
        RunError {
            kind,
            message: message.into(),
            hint,
            output: Captured::default(),
        }
    }
    fn with_output(mut self, output: Captured) -> RunError {
        self.output = output;
        self
    }
}

impl Diagnostic for RunError {
    fn error_type(&self) -> ErrorType {
        self.kind.error_type()
    }
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
    fn fields(&self) -> Vec<(&'static str, Value)> {
        if self.output.is_empty() {
            Vec::new()
        } else {
            vec![("python_output", self.output.json())]
        }
    }
}

/// The install line for mlx and the backend's package on this platform (mlx-lm unless the
/// import that failed names `mlx_vlm` or `mlx_whisper`). mlx-whisper declares torch, which
/// it never imports (only its PyTorch comparison module does): it is installed without its
/// dependencies, and the ones it imports are named.
pub fn install_hint(env: &PythonEnv, failed_import: &str) -> String {
    let py = env.python.display();
    let mlx = if cfg!(target_os = "macos") {
        "mlx"
    } else {
        "\"mlx[cpu]\""
    };
    if failed_import.contains("mlx_whisper") {
        return format!(
            "install it into that environment without torch: {py} -m pip install --no-deps \
             mlx-whisper && {py} -m pip install {mlx} numba scipy tiktoken more-itertools tqdm \
             huggingface_hub"
        );
    }
    if failed_import.contains("mlx_vlm") {
        return format!(
            "install it into that environment: {py} -m pip install {mlx} mlx-vlm (or, leaner, \
             the pins of mlxfs's scripts/test-requirements.txt)"
        );
    }
    let pkgs = if cfg!(target_os = "macos") {
        "mlx-lm".to_string()
    } else {
        format!("{mlx} mlx-lm")
    };
    format!("install them into that environment: {py} -m pip install {pkgs}")
}

/// An error the Python side reported as `{"event": "error", "type", "message"}`, in mlxfs's
/// words: its type (an unknown name is `generation_failed`), the message and the hint.
pub fn reported_error(
    env: &PythonEnv,
    kind: &str,
    message: &str,
) -> (ErrorType, String, Option<String>) {
    let kind = ErrorType::parse(kind).unwrap_or(ErrorType::GenerationFailed);
    match kind {
        ErrorType::MissingDependency => (
            kind,
            format!("{} {message}", env.python.display()),
            Some(install_hint(env, message)),
        ),
        ErrorType::RemoteCodeRequired => (
            kind,
            message.to_string(),
            Some(
                "mlxfs never runs code that comes with a model (as mlx-knife refuses \
                 config.json: model_file); use a conversion whose tokenizer and architecture \
                 load without it"
                    .into(),
            ),
        ),
        _ => (kind, message.to_string(), None),
    }
}

/// The variables that give a Python process the isolated cache `cache`: every one of
/// [`env::ISOLATED_CACHE`](crate::env::ISOLATED_CACHE) pointed into it, `HF_TOKEN_PATH` at
/// `token_file` when given (with HF_HOME isolated, huggingface_hub would no longer find the
/// user's `$HF_HOME/token`: see `cli::run::python_token_file`), and with `offline`
/// `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1`.
pub fn isolated_env(
    cache: &Path,
    offline: bool,
    token_file: Option<&Path>,
) -> Vec<(&'static str, std::ffi::OsString)> {
    use crate::env;
    let mut vars: Vec<(&'static str, std::ffi::OsString)> = env::ISOLATED_CACHE
        .iter()
        .map(|(var, sub)| {
            let dir = if sub.is_empty() {
                cache.to_path_buf()
            } else {
                cache.join(sub)
            };
            (*var, dir.into_os_string())
        })
        .collect();
    if let Some(t) = token_file {
        vars.push((env::HF_TOKEN_PATH, t.as_os_str().to_owned()));
    }
    if offline {
        vars.push((env::HF_HUB_OFFLINE, "1".into()));
        vars.push((env::TRANSFORMERS_OFFLINE, "1".into()));
    }
    vars
}

pub type Handler = Arc<Mutex<dyn FnMut(Event) + Send>>;

/// How a generation that ran went (its result came through the handler's events).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub mode: Mode,
    /// Why the embedded interpreter was not used, when it was not (for a note to the user).
    pub why_not_embedded: Option<String>,
    /// What Python printed outside the event channel (its tail; shown when the run failed).
    pub output: Captured,
}

/// Run generation, streaming events to `handler`. `force_subprocess` skips the embedded
/// interpreter. The handler must write generated text through [`Stdout`], never through
/// `std::io::stdout()`: during an embedded run fd 1 captures what libraries print.
pub fn generate(
    env: &PythonEnv,
    req: &GenRequest,
    force_subprocess: bool,
    handler: Handler,
) -> Result<Outcome, RunError> {
    run_job(
        env,
        Script::Generate,
        &req.to_json(),
        force_subprocess,
        handler,
    )
}

/// Run `script` with `request` in the embedded interpreter when it can be used (and
/// `force_subprocess` is off), else in a subprocess of the venv's Python; events go to
/// `handler`. A subprocess gets SIGINT when [`STOP`] is set.
pub(crate) fn run_job(
    env: &PythonEnv,
    script: Script,
    request: &str,
    force_subprocess: bool,
    handler: Handler,
) -> Result<Outcome, RunError> {
    #[cfg(feature = "python")]
    if !force_subprocess {
        let (mode, why_not_embedded, output) = match embedded::usable(env) {
            Ok(()) => (
                Mode::Embedded,
                None,
                embedded::run(env, script, request, handler)?,
            ),
            Err(why) => (
                Mode::Subprocess,
                Some(why),
                subprocess(env, script, request, handler)?,
            ),
        };
        return Ok(Outcome {
            mode,
            why_not_embedded,
            output,
        });
    }
    let why_not_embedded = if force_subprocess {
        None
    } else {
        Some("mlxfs was built without the embedded interpreter (feature `python`)".to_string())
    };
    let output = subprocess(env, script, request, handler)?;
    Ok(Outcome {
        mode: Mode::Subprocess,
        why_not_embedded,
        output,
    })
}

/// A pipe for the events: the read end for mlxfs, the write end (close-on-exec, numbered 3
/// or above so that the child's stdio set-up cannot replace it) for the child.
fn event_pipe() -> std::io::Result<(std::io::PipeReader, OwnedFd)> {
    let (r, w) = std::io::pipe()?;
    let w = OwnedFd::from(w);
    if w.as_raw_fd() > 2 {
        return Ok((r, w));
    }
    // Only when mlxfs was started with fd 0, 1 or 2 closed.
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1), which we then own.
    let fd = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok((r, unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Set up `cmd`'s child (a Python process of mlxfs's): it alone holds the event pipe's write
/// end `fd` (close-on-exec cleared in the child only, so no other process mlxfs starts keeps
/// the channel open), and it is never an orphan: on Linux it gets SIGKILL when the thread that
/// starts it ends (`PR_SET_PDEATHSIG`: start it from a thread that lives as long as it is
/// wanted), and it does not start at all when mlxfs died while it was being set up.
fn python_child(cmd: &mut Command, fd: std::os::fd::RawFd) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure only calls fcntl, prctl and getppid, which
    // are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // mlxfs died before the line above: nobody would ever kill it.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            let _ = parent;
            Ok(())
        });
    }
}

/// Run a script (generate.py, convert.py) in the venv's Python: the request on stdin (read to
/// its end, stdin then gives the libraries nothing, so none can wait for an answer), the
/// events on a pipe of their own whose descriptor number is argv[2] (so nothing a library
/// prints can merge into an event line), the shared modules in argv[3], stdout captured and
/// never shown unless the run fails, stderr forwarded live and its tail captured.
fn subprocess(
    env: &PythonEnv,
    script: Script,
    request: &str,
    handler: Handler,
) -> Result<Captured, RunError> {
    let failed = |m: String| RunError::new(RunErrorKind::PythonFailed, m, None);
    let (events, events_w) =
        event_pipe().map_err(|e| failed(format!("cannot make the event pipe: {e}")))?;
    let fd = events_w.as_raw_fd();
    let mut cmd = Command::new(&env.python);
    // The request comes on stdin (`-`), not as an argument: one argument is at most 128 KiB
    // (MAX_ARG_STRLEN), and a prompt may be longer. Read to its end, stdin then gives the
    // libraries nothing, as /dev/null would.
    cmd.arg("-c")
        .arg(script.source())
        .arg("-")
        .arg(fd.to_string())
        .arg(shared_arg(script.shared()));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    python_child(&mut cmd, fd);
    let mut child = cmd.spawn().map_err(|e| {
        RunError::new(
            RunErrorKind::PythonNotFound,
            format!("cannot start {}: {e}", env.python.display()),
            Some("point --python (or MLXFS_PYTHON) at a Python environment with mlx-lm".into()),
        )
    })?;
    // The child holds the only write end now: its exit ends the event stream.
    drop(events_w);
    // Killed if the work is abandoned (stop.rs); forgotten before it is reaped.
    stop::set_child(Some(child.id()));
    // Written from a thread (a pipe holds 64 KiB); a child that exits first makes it fail
    // with EPIPE, which its exit reports.
    if let Some(mut stdin) = child.stdin.take() {
        let request = request.to_string();
        let _ = std::thread::Builder::new()
            .name("python-request".into())
            .spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(request.as_bytes());
            });
    }
    let tees = (child.stdout.take(), child.stderr.take());
    let (Some(out), Some(err)) = tees else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(failed("no pipe to the Python subprocess".into()));
    };
    let spawn_tees = || -> std::io::Result<(Tee, Tee)> {
        Ok((
            Tee::spawn("python-stdout", out, None)?,
            Tee::spawn("python-stderr", err, capture::stderr_copy())?,
        ))
    };
    let (out, err) = match spawn_tees() {
        Ok(t) => t,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("cannot read the Python subprocess: {e}")));
        }
    };
    // Ctrl-C given to mlxfs alone (not to its process group) reaches the child as SIGINT:
    // a conversion stops between two tensors (convert.py's `interrupted` error), a text
    // generation after the current token and a transcription within its window (generate.py:
    // `finish_reason` "interrupted"). The child takes a second SIGINT within a second (the
    // terminal's and this one) as the same.
    let ended = Arc::new(AtomicBool::new(false));
    // Sent again every 1.2 s while the child lives (it takes SIGINTs within a second as one):
    // a KeyboardInterrupt a library swallowed (a bare `except:` around an import) gets
    // another, until `stop.rs` gives up on the child.
    let forward = {
        let ended = ended.clone();
        let pid = child.id() as libc::pid_t;
        std::thread::spawn(move || {
            let mut last: Option<std::time::Instant> = None;
            while !ended.load(Ordering::SeqCst) {
                if STOP.load(Ordering::SeqCst)
                    && last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(1200))
                {
                    // SAFETY: kill(2) on the child's pid, which is not reaped before `ended`.
                    unsafe { libc::kill(pid, libc::SIGINT) };
                    last = Some(std::time::Instant::now());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let mut seen = Seen::default();
    for line in lines_of(events) {
        let text = String::from_utf8_lossy(&line);
        match Event::parse(text.trim_end_matches('\n')) {
            Some(ev) => {
                seen.note(&ev);
                (handler.lock().unwrap_or_else(|e| e.into_inner()))(ev);
            }
            None => seen.unreadable(&text),
        }
    }
    // The event pipe closed: the child is exiting. Stop forwarding before reaping it (a pid
    // must never be signalled once reaped).
    ended.store(true, Ordering::SeqCst);
    let _ = forward.join();
    stop::set_child(None);
    let status = child.wait();
    let output = Captured {
        stdout: out.finish(),
        stderr: err.finish(),
    };
    let status = status.map_err(|e| failed(e.to_string()).with_output(output.clone()))?;
    // A reported error explains the exit status (the caller reports it); after Ctrl-C the
    // status is whatever the signal made it, and the caller tells an interrupted job by its
    // answer or by `stop::requested()`.
    let stopped = STOP.load(Ordering::SeqCst);
    if seen.error || stopped || (seen.done && status.success()) {
        return Ok(output);
    }
    let python = env.python.display();
    let mut message = if seen.done {
        format!("{python} ended ({status}) after its result")
    } else if status.success() {
        format!("{python} ended (exit status: 0) without a result")
    } else {
        format!("{python} ended ({status}) before reporting a result")
    };
    if let Some(first) = &seen.first_unreadable {
        message.push_str(&format!(
            "; the event channel carried {} line(s) that are not events, the first: {}",
            seen.unreadable,
            crate::text::one_line(first)
        ));
    }
    Err(failed(message).with_output(output))
}

/// The lines of a stream (an event pipe), each with its newline, until it ends or fails.
fn lines_of(r: impl std::io::Read) -> impl Iterator<Item = Vec<u8>> {
    let mut reader = BufReader::new(r);
    std::iter::from_fn(move || {
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return None,
                Ok(_) => return Some(line),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    })
}

/// What the event channel carried, as far as the end of a subprocess needs to know.
#[derive(Default)]
struct Seen {
    done: bool,
    error: bool,
    unreadable: usize,
    first_unreadable: Option<String>,
}

impl Seen {
    fn note(&mut self, ev: &Event) {
        match ev {
            Event::Done(_) => self.done = true,
            Event::Error { .. } => self.error = true,
            _ => {}
        }
    }
    fn unreadable(&mut self, line: &str) {
        self.unreadable += 1;
        if self.first_unreadable.is_none() {
            self.first_unreadable = Some(line.chars().take(200).collect());
        }
    }
}

/// Files of a folder: relative path → (size, mtime in ns).
pub fn snapshot(dir: &Path) -> BTreeMap<String, (u64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    (md.len(), crate::sys::mtime_ns(&md)),
                );
            }
        }
    }
    out
}

/// What a run added to (or changed in) its cache.
pub fn cache_report(dir: &Path, before: &BTreeMap<String, (u64, i64)>) -> Value {
    let after = snapshot(dir);
    let changed: Vec<Value> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, (size, _))| json!({"path": k, "size": size}))
        .collect();
    let bytes: u64 = changed.iter().filter_map(|c| c["size"].as_u64()).sum();
    json!({"dir": dir, "added": changed, "bytes_added": bytes})
}
