//! `mlxfs health [MODEL]`.

use clap::Args;
use serde::Serialize;

use super::output::{CliError, Output};
use crate::catalog::record::describe;
use crate::catalog::verdict::HealthStatus;
use crate::catalog::{Locations, ModelRef, Source, all_models, par_map, resolve};
use crate::text::one_line;

#[derive(Args, Debug)]
#[command(after_help = "\
Checks config.json, weight files (index and shards, empty or truncated safetensors, LFS
pointer files, partial downloads), vision/tokenizer side files, and links (dangling, or
leading out of the model). Without MODEL every workspace and hub model is checked; one
broken model never hides the others.")]
pub struct HealthArgs {
    /// A model name (`org/name`, `name@rev`) or a path; all models when omitted
    pub model: Option<String>,
}

/// One model of `health --json` (mlx-knife's keys; `managed` for workspaces only).
#[derive(Debug, Clone, Serialize)]
pub struct HealthEntry {
    pub name: String,
    pub status: HealthStatus,
    /// mlx-knife's message when healthy, the reason otherwise.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub total: usize,
    pub healthy_count: usize,
    pub unhealthy_count: usize,
}

/// The `data` of `health --json`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthData {
    pub healthy: Vec<HealthEntry>,
    pub unhealthy: Vec<HealthEntry>,
    pub summary: Summary,
}

fn entry(m: &ModelRef) -> HealthEntry {
    let d = describe(m);
    let name = match m.source {
        Source::Workspace => m.short_name.clone(),
        Source::Cache => m.spec(),
    };
    let managed = (m.source == Source::Workspace).then(|| {
        d.sentinel
            .as_ref()
            .and_then(|s| s.sentinel())
            .is_some_and(|s| s.managed())
    });
    HealthEntry {
        name,
        status: d.health.status(),
        reason: d.health.message().to_string(),
        managed,
        warnings: d.record.warnings,
    }
}

pub fn run(a: &HealthArgs, loc: &Locations) -> Result<Output, CliError> {
    let models = match &a.model {
        Some(spec) => {
            let mut m = resolve::resolve(spec, loc)?;
            if resolve::is_explicit_path(spec) && m.source == Source::Workspace {
                m.short_name = m.name.clone();
            }
            vec![m]
        }
        None => all_models(loc),
    };
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = par_map(&models, entry)
        .into_iter()
        .partition(|e| e.status == HealthStatus::Healthy);
    let summary = Summary {
        total: healthy.len() + unhealthy.len(),
        healthy_count: healthy.len(),
        unhealthy_count: unhealthy.len(),
    };
    let data = HealthData {
        healthy,
        unhealthy,
        summary,
    };
    let value = serde_json::to_value(&data).unwrap_or_default();
    Ok(Output::lazy(value, move || render(&data)))
}

/// One line per model (names and reasons escaped: a name never forges another line).
pub fn render(d: &HealthData) -> String {
    let mut lines = Vec::new();
    if d.summary.total != 1 {
        lines.push(format!(
            "Summary: total {}, healthy {}, unhealthy {}",
            d.summary.total, d.summary.healthy_count, d.summary.unhealthy_count
        ));
    }
    for (entries, label) in [(&d.healthy, "healthy  "), (&d.unhealthy, "unhealthy")] {
        for e in entries {
            let line = format!("{label} {} — {}", one_line(&e.name), one_line(&e.reason));
            lines.push(line.trim_end().to_string());
            for w in &e.warnings {
                lines.push(format!("          warning: {}", one_line(w)));
            }
        }
    }
    lines.join("\n")
}
