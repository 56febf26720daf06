//! `mlxfs convert SOURCE TARGET MODE`: a workspace → a new managed workspace
//! (`crate::convert`; the weights through `crate::runtime::convert`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Args;
use serde_json::{Map, Value, json};

use super::output::{CliError, Output};
use crate::catalog::record::describe;
use crate::catalog::{Locations, Source, resolve};
use crate::convert::{
    self, ConvertError, Converted, Engine, EngineReport, Flags, Job, Mode, Progress,
};
use crate::error::ErrorType;
use crate::hub::clone::{check_target_as, target_for};
use crate::runtime::{self, Event, PythonEnv, convert::ConvertRequest};
use crate::text::{human_bytes, one_line};

#[derive(Args, Debug)]
#[command(after_help = "\
Reads a workspace and writes a NEW managed workspace; the source is never modified and the
hub cache is never touched (a hub model must be cloned first: `mlxfs clone org/name`).
Exactly one mode:

  --repair-index        copy the workspace's top-level files and rebuild
                        model.safetensors.index.json from the shards' own headers (fixes
                        an index that names shards which do not exist, mlx-vlm #624)
  --quantize BITS       quantize with mlx-lm (2, 3, 4, 6 or 8 bits; --q-group-size N,
                        default 64; --q-mode affine|mxfp4|nvfp4|mxfp8)
  --dtype T             cast the weights to float16, bfloat16 or float32 (mlx-lm's --dtype)
  --dequantize          turn a quantized model back into a float one (mlx-lm's -d)

The weight modes run mlx-lm's own conversion code (the Python environment of `run`, offline,
under an isolated cache of their own that goes with the staging folder), so the result is what `mlx_lm.convert` writes, tensor for
tensor — but shard by shard: each source shard's tensors are read, converted and written as
one output shard, then released, so memory stays near one shard, not the whole model.
Checkpoints whose config.json names a `model_file` (code that comes with the model) are
refused before anything is written.

TARGET: a path (`./models/x`, `/data/x`, `~/x`); a bare name goes under MLXK_WORKSPACE_HOME
(or the current folder when it is unset). It must not exist or be an empty folder, and may
not be in any Hugging Face cache (the hub cache, mlxfs's run caches, another cache: as
`mlxfs restore --help` says) or inside a model.

All or nothing: everything is written into a hidden staging folder next to TARGET, the
content hash and the sentinel (operation \"convert\", the source's provenance, the
parameters) are written, the health check runs, and only then is the folder renamed into
place. A failure or Ctrl-C leaves nothing at TARGET and says what happened; output shards a
weight conversion finished before Ctrl-C (or a full disk) are kept in the staging folder, and
running the same command again continues from them.

Examples:
  mlxfs clone mlx-community/Qwen3-0.6B-bf16          # → $MLXK_WORKSPACE_HOME/Qwen3-0.6B-bf16
  mlxfs convert Qwen3-0.6B-bf16 Qwen3-0.6B-4bit --quantize 4
  mlxfs convert ./vl-4bit ./vl-4bit-fixed --repair-index
  mlxfs convert my-ws my-ws-mxfp4 --quantize 4 --q-mode mxfp4
  mlxfs convert my-ws my-ws-f16 --dtype float16 --json
  mlxfs run Qwen3-0.6B-4bit \"Hello\"")]
pub struct ConvertArgs {
    /// The source workspace: a name under MLXK_WORKSPACE_HOME or a path (a folder in the
    /// current one needs no ./ unless a workspace has exactly its name)
    pub source: String,
    /// The new workspace (see below)
    pub target: String,
    /// Rebuild model.safetensors.index.json from the shards (copies the workspace)
    #[arg(long)]
    pub repair_index: bool,
    /// Quantize to BITS bits (2, 3, 4, 6, 8)
    #[arg(long, value_name = "BITS", allow_negative_numbers = true)]
    pub quantize: Option<i64>,
    /// Quantization group size [default: 64; mxfp4/mxfp8 32, nvfp4 16]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub q_group_size: Option<i64>,
    /// Quantization mode: affine, mxfp4, nvfp4 or mxfp8 [default: affine]
    #[arg(long, value_name = "MODE")]
    pub q_mode: Option<String>,
    /// Cast the weights to float16, bfloat16 or float32
    #[arg(long, value_name = "T")]
    pub dtype: Option<String>,
    /// Dequantize a quantized model
    #[arg(long)]
    pub dequantize: bool,
    /// Skip the health check of the result
    #[arg(long)]
    pub skip_health: bool,
    /// No progress
    #[arg(long, short)]
    pub quiet: bool,
    /// The Python environment (a venv folder or an interpreter); else MLXFS_PYTHON,
    /// VIRTUAL_ENV, then python3 on PATH
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Run Python in a subprocess even when the embedded interpreter could be used
    #[arg(long)]
    pub subprocess: bool,
    /// Largest output shard in bytes; a source shard whose output is larger is split
    /// [default: 5 GiB, as mlx-lm]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_shard_bytes: Option<u64>,
}

