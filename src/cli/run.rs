//! `mlxfs run MODEL [PROMPT]`: generate text with mlx-lm, reading the weights from the path
//! given (through the mount for a mount path), under an isolated Hugging Face cache.

use clap::Args;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::output::{CliError, Output, exit_on_write_error};
use crate::catalog::capability::{self, Refusal};
use crate::catalog::record::{Described, describe, show_model};
use crate::catalog::resolve::{self, is_explicit_path};
use crate::catalog::{IsolatedCache, Locations, ModelRef, RepoDir, runtime_cache};
use crate::error::ErrorType;
use crate::runtime::{self, Done, Event, GenRequest, Generated, PythonEnv};
use crate::serve::pool::backend_for;
use crate::text::{human_bytes, one_line};

#[derive(Args, Debug)]
#[command(after_help = "\
Before Python starts, HF_HOME points at an isolated cache: <workspace>/.hf_cache for a
workspace, a per-model folder under mlxfs's state directory for a hub model and for a
workspace you cannot write (a shared /opt/models, a read-only disk; the cache report says
so), or --workspace-cache DIR (alias --cache-dir). Every cache variable the libraries consult
(legacy names and XDG_CACHE_HOME included) is pointed there too, so whatever mlx-lm,
transformers or huggingface_hub fetch at run time lands there (reported after the run:
what arrived, and whether the cache is ready for offline runs), never in your shared
~/.cache/huggingface. The token stays yours. `mlxfs health MODEL --verbose` shows it.

Speculative decoding: --draft-model DRAFT (a smaller model with the same tokenizer). DRAFT
is resolved like MODEL first; a hub id org/name the catalog does not know is downloaded by
mlx-lm (from HF_ENDPOINT) into the isolated cache on the first run, and later runs load
that captured copy (its refs/main snapshot, when complete) without the network.

A safetensors checkpoint without MLX markers is labelled PyTorch (mlx-knife's rules) and
refused; --force runs it anyway when mlx-lm supports its architecture.

Sampling defaults are mlx-lm's, as in `serve`: temperature 0 (greedy: the likeliest token
every time, the text mlx_lm.generate gives), top-p 1, no repetition penalty. A prompt longer
than the model's context length is refused (context_length_exceeded) before it is processed.

Ctrl-C, SIGTERM and SIGHUP stop the run wherever it is (loading, the prompt, generation):
exit status 130, with the text so far. If Python cannot be interrupted (a read that never
returns), the run is ended 2 s after the signal; a second Ctrl-C ends it at once.

stdout carries only the generated text (or the JSON result): what the libraries print is
captured, and its last lines are shown if the run fails (their stderr passes through live).
mlxfs never runs code that comes with a model (trust_remote_code=False): a model that
needs it fails with remote_code_required.

Python: --python, MLXFS_PYTHON, VIRTUAL_ENV, then python3 on PATH (a venv folder or an
interpreter). It needs mlx and mlx-lm: pip install \"mlx[cpu]\" mlx-lm (Linux) or mlx-lm
(macOS). When the venv's Python is not the one mlxfs embeds, the same code runs in a
subprocess of that Python.

Vision and speech: --image FILE (repeatable) runs a model with the `vision` capability
with mlx-vlm; --audio FILE runs a Whisper (capability `audio`) with mlx-whisper, which ships
Whisper's tokenizer (no download, no processor files needed). WAV needs nothing more; MP3,
FLAC, M4A and Ogg need PyAV (pip install av) or the ffmpeg program. What a model cannot take
is refused before Python starts.

Examples:
  mlxfs run ./my-ws \"Explain FUSE\"
  mlxfs run pixtral \"What is in this picture?\" --image photo.jpg
  mlxfs run whisper-large-v3-mlx --audio clip.wav --language en --json
  mlxfs run ~/models-mnt/org/repo --max-tokens 64 --seed 1 \"Hello\"
  echo \"Summarise this\" | mlxfs run qwen -
  mlxfs run ./my-ws \"Hello\" --draft-model mlx-community/Qwen3-0.6B-4bit")]
