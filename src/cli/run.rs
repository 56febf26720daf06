//! `mlxfs run MODEL [PROMPT]`: generate text with mlx-lm, reading the weights from the path
//! given (through the mount for a mount path), under an isolated Hugging Face cache.

use clap::Args;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::output::CliError;
use crate::catalog::record::{describe, show_model};
use crate::catalog::resolve::{self, is_explicit_path};
use crate::catalog::{Locations, ModelRef, Source, dir_from_repo_id};
use crate::runtime::{self, Event, GenRequest, PythonEnv, RunError};

#[derive(Args, Debug)]
#[command(after_help = "\
Before Python starts, HF_HOME points at an isolated cache: <workspace>/.hf_cache for a
workspace, a per-model folder under mlxfs's state directory for a hub model, or
--cache-dir. Whatever mlx-lm, transformers or huggingface_hub fetch at run time lands
there (reported after the run), never in your shared ~/.cache/huggingface.

Python: --python, MLXFS_PYTHON, VIRTUAL_ENV, then python3 on PATH (a venv folder or an
interpreter). It needs mlx and mlx-lm: pip install \"mlx[cpu]\" mlx-lm (Linux) or mlx-lm
(macOS). When the venv's Python is not the one mlxfs embeds, the same code runs in a
subprocess of that Python.

Examples:
  mlxfs run ./my-ws \"Explain FUSE\"
  mlxfs run ~/models-mnt/org/repo --max-tokens 64 --seed 1 \"Hello\"
  echo \"Summarise this\" | mlxfs run qwen -")]
pub struct RunArgs {
    /// A model name, a path, or a path inside an mlxfs mount
    pub model: String,
    /// The prompt; `-` reads it from stdin
    pub prompt: Vec<String>,
    /// The prompt (instead of the positional words)
    #[arg(long = "prompt", value_name = "TEXT", conflicts_with = "prompt")]
    pub prompt_text: Option<String>,
    #[arg(long = "max-tokens", default_value_t = 256)]
    pub max_tokens: u32,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long = "top-p", default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long = "repetition-penalty", default_value_t = 1.1)]
    pub repetition_penalty: f64,
    /// Random seed (same seed, same model, same output)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Send the prompt as is, without the model's chat template
    #[arg(long)]
    pub no_chat_template: bool,
    /// Print the text at the end instead of streaming it
    #[arg(long)]
    pub no_stream: bool,
    /// The Python environment (a venv folder or an interpreter)
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Use this folder as HF_HOME instead of the model's own cache
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Forbid downloads (HF_HUB_OFFLINE=1)
    #[arg(long)]
    pub offline: bool,
    /// Run Python in a subprocess even when the embedded interpreter could be used
    #[arg(long)]
    pub subprocess: bool,
}

/// The model behind MODEL, and the folder to read weights from (the mount folder itself for a
/// path inside an mlxfs mount: the weights are read through it).
fn locate(spec: &str, loc: &Locations) -> Result<(ModelRef, PathBuf), CliError> {
    let model = resolve::resolve(spec, loc)?;
    if is_explicit_path(spec)
        && let Ok(canon) = std::fs::canonicalize(resolve::expand_user(spec))
        && resolve::mounted_model_path(&canon).is_some()
    {
        return Ok((model, canon));
    }
    let path = model.path.clone();
    Ok((model, path))
}

fn cache_dir_for(a: &RunArgs, model: &ModelRef) -> PathBuf {
    if let Some(d) = &a.cache_dir {
        return std::path::absolute(d).unwrap_or_else(|_| d.clone());
    }
    match model.source {
        Source::Workspace => model.path.join(".hf_cache"),
        Source::Cache => crate::state::dir_or_temp()
            .join("hf-cache")
            .join(dir_from_repo_id(&model.name)),
    }
}

fn read_prompt(a: &RunArgs) -> Result<String, CliError> {
    let p = match &a.prompt_text {
        Some(p) => p.clone(),
        None => a.prompt.join(" "),
    };
    if p == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::new("invalid_prompt", format!("cannot read stdin: {e}")))?;
        return Ok(s);
    }
    if p.trim().is_empty() {
        return Err(CliError::new("invalid_prompt", "no prompt given")
            .hint("mlxfs run MODEL \"your prompt\" (or `-` to read it from stdin)"));
    }
    Ok(p)
}

impl From<RunError> for CliError {
    fn from(e: RunError) -> CliError {
        let mut c = CliError::new(&e.kind, e.message);
        c.hint = e.hint;
        c
    }
}

