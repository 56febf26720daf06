//! `convert`'s core (mlx-knife ADR-018): a workspace → a new managed workspace, never
//! touching the source or the hub cache. The mode rules and mlx-knife's messages ([`mode`]),
//! the checks on the source, the staging folder, index repair, provenance, the content hash,
//! health and the one rename. The weights of `--quantize`, `--dtype` and `--dequantize` come
//! from an [`Engine`] (the CLI plugs in the Python runtime: nothing here knows Python).
//!
//! Everything is written into `<target parent>/.mlxfs-convert-<id>/model/`; the target
//! appears by one rename at the end, whole or not at all. A failure or Ctrl-C removes the
//! staging folder — except the output shards a weight conversion finished before Ctrl-C, a
//! full disk or a dead Python, which stay (with `resume.json`, the job's fingerprint) for the
//! same command to continue from; anything else a killed run left is removed by the next
//! conversion into the same target.

pub mod index;
pub mod mode;

use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::catalog::record::Described;
use crate::catalog::verdict::Health;
use crate::catalog::{ModelRef, Source, record};
use crate::error::{Diagnostic, ErrorType};
use crate::hash::{self, Excludes, SENTINEL_FILENAME, sentinel};
use crate::staging::Staging;

pub use mode::{BITS, DTYPES, Flags, Mode, QMode};

/// An error of `convert`: its `error.type`, the message, what to do, extra JSON fields.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConvertError {
    pub kind: ErrorType,
    pub message: String,
    pub hint: Option<String>,
    pub fields: Vec<(&'static str, Value)>,
}

/// The advice of a `disk_full` ([`ConvertError::io`]).
const DISK_FULL_HINT: &str =
    "Free some space, or convert into another folder, and run the command again.";
/// The kinds of `disk_full`, `permission_denied` and `io_error` ([`crate::error::io_type`]).
const IO_KINDS: [ErrorType; 3] = [
    ErrorType::DiskFull,
    ErrorType::PermissionDenied,
    ErrorType::IoError,
];

impl ConvertError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> ConvertError {
        ConvertError {
            kind,
            message: message.into(),
            hint: None,
            fields: Vec::new(),
        }
    }
    pub fn hint(mut self, h: impl Into<String>) -> ConvertError {
        self.hint = Some(h.into());
        self
    }
    pub fn field(mut self, k: &'static str, v: Value) -> ConvertError {
        self.fields.push((k, v));
        self
    }
    /// Classify a local I/O error ([`crate::error::io_type`]); `what` says what was being
    /// done.
    pub fn io(e: &std::io::Error, what: &str) -> ConvertError {
        let (kind, message, hint) = crate::error::io_type(e, what, DISK_FULL_HINT, IO_KINDS);
        ConvertError {
            kind,
            message,
            hint,
            fields: Vec::new(),
        }
    }
    pub fn interrupted() -> ConvertError {
        ConvertError::new(
            ErrorType::Interrupted,
            "Interrupted: nothing was written to the target, and the source is unchanged",
        )
        .hint("Run the same command again to convert.")
    }
}

impl Diagnostic for ConvertError {
    fn error_type(&self) -> ErrorType {
        self.kind
    }
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
    fn fields(&self) -> Vec<(&'static str, Value)> {
        self.fields.clone()
    }
}

pub type Result<T> = std::result::Result<T, ConvertError>;

/// mlx-knife's refusal of a hub-cache model as the source (its words on one line, with
/// mlxfs's commands; the two command lines it suggests are the hint).
pub fn cache_source_error(m: &ModelRef) -> ConvertError {
    ConvertError::new(
        ErrorType::WorkspaceNotFound,
        format!(
            "Source path is in HF cache (read-only): {}. Convert operates on workspaces only. Use 'mlxfs clone' first to create a workspace",
            m.path.display()
        ),
    )
    .hint(format!(
        "mlxfs clone {} ./workspace && mlxfs convert ./workspace ./workspace-fixed --repair-index",
        m.name
    ))
}

