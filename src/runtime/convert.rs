//! `mlxfs convert`'s Python side: convert.py (mlx-lm's own conversion code, evaluated and
//! written shard by shard) in the embedded interpreter or a subprocess, as `run` chooses.

use serde::Serialize;
use std::path::PathBuf;

use super::{Handler, Outcome, PythonEnv, RunError, Script, run_job};

/// The conversion code both modes run.
pub const CONVERT_PY: &str = include_str!("convert.py");

/// What to convert (convert.py's request).
#[derive(Debug, Clone, Serialize)]
pub struct ConvertRequest {
    /// The source workspace.
    pub source: PathBuf,
    /// The (empty) folder the converted model is written into.
    pub target: PathBuf,
    /// `quantize`, `dtype` or `dequantize`.
    pub mode: &'static str,
    pub bits: Option<u8>,
    /// None: mlx-lm's default for the quantization mode.
    pub group_size: Option<u32>,
    pub q_mode: Option<&'static str>,
    /// None: the config's `torch_dtype`, as mlx-lm.
    pub dtype: Option<&'static str>,
    /// Largest output shard (None: mlx-lm's 5 GB).
    pub max_shard_bytes: Option<u64>,
    /// `target` holds what an interrupted run of the same conversion finished: keep the
    /// shards whose plan is unchanged.
    pub resume: bool,
}

impl ConvertRequest {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Run the conversion, streaming events to `handler` (`env`, `plan`, `progress`, `shard`,
/// then `done` or `error`). A subprocess is told to stop with SIGINT when
/// [`super::STOP`] is set; the embedded run checks it between tensors.
pub fn convert(
    env: &PythonEnv,
    req: &ConvertRequest,
    force_subprocess: bool,
    handler: Handler,
) -> Result<Outcome, RunError> {
    run_job(
        env,
        Script::Convert,
        &req.to_json(),
        force_subprocess,
        handler,
    )
}
