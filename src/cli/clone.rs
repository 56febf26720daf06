//! `mlxfs clone REPO[@REV] [TARGET]`: hub → managed workspace.

use clap::Args;
use serde_json::Value;

use super::hubcmd::progress;
use super::output::CliError;
use crate::hub::clone::{check_target, clone, target_path};
use crate::hub::{ErrorKind, Hub, HubError, RepoSpec};

#[derive(Args, Debug)]
#[command(after_help = "\
The primary way to get a model: downloads a hub revision straight into a workspace folder
with real files, a content hash and the .mlxk_workspace.json sentinel (the same format as
mlx-knife, so either tool sees the workspace as clean).

TARGET: a path (`./models/x`, `/data/x`, `~/x`); a bare name goes under MLXK_WORKSPACE_HOME
(or the current folder when it is unset); without TARGET, $MLXK_WORKSPACE_HOME/<name>.
The target must not exist or be an empty folder.

Safe: everything is downloaded into a hidden staging folder next to the target, verified,
hashed and health-checked, then renamed into place — the workspace appears whole or not at
all. If the network, the hub or the disk gives out, or you interrupt it, run the same
command again to resume from the bytes already downloaded; a refused request (not found, no
access, bad target) leaves nothing behind.

Environment: HF_ENDPOINT, HF_TOKEN, MLXK_WORKSPACE_HOME, MLXFS_HUB_TIMEOUT.")]
pub struct CloneArgs {
    /// Hub repo id, optionally with @branch, @tag or @commit
    pub model: String,
    /// Target folder (see below)
    pub target: Option<String>,
    /// Branch, tag or commit to clone (same as REPO@REV)
    #[arg(long, value_name = "B")]
    pub branch: Option<String>,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
    /// Accepted for mlx-knife compatibility (clones always resume and always check health)
    #[arg(long, hide = true)]
    pub force_resume: bool,
    /// Accepted for mlx-knife compatibility
    #[arg(long, hide = true)]
    pub no_health_check: bool,
}

fn workspace_home() -> Option<std::path::PathBuf> {
    let v = std::env::var("MLXK_WORKSPACE_HOME")
        .ok()
        .filter(|v| !v.is_empty())?;
    Some(crate::catalog::resolve::expand_user(&v))
}

pub fn run(a: &CloneArgs, json: bool) -> Result<Value, CliError> {
    let mut spec = RepoSpec::parse(&a.model)?;
    if let Some(b) = &a.branch {
        if spec.rev.as_ref().is_some_and(|r| r != b) {
            return Err(HubError::new(
                ErrorKind::InvalidSpec,
                format!("--branch {b} contradicts {}", a.model),
            )
            .into());
        }
        spec = RepoSpec::parse(&format!("{}@{b}", spec.repo))?;
    }
    let home = workspace_home();
    let target = target_path(&spec, a.target.as_deref(), home.as_deref())?;
    check_target(&target, home.as_deref())?;
    let hub = Hub::from_env()?;
    super::hubcmd::exit_on_interrupt();
    let p = progress(json, a.quiet);
    let c = clone(&hub, &spec, &target, p.as_ref())?;
    Ok(c.data(&spec))
}

pub fn render(d: &Value) -> String {
    let mut s = format!(
        "Cloned {} ({}) into {}\n  content hash {}",
        d["source_repo"].as_str().unwrap_or(""),
        d["source_revision"]
            .as_str()
            .unwrap_or("")
            .get(..7)
            .unwrap_or(""),
        d["target_dir"].as_str().unwrap_or(""),
        d["content_hash"].as_str().unwrap_or("")
    );
    if let Some(h) = d["health"].as_str().filter(|h| *h != "healthy") {
        s.push_str(&format!("\n  warning: {h}"));
    }
    s
}
