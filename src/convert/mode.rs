//! `convert`'s mode rules: which flags make which [`Mode`] (mlx-knife's messages for a bad
//! bit width, two modes or none; mlx-lm's rules for `--q-mode` and its group sizes and bit
//! widths), and each mode's name and parameters as the result and the sentinel give them.

use serde_json::{Value, json};

use super::{ConvertError, Result};
use crate::error::ErrorType;

/// The bit widths `--quantize` accepts (mlx-knife's).
pub const BITS: &[i64] = &[2, 3, 4, 6, 8];

/// mlx-lm's quantization modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QMode {
    Affine,
    Mxfp4,
    Nvfp4,
    Mxfp8,
}

impl QMode {
    pub const ALL: &[QMode] = &[QMode::Affine, QMode::Mxfp4, QMode::Nvfp4, QMode::Mxfp8];
    pub fn as_str(self) -> &'static str {
        match self {
            QMode::Affine => "affine",
            QMode::Mxfp4 => "mxfp4",
            QMode::Nvfp4 => "nvfp4",
            QMode::Mxfp8 => "mxfp8",
        }
    }
    pub fn parse(s: &str) -> Option<QMode> {
        QMode::ALL.iter().copied().find(|m| m.as_str() == s)
    }
    /// mlx-lm's default group size for the mode (`quantize_model`'s `defaults_for_mode`).
    pub fn default_group_size(self) -> u32 {
        match self {
            QMode::Affine => 64,
            QMode::Mxfp4 | QMode::Mxfp8 => 32,
            QMode::Nvfp4 => 16,
        }
    }
    /// The one (bits, group size) a floating-point mode allows (MLX's kernels).
    fn fixed(self) -> Option<(u8, u32)> {
        match self {
            QMode::Affine => None,
            QMode::Mxfp4 => Some((4, 32)),
            QMode::Nvfp4 => Some((4, 16)),
            QMode::Mxfp8 => Some((8, 32)),
        }
    }
}

/// The dtypes `--dtype` accepts (mlx-lm's `MODEL_CONVERSION_DTYPES`).
pub const DTYPES: &[&str] = &["float16", "bfloat16", "float32"];

/// What a conversion does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Copy the workspace's top-level files and rebuild the index from the shards.
    RepairIndex,
    Quantize {
        bits: u8,
        group_size: u32,
        q_mode: QMode,
    },
    /// Cast every floating parameter (mlx-lm's `--dtype`).
    Dtype(&'static str),
    Dequantize,
}

impl Mode {
    /// The `mode` of the JSON result and of the sentinel.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::RepairIndex => "repair-index",
            Mode::Quantize { .. } => "quantize",
            Mode::Dtype(_) => "dtype",
            Mode::Dequantize => "dequantize",
        }
    }
    /// Does it rewrite the weights (through the engine)?
    pub fn converts_weights(&self) -> bool {
        !matches!(self, Mode::RepairIndex)
    }
    /// Its parameters, as the sentinel's `conversion` and the JSON result carry them.
    pub fn parameters(&self) -> Value {
        match self {
            Mode::RepairIndex | Mode::Dequantize => json!({}),
            Mode::Quantize {
                bits,
                group_size,
                q_mode,
            } => json!({"bits": bits, "group_size": group_size, "q_mode": q_mode.as_str()}),
            Mode::Dtype(d) => json!({"dtype": d}),
        }
    }
}

/// The mode flags as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub repair_index: bool,
    pub quantize: Option<i64>,
    pub q_group_size: Option<i64>,
    pub q_mode: Option<String>,
    pub dtype: Option<String>,
    pub dequantize: bool,
}

fn invalid(msg: impl Into<String>) -> ConvertError {
    ConvertError::new(ErrorType::InvalidArgumentError, msg)
}

impl Mode {
    /// The one mode the flags ask for, with mlx-knife's messages for what it refuses (a bad
    /// bit width, two modes, none).
    pub fn from_flags(f: &Flags) -> Result<Mode> {
        let mut given: Vec<&str> = Vec::new();
        if f.repair_index {
            given.push("--repair-index");
        }
        if f.quantize.is_some() {
            given.push("--quantize");
        }
        if f.dtype.is_some() {
            given.push("--dtype");
        }
        if f.dequantize {
            given.push("--dequantize");
        }
        if given.len() > 1 {
            return Err(invalid(format!(
                "{} are mutually exclusive",
                given.join(" and ")
            )));
        }
        if given.is_empty() {
            return Err(
                invalid("Must specify conversion mode (--repair-index or --quantize N)").hint(
                    "mlxfs also converts with --dtype float16|bfloat16|float32 and --dequantize",
                ),
            );
        }
        if f.quantize.is_none() && (f.q_group_size.is_some() || f.q_mode.is_some()) {
            return Err(invalid("--q-group-size and --q-mode go with --quantize"));
        }
        if f.repair_index {
            return Ok(Mode::RepairIndex);
        }
        if f.dequantize {
            return Ok(Mode::Dequantize);
        }
        if let Some(d) = &f.dtype {
            return match DTYPES.iter().find(|x| **x == d.as_str()) {
                Some(d) => Ok(Mode::Dtype(d)),
                None => Err(invalid(format!(
                    "--dtype must be float16, bfloat16 or float32 (got {d})"
                ))),
            };
        }
        let bits = f.quantize.unwrap_or_default();
        if !BITS.contains(&bits) {
            return Err(invalid(format!(
                "--quantize must be 2, 3, 4, 6, or 8 (got {bits})"
            )));
        }
        let q_mode = match &f.q_mode {
            None => QMode::Affine,
            Some(m) => QMode::parse(m).ok_or_else(|| {
                invalid(format!(
                    "--q-mode must be affine, mxfp4, nvfp4 or mxfp8 (got {m})"
                ))
            })?,
        };
        let group_size = match f.q_group_size {
            None => q_mode.default_group_size(),
            Some(g) if g > 0 && g <= 4096 => g as u32,
            Some(g) => {
                return Err(invalid(format!(
                    "--q-group-size must be a positive number (got {g})"
                )));
            }
        };
        // mlx's affine quantization takes these group sizes only (mlx `quantize`: "The
        // supported group sizes are 32, 64, and 128"); mlx-lm skips, without a word, every
        // layer another size does not divide, which would write an unquantized model labelled
        // as quantized.
        if q_mode == QMode::Affine && ![32, 64, 128].contains(&group_size) {
            return Err(invalid(format!(
                "--q-group-size must be 32, 64 or 128 for affine quantization (got {group_size})"
            )));
        }
        if let Some((b, g)) = q_mode.fixed()
            && (bits != b as i64 || group_size != g)
        {
            return Err(invalid(format!(
                "--q-mode {} quantizes with {b} bits in groups of {g}: use --quantize {b}{}",
                q_mode.as_str(),
                if group_size != g {
                    format!(" without --q-group-size {group_size}")
                } else {
                    String::new()
                }
            )));
        }
        Ok(Mode::Quantize {
            bits: bits as u8,
            group_size,
            q_mode,
        })
    }
}
