//! `mlxfs list [PATTERN]`.

use clap::Args;
use serde_json::Value;

use super::output::{CliError, hash7, humanize_size, table};
use crate::catalog::{Locations, record};
use crate::timefmt;

#[derive(Args, Debug)]
#[command(after_help = "\
PATTERN is a case-insensitive substring of model names; a path (./, ../, /, ~) lists that
workspace, the workspaces in that folder, or those whose folder name starts with it.

Src: cache = hub cache, ws = workspace matching its content hash, ws* = modified since the
hash was pinned, ws? = unknown (no v2 hash: `mlxfs show NAME --recalc-hash`).")]
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
}

pub fn run(a: &ListArgs, loc: &Locations) -> Result<Value, CliError> {
    Ok(record::list_data(loc, a.pattern.as_deref()))
}

fn s<'a>(m: &'a Value, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// The mlx-knife table.
pub fn render(data: &Value, a: &ListArgs) -> String {
    let compact = !a.all && !a.verbose;
    let mut headers = if compact {
        vec!["Name", "Hash", "Size", "Modified", "Src", "Type"]
    } else {
        vec![
            "Name",
            "Hash",
            "Size",
            "Modified",
            "Src",
            "Clean",
            "Framework",
            "Type",
        ]
    };
    if a.health {
        if a.verbose {
            headers.extend(["Integrity", "Runtime", "Reason"]);
        } else {
            headers.push("Health");
        }
    }
    let now = timefmt::now_secs();
    let empty = vec![];
    let models = data["models"].as_array().unwrap_or(&empty);
    let mut rows = Vec::new();
    for m in models {
        let healthy = s(m, "health") == Some("healthy");
        let runnable = m["runtime_compatible"].as_bool() == Some(true);
        if !(a.all || healthy && runnable) {
            continue;
        }
        let mut name = s(m, "display_name")
            .or(s(m, "name"))
            .unwrap_or("-")
            .to_string();
        if !a.verbose
            && let Some(rest) = name.strip_prefix("mlx-community/")
        {
            name = rest.to_string();
        }
        let caps: Vec<&str> = m["capabilities"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut ty = s(m, "model_type").unwrap_or("-").to_string();
        if caps.contains(&"vision") && ty != "-" {
            ty.push_str("+vision");
        }
        if caps.contains(&"audio") && ty != "-" && ty != "audio" {
            ty.push_str("+audio");
        }
        let cached = m["cached"].as_bool().unwrap_or(true);
        let clean = m["clean"].as_bool();
        let src = match (cached, clean) {
            (true, _) => "cache",
            (false, Some(false)) => "ws*",
            (false, None) => "ws?",
            (false, Some(true)) => "ws",
        };
        let modified = s(m, "last_modified")
            .and_then(timefmt::parse_iso_utc)
            .map_or("-".to_string(), |t| timefmt::relative(t, now));
        let mut row = vec![
            name,
            hash7(s(m, "hash"), s(m, "content_hash")),
            humanize_size(m["size_bytes"].as_u64().unwrap_or(0)),
            modified,
            src.to_string(),
        ];
        if !compact {
            let c = match (cached, clean) {
                (false, Some(true)) => "✓",
                (false, Some(false)) => "✗",
                _ => "—",
            };
            row.push(c.to_string());
            row.push(s(m, "framework").unwrap_or("-").to_string());
        }
        row.push(ty);
        if a.health {
            if a.verbose {
                row.push(if healthy { "healthy" } else { "unhealthy" }.to_string());
                row.push(
                    if healthy {
                        if runnable { "yes" } else { "no" }
                    } else {
                        "-"
                    }
                    .to_string(),
                );
                let mut reason = s(m, "reason").unwrap_or("-").to_string();
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
