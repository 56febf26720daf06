//! `mlxfs pull REPO[@REV]`: download into the hub cache.

use clap::Args;
use serde_json::Value;

use super::hubcmd::{confirm, interactive, progress};
use super::output::CliError;
use crate::catalog::Locations;
use crate::hub::pull::{Outcome, PullFlags, pull};
use crate::hub::{Hub, RepoSpec};

#[derive(Args, Debug)]
#[command(after_help = "\
Downloads a hub revision into the hub cache (HF_HUB_CACHE, else $HF_HOME/hub) in the layout
huggingface_hub writes, so Python tools see it too. For a model you want to keep, change or
run reproducibly, prefer `mlxfs clone`, which makes a managed workspace.

REPO is `org/name`; `@REV` picks a branch, tag or commit (default: main). A revision already
in the cache and healthy is not downloaded again (the hub is not asked; --refresh asks it
whether the branch moved and fetches only what the new commit adds). An interrupted pull continues where it
stopped (partial files are kept as blobs/<id>.incomplete, as huggingface_hub does). Each file
is checked against the hub's sha256/git id before it is used. Nothing half-downloaded ever
shows in `mlxfs list` or a mount.

Environment: HF_ENDPOINT (hub URL), HF_TOKEN (private and gated repos),
MLXFS_HUB_TIMEOUT (seconds a stalled connection may wait, default 60).")]
pub struct PullArgs {
    /// Hub repo id, optionally with @branch, @tag or @commit
    pub model: String,
    /// Resume or repair a cached copy that is unhealthy, without asking
    #[arg(long)]
    pub force_resume: bool,
    /// Ask the hub whether the branch moved, even when the cache has a healthy copy
    #[arg(long)]
    pub refresh: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(a: &PullArgs, loc: &Locations, json: bool) -> Result<Value, CliError> {
    let spec = RepoSpec::parse(&a.model)?;
    let hub = Hub::from_env()?;
    super::hubcmd::exit_on_interrupt();
    let p = progress(json, a.quiet);
    let mut flags = PullFlags {
        force_resume: a.force_resume,
        refresh: a.refresh,
    };
    let mut o = pull(&hub, loc, &spec, flags, p.as_ref())?;
    if let Outcome::NeedsConfirmation { reason, .. } = &o
        && !json
        && interactive()
        && confirm(&format!(
            "{} is in the cache but unhealthy ({reason}). Resume the download?",
            spec
        ))
    {
        flags.force_resume = true;
        o = pull(&hub, loc, &spec, flags, p.as_ref())?;
    }
    Ok(o.data(&spec))
}

pub fn render(d: &Value) -> String {
    let msg = d["message"].as_str().unwrap_or("");
    match d["download_status"].as_str() {
        Some("success") => {
            let mut s = format!("{msg}\n  {}", d["path"].as_str().unwrap_or(""));
            if let Some(h) = d["health"].as_str().filter(|h| *h != "healthy") {
                s.push_str(&format!("\n  warning: {h}"));
            }
            s
        }
        Some("already_exists") => format!(
            "{msg} ({})\n  hint: `--refresh` asks the hub whether the branch moved",
            d["commit_hash"]
                .as_str()
                .and_then(|c| c.get(..7))
                .unwrap_or("")
        ),
        _ => msg.to_string(),
    }
}

/// Human mode: an unanswered confirmation is a failure (nothing was done).
pub fn exit_code(d: &Value, json: bool) -> i32 {
    if !json && d["download_status"] == "requires_confirmation" {
        1
    } else {
        0
    }
}