pub struct RunArgs {
    /// A model name, a path, or a path inside an mlxfs mount
    pub model: String,
    /// The prompt; `-` reads it from stdin
    pub prompt: Vec<String>,
    /// The prompt (instead of the positional words)
    #[arg(long = "prompt", value_name = "TEXT", conflicts_with = "prompt")]
    pub prompt_text: Option<String>,
    /// Most tokens to generate, at least 1 (the text may end earlier, at the model's
    /// end-of-text token). Prompt and answer must fit the model's context length: a
    /// --max-tokens that does not fit beside the prompt is refused (context_length_exceeded);
    /// without it, up to 256 tokens, cut to what fits
    #[arg(long = "max-tokens", value_name = "N",
          allow_negative_numbers = true, value_parser = at_least_one)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0 or more: 0 always picks the likeliest token (greedy: the same
    /// prompt gives the same text every time); higher is more varied. mlx-lm's default, as
    /// `serve`'s
    #[arg(long, value_name = "T", default_value_t = runtime::defaults::TEMPERATURE,
          allow_negative_numbers = true, value_parser = non_negative)]
    pub temperature: f64,
    /// Nucleus sampling, above 0 and at most 1: pick only among the likeliest tokens whose
    /// probabilities add up to P (1 turns it off). mlx-lm's default, as `serve`'s
    #[arg(long = "top-p", value_name = "P", default_value_t = runtime::defaults::TOP_P,
          allow_negative_numbers = true, value_parser = probability)]
    pub top_p: f64,
    /// Penalty for tokens already seen (the prompt's and the generated ones), above 0; 1 or
    /// not given: no penalty (mlx-lm's repetition penalty, off by default as in mlx-lm and
    /// `serve`)
    #[arg(long = "repetition-penalty", value_name = "R",
          allow_negative_numbers = true, value_parser = positive)]
    pub repetition_penalty: Option<f64>,
    /// Random seed (same seed, same model, same output)
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Send the prompt as is, without the model's chat template
    #[arg(long)]
    pub no_chat_template: bool,
    /// Print the text at the end instead of streaming it
    #[arg(long)]
    pub no_stream: bool,
    /// The Python environment (a venv folder or an interpreter); else MLXFS_PYTHON,
    /// VIRTUAL_ENV, then python3 on PATH
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Use this folder as the isolated cache (HF_HOME and every other cache variable)
    /// instead of the model's own (ADR-022's name; `--cache-dir` is kept as an alias)
    #[arg(
        long = "workspace-cache",
        visible_alias = "cache-dir",
        value_name = "DIR"
    )]
    pub cache_dir: Option<PathBuf>,
    /// Forbid downloads (HF_HUB_OFFLINE=1): everything the run needs must already be in the
    /// isolated cache
    #[arg(long)]
    pub offline: bool,
    /// Run a model labelled `PyTorch` (safetensors without MLX markers: no `mlx` tag in
    /// README.md, no `quantization` in config.json) anyway: mlx-lm reads such checkpoints
    /// when their architecture is one it supports. The record keeps its label.
    #[arg(long)]
    pub force: bool,
    /// Run Python in a subprocess even when the embedded interpreter could be used
    #[arg(long)]
    pub subprocess: bool,
    /// Speculative decoding with this draft model (mlx-lm's --draft-model): a smaller model
    /// that shares the model's tokenizer. Any name or path `run` accepts; a hub id `org/name`
    /// not in the catalog is downloaded by mlx-lm into the isolated cache at run time (and
    /// taken from there by later runs)
    #[arg(long = "draft-model", value_name = "DRAFT")]
    pub draft_model: Option<String>,
    /// Tokens the draft model proposes per step (with --draft-model)
    #[arg(long = "num-draft-tokens", value_name = "N", default_value_t = 3,
          requires = "draft_model", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub num_draft_tokens: u32,
    /// An image for a vision model (capability `vision`), run with mlx-vlm: PNG, JPEG or WebP
    /// (told by its bytes), at most 10 MiB and 8192×8192 pixels, EXIF orientation applied;
    /// repeat for more (at most 10)
    #[arg(long = "image", value_name = "FILE", conflicts_with_all = ["draft_model", "audio"])]
    pub images: Vec<PathBuf>,
    /// Audio for a speech-to-text model (capability `audio`: Whisper, run with mlx-whisper):
    /// WAV, MP3, FLAC, M4A or Ogg, at most 50 MiB. The transcript goes to stdout; a PROMPT is
    /// optional (Whisper's initial prompt: spelling, names)
    #[arg(long, value_name = "FILE", conflicts_with = "draft_model")]
    pub audio: Option<PathBuf>,
    /// The spoken language of --audio (a Whisper code: en, de, fr, ...); detected when not
    /// given
    #[arg(long, value_name = "LANG", requires = "audio",
          value_parser = crate::media::whisper_language)]
    pub language: Option<String>,
    /// Translate the speech of --audio into English instead of transcribing it (Whisper
    /// models with the `audio-translate-en` capability). `--translate en`, as mlx-knife
    /// writes it, is the same: English is Whisper's only target
    #[arg(long, requires = "audio", value_name = "en", num_args = 0..=1,
          default_missing_value = "en", value_parser = ["en"])]
    pub translate: Option<String>,
}

fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}` is not a finite number"))
    }
}

/// A count of 1 or more (`-3` and `0` get the same message, not a parse error or clap's
/// hint to write `-- -3`).
fn at_least_one(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(v) if v >= 1 => u32::try_from(v).map_err(|_| format!("must be at most {}", u32::MAX)),
        Ok(_) => Err("must be at least 1".into()),
        Err(_) => Err("must be a whole number, at least 1".into()),
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err("must be 0 or more".into())
        }
    })
}

fn positive(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err("must be above 0".into())
        }
    })
}

fn probability(s: &str) -> Result<f64, String> {
    positive(s).and_then(|v| {
        if v <= 1.0 {
            Ok(v)
        } else {
            Err("must be at most 1".into())
        }
    })
}

/// The model behind MODEL, and the folder to read weights from (the mount folder itself for a
/// path inside an mlxfs mount: the weights are read through it).
pub(super) fn locate(spec: &str, loc: &Locations) -> Result<(ModelRef, PathBuf), CliError> {
    let model = resolve::resolve(spec, loc)?;
    if is_explicit_path(spec)
        && let Ok(canon) = std::fs::canonicalize(resolve::expand_user(spec))
        && crate::mountprobe::mounted_model_path(&canon).is_some()
    {
        return Ok((model, canon));
    }
    let path = model.path.clone();
    Ok((model, path))
}

/// Where the draft model of a run comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DraftSource {
    /// A model of the catalog (loaded from its folder, like the model).
    Catalog,
    /// A hub repo an earlier run downloaded into this run's isolated cache (its `refs/main`
    /// snapshot, complete: loaded from there without asking the hub).
    RuntimeCache,
    /// A hub id left to mlx-lm, which downloads it into the isolated cache.
    Hub,
}

impl DraftSource {
    fn as_str(self) -> &'static str {
        match self {
            DraftSource::Catalog => "catalog",
            DraftSource::RuntimeCache => "runtime-cache",
            DraftSource::Hub => "hub",
        }
    }
}

/// The draft model as resolved before Python starts.
#[derive(Debug, Clone)]
struct Draft {
    /// What the user gave.
    spec: String,
    /// What mlx-lm loads: a folder, or the hub id.
    load: String,
    source: DraftSource,
    /// The catalog's name for it, or the cached revision.
    name: String,
    revision: Option<String>,
}

/// Could `s` be a hub repo id (`org/name`, the characters the hub allows)?
fn looks_like_hub_id(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.contains("--")
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split_once('/'), Some((org, name)) if ok(org) && ok(name))
}

/// Resolve `--draft-model` through the catalog first (any name or path `run` accepts, with
/// the model's own checks); a hub id the catalog does not know is left to mlx-lm. Anything
/// else is an error before Python starts.
fn resolve_draft(spec: &str, loc: &Locations, force: bool) -> Result<Draft, CliError> {
    let not_found = match locate(spec, loc) {
        Ok((model, weights)) => {
            let d = describe(&model);
            if let Some(reason) = d.health.reason() {
                return Err(CliError::new(
                    ErrorType::ModelUnhealthy,
                    format!("draft model {} is unhealthy: {reason}", model.spec()),
                )
                .hint("run `mlxfs health MODEL` for details"));
            }
            capability::runnable(&d, force).map_err(|r| {
                let mut e = refused(r, &d);
                e.message = format!("draft model: {}", e.message);
                e
            })?;
            return Ok(Draft {
                spec: spec.to_string(),
                load: weights.to_string_lossy().into_owned(),
                source: DraftSource::Catalog,
                name: model.spec(),
                revision: model.revision.clone(),
            });
        }
        Err(e) => e,
    };
    if is_explicit_path(spec) || not_found.kind != ErrorType::ModelNotFound {
        return Err(not_found);
    }
    if !looks_like_hub_id(spec) {
        return Err(not_found.hint(
            "--draft-model takes a model of the catalog (name or path) or a hub id org/name, \
             which mlx-lm downloads into the run's isolated cache",
        ));
    }
    Ok(Draft {
        spec: spec.to_string(),
        load: spec.to_string(),
        source: DraftSource::Hub,
        name: spec.to_string(),
        revision: None,
    })
}

/// A hub draft an earlier run captured in `cache`: its `refs/main` snapshot when nothing of
/// the repo is missing (no partial download, no dangling link), loaded from there so that the
/// run needs no network for it (ADR-022: after the first run, everything is local).
/// A workspace's own `.hf_cache` this user cannot write is read too (after the run's cache).
fn captured_draft(draft: &mut Draft, cache: &IsolatedCache) {
    let caches = std::iter::once(&cache.dir).chain(cache.read_only_source.as_ref());
    let found: Vec<_> = caches.map(runtime_cache::inspect).collect();
    let Some(repo) = found.iter().find_map(|rc| {
        rc.repos
            .iter()
            .find(|r| r.kind == "model" && r.repo_id == draft.load)
    }) else {
        return;
    };
    if !repo.problems.is_empty() {
        return;
    }
    if let Some(rev) = repo
        .revisions
        .iter()
        .find(|v| v.refs.iter().any(|r| r == "main"))
    {
        let snap = RepoDir(std::path::Path::new(&repo.dir)).snapshot(&rev.commit);
        if snap.join("config.json").is_file() {
            draft.load = snap.to_string_lossy().into_owned();
            draft.source = DraftSource::RuntimeCache;
            draft.revision = Some(rev.commit.clone());
        }
    }
}

fn cache_dir_for(a: &RunArgs, model: &ModelRef) -> IsolatedCache {
    if let Some(d) = &a.cache_dir {
        return IsolatedCache::given(std::path::absolute(d).unwrap_or_else(|_| d.clone()));
    }
    model.isolated_cache_for_writer()
}

fn media_error(e: crate::media::MediaError) -> CliError {
    let kind = match e.kind {
        crate::media::MediaErrorKind::Invalid => ErrorType::InvalidMedia,
        crate::media::MediaErrorKind::TooLarge => ErrorType::MediaTooLarge,
    };
    CliError::new(kind, e.message)
}

/// The capabilities as `list` shows them (`text-generation, chat`).
fn caps_of(d: &Described) -> String {
    let c: Vec<&str> = d.record.capabilities.iter().map(|c| c.as_str()).collect();
    if c.is_empty() {
        "none".into()
    } else {
        c.join(", ")
    }
}

/// A refusal of the core rule ([`capability`]) in `run`'s words (a model's health is worded
/// by [`gate`], which knows the hint to give).
fn refused(r: Refusal, d: &Described) -> CliError {
    let spec = d.model.spec();
    let incompatible = |why: String| CliError::new(ErrorType::ModelIncompatible, why);
    let cannot_run = |why: &str| incompatible(format!("{spec} cannot run with mlx-lm: {why}"));
    match r {
        Refusal::Unhealthy { reason, .. } => CliError::new(
            ErrorType::ModelUnhealthy,
            format!("{spec} is unhealthy: {reason}"),
        )
        .hint("run `mlxfs health MODEL` for details"),
        Refusal::Incompatible(why) => cannot_run(&why),
        Refusal::NeedsForce(reason) => cannot_run(&format!(
            "{reason} (safetensors without MLX markers: no `mlx` tag in README.md, no \
             `quantization` in config.json); run it anyway with --force, or convert it with \
             `mlxfs convert` (e.g. --dtype, --quantize)"
        ))
        .hint(
            "mlx-lm reads safetensors checkpoints of the architectures it supports; the label \
             comes from mlx-knife's rules and stays as it is",
        ),
        Refusal::IncompatibleForced(why) => cannot_run(&format!("{why} (even with --force)")),
        Refusal::NoVision => incompatible(format!(
            "{spec} cannot take images: it has no `vision` capability (its capabilities: {})",
            caps_of(d)
        ))
        .hint("`mlxfs list` marks vision models `+vision`"),
        Refusal::TooManyImages { given } => CliError::new(
            ErrorType::InvalidMedia,
            format!(
                "{given} images given; at most {} per run",
                crate::media::MAX_IMAGES
            ),
        ),
        Refusal::NoAudio | Refusal::NotSpeech => incompatible(format!(
            "{spec} cannot take audio: it has no `audio` capability (its capabilities: {})",
            caps_of(d)
        ))
        .hint("`mlxfs list` marks speech models `+audio`"),
        Refusal::AudioInChat => incompatible(format!(
            "{spec} takes audio inside a multimodal chat, which mlxfs does not run yet: \
             --audio runs speech-to-text models (Whisper)"
        )),
        Refusal::UnsupportedLayout(why) => incompatible(format!(
            "{spec} is a speech model mlxfs cannot run: mlxfs runs Whisper checkpoints in \
             mlx-whisper's layout (the mlx-community/whisper-* conversions), and {why}"
        )),
        Refusal::CannotTranslate => incompatible(format!(
            "{spec} cannot translate: English-only and turbo Whisper models only transcribe \
             (no `audio-translate-en` capability)"
        ))
        .hint("drop --translate, or use a multilingual Whisper"),
        Refusal::SpeechNeedsAudio => incompatible(format!(
            "{spec} is a speech-to-text model: give it --audio FILE (a prompt is optional)"
        ))
        .hint("mlxfs run MODEL --audio clip.wav [--language en] [--translate]"),
    }
}

/// The backend for this model and these inputs ([`capability::accepts`]), or a refusal before
/// any Python starts, media files that are not what they must be (by their bytes) or too
/// large included.
fn choose_backend(
    d: &Described,
    images: &[PathBuf],
    audio: Option<&std::path::Path>,
    translate: bool,
) -> Result<runtime::Backend, CliError> {
    let inputs = capability::Inputs {
        images: images.len(),
        audio: audio.is_some(),
        translate,
    };
    let modality =
        capability::accepts(&d.record, &d.model.path, &inputs).map_err(|r| refused(r, d))?;
    for i in images {
        crate::media::check_image_file(i).map_err(media_error)?;
    }
    if let Some(file) = audio {
        crate::media::check_audio_file(file).map_err(media_error)?;
    }
    Ok(backend_for(modality))
}

fn read_prompt(a: &RunArgs) -> Result<String, CliError> {
    let p = match &a.prompt_text {
        Some(p) => p.clone(),
        None => a.prompt.join(" "),
    };
    // Speech to text: the prompt is optional (Whisper's initial prompt).
    if a.audio.is_some() && p.trim().is_empty() {
        return Ok(String::new());
    }
    if p == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| {
            CliError::new(ErrorType::InvalidPrompt, format!("cannot read stdin: {e}"))
        })?;
        // As for a prompt given as words: nothing to generate from is refused.
        if s.trim().is_empty() && a.audio.is_none() {
            return Err(CliError::new(
                ErrorType::InvalidPrompt,
                "the prompt read from stdin is empty",
            )
            .hint("echo \"your prompt\" | mlxfs run MODEL -"));
        }
        return Ok(s);
    }
    if p.trim().is_empty() {
        return Err(CliError::new(ErrorType::InvalidPrompt, "no prompt given")
            .hint("mlxfs run MODEL \"your prompt\" (or `-` to read it from stdin)"));
    }
    Ok(p)
}

/// The token file Python must be told about (`HF_TOKEN_PATH`) once its HF_HOME is isolated:
/// the user's, where huggingface_hub would have read it; None when `HF_TOKEN` or
/// `HF_TOKEN_PATH` is set (they pass to Python as they are).
pub fn python_token_file() -> Option<PathBuf> {
    (crate::env::var(crate::env::HF_TOKEN).is_none()
        && crate::env::var(crate::env::HF_TOKEN_PATH).is_none())
    .then(crate::hub::client::token_file)
    .flatten()
}

pub fn run(a: &RunArgs, loc: &Locations, json_mode: bool) -> Result<Output, CliError> {
    let start = Instant::now();
    let gated = gate(a, loc)?;
    let mut draft = match &a.draft_model {
        Some(spec) => Some(resolve_draft(spec, loc, a.force)?),
        None => None,
    };
    let prompt = read_prompt(a)?;
    let cache = isolated_cache(a, &gated.model)?;
    let env: PythonEnv = runtime::python::find(a.python.as_deref())?;
    prepare_cache(a, &cache)?;
    if let Some(d) = &mut draft
        && d.source == DraftSource::Hub
    {
        captured_draft(d, &cache);
    }
    let before = runtime::snapshot(&cache);

    let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    let req = GenRequest {
        backend: gated.backend,
        images: a.images.iter().map(absolute).collect(),
        audio: a.audio.as_ref().map(absolute),
        language: a.language.clone(),
        translate: gated.translate,
        model_path: gated.weights.clone(),
        prompt,
        max_tokens: a.max_tokens.unwrap_or(runtime::defaults::MAX_TOKENS),
        max_tokens_explicit: a.max_tokens.is_some(),
        temperature: a.temperature,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty.filter(|r| *r != 1.0),
        seed: a.seed,
        chat_template: !a.no_chat_template,
        draft_model: draft.as_ref().map(|d| d.load.clone()),
        num_draft_tokens: a.num_draft_tokens,
        context_length: gated.d.record.context_length,
    };

    let sink = StreamSink::new(start, !a.no_stream && !json_mode);
    let watch = sink.watch(json_mode);
    let outcome = runtime::generate(&env, &req, a.subprocess, sink.handler());
    drop(watch);
    let outcome = outcome?;
    let mut s = sink.finish();
    // What Python printed, shown with any error from here on.
    let with_output = |mut e: CliError| {
        if !outcome.output.is_empty() {
            e.fields.push(("python_output", outcome.output.json()));
        }
        e
    };
    let total = start.elapsed().as_secs_f64();
    let mut report = runtime::cache_report(&cache, &before);
    arrived(&mut report, &cache);
    if let Some(e) = &s.stdout_error {
        exit_on_write_error(e);
    }
    if let Some((kind, message)) = &s.error {
        // The Python side names its errors; an unknown name is a failed generation.
        let (kind, message, hint) = runtime::reported_error(&env, kind, message);
        let mut err = CliError::new(kind, message);
        err.hint = hint;
        return Err(with_output(err));
    }
    let Some(done) = s.done.take() else {
        // Python reported neither a result nor an error (the subprocess's exit is checked by
        // the runtime; this is the embedded interpreter returning early).
        return Err(with_output(CliError::new(
            ErrorType::GenerationFailed,
            "generation ended without a result",
        )));
    };
    let ran = Ran {
        done,
        sink: s,
        total,
        report,
        mode: outcome.mode,
        why_not_embedded: outcome.why_not_embedded,
    };
    if !json_mode {
        summary(&ran, &gated, draft.as_ref(), sink.stream);
    }
    let data = data(a, &ran, &gated, draft.as_ref(), &req);
    // `interrupted` runs exit 130, like other programs stopped by Ctrl-C.
    let interrupted = ran.done.finish_reason == "interrupted";
    Ok(Output::new(data, String::new()).code(if interrupted { 130 } else { 0 }))
}

/// The model of a run as the gate let it through.
struct Gated {
    model: ModelRef,
    /// Where its weights are read (the mount folder for a path inside an mlxfs mount).
    weights: PathBuf,
    d: Described,
    backend: runtime::Backend,
    translate: bool,
}

/// Everything about the model checked before any Python starts, in this order: found,
/// healthy (or forced past a stale index), runnable ([`capability::runnable`]), and able to
/// take what it is given ([`capability::accepts`], the media files by their bytes).
fn gate(a: &RunArgs, loc: &Locations) -> Result<Gated, CliError> {
    let (model, weights) = locate(&a.model, loc)?;
    let d = describe(&model);
    match capability::healthy_enough(&d, a.force) {
        Ok(None) => {}
        Ok(Some(reason)) => crate::note!(
            "warning: {} has a stale index ({reason}); running it anyway (--force)",
            model.spec()
        ),
        Err(Refusal::Unhealthy {
            reason,
            stale_index: true,
        }) => {
            return Err(CliError::new(
                ErrorType::ModelUnhealthy,
                format!("{} is unhealthy: {reason}", model.spec()),
            )
            .hint(format!(
                "its weights are whole: repair the index with `mlxfs convert {0} {0}-fixed \
                 --repair-index`, or run it as it is with --force (mlx-lm reads the shards, \
                 not the index)",
                model.spec()
            )));
        }
        Err(r) => return Err(refused(r, &d)),
    }
    capability::runnable(&d, a.force).map_err(|r| refused(r, &d))?;
    let translate = a.translate.is_some();
    let backend = choose_backend(&d, &a.images, a.audio.as_deref(), translate)?;
    Ok(Gated {
        model,
        weights,
        d,
        backend,
        translate,
    })
}

/// The run's isolated cache (`--workspace-cache`, else the model's own), refused when the
/// model's own is a link or a file: a workspace's `.hf_cache` must be its own folder, or the
/// runtime's downloads would land somewhere else (the shared cache, another disk).
fn isolated_cache(a: &RunArgs, model: &ModelRef) -> Result<IsolatedCache, CliError> {
    let cache = cache_dir_for(a, model);
    if a.cache_dir.is_none()
        && let Ok(md) = std::fs::symlink_metadata(&cache)
        && !md.is_dir()
    {
        return Err(CliError::new(
            ErrorType::CacheDirFailed,
            format!(
                "{} is {}, not a folder: the isolated cache must be a folder of its own",
                cache.display(),
                if md.file_type().is_symlink() {
                    "a link"
                } else {
                    "a file"
                }
            ),
        )
        .hint("Remove it (the isolated cache is made anew), or give --workspace-cache DIR."));
    }
    Ok(cache)
}

/// The isolated cache in place before the interpreter (or subprocess) starts: its folder
/// made, and every cache variable of this process pointed at it.
fn prepare_cache(a: &RunArgs, cache: &IsolatedCache) -> Result<(), CliError> {
    std::fs::create_dir_all(&**cache).map_err(|e| {
        CliError::new(
            ErrorType::CacheDirFailed,
            format!("cannot create {}: {e}", cache.display()),
        )
        .hint(
            "Give a folder you may write with --workspace-cache DIR (or set XDG_STATE_HOME \
             for mlxfs's state folder).",
        )
    })?;
    // The token stays the user's (it is only read: nothing logs in or out during a run).
    let token_file = python_token_file();
    for (var, value) in runtime::isolated_env(cache, a.offline, token_file.as_deref()) {
        crate::env::set_before_threads(var, value);
    }
    Ok(())
}

/// What a run's events left.
#[derive(Default)]
struct Seen {
    env: runtime::Env,
    done: Option<Generated>,
    error: Option<(String, String)>,
    /// Seconds from the start to the first token.
    first_token: Option<f64>,
    /// Text went to stdout.
    streamed: bool,
    /// Writing to stdout failed (a closed pipe): generation was stopped.
    stdout_error: Option<std::io::Error>,
}

/// Where a run's events go: the tokens to stdout as they come (when streaming), the rest kept
/// for the summary and the JSON.
struct StreamSink {
    seen: Arc<Mutex<Seen>>,
    start: Instant,
    /// Tokens are written as they come (not `--no-stream`, not `--json`).
    stream: bool,
}

impl StreamSink {
    fn new(start: Instant, stream: bool) -> StreamSink {
        StreamSink {
            seen: Arc::new(Mutex::new(Seen::default())),
            start,
            stream,
        }
    }

    /// The handler the runtime calls with each event.
    fn handler(&self) -> runtime::Handler {
        let (seen, start, stream) = (self.seen.clone(), self.start, self.stream);
        Arc::new(Mutex::new(move |ev: Event| {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            match ev {
                Event::Env(v) => s.env = *v,
                Event::Token(t) => {
                    if s.first_token.is_none() {
                        s.first_token = Some(start.elapsed().as_secs_f64());
                    }
                    if stream && s.stdout_error.is_none() {
                        // Through runtime::Stdout: during an embedded run fd 1 captures what
                        // the libraries print.
                        match runtime::Stdout.write_all(t.as_bytes()) {
                            Ok(()) => s.streamed = true,
                            Err(e) => {
                                // Nobody reads any more: stop after this token.
                                runtime::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
                                s.stdout_error = Some(e);
                            }
                        }
                    }
                }
                Event::Done(d) => {
                    if let Done::Generated(v) = d {
                        s.done = Some(*v);
                    }
                }
                Event::Error { kind, message } => s.error = Some((kind, message)),
                Event::Progress(_) => {}
            }
        }))
    }

    /// Ctrl-C, SIGTERM or SIGHUP stop the run wherever it is: Python answers `interrupted`
    /// where it can, and if it has not within RUN_GRACE (a load, a long prompt step, a read
    /// that never returns), the run ends anyway with these last words (runtime::stop).
    fn watch(&self, json_mode: bool) -> runtime::stop::WatchGuard {
        let seen = self.seen.clone();
        runtime::stop::watch(runtime::stop::RUN_GRACE, move || {
            let streamed = seen.try_lock().map_or(true, |s| s.streamed);
            if streamed {
                let _ = runtime::Stdout.write_all(b"\n");
            }
            let err = abandoned_error();
            if json_mode {
                super::output::print_json(&super::output::envelope(
                    Some("run"),
                    super::output::Order::DataFirst,
                    Err(&err),
                ));
            } else {
                super::output::print_human_error("run", &err);
            }
        })
    }

    /// What the events left once Python returned. Stopped by a signal, the run was
    /// interrupted whatever Python managed to answer (an error the interrupt itself caused,
    /// or no answer at all, is no failure).
    fn finish(&self) -> Seen {
        let mut s = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        if runtime::stop::requested() && (s.done.is_none() || s.error.is_some()) {
            s.error = None;
            s.done = Some(Generated::interrupted());
        }
        s
    }
}

/// A run Python finished.
struct Ran {
    done: Generated,
    sink: Seen,
    total: f64,
    /// The isolated cache's report (`runtime::cache_report`, with what arrived).
    report: Value,
    mode: runtime::Mode,
    why_not_embedded: Option<String>,
}

/// The human summary on stderr (the text itself went to stdout): the speeds or the audio, the
/// draft's share, the cache report.
fn summary(ran: &Ran, gated: &Gated, draft: Option<&Draft>, stream: bool) {
    let done = &ran.done;
    if !stream {
        super::output::emit(&done.text);
    } else if ran.sink.streamed {
        super::output::emit("");
    }
    if let Some(why) = &ran.why_not_embedded {
        crate::note!("note: ran in a subprocess ({why})");
    }
    if gated.backend == runtime::Backend::MlxWhisper {
        crate::note!(
            "audio: {:.1} s, language {}, {} segment(s), {} tokens | {} | total {:.2}s",
            done.audio_seconds
                .as_ref()
                .and_then(serde_json::Number::as_f64)
                .unwrap_or(0.0),
            one_line(done.language.as_deref().unwrap_or("?")),
            done.segments.as_ref().map_or(0, Vec::len),
            done.generation_tokens,
            if gated.translate {
                "translated"
            } else {
                "transcribed"
            },
            ran.total
        );
    } else {
        crate::note!(
            "prompt: {} tokens, {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s | first token {:.2}s, total {:.2}s",
            done.prompt_tokens,
            done.prompt_tps.as_f64().unwrap_or(0.0),
            done.generation_tokens,
            done.generation_tps.as_f64().unwrap_or(0.0),
            ran.sink.first_token.unwrap_or(ran.total),
            ran.total
        );
    }
    if let (Some(d), Some(n)) = (draft, done.draft_tokens) {
        crate::note!(
            "draft {} ({}): {n} of {} tokens proposed by the draft and accepted",
            one_line(&d.name),
            d.source.as_str(),
            done.generation_tokens
        );
    }
    crate::note!("{}", describe_report(&ran.report));
    if done.finish_reason == "interrupted" {
        crate::note!("interrupted");
    }
}

/// The `data` of `run --json`.
fn data(a: &RunArgs, ran: &Ran, gated: &Gated, draft: Option<&Draft>, req: &GenRequest) -> Value {
    let (done, env) = (&ran.done, &ran.sink.env);
    let mut rec = show_model(&gated.d);
    if let Value::Object(o) = &mut rec {
        o.insert("weights_path".into(), json!(gated.weights));
    }
    json!({
        "text": done.text,
        "prompt_tokens": done.prompt_tokens,
        "generation_tokens": done.generation_tokens,
        "prompt_tps": done.prompt_tps,
        "generation_tps": done.generation_tps,
        "finish_reason": done.finish_reason,
        "chat_template": done.chat_template,
        "forced": a.force && !gated.d.record.runtime_compatible,
        "backend": gated.backend.as_str(),
        "images": req.images,
        "audio": req.audio.as_ref().map(|p| json!({
            "path": p,
            "seconds": done.audio_seconds,
            "decoder": done.decoder,
            "task": if gated.translate { "translate" } else { "transcribe" },
        })),
        "language": done.language,
        "segments": done.segments,
        "draft": draft.map(|dr| json!({
            "spec": dr.spec,
            "name": dr.name,
            "source": dr.source.as_str(),
            "path": dr.load,
            "revision": dr.revision,
            "num_draft_tokens": a.num_draft_tokens,
            "accepted_tokens": done.draft_tokens,
        })),
        "timings": {"first_token_s": ran.sink.first_token, "total_s": ran.total},
        "model": rec,
        "cache": ran.report,
        "python": {
            "mode": ran.mode.as_str(),
            "executable": env.executable,
            "prefix": env.prefix,
            "version": env.python,
            "hf_home": env.hf_home,
            "hub_cache": env.hub_cache,
            "caches": env.caches,
            "offline": env.offline,
            "blas": env.blas,
            "why_not_embedded": ran.why_not_embedded,
        },
    })
}

/// The error of a run abandoned after Ctrl-C/SIGTERM: Python did not stop in time.
fn abandoned_error() -> CliError {
    CliError::new(
        ErrorType::Interrupted,
        format!(
            "interrupted: Python did not stop within {} s of the signal (loading the model, a \
             long step of the prompt, or a read that does not return); the run was ended",
            runtime::stop::RUN_GRACE.as_secs()
        ),
    )
}

/// Name what arrived: the hub repos of the isolated cache with files the run added (each
/// with its revisions), and the cache's offline-readiness after the run.
fn arrived(report: &mut Value, cache: &IsolatedCache) {
    let rc = runtime_cache::inspect(cache);
    let cache = &cache.dir;
    let added: Vec<String> = report["added"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut repos = Vec::new();
    for r in &rc.repos {
        let rel = std::path::Path::new(&r.dir)
            .strip_prefix(cache)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!("{rel}/");
        let files = added.iter().filter(|p| p.starts_with(&prefix)).count();
        if files > 0 {
            repos.push(json!({
                "repo_id": r.repo_id,
                "kind": r.kind,
                "revisions": r.revisions.iter().map(|v| json!({"commit": v.commit, "refs": v.refs})).collect::<Vec<_>>(),
                "files_added": files,
            }));
        }
    }
    if let Value::Object(o) = report {
        o.insert("location".into(), json!(rc.location));
        o.insert(
            "location_reason".into(),
            json!(rc.location_reason.flatten()),
        );
        o.insert("arrived".into(), Value::Array(repos));
        o.insert("offline_ready".into(), json!(rc.offline_ready));
        o.insert("problems".into(), json!(rc.problems));
    }
}

fn describe_report(r: &Value) -> String {
    let dir = r["dir"].as_str().unwrap_or("?");
    let added = r["added"].as_array().cloned().unwrap_or_default();
    // Why the cache is not the model's usual one (a workspace this user cannot write).
    let why = r["location_reason"]
        .as_str()
        .map(|w| format!("\n  {}", one_line(w)))
        .unwrap_or_default();
    if added.is_empty() {
        return format!("cache {}: nothing added{why}", one_line(dir));
    }
    let mut s = format!(
        "cache {}: {} file(s) added, {}{why}",
        one_line(dir),
        added.len(),
        human_bytes(r["bytes_added"].as_u64().unwrap_or(0))
    );
    for repo in r["arrived"].as_array().into_iter().flatten() {
        let revs: Vec<String> = repo["revisions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| crate::text::short_rev(v["commit"].as_str().unwrap_or("?")).to_string())
            .collect();
        s.push_str(&format!(
            "\n  arrived: {} {}@{} ({} file(s))",
            repo["kind"].as_str().unwrap_or("model"),
            one_line(repo["repo_id"].as_str().unwrap_or("?")),
            one_line(&revs.join(",")),
            repo["files_added"]
        ));
    }
    for p in r["problems"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "\n  problem: {}",
            one_line(p.as_str().unwrap_or("?"))
        ));
    }
    for f in added.iter().take(20) {
        s.push_str(&format!(
            "\n  {} ({})",
            one_line(f["path"].as_str().unwrap_or("?")),
            human_bytes(f["size"].as_u64().unwrap_or(0))
        ));
    }
    s
}