/// Refuse a source before anything is written: a hub-cache model; a checkpoint whose
/// config names a `model_file` (model-supplied code, never run, whatever the mode); for a
/// weight conversion, an unhealthy model — except a stale index, which the conversion does
/// not read (it reads the shards, as mlx-lm's loader does).
pub fn check_source(d: &Described, mode: &Mode) -> Result<()> {
    let m = &d.model;
    if m.source != Source::Workspace {
        return Err(cache_source_error(m));
    }
    if let Some(cfg) = d.config.object()
        && let Some(file) = cfg.get("model_file").filter(|v| !v.is_null())
    {
        return Err(ConvertError::new(
            ErrorType::RemoteCodeRequired,
            format!(
                "The model at {} requires importing and running a custom module ({}). mlxfs refuses to execute it.",
                m.path.display(),
                match file {
                    Value::String(s) => format!("'{s}'"),
                    other => other.to_string(),
                }
            ),
        )
        .hint("mlxfs never runs code that comes with a model (config.json: model_file); nothing was written"));
    }
    if mode.converts_weights()
        && let Health::Unhealthy(reason) = &d.health
        && !reason.starts_with(crate::catalog::health::INDEX_MISMATCH)
    {
        return Err(ConvertError::new(
            ErrorType::ModelUnhealthy,
            format!("{} is unhealthy: {reason}", m.short_name),
        )
        .hint("run `mlxfs health MODEL` for details; a missing or broken index is rebuilt by `mlxfs convert MODEL OUT --repair-index`"));
    }
    // mlx-lm skips layers that are already quantized and dequantizes only quantized ones:
    // either way the weights would not change while the result claims they did.
    let quantized = d
        .config
        .object()
        .and_then(|c| c.get("quantization"))
        .is_some_and(|q| q.is_object());
    if quantized && matches!(mode, Mode::Quantize { .. }) {
        return Err(ConvertError::new(
            ErrorType::InvalidArgumentError,
            format!(
                "{} is already quantized: its weights would stay as they are",
                m.short_name
            ),
        )
        .hint("dequantize it first (`mlxfs convert MODEL OUT --dequantize`), then quantize that"));
    }
    if !quantized && matches!(mode, Mode::Dequantize) {
        return Err(ConvertError::new(
            ErrorType::InvalidArgumentError,
            format!(
                "{} is not quantized: there is nothing to dequantize",
                m.short_name
            ),
        )
        .hint("use --dtype to change a float model's precision"));
    }
    Ok(())
}

/// One tensor of the source's weights, as its safetensors header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TensorInfo {
    name: String,
    dtype: String,
    shape: Vec<u64>,
}

/// The tensors of the source's weights — its top-level `model*.safetensors`, what mlx-lm's
/// loader (and so the conversion) reads — from their headers (no data read), with whether
/// every file says `format: mlx`. `None` when a header cannot be read (health has said why).
fn source_tensors(src: &Path) -> Option<(Vec<TensorInfo>, bool)> {
    let mut out = Vec::new();
    let mut all_mlx = true;
    for name in index::shard_names(src).ok()? {
        if !name.starts_with("model") {
            continue;
        }
        let header = crate::hash::read_safetensors_header(&src.join(&name))?;
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&header) else {
            return None;
        };
        for (k, v) in &m {
            if k == "__metadata__" {
                all_mlx &= v.get("format").and_then(Value::as_str) == Some("mlx");
                continue;
            }
            out.push(TensorInfo {
                name: k.clone(),
                dtype: v
                    .get("dtype")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                shape: v
                    .get("shape")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
            });
        }
        all_mlx &= m.contains_key("__metadata__");
    }
    Some((out, all_mlx))
}

/// A floating-point safetensors dtype, as `--dtype` names it.
fn float_name(dtype: &str) -> Option<&'static str> {
    match dtype {
        "F16" => Some("float16"),
        "BF16" => Some("bfloat16"),
        "F32" => Some("float32"),
        "F64" => Some("float64"),
        _ => None,
    }
}