/// Ctrl-C / SIGTERM / SIGHUP: the conversion stops between two tensors (or two chunks of a
/// copy; an embedded interpreter gets a KeyboardInterrupt, which also breaks a read it is
/// blocked in), and the staging folder is removed (finished shards kept for a resume). A
/// second signal ends the process at once (the staging folder is removed by the next
/// conversion into the same target). `runtime::stop` has the handlers.
fn stop_on_interrupt() {
    runtime::stop::install();
}

/// Progress on a terminal: one line redrawn in place (label, bytes done of the total, rate),
/// notes above it. It writes to a copy of stderr taken before Python starts: during an
/// embedded conversion fd 2 is a pipe (what the libraries print is captured), and a bar drawn
/// there would be no terminal's. Not a terminal: the labels and notes as plain lines.
/// `--json`/`--quiet`: nothing.
struct Term {
    out: Option<Mutex<std::fs::File>>,
    tty: bool,
    state: Mutex<TermState>,
}

#[derive(Default)]
struct TermState {
    label: String,
    status: String,
    total: u64,
    done: u64,
    since: Option<std::time::Instant>,
    drawn: Option<std::time::Instant>,
    visible: bool,
}

impl Term {
    fn new(silent: bool) -> Term {
        use std::io::IsTerminal;
        use std::os::fd::AsFd;
        let out = (!silent)
            .then(|| std::io::stderr().as_fd().try_clone_to_owned().ok())
            .flatten()
            .map(std::fs::File::from);
        let tty = out.as_ref().is_some_and(|f| f.is_terminal());
        Term {
            out: out.map(Mutex::new),
            tty,
            state: Mutex::new(TermState::default()),
        }
    }

    fn write(&self, text: &str) {
        use std::io::Write;
        if let Some(f) = &self.out {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.write_all(text.as_bytes());
            let _ = f.flush();
        }
    }

    fn draw(&self, st: &mut TermState, force: bool) {
        if !self.tty || st.label.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        if !force
            && st
                .drawn
                .is_some_and(|t| now.duration_since(t).as_millis() < 100)
        {
            return;
        }
        st.drawn = Some(now);
        let secs = st
            .since
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let rate = if secs > 0.2 {
            format!(", {}/s", human_bytes((st.done as f64 / secs) as u64))
        } else {
            String::new()
        };
        let amount = if st.total > 0 {
            format!(
                "{} / {} ({:.0}%)",
                human_bytes(st.done),
                human_bytes(st.total),
                100.0 * st.done as f64 / st.total as f64
            )
        } else {
            human_bytes(st.done)
        };
        let status = if st.status.is_empty() {
            String::new()
        } else {
            format!(" — {}", st.status)
        };
        self.write(&format!("\r\x1b[2K{}: {amount}{rate}{status}", st.label));
        st.visible = true;
    }

    fn clear(&self, st: &mut TermState) {
        if st.visible {
            self.write("\r\x1b[2K");
            st.visible = false;
        }
    }
}

