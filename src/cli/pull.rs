//! `mlxfs pull REPO[@REV]`: download into the hub cache.

use clap::Args;
use serde_json::{Value, json};

use super::hubcmd::{confirm, interactive, progress};
use super::output::{CliError, Output};
use crate::catalog::Locations;
use crate::hub::pull::{Outcome, PullFlags, pull};
use crate::hub::{Hub, RepoSpec};
use crate::text::{human_bytes, one_line, short_rev};

#[derive(Args, Debug)]
#[command(after_help = "\
Downloads a hub revision into the hub cache (found as huggingface_hub finds it: see
`mlxfs --help`) in the layout huggingface_hub writes, so Python tools see it too. For a model you want to keep, change or
run reproducibly, prefer `mlxfs clone`, which makes a managed workspace.

REPO is `org/name`; `@REV` picks a branch, tag or commit (default: main). A revision already
in the cache and healthy is not downloaded again (the hub is not asked; --refresh asks it
whether the branch moved and fetches only what the new commit adds). An interrupted pull continues where it
stopped (partial files are kept as blobs/<id>.incomplete, as huggingface_hub does). Each file
is checked against the hub's sha256/git id before it is used. Nothing half-downloaded ever
shows in `mlxfs list` or a mount.

Environment: HF_ENDPOINT (hub URL), HF_TOKEN (private and gated repos),
MLXFS_HUB_TIMEOUT (seconds a stalled connection may wait, default 60), MLXFS_HUB_RETRIES
(retries of a failed download, default 3); see docs/ENVIRONMENT.md.")]
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

/// `Downloaded org/name@abc1234 (20 files, 1.2GB)`.
fn downloaded(spec: &RepoSpec, commit: &str, files: usize, bytes: u64) -> String {
    format!(
        "Downloaded {}@{} ({files} files, {})",
        spec.repo,
        short_rev(commit),
        human_bytes(bytes)
    )
}

/// What a repair needs (`<reason>. Use --force-resume …`).
fn needs_confirmation(reason: &str) -> String {
    format!("{reason}. Use --force-resume to attempt resume or 'mlxfs rm' to delete.")
}

/// mlx-knife's `data` for pull (+ mlxfs fields).
pub fn data(spec: &RepoSpec, o: &Outcome) -> Value {
    let mut d = json!({
        "model": spec.repo,
        "download_status": "",
        "message": "",
        "expanded_name": null,
    });
    match o {
        Outcome::AlreadyExists { commit, path } => {
            d["download_status"] = json!("already_exists");
            d["message"] = json!(format!("Model {} already exists in cache", spec.repo));
            d["commit_hash"] = json!(commit);
            d["path"] = json!(path.to_string_lossy());
        }
        Outcome::NeedsConfirmation { commit, reason } => {
            d["download_status"] = json!("requires_confirmation");
            d["message"] = json!(needs_confirmation(reason));
            d["commit_hash"] = json!(commit);
        }
        Outcome::Pulled {
            commit,
            path,
            files,
            bytes,
            health,
        } => {
            d["download_status"] = json!("success");
            d["message"] = json!(downloaded(spec, commit, *files, *bytes));
            d["commit_hash"] = json!(commit);
            d["path"] = json!(path.to_string_lossy());
            d["files"] = json!(files);
            d["size_bytes"] = json!(bytes);
            d["health"] = json!(health.summary());
        }
    }
    d
}

pub fn run(a: &PullArgs, loc: &Locations, json: bool) -> Result<Output, CliError> {
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
            "{} is in the cache but unhealthy ({}). Resume the download?",
            spec,
            one_line(reason)
        ))
    {
        flags.force_resume = true;
        o = pull(&hub, loc, &spec, flags, p.as_ref())?;
    }
    let d = data(&spec, &o);
    // Human mode: an unanswered confirmation is a failure (nothing was done).
    let code = i32::from(!json && matches!(o, Outcome::NeedsConfirmation { .. }));
    Ok(Output::new(d, render(&o, &spec)).code(code))
}

pub fn render(o: &Outcome, spec: &RepoSpec) -> String {
    match o {
        Outcome::Pulled {
            commit,
            path,
            files,
            bytes,
            health,
        } => {
            let mut s = format!(
                "{}\n  {}",
                downloaded(spec, commit, *files, *bytes),
                one_line(&path.to_string_lossy())
            );
            if let Some(r) = health.reason() {
                s.push_str(&format!("\n  warning: unhealthy: {}", one_line(r)));
            }
            s
        }
        Outcome::AlreadyExists { commit, .. } => format!(
            "Model {} already exists in cache ({})\n  hint: `--refresh` asks the hub whether the branch moved",
            spec.repo,
            short_rev(commit)
        ),
        Outcome::NeedsConfirmation { reason, .. } => one_line(&needs_confirmation(reason)).into(),
    }
}
