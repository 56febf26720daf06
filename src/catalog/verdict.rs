//! The typed verdicts of a model record — health, framework, model type, capabilities — each
//! serialized exactly as mlx-knife writes it (serde renames), and compared as types.

use serde::{Deserialize, Serialize};

/// The record's `health` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    /// `healthy` or `unhealthy`, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// The outcome of a health check (mlx-knife health.py): healthy with mlx-knife's message
/// (`Model is healthy`, `Multi-file model complete`), or unhealthy with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy(String),
    Unhealthy(String),
}

impl Health {
    pub fn status(&self) -> HealthStatus {
        match self {
            Health::Healthy(_) => HealthStatus::Healthy,
            Health::Unhealthy(_) => HealthStatus::Unhealthy,
        }
    }
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy(_))
    }
    /// The message when healthy, the reason otherwise (the `reason` of `health --json`).
    pub fn message(&self) -> &str {
        match self {
            Health::Healthy(m) | Health::Unhealthy(m) => m,
        }
    }
    /// The reason, when unhealthy.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Healthy(_) => None,
            Health::Unhealthy(r) => Some(r),
        }
    }
    /// mlxfs's health line: `healthy` or `unhealthy: <reason>` (the mount's `.mlxfs/health`,
    /// the `health` field of clone and pull). Not escaped: line-oriented output escapes it.
    pub fn summary(&self) -> String {
        match self {
            Health::Healthy(_) => "healthy".into(),
            Health::Unhealthy(r) => format!("unhealthy: {r}"),
        }
    }
}

/// The record's `framework` field (mlx-knife's detection order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Framework {
    #[serde(rename = "MLX")]
    Mlx,
    #[serde(rename = "GGUF")]
    Gguf,
    PyTorch,
    Unknown,
}

impl Framework {
    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Mlx => "MLX",
            Framework::Gguf => "GGUF",
            Framework::PyTorch => "PyTorch",
            Framework::Unknown => "Unknown",
        }
    }
}

/// The record's `model_type` field. `Unknown` (`"unknown"`, a value mlx-knife's JSON API
/// specification lists) where the model's files cannot be read: its folder cannot be
/// entered, its `config.json` cannot be read — never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Chat,
    Base,
    Embedding,
    Audio,
    Unknown,
}

impl ModelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Chat => "chat",
            ModelType::Base => "base",
            ModelType::Embedding => "embedding",
            ModelType::Audio => "audio",
            ModelType::Unknown => "unknown",
        }
    }
}

/// One entry of the record's `capabilities` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capability {
    #[serde(rename = "text-generation")]
    TextGeneration,
    #[serde(rename = "chat")]
    Chat,
    #[serde(rename = "vision")]
    Vision,
    #[serde(rename = "audio")]
    Audio,
    #[serde(rename = "audio-translate-en")]
    AudioTranslateEn,
    #[serde(rename = "embeddings")]
    Embeddings,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::TextGeneration => "text-generation",
            Capability::Chat => "chat",
            Capability::Vision => "vision",
            Capability::Audio => "audio",
            Capability::AudioTranslateEn => "audio-translate-en",
            Capability::Embeddings => "embeddings",
        }
    }
}