impl Progress for Term {
    fn start(&self, label: &str, bytes: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.clear(&mut st);
        *st = TermState {
            label: label.to_string(),
            total: bytes,
            since: Some(std::time::Instant::now()),
            ..TermState::default()
        };
        if self.tty {
            self.draw(&mut st, true);
        } else {
            self.write(&format!("{label}: {}\n", human_bytes(bytes)));
        }
    }
    fn advance(&self, n: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.done = st.done.saturating_add(n);
        self.draw(&mut st, false);
    }
    fn status(&self, text: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.status = text.to_string();
    }
    fn note(&self, line: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.clear(&mut st);
        self.write(&format!("{line}\n"));
        self.draw(&mut st, true);
    }
    fn finish(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.clear(&mut st);
        st.label.clear();
    }
    fn cancelled(&self) -> bool {
        runtime::stop::requested()
    }
}

/// The Python engine: convert.py through `runtime::convert`, its events on the bar.
struct PythonEngine {
    env: PythonEnv,
    subprocess: bool,
    max_shard_bytes: Option<u64>,
}

#[derive(Default)]
struct Seen {
    env: runtime::Env,
    done: Option<runtime::Converted>,
    error: Option<(String, String)>,
    shards: Vec<Value>,
}

impl Engine for PythonEngine {
    fn convert(
        &self,
        source: &Path,
        out: &Path,
        mode: &Mode,
        resume: bool,
        progress: &dyn Progress,
    ) -> Result<EngineReport, ConvertError> {
        let (bits, group_size, q_mode, dtype) = match mode {
            Mode::Quantize {
                bits,
                group_size,
                q_mode,
            } => (Some(*bits), Some(*group_size), Some(q_mode.as_str()), None),
            Mode::Dtype(d) => (None, None, None, Some(*d)),
            _ => (None, None, None, None),
        };
        let req = ConvertRequest {
            source: source.to_path_buf(),
            target: out.to_path_buf(),
            mode: mode.name(),
            bits,
            group_size,
            q_mode,
            dtype,
            max_shard_bytes: self.max_shard_bytes,
            resume,
        };
        // The bar is driven by the events: `plan` starts it, `progress` advances it.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let done_bytes = Arc::new(AtomicU64::new(0));
        // Tensors done, tensors in all, shards written, shards in all.
        let counts = Arc::new(Mutex::new((0u64, 0u64, 0usize, 0usize)));
        let notes: Arc<Mutex<Vec<(String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(Mutex::new(None::<(String, u64)>));
        let progress_ptr: &dyn Progress = progress;
        // The handler runs on this thread (embedded) or the reading thread of this call
        // (subprocess): it records, and the bar is fed after each event through the
        // shared state below.
        let (s2, d2, n2, st2, c2) = (
            seen.clone(),
            done_bytes.clone(),
            notes.clone(),
            started.clone(),
            counts.clone(),
        );
        let handler: runtime::Handler = Arc::new(Mutex::new(move |ev: Event| {
            let mut s = s2.lock().unwrap_or_else(|e| e.into_inner());
            match ev {
                Event::Env(v) => s.env = *v,
                Event::Done(d) => {
                    if let runtime::Done::Converted(v) = d {
                        s.done = Some(*v);
                    }
                }
                Event::Error { kind, message } => s.error = Some((kind, message)),
                Event::Progress(p) => match p {
                    runtime::Progress::Plan {
                        tensors,
                        bytes,
                        shards: n,
                    } => {
                        let mut c = c2.lock().unwrap_or_else(|e| e.into_inner());
                        c.1 = tensors;
                        c.3 = n;
                        *st2.lock().unwrap_or_else(|e| e.into_inner()) = Some((
                            format!(
                                "Converting {tensors} tensors into {n} shard{}",
                                if n == 1 { "" } else { "s" }
                            ),
                            bytes,
                        ));
                    }
                    runtime::Progress::Done { tensors, bytes } => {
                        d2.store(bytes, Ordering::SeqCst);
                        c2.lock().unwrap_or_else(|e| e.into_inner()).0 = tensors;
                    }
                    runtime::Progress::Shard { file, size, raw } => {
                        c2.lock().unwrap_or_else(|e| e.into_inner()).2 += 1;
                        n2.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((file, size));
                        s.shards.push(raw);
                    }
                },
                Event::Token(_) => {}
            }
        }));
        // A ticker on another thread moves the bar while Python works.
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let result = std::thread::scope(|scope| {
            let stop = stop_ticker.clone();
            let (d3, n3, st3, c3) = (
                done_bytes.clone(),
                notes.clone(),
                started.clone(),
                counts.clone(),
            );
            scope.spawn(move || {
                let mut shown = 0u64;
                let mut begun = false;
                loop {
                    let last = stop.load(Ordering::SeqCst);
                    if !begun
                        && let Some((label, bytes)) =
                            st3.lock().unwrap_or_else(|e| e.into_inner()).take()
                    {
                        progress_ptr.start(&label, bytes);
                        begun = true;
                    }
                    for (file, size) in n3.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                        progress_ptr.note(&format!("  wrote {file} ({})", human_bytes(size)));
                    }
                    let (t, tt, sh, tsh) = *c3.lock().unwrap_or_else(|e| e.into_inner());
                    if begun {
                        progress_ptr
                            .status(&format!("{t}/{tt} tensors, {sh}/{tsh} shards written"));
                    }
                    let now = d3.load(Ordering::SeqCst);
                    if now > shown {
                        progress_ptr.advance(now - shown);
                        shown = now;
                    }
                    if last {
                        if begun {
                            progress_ptr.finish();
                        }
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
            let r = runtime::convert::convert(&self.env, &req, self.subprocess, handler);
            stop_ticker.store(true, Ordering::SeqCst);
            r
        });
        let outcome = result.map_err(|e| {
            let mut c = ConvertError::new(e.kind.error_type(), e.message.clone());
            c.hint = e.hint.clone();
            if !e.output.is_empty() {
                c = c.field("python_output", e.output.json());
            }
            c
        })?;
        let s = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some((kind, message)) = s.error {
            if kind == "interrupted" || progress.cancelled() {
                return Err(ConvertError::interrupted());
            }
            let (t, message, hint) = runtime::reported_error(&self.env, &kind, &message);
            // `InvalidArgumentError`: a quantization of no layer, which the headers could not
            // tell (convert::check_weights), refused before anything was written.
            let t = if t == ErrorType::GenerationFailed {
                ErrorType::ConversionFailed
            } else {
                t
            };
            // mlx reports a short write as "[write] Unable to write N bytes"; with the disk
            // (nearly) full that is a full disk: say so, and keep the finished shards.
            let full = message.contains("No space left on device")
                || message.contains("[Errno 28]")
                || (message.contains("Unable to write")
                    && crate::sys::free_space(out).is_some_and(|f| f < 64 << 20));
            let (t, message, hint) = if full {
                (
                    ErrorType::DiskFull,
                    format!("The disk holding {} is full ({message})", out.display()),
                    Some(
                        "Free some space and run the same command again: the finished shards are kept"
                            .to_string(),
                    ),
                )
            } else {
                (t, message, hint)
            };
            let mut c = ConvertError::new(t, message);
            c.hint = hint;
            if !outcome.output.is_empty() {
                c = c.field("python_output", outcome.output.json());
            }
            return Err(c);
        }
        if progress.cancelled() {
            return Err(ConvertError::interrupted());
        }
        let Some(done) = s.done else {
            return Err(ConvertError::new(
                ErrorType::ConversionFailed,
                "the conversion ended without a result",
            )
            .field("python_output", outcome.output.json()));
        };
        let env = &s.env;
        let mut facts = Map::new();
        facts.insert("mlx".into(), json!(env.mlx));
        facts.insert("mlx_lm".into(), json!(env.mlx_lm));
        facts.insert("python_mode".into(), Value::from(outcome.mode.as_str()));
        facts.insert("python".into(), json!(env.python));
        facts.insert("executable".into(), json!(env.executable));
        facts.insert("hf_home".into(), json!(env.hf_home));
        if let Some(why) = outcome.why_not_embedded {
            facts.insert("why_not_embedded".into(), Value::from(why));
        }
        facts.insert("shards".into(), Value::Array(s.shards));
        facts.insert("tensors".into(), done.tensors);
        facts.insert("tensor_bytes".into(), done.bytes);
        facts.insert("quantization".into(), done.quantization);
        if let Some(layers) = done.quantized_layers {
            facts.insert("quantized_layers".into(), layers);
            facts.insert("unquantized".into(), done.unquantized);
        }
        facts.insert("peak_memory_gb".into(), done.peak_memory_gb);
        facts.insert("python_s".into(), done.seconds);
        facts.insert("python_phases".into(), done.phases);
        facts.insert("resumed_shards".into(), done.resumed_shards);
        Ok(EngineReport { facts })
    }
}

pub fn run(a: &ConvertArgs, loc: &Locations, json_mode: bool) -> Result<Output, CliError> {
    // 1. The mode (mlx-knife checks it first, before the paths).
    let mode = Mode::from_flags(&Flags {
        repair_index: a.repair_index,
        quantize: a.quantize,
        q_group_size: a.q_group_size,
        q_mode: a.q_mode.clone(),
        dtype: a.dtype.clone(),
        dequantize: a.dequantize,
    })?;
    for (role, v) in [("source", &a.source), ("target", &a.target)] {
        if v.trim().is_empty() {
            return Err(CliError::new(
                ErrorType::ValidationError,
                format!("Invalid {role} path: empty"),
            ));
        }
    }
    // 2. The source: a workspace, resolved once.
    let m = resolve::resolve_workspace_arg(&a.source, loc)?;
    if m.source != Source::Workspace {
        return Err(convert::cache_source_error(&m).into());
    }
    let d = describe(&m);
    convert::check_source(&d, &mode)?;
    convert::check_weights(&d, &mode)?;
    // 3. The target, by clone's rules.
    let home = loc
        .workspace_home
        .clone()
        .or_else(|| loc.workspace_home_set.clone());
    let example = format!("mlxfs convert {} ./{}-converted", a.source, m.short_name);
    let target = target_for(&m.short_name, Some(&a.target), home.as_deref(), &example)?;
    // The one rule of new workspaces (clone's and restore's too), in convert's words; the
    // hub cache first, as mlx-knife.
    use crate::catalog::target::{Misplaced, place};
    if let Err(
        Misplaced::HubCache { holds: false, .. }
        | Misplaced::RunCache { holds: false, .. }
        | Misplaced::CacheRepo { .. }
        | Misplaced::CacheRoot { .. },
    ) = place(&target, loc)
    {
        check_target_as(&target, home.as_deref(), loc, Some(&a.source))?;
    }
    convert::check_target_vs_source(&m.path, &target)?;
    check_target_as(&target, home.as_deref(), loc, Some(&a.source))?;

    // 4. Python (weight modes): the environment, the isolated cache, before any thread.
    let engine = if mode.converts_weights() {
        let env = runtime::python::find(a.python.as_deref())?;
        // The isolated cache of `run`, but the conversion's own: inside the staging folder
        // (removed with it), so that nothing the libraries might write there lands in the
        // source's `.hf_cache` or the user's shared cache. A local conversion needs no
        // download: offline.
        let cache = convert::staging_dir(&target).join("hf-cache");
        for (k, v) in runtime::isolated_env(&cache, true, None) {
            crate::env::set_before_threads(k, v);
        }
        Some(PythonEngine {
            env,
            subprocess: a.subprocess,
            max_shard_bytes: a.max_shard_bytes,
        })
    } else {
        None
    };
    stop_on_interrupt();
    let ui = Term::new(json_mode || a.quiet);
    let job = Job {
        source: d,
        target: target.clone(),
        mode,
        skip_health: a.skip_health,
    };
    let r = match &engine {
        Some(e) => convert::convert(&job, e, &ui),
        None => convert::convert(&job, &NoEngine, &ui),
    };
    ui.finish();
    let c = r.map_err(|e| {
        let mut e = CliError::from(e);
        if e.kind == ErrorType::Interrupted && !e.message.contains(" kept in ") {
            e.message = format!(
                "Interrupted: nothing was written to {}, and the source is unchanged",
                target.display()
            );
        }
        e
    })?;
    let data = data(a, &job, &c);
    let human = render(&job, &c);
    Ok(Output::new(data, human))
}

/// `--repair-index` needs no engine.
struct NoEngine;
impl Engine for NoEngine {
    fn convert(
        &self,
        _: &Path,
        _: &Path,
        _: &Mode,
        _: bool,
        _: &dyn Progress,
    ) -> Result<EngineReport, ConvertError> {
        Err(ConvertError::new(
            ErrorType::ConversionFailed,
            "no conversion engine",
        ))
    }
}

/// The `data` of `convert --json`: mlx-knife's keys first, then mlxfs's.
fn data(a: &ConvertArgs, job: &Job, c: &Converted) -> Value {
    let mut d = Map::new();
    d.insert(
        "source".into(),
        Value::from(job.source.model.path.to_string_lossy().into_owned()),
    );
    d.insert(
        "target".into(),
        Value::from(c.target.to_string_lossy().into_owned()),
    );
    d.insert("mode".into(), Value::from(job.mode.name()));
    d.insert("health_check".into(), Value::from(!a.skip_health));
    if let Some(w) = &c.warning {
        d.insert("warning".into(), Value::from(w.clone()));
    }
    d.insert("message".into(), Value::from(c.message.clone()));
    if let Mode::Quantize {
        bits, group_size, ..
    } = &job.mode
    {
        d.insert("bits".into(), json!(bits));
        d.insert("group_size".into(), json!(group_size));
    }
    if let Some(h) = &c.health {
        d.insert("health_status".into(), Value::from(h.status().as_str()));
        d.insert("health_reason".into(), Value::from(h.message().to_string()));
    }
    if let Some(h) = &c.content_hash {
        d.insert("content_hash".into(), Value::from(h.clone()));
    }
    if let Some(q) = c.engine.facts.get("quantized_layers") {
        d.insert("quantized_layers".into(), q.clone());
        d.insert(
            "unquantized".into(),
            c.engine
                .facts
                .get("unquantized")
                .cloned()
                .unwrap_or(json!([])),
        );
    }
    d.insert("parameters".into(), job.mode.parameters());
    d.insert("files".into(), json!(c.files));
    d.insert("size_bytes".into(), json!(c.bytes));
    d.insert("conversion".into(), c.conversion.clone());
    if !c.engine.facts.is_empty() {
        d.insert("engine".into(), Value::Object(c.engine.facts.clone()));
    }
    d.insert("timings".into(), c.timings.clone());
    Value::Object(d)
}

fn render(job: &Job, c: &Converted) -> String {
    let mut s = format!(
        "convert: {} → {}\n  Mode: {}",
        one_line(&job.source.model.path.to_string_lossy()),
        one_line(&c.target.to_string_lossy()),
        job.mode.name()
    );
    if let Some(w) = &c.warning {
        s.push_str(&format!("\n  ⚠ {w}"));
    }
    s.push_str(&format!("\n  {}", c.message));
    if let Some(Value::Array(left)) = c.engine.facts.get("unquantized")
        && !left.is_empty()
    {
        let names: Vec<String> = left
            .iter()
            .take(12)
            .map(|l| {
                format!(
                    "{} ({})",
                    one_line(l["layer"].as_str().unwrap_or("?")),
                    match l["why"].as_str() {
                        Some("group_size") => format!("input width {}", l["input_width"]),
                        _ => "kept float by the model".to_string(),
                    }
                )
            })
            .collect();
        s.push_str(&format!(
            "\n  ⚠ {} layer(s) left unquantized: {}{}",
            left.len(),
            names.join(", "),
            if left.len() > 12 {
                ", … (all of them in --json: unquantized)"
            } else {
                ""
            }
        ));
    }
    match &c.health {
        Some(h) => match h.reason() {
            None => s.push_str("\n  ✓ Health check: passed"),
            Some(r) => s.push_str(&format!("\n  ✗ Health check: {}", one_line(r))),
        },
        None => s.push_str("\n  Health check: skipped"),
    }
    s.push_str(&format!(
        "\n  {} files, {}; content hash {}",
        c.files,
        human_bytes(c.bytes),
        c.content_hash.as_deref().unwrap_or("none")
    ));
    if let Some(t) = c.timings["total_s"].as_f64() {
        s.push_str(&format!("\n  {t:.1} s"));
        if let Some(p) = c.engine.facts.get("peak_memory_gb").and_then(Value::as_f64) {
            s.push_str(&format!(
                ", MLX peak memory {}",
                human_bytes((p * 1e9) as u64)
            ));
        }
    }
    s
}