/// Refuse, before anything is written or any Python starts, a weight conversion that the
/// source's own tensors (their headers) show would change nothing while the result said it
/// did:
/// - `--quantize` where the group size divides no weight matrix's input width (mlx-lm's
///   quantize predicate: a layer with `to_quantized` whose last dimension the group size
///   divides; every other one it skips without a word): the result would be a float model
///   whose config.json and `show` say N-bit. The refusal names the widths and the group
///   sizes (and modes) that would quantize something;
/// - `--dtype T` of weights already all T, already in MLX's format (nothing to cast, nothing
///   to rewrite; a transformers checkpoint is converted, whatever its dtype);
/// - `--dequantize` of a model whose config says quantized but whose weights hold no
///   quantized layer (no `.scales`).
///
/// What the headers cannot tell (a model's own rule keeping layers float, `sanitize`
/// reshaping) the conversion itself checks and reports (`unquantized` in the result).
pub fn check_weights(d: &Described, mode: &Mode) -> Result<()> {
    let Some((tensors, all_mlx)) = source_tensors(&d.model.path) else {
        return Ok(());
    };
    let name = &d.model.short_name;
    match mode {
        Mode::Quantize {
            bits,
            group_size,
            q_mode,
        } => {
            let widths: std::collections::BTreeSet<u64> = tensors
                .iter()
                .filter(|t| t.name.ends_with(".weight") && t.shape.len() >= 2)
                .filter(|t| float_name(&t.dtype).is_some())
                .filter_map(|t| t.shape.last().copied())
                .collect();
            let quantizes = |g: u32| widths.iter().any(|w| w % g as u64 == 0);
            if widths.is_empty() || quantizes(*group_size) {
                return Ok(());
            }
            let list: Vec<String> = widths.iter().map(u64::to_string).collect();
            let mut ways: Vec<String> = Vec::new();
            for (m, g) in [
                (QMode::Affine, 128),
                (QMode::Affine, 64),
                (QMode::Affine, 32),
                (QMode::Mxfp4, 32),
                (QMode::Nvfp4, 16),
            ] {
                if quantizes(g) && !(m == *q_mode && g == *group_size) {
                    ways.push(match m {
                        QMode::Affine => format!("--q-group-size {g}"),
                        _ => format!("--q-mode {} (groups of {g}, 4 bits)", m.as_str()),
                    });
                }
            }
            let e = ConvertError::new(
                ErrorType::InvalidArgumentError,
                format!(
                    "--quantize {bits} would quantize nothing in {name}: groups of {group_size} \
                     divide none of its weight matrices' input widths ({}), and mlx-lm leaves \
                     such layers float; the result would be a float model labelled {bits}-bit",
                    list.join(", ")
                ),
            );
            return Err(if ways.is_empty() {
                e.hint("no group size mlx quantizes with (32, 64, 128; 16 for nvfp4) divides these widths: the model stays float")
            } else {
                e.hint(format!("these would quantize layers: {}", ways.join("; ")))
            });
        }
        Mode::Dtype(target) => {
            let floats: Vec<&'static str> = tensors
                .iter()
                .filter_map(|t| float_name(&t.dtype))
                .collect();
            if all_mlx && !floats.is_empty() && floats.iter().all(|f| f == target) {
                return Err(ConvertError::new(
                    ErrorType::InvalidArgumentError,
                    format!(
                        "{name} is already {target} in MLX's format: --dtype {target} would \
                         change none of its weights"
                    ),
                )
                .hint("choose another dtype (float16, bfloat16, float32)"));
            }
        }
        Mode::Dequantize => {
            if !tensors.is_empty() && !tensors.iter().any(|t| t.name.ends_with(".scales")) {
                return Err(ConvertError::new(
                    ErrorType::InvalidArgumentError,
                    format!(
                        "{name} holds no quantized weights (no .scales tensors), although its \
                         config.json says quantized: there is nothing to dequantize"
                    ),
                )
                .hint("use --dtype to change a float model's precision"));
            }
        }
        Mode::RepairIndex => {}
    }
    Ok(())
}

