//! `mlxfs health [MODEL]`.

use super::output::{CliError, Output};
use crate::catalog::fleet;
use crate::catalog::record::describe;
use crate::catalog::runtime_cache::RuntimeCache;
use crate::catalog::{Locations, Source, all_models, resolve};
use crate::par::par_map;
use crate::text::human_bytes;
use crate::text::one_line;
use clap::Args;

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
cached). That verdict is separate: a broken runtime cache never makes a model unhealthy.

Without MODEL and --verbose, a live mlxfs mount over the same folders answers when it can
prove its catalog current (the same output); --from-disk (or MLXFS_MOUNT_ANSWERS=off) always
reads the disk; MLXFS_MOUNT_ANSWERS=debug says on stderr where the answer came from.")]
pub struct HealthArgs {
    /// A model name (`org/name`, `name@rev`) or a path; all models when omitted
    pub model: Option<String>,
    /// Also report each model's runtime cache and whether it is ready for offline runs
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Read the disk even when a live mlxfs mount could answer
    #[arg(long)]
    pub from_disk: bool,
}

pub use crate::catalog::fleet::{HealthData, HealthEntry, Summary};

pub fn run(a: &HealthArgs, loc: &Locations) -> Result<Output, CliError> {
    // A mount answers for every model, without the runtime caches (`--verbose`).
    if a.model.is_some() || a.verbose {
        super::live::not_asked("health", "one model, or --verbose");
    } else if let Some(f) = super::live::fleet(loc, a.from_disk, "health") {
        let data = f.health;
        let value = serde_json::to_value(&data).unwrap_or_default();
        return Ok(Output::lazy(value, move || render(&data)));
    }
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
    let data = fleet::health_data(par_map(&models, |m| {
        fleet::health_entry(m, &describe(m), a.verbose)
    }));
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
