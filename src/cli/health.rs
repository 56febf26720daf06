//! `mlxfs health [MODEL]`.

use clap::Args;
use serde_json::{Map, Value, json};

use super::output::CliError;
use crate::catalog::record::describe;
use crate::catalog::{Locations, ModelRef, Source, all_models, par_map, resolve};

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

fn entry(m: &ModelRef) -> (bool, Value) {
    let d = describe(m);
    let healthy = d.record.health == "healthy";
    let mut e = Map::new();
    let name = match (&m.source, &m.revision) {
        (Source::Workspace, _) => m.short_name.clone(),
        (Source::Cache, _) => m.spec(),
    };
    e.insert("name".into(), Value::from(name));
    e.insert(
        "status".into(),
        Value::from(if healthy { "healthy" } else { "unhealthy" }),
    );
    e.insert("reason".into(), Value::from(d.health_message));
    if m.source == Source::Workspace {
        let managed = d
            .sentinel
            .as_ref()
            .and_then(|s| s.sentinel())
            .is_some_and(|s| s.managed());
        e.insert("managed".into(), Value::from(managed));
    }
    (healthy, Value::Object(e))
}

pub fn run(a: &HealthArgs, loc: &Locations) -> Result<Value, CliError> {
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
    let entries = par_map(&models, entry);
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(h, _)| *h);
    let (h, u) = (healthy.len(), unhealthy.len());
    Ok(json!({
        "healthy": healthy.into_iter().map(|x| x.1).collect::<Vec<_>>(),
        "unhealthy": unhealthy.into_iter().map(|x| x.1).collect::<Vec<_>>(),
        "summary": {"total": h + u, "healthy_count": h, "unhealthy_count": u},
    }))
}

pub fn render(d: &Value) -> String {
    let total = d["summary"]["total"].as_u64().unwrap_or(0);
    let mut lines = Vec::new();
    if total != 1 {
        lines.push(format!(
            "Summary: total {total}, healthy {}, unhealthy {}",
            d["summary"]["healthy_count"], d["summary"]["unhealthy_count"]
        ));
    }
    for (key, label) in [("healthy", "healthy  "), ("unhealthy", "unhealthy")] {
        for e in d[key].as_array().into_iter().flatten() {
            let line = format!(
                "{label} {} — {}",
                e["name"].as_str().unwrap_or("-"),
                e["reason"].as_str().unwrap_or("")
            );
            lines.push(line.trim_end().to_string());
        }
    }
    lines.join("\n")
}
