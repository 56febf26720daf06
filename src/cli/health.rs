//! `mlxfs health [MODEL]`.

use clap::Args;
use serde::Serialize;

use super::output::{CliError, Output};
use crate::catalog::record::describe;
use crate::catalog::runtime_cache::{self, RuntimeCache};
use crate::catalog::verdict::HealthStatus;
use crate::catalog::{Locations, ModelRef, Source, all_models, par_map, resolve};
use crate::text::human_bytes;
use crate::text::one_line;

#[derive(Args, Debug)]
#[command(after_help = "\
Checks config.json, weight files (index and shards, empty or truncated safetensors, LFS
pointer files, partial downloads), vision/tokenizer side files, and links (dangling, or
leading out of the model). Without MODEL every workspace and hub model is checked; one
broken model never hides the others.

--verbose adds each model's runtime cache (a workspace's .hf_cache, a hub model's
per-model folder under mlxfs's state directory: what `run` downloaded at run time): its
repos, revisions, files and bytes, and an offline-readiness verdict with its problems (a
download that did not finish, a dangling snapshot link, a ref to a revision that is not
cached). That verdict is separate: a broken runtime cache never makes a model unhealthy.")]
pub struct HealthArgs {
    /// A model name (`org/name`, `name@rev`) or a path; all models when omitted
    pub model: Option<String>,
    /// Also report each model's runtime cache and whether it is ready for offline runs
    #[arg(long, short = 'v')]
    pub verbose: bool,
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
    /// With `--verbose`: the model's runtime cache (a verdict of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_cache: Option<RuntimeCache>,
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

fn entry(m: &ModelRef, verbose: bool) -> HealthEntry {
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
        runtime_cache: verbose.then(|| runtime_cache::inspect(&m.isolated_cache())),
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
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = par_map(&models, |m| entry(m, a.verbose))
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
            if let Some(rc) = &e.runtime_cache {
                lines.extend(runtime_cache_lines(rc, "runtime cache ", "          "));
            }
        }
    }
    lines.join("\n")
}

/// A runtime cache for people: the folder and verdict, each repo with its revisions (refs,
/// files, bytes), other files, and every problem (shared by `health --verbose` and `show`).
pub fn runtime_cache_lines(rc: &RuntimeCache, label: &str, indent: &str) -> Vec<String> {
    let mut lines = vec![format!(
        "{indent}{label}{}: {}",
        one_line(&rc.dir),
        rc.summary()
    )];
    for r in &rc.repos {
        let kind = if r.kind == "model" {
            String::new()
        } else {
            format!(" ({})", r.kind)
        };
        lines.push(format!(
            "{indent}  {}{kind}: {} revision(s), {}",
            one_line(&r.repo_id),
            r.revisions.len(),
            human_bytes(r.bytes)
        ));
        for v in &r.revisions {
            let refs = if v.refs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", one_line(&v.refs.join(", ")))
            };
            lines.push(format!(
                "{indent}    {}{refs}: {} file(s), {}",
                one_line(crate::text::short_rev(&v.commit)),
                v.files.len(),
                human_bytes(v.bytes)
            ));
        }
    }
    if rc.other_files > 0 {
        lines.push(format!(
            "{indent}  other files: {}, {}",
            rc.other_files,
            human_bytes(rc.other_bytes)
        ));
    }
    for p in &rc.problems {
        lines.push(format!("{indent}  problem: {}", one_line(p)));
    }
    lines
}
