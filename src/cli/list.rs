//! `mlxfs list [PATTERN]`.

use clap::Args;

use super::output::{CliError, Output, hash7, humanize_size, table};
use crate::catalog::record::{ModelRecord, last_modified_known};
use crate::catalog::verdict::{Capability, HealthStatus, ModelType};
use crate::catalog::{Locations, Source, record};
use crate::timefmt;

#[derive(Args, Debug, Clone)]
#[command(after_help = "\
PATTERN is a case-insensitive substring of model names; a path (./, ../, /, ~) lists that
workspace, the workspaces in that folder, or those whose folder name starts with it.

Src: cache = hub cache, ws = workspace matching its content hash, ws* = modified since the
hash was pinned, ws? = unknown (no v2 hash: `mlxfs show NAME --recalc-hash`).

Without PATTERN, a live mlxfs mount over the same folders (same hub cache, workspace home and
MLXK_MODEL_PATH; mounted by this user, the same mlxfs program) answers when it can prove its
catalog current: the output is the same, only faster. Anything else reads the disk.
--from-disk (or MLXFS_MOUNT_ANSWERS=off) always reads the disk; MLXFS_MOUNT_ANSWERS=debug
says on stderr where the answer came from.")]
pub struct ListArgs {
    /// Filter: substring of a name, or a path / path prefix
    pub pattern: Option<String>,
    /// Show every model, including unhealthy and not runnable ones
    #[arg(long)]
    pub all: bool,
    /// Add a health column
    #[arg(long)]
    pub health: bool,
    /// More columns (Clean, Framework; with --health: Integrity, Runtime, Reason); full names
    #[arg(long)]
    pub verbose: bool,
    /// Absolute paths in the Name column (a workspace's folder, a hub model's snapshot)
    #[arg(long)]
    pub full_paths: bool,
    /// Add an Origin column: the hub repo a workspace was cloned or converted from (its
    /// sentinel's source), or a hub model's repo id; `-` when unknown
    #[arg(long)]
    pub origin: bool,
    /// Read the disk even when a live mlxfs mount could answer
    #[arg(long)]
    pub from_disk: bool,
}

/// `list [PATTERN]`: every matching model's record (the JSON), and mlx-knife's table.
pub fn run(a: &ListArgs, loc: &Locations) -> Result<Output, CliError> {
    // A pattern is resolved here (names, paths): only the whole catalog comes from a mount.
    let whole = a.pattern.as_deref().is_none_or(|p| p.trim().is_empty());
    if !whole {
        super::live::not_asked("list", "a pattern is resolved here");
    }
    let data = match whole
        .then(|| super::live::fleet(loc, a.from_disk, "list"))
        .flatten()
    {
        Some(f) => f.list,
        None => record::list(loc, a.pattern.as_deref()),
    };
    let value = serde_json::to_value(&data).unwrap_or_default();
    let a = a.clone();
    Ok(Output::lazy(value, move || render(&data.models, &a)))
}

/// The mlx-knife table.
pub fn render(models: &[ModelRecord], a: &ListArgs) -> String {
    let compact = !a.all && !a.verbose;
    let mut headers = vec!["Name", "Hash", "Size", "Modified", "Src"];
    if a.origin {
        headers.push("Origin");
    }
    if !compact {
        headers.extend(["Clean", "Framework"]);
    }
    headers.push("Type");
    if a.health {
        if a.verbose {
            headers.extend(["Integrity", "Runtime", "Reason"]);
        } else {
            headers.push("Health");
        }
    }
    let now = timefmt::now_secs();
    let mut rows = Vec::new();
    for m in models {
        let healthy = m.health == HealthStatus::Healthy;
        let runnable = m.runtime_compatible;
        if !(a.all || healthy && runnable) {
            continue;
        }
        let mut name = m.display_name.as_deref().unwrap_or(&m.name).to_string();
        if a.full_paths {
            name = m.path.clone();
        } else if !a.verbose
            && let Some(rest) = name.strip_prefix("mlx-community/")
        {
            name = rest.to_string();
        }
        let mut ty = m.model_type.as_str().to_string();
        if m.capabilities.contains(&Capability::Vision) {
            ty.push_str("+vision");
        }
        if m.capabilities.contains(&Capability::Audio) && m.model_type != ModelType::Audio {
            ty.push_str("+audio");
        }
        let cached = m.source == Source::Cache;
        let src = match (cached, m.clean) {
            (true, _) => "cache",
            (false, Some(false)) => "ws*",
            (false, None) => "ws?",
            (false, Some(true)) => "ws",
        };
        let modified = timefmt::parse_iso_utc(&m.last_modified)
            .filter(|_| last_modified_known(&m.last_modified))
            .map_or("-".to_string(), |t| timefmt::relative(t, now));
        let mut row = vec![
            name,
            hash7(m.hash.as_deref(), m.content_hash.as_deref()),
            humanize_size(m.size_bytes),
            modified,
            src.to_string(),
        ];
        if a.origin {
            let origin = if cached {
                Some(m.name.as_str())
            } else {
                m.origin.as_deref()
            };
            row.push(origin.unwrap_or("-").to_string());
        }
        if !compact {
            let c = match (cached, m.clean) {
                (false, Some(true)) => "✓",
                (false, Some(false)) => "✗",
                _ => "—",
            };
            row.push(c.to_string());
            row.push(m.framework.as_str().to_string());
        }
        row.push(ty);
        if a.health {
            if a.verbose {
                row.push(m.health.as_str().to_string());
                row.push(
                    if healthy {
                        if runnable { "yes" } else { "no" }
                    } else {
                        "-"
                    }
                    .to_string(),
                );
                let mut reason = m.reason.as_deref().unwrap_or("-").to_string();
                if reason.chars().count() > 60 {
                    reason = reason.chars().take(57).collect::<String>() + "...";
                }
                row.push(reason);
            } else {
                let h = match (healthy, runnable) {
                    (true, true) => "healthy",
                    (true, false) => "healthy*",
                    _ => "unhealthy",
                };
                row.push(h.to_string());
            }
        }
        rows.push(row);
    }
    let max_last = (a.health && a.verbose).then_some(26);
    table(&headers, &rows, max_last)
}