/// Refuse a target that would put the staging folder, or the result, inside the source.
pub fn check_target_vs_source(source: &Path, target: &Path) -> Result<()> {
    let src = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let parent = target
        .parent()
        .and_then(|p| fs::canonicalize(p).ok())
        .unwrap_or_else(|| target.to_path_buf());
    let t = parent.join(target.file_name().unwrap_or_default());
    if t == src || t.starts_with(&src) {
        return Err(ConvertError::new(
            ErrorType::InvalidTargetError,
            format!(
                "Target '{}' is the source workspace or inside it",
                target.display()
            ),
        )
        .hint("Convert into a new folder next to the source (the source is never modified)."));
    }
    Ok(())
}

/// What the core tells the user while it works, and asks about Ctrl-C.
pub trait Progress: Sync {
    /// A phase begins: `label`, `bytes` to do (0: unknown).
    fn start(&self, _label: &str, _bytes: u64) {}
    /// `n` more bytes done.
    fn advance(&self, _n: u64) {}
    /// What the phase is at, in words (shown after the bytes: `120/694 tensors, shard 2/4`).
    fn status(&self, _text: &str) {}
    /// A line for the user.
    fn note(&self, _line: &str) {}
    /// The phase is over.
    fn finish(&self) {}
    /// Stop as soon as possible (Ctrl-C).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// What the engine reports about a weight conversion.
#[derive(Debug, Clone, Default)]
pub struct EngineReport {
    /// Facts for the JSON result and the sentinel (`mlx`, `mlx_lm` versions, the Python
    /// mode, peak memory, ...).
    pub facts: serde_json::Map<String, Value>,
}

/// Writes the converted model (weights, config, tokenizer, ...) into an empty folder.
pub trait Engine {
    /// `resume`: `out` holds what an interrupted conversion of the same job finished.
    fn convert(
        &self,
        source: &Path,
        out: &Path,
        mode: &Mode,
        resume: bool,
        progress: &dyn Progress,
    ) -> Result<EngineReport>;
}

/// One conversion, checked: source (a healthy enough workspace), target (absent or an empty
/// folder, not in the source, not in the cache), mode.
#[derive(Debug, Clone)]
pub struct Job {
    pub source: Described,
    pub target: PathBuf,
    pub mode: Mode,
    pub skip_health: bool,
}

/// The outcome.
#[derive(Debug, Clone)]
pub struct Converted {
    pub target: PathBuf,
    pub content_hash: Option<String>,
    /// `None` with `skip_health`.
    pub health: Option<Health>,
    pub message: String,
    /// Files and bytes of the new workspace.
    pub files: usize,
    pub bytes: u64,
    /// The sentinel's `conversion` record.
    pub conversion: Value,
    pub engine: EngineReport,
    /// A warning for the user (mlx-knife's re-quantize warning).
    pub warning: Option<String>,
    pub timings: Value,
}

/// After a weight conversion stopped by Ctrl-C, a full disk or a Python that died: keep the
/// shards it finished (and say so) for the same command to continue from; nothing is at the
/// target either way.
fn keep_for_resume(
    stage: &mut Staging,
    fp: Option<&Value>,
    target: &Path,
    mut e: ConvertError,
) -> ConvertError {
    let resumable = matches!(
        e.kind,
        ErrorType::Interrupted | ErrorType::DiskFull | ErrorType::PythonFailed | ErrorType::IoError
    );
    let done = finished_shards(stage);
    let Some(fp) = fp.filter(|_| resumable && done > 0) else {
        return e;
    };
    let written = crate::sys::write_new(
        &stage.dir().join("resume.json"),
        fp.to_string().as_bytes(),
        true,
    );
    if written.is_err() {
        return e;
    }
    stage.keep();
    let what = format!(
        "{done} converted shard(s) are kept in {}: run the same command again to continue",
        stage.dir().display()
    );
    if e.kind == ErrorType::Interrupted {
        e.message = format!(
            "Interrupted: nothing was written to {}, and the source is unchanged; {what}",
            target.display()
        );
    } else {
        e = e.hint(what);
    }
    e.field("kept_shards", json!(done))
}

/// The staging folder of a conversion into `target` ([`crate::staging`]):
/// `<parent>/.mlxfs-convert-<id>/`, named from the target path (its `model/` becomes the
/// target; its `hf-cache/` is the isolated cache of the conversion's Python, removed with it).
pub fn staging_dir(target: &Path) -> PathBuf {
    crate::staging::path_for(target, "convert", &target.to_string_lossy())
}

/// Lock and prepare the staging folder. What an earlier run left is removed — unless it
/// kept converted shards for `fingerprint` (its `resume.json`): then `model/` stays and the
/// second value is true.
fn create_stage(target: &Path, fingerprint: Option<&Value>) -> Result<(Staging, bool)> {
    let (stage, kept) = Staging::create(target, "convert", &target.to_string_lossy(), |dir| {
        fingerprint.is_some_and(|f| {
            crate::sys::read_file(&dir.join("resume.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v == *f)
        }) && dir.join("model").is_dir()
    })
    .map_err(|e| {
        let busy = format!("Another conversion into {} is running", target.display());
        e.into_error(
            || ConvertError::new(ErrorType::Conflict, busy),
            ConvertError::io,
        )
    })?;
    let _ = fs::remove_file(stage.dir().join("resume.json"));
    if !kept {
        let model = stage.model();
        fs::create_dir(&model)
            .map_err(|e| ConvertError::io(&e, &format!("creating {}", model.display())))?;
    }
    Ok((stage, kept))
}

/// The finished shards in `model/` (their final names; a shard being written has another).
fn finished_shards(stage: &Staging) -> usize {
    fs::read_dir(stage.model()).map_or(0, |rd| {
        rd.flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("model") && n.ends_with(".safetensors")
            })
            .count()
    })
}

/// Copy one file (contents and mtime), reporting bytes; stops on Ctrl-C.
fn copy_file(from: &Path, to: &Path, progress: &dyn Progress) -> Result<u64> {
    use std::io::{Read, Write};
    let io = |e: std::io::Error, what: String| ConvertError::io(&e, &what);
    let mut r =
        crate::sys::open_regular(from).map_err(|e| io(e, format!("reading {}", from.display())))?;
    let md = r
        .metadata()
        .map_err(|e| io(e, format!("reading {}", from.display())))?;
    let mut w = crate::sys::write_new(to, b"", false)
        .map_err(|e| io(e, format!("writing {}", to.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        if progress.cancelled() {
            return Err(ConvertError::interrupted());
        }
        let k = r
            .read(&mut buf)
            .map_err(|e| io(e, format!("reading {}", from.display())))?;
        if k == 0 {
            break;
        }
        w.write_all(&buf[..k])
            .map_err(|e| io(e, format!("writing {}", to.display())))?;
        n += k as u64;
        progress.advance(k as u64);
    }
    if let Ok(t) = md.modified() {
        let _ = w.set_modified(t);
    }
    Ok(n)
}

/// The top-level files `--repair-index` copies (mlx-knife's rule: regular files, links to
/// them included, without the sentinel and the old index; OS junk left out), by name.
fn top_level_files(src: &Path) -> Result<Vec<(String, u64)>> {
    let rd = fs::read_dir(src)
        .map_err(|e| ConvertError::io(&e, &format!("reading {}", src.display())))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        if crate::osjunk::is_os_junk(&name) {
            continue;
        }
        let Some(name) = name.to_str().map(str::to_string) else {
            return Err(ConvertError::new(
                ErrorType::IoError,
                format!(
                    "{} holds a file name that is not UTF-8: {}",
                    src.display(),
                    e.file_name().to_string_lossy()
                ),
            ));
        };
        if name == SENTINEL_FILENAME || name == index::INDEX {
            continue;
        }
        if let Ok(md) = fs::metadata(e.path())
            && md.is_file()
        {
            out.push((name, md.len()));
        }
    }
    out.sort();
    Ok(out)
}

fn sentinel_source(d: &Described) -> (Value, Value) {
    if let Some(s) = d.sentinel.as_ref().and_then(|r| r.sentinel())
        && s.managed()
    {
        return (
            s.raw
                .get("source_repo")
                .cloned()
                .unwrap_or_else(|| Value::from(d.model.path.to_string_lossy().into_owned())),
            s.raw.get("source_revision").cloned().unwrap_or(Value::Null),
        );
    }
    (
        Value::from(d.model.path.to_string_lossy().into_owned()),
        Value::Null,
    )
}

/// mlx-knife's warning when quantizing an already quantized model to more bits.
fn requantize_warning(d: &Described, mode: &Mode) -> Option<String> {
    let Mode::Quantize { bits, .. } = mode else {
        return None;
    };
    let src_bits = d
        .config
        .object()?
        .get("quantization")?
        .as_object()?
        .get("bits")?
        .as_i64()?;
    ((*bits as i64) > src_bits).then(|| {
        format!(
            "Source already {src_bits}-bit. Quantizing to {bits}-bit does not increase precision."
        )
    })
}

/// What a conversion's kept shards are valid for: the mode and its parameters, and the
/// source's top-level files (name, size, mtime, and the inode's change time and number: a
/// write followed by `touch -r` restores the mtime but not the ctime, which no user can set).
/// A later run resumes only when it is equal.
fn fingerprint(job: &Job) -> Value {
    let src = &job.source.model.path;
    let mut files = Vec::new();
    if let Ok(rd) = fs::read_dir(src) {
        for e in rd.flatten() {
            if let Ok(md) = fs::metadata(e.path())
                && md.is_file()
            {
                use std::os::unix::fs::MetadataExt;
                files.push(json!([
                    e.file_name().to_string_lossy(),
                    md.len(),
                    crate::sys::mtime_ns(&md),
                    md.ctime()
                        .saturating_mul(1_000_000_000)
                        .saturating_add(md.ctime_nsec()),
                    md.ino()
                ]));
            }
        }
    }
    files.sort_by_key(|f| f[0].as_str().unwrap_or_default().to_string());
    json!({"mode": job.mode.name(), "parameters": job.mode.parameters(),
           "source": src.to_string_lossy(), "files": files})
}

/// Run the conversion: stage, write, index, content hash, sentinel, health, rename.
pub fn convert(job: &Job, engine: &dyn Engine, progress: &dyn Progress) -> Result<Converted> {
    let t0 = Instant::now();
    let src = &job.source.model.path;
    let fp = job.mode.converts_weights().then(|| fingerprint(job));
    let (mut stage, resuming) = create_stage(&job.target, fp.as_ref())?;
    if resuming {
        progress.note(&format!(
            "Resuming: {} converted shard(s) kept by an interrupted run",
            finished_shards(&stage)
        ));
    }
    let out = stage.model();
    let warning = requantize_warning(&job.source, &job.mode);
    if let Some(w) = &warning {
        progress.note(&format!("warning: {w}"));
    }

    // 1. The files.
    let mut engine_report = EngineReport::default();
    let message;
    match &job.mode {
        Mode::RepairIndex => {
            let files = top_level_files(src)?;
            let bytes: u64 = files.iter().map(|f| f.1).sum();
            progress.start(&format!("Copying {} files", files.len()), bytes);
            let r = files.iter().try_for_each(|(name, _)| {
                copy_file(&src.join(name), &out.join(name), progress).map(|_| ())
            });
            progress.finish();
            r?;
            message = match index::rebuild(&out)? {
                Some(_) => "Index rebuilt successfully".to_string(),
                None => {
                    "No index to rebuild (single-file model or no safetensors found)".to_string()
                }
            };
        }
        mode => {
            engine_report = match engine.convert(src, &out, mode, resuming, progress) {
                Ok(r) => r,
                Err(e) => return Err(keep_for_resume(&mut stage, fp.as_ref(), &job.target, e)),
            };
            // mlx-knife rebuilds the index after every quantization (mlx-knife's format when
            // there are several shards; mlx-lm's own stays for a single file).
            index::rebuild(&out)?;
            let left = engine_report
                .facts
                .get("unquantized")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let done = engine_report
                .facts
                .get("quantized_layers")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            message = match mode {
                // mlx-knife's words when every layer was quantized; else how many were.
                Mode::Quantize { bits, .. } if left == 0 => {
                    format!("Quantized to {bits}-bit successfully")
                }
                Mode::Quantize {
                    bits, group_size, ..
                } => format!(
                    "Quantized {done} of {} layers to {bits}-bit; {left} left unquantized \
                     (named in `unquantized`: an input width groups of {group_size} do not \
                     divide, or the model's own rule)",
                    done + left as u64
                ),
                Mode::Dtype(d) => format!("Converted to {d} successfully"),
                _ => "Dequantized successfully".to_string(),
            };
        }
    }
    if progress.cancelled() {
        return Err(ConvertError::interrupted());
    }
    let t_write = t0.elapsed().as_secs_f64();

    // 2. Content hash v2 and the sentinel, with provenance.
    let t1 = Instant::now();
    let hashed = hash::compute_v2(&out, &Excludes::default_list());
    if let Err(e) = &hashed {
        progress.note(&format!("warning: no content hash: {e}"));
    }
    let (source_repo, source_revision) = sentinel_source(&job.source);
    let mut conversion = serde_json::Map::new();
    conversion.insert("mode".into(), Value::from(job.mode.name()));
    if let Value::Object(p) = job.mode.parameters() {
        conversion.extend(p);
    }
    conversion.insert(
        "source_path".into(),
        Value::from(src.to_string_lossy().into_owned()),
    );
    conversion.insert(
        "source_content_hash".into(),
        job.source
            .record
            .content_hash
            .clone()
            .map_or(Value::Null, Value::from),
    );
    conversion.insert(
        "source_clean".into(),
        job.source.record.clean.map_or(Value::Null, Value::from),
    );
    for (k, v) in &engine_report.facts {
        if matches!(
            k.as_str(),
            "mlx" | "mlx_lm" | "quantized_layers" | "unquantized"
        ) {
            conversion.insert(k.clone(), v.clone());
        }
    }
    conversion.insert(
        "tool".into(),
        Value::from(concat!("mlxfs ", env!("CARGO_PKG_VERSION"))),
    );
    let conversion = Value::Object(conversion);
    let mut extra: Vec<(&str, Value)> = vec![("mode", Value::from(job.mode.name()))];
    if let Mode::Quantize {
        bits, group_size, ..
    } = &job.mode
    {
        extra.push((
            "quantization",
            json!({"bits": bits, "group_size": group_size}),
        ));
    }
    extra.push(("conversion", conversion.clone()));
    sentinel::write_converted(
        &out,
        &source_repo,
        &source_revision,
        &extra,
        hashed.as_ref().ok(),
    )
    .map_err(|e| ConvertError::io(&e, "writing the sentinel"))?;
    let content_hash = hashed.as_ref().ok().map(|(h, _)| h.clone());
    let (files, bytes) = hashed.as_ref().map_or((0, 0), |(_, idx)| {
        (idx.len(), idx.iter().map(|e| e.size).sum())
    });
    let t_hash = t1.elapsed().as_secs_f64();

    // 3. Health, on the staged folder.
    let t2 = Instant::now();
    let health = if job.skip_health {
        None
    } else {
        let name = job
            .target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let h = record::describe(&ModelRef::workspace(out.clone(), name)).health;
        if let Health::Unhealthy(reason) = &h {
            return Err(ConvertError::new(
                ErrorType::HealthCheckFailed,
                format!("Output workspace failed health check: {reason}"),
            )
            .field("health_reason", Value::from(reason.clone()))
            .hint("Nothing was written to the target; --skip-health converts without the check."));
        }
        Some(h)
    };
    let t_health = t2.elapsed().as_secs_f64();
    if progress.cancelled() {
        return Err(ConvertError::interrupted());
    }

    // 4. The one step that makes it visible.
    stage.publish().map_err(|e| {
        ConvertError::io(
            &e,
            &format!("moving the workspace to {}", job.target.display()),
        )
    })?;
    drop(stage); // the staging folder (now only its lock) goes
    Ok(Converted {
        target: job.target.clone(),
        content_hash,
        health,
        message,
        files,
        bytes,
        conversion,
        engine: engine_report,
        warning,
        timings: json!({
            "convert_s": t_write,
            "hash_s": t_hash,
            "health_s": t_health,
            "total_s": t0.elapsed().as_secs_f64(),
        }),
    })
}