fn set_env(k: &str, v: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: called before any thread of this process is started (the interpreter, the
    // subprocess and the generation all come later).
    unsafe { std::env::set_var(k, v) };
}

pub fn run(a: &RunArgs, loc: &Locations, json_mode: bool) -> Result<Value, CliError> {
    let start = Instant::now();
    let (model, weights) = locate(&a.model, loc)?;
    let d = describe(&model);
    if d.record.health != "healthy" {
        return Err(CliError::new(
            "model_unhealthy",
            format!(
                "{} is unhealthy: {}",
                model.spec(),
                d.record.reason.clone().unwrap_or_default()
            ),
        )
        .hint("run `mlxfs health MODEL` for details"));
    }
    if !d.record.runtime_compatible {
        return Err(CliError::new(
            "model_incompatible",
            format!(
                "{} cannot run with mlx-lm: {}",
                model.spec(),
                d.record.reason.clone().unwrap_or_default()
            ),
        ));
    }
    let prompt = read_prompt(a)?;
    let env: PythonEnv = runtime::python::find(a.python.as_deref())?;

    // The isolated cache, in place before the interpreter (or subprocess) starts.
    let cache = cache_dir_for(a, &model);
    std::fs::create_dir_all(&cache).map_err(|e| {
        CliError::new(
            "cache_dir_failed",
            format!("cannot create {}: {e}", cache.display()),
        )
    })?;
    set_env("HF_HOME", &cache);
    set_env("HF_HUB_CACHE", cache.join("hub"));
    set_env("HF_XET_CACHE", cache.join("xet"));
    if a.offline {
        set_env("HF_HUB_OFFLINE", "1");
        set_env("TRANSFORMERS_OFFLINE", "1");
    }
    let before = runtime::snapshot(&cache);

    let req = GenRequest {
        model_path: weights.clone(),
        prompt,
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        repetition_penalty: (a.repetition_penalty != 1.0).then_some(a.repetition_penalty),
        seed: a.seed,
        chat_template: !a.no_chat_template,
    };

    struct State {
        env: Value,
        done: Value,
        error: Option<(String, String)>,
        first_token: Option<f64>,
        streamed: bool,
    }
    let state = Arc::new(Mutex::new(State {
        env: Value::Null,
        done: Value::Null,
        error: None,
        first_token: None,
        streamed: false,
    }));
    let stream = !a.no_stream && !json_mode;
    let st = state.clone();
    let handler: runtime::Handler = Arc::new(Mutex::new(move |ev: Event| {
        let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            Event::Env(v) => s.env = v,
            Event::Token(t) => {
                if s.first_token.is_none() {
                    s.first_token = Some(start.elapsed().as_secs_f64());
                }
                if stream {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(t.as_bytes());
                    let _ = out.flush();
                    s.streamed = true;
                }
            }
            Event::Done(v) => s.done = v,
            Event::Error { kind, message } => s.error = Some((kind, message)),
        }
    }));

    runtime::install_stop_handlers();
    let (mode, why_not_embedded) = runtime::generate(&env, &req, a.subprocess, handler)?;
    let total = start.elapsed().as_secs_f64();
    let report = runtime::cache_report(&cache, &before);
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((kind, message)) = &s.error {
        let mut err = CliError::new(kind, message.clone());
        if kind == "missing_dependency" {
            err.message = format!(
                "{} cannot import mlx / mlx-lm: {message}",
                env.python.display()
            );
            err.hint = Some(runtime::install_hint(&env));
        }
        return Err(err);
    }
    if s.done.is_null() {
        return Err(CliError::new(
            "generation_failed",
            "generation ended without a result",
        ));
    }
    let done = &s.done;
    if !json_mode {
        if !stream {
            println!("{}", done["text"].as_str().unwrap_or_default());
        } else if s.streamed {
            println!();
        }
        if let Some(why) = &why_not_embedded {
            eprintln!("note: ran in a subprocess ({why})");
        }
        eprintln!(
            "prompt: {} tokens, {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s | first token {:.2}s, total {:.2}s",
            done["prompt_tokens"],
            done["prompt_tps"].as_f64().unwrap_or(0.0),
            done["generation_tokens"],
            done["generation_tps"].as_f64().unwrap_or(0.0),
            s.first_token.unwrap_or(total),
            total
        );
        eprintln!("{}", describe_report(&report));
        if done["finish_reason"] == "interrupted" {
            eprintln!("interrupted");
        }
    }
    let mut rec = show_model(&d);
    if let Value::Object(o) = &mut rec {
        o.insert("weights_path".into(), json!(weights));
    }
    Ok(json!({
        "text": done["text"],
        "prompt_tokens": done["prompt_tokens"],
        "generation_tokens": done["generation_tokens"],
        "prompt_tps": done["prompt_tps"],
        "generation_tps": done["generation_tps"],
        "finish_reason": done["finish_reason"],
        "chat_template": done["chat_template"],
        "timings": {"first_token_s": s.first_token, "total_s": total},
        "model": rec,
        "cache": report,
        "python": {
            "mode": mode.as_str(),
            "executable": s.env["executable"],
            "prefix": s.env["prefix"],
            "version": s.env["python"],
            "hf_home": s.env["hf_home"],
            "hub_cache": s.env["hub_cache"],
            "offline": s.env["offline"],
            "why_not_embedded": why_not_embedded,
        },
    }))
}

fn describe_report(r: &Value) -> String {
    let dir = r["dir"].as_str().unwrap_or("?");
    let added = r["added"].as_array().cloned().unwrap_or_default();
    if added.is_empty() {
        return format!("cache {dir}: nothing added");
    }
    let mut s = format!(
        "cache {dir}: {} file(s) added, {}",
        added.len(),
        super::output::humanize_size(r["bytes_added"].as_u64().unwrap_or(0))
    );
    for f in added.iter().take(20) {
        s.push_str(&format!(
            "\n  {} ({})",
            f["path"].as_str().unwrap_or("?"),
            super::output::humanize_size(f["size"].as_u64().unwrap_or(0))
        ));
    }
    s
}

/// `interrupted` runs exit 130, like other programs stopped by Ctrl-C.
pub fn exit_code(data: &Value) -> i32 {
    if data["finish_reason"] == "interrupted" {
        130
    } else {
        0
    }
}
