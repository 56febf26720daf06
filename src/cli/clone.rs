//! `mlxfs clone REPO[@REV] [TARGET]`: hub → managed workspace.

use clap::Args;
use serde::Serialize;

use super::hubcmd::progress;
use super::output::{CliError, Output};
use crate::catalog::Locations;
use crate::hub::clone::{Cloned, check_target, clone, target_path};
use crate::hub::{ErrorKind, Hub, HubError, RepoSpec};
use crate::text::{one_line, short_rev};

#[derive(Args, Debug)]
#[command(after_help = "\
The primary way to get a model: downloads a hub revision straight into a workspace folder
with real files, a content hash and the .mlxk_workspace.json sentinel (the same format as
mlx-knife, so either tool sees the workspace as clean).

TARGET: a path (`./models/x`, `/data/x`, `~/x`); a bare name goes under MLXK_WORKSPACE_HOME
(or the current folder when it is unset); without TARGET, $MLXK_WORKSPACE_HOME/<name>.
The target must not exist or be an empty folder, and may not be in any Hugging Face cache
(the hub cache, mlxfs's run caches, another cache: as `mlxfs restore --help` says), a
workspace home, a folder inside a model, the current folder or a mount point.

Safe: everything is downloaded into a hidden staging folder next to the target, verified,
hashed and health-checked, then renamed into place — the workspace appears whole or not at
all. If the network, the hub or the disk gives out, or you interrupt it, run the same
command again to resume from the bytes already downloaded; a refused request (not found, no
access, bad target) leaves nothing behind.

Environment: HF_ENDPOINT, HF_TOKEN, MLXK_WORKSPACE_HOME, MLXFS_HUB_TIMEOUT,
MLXFS_HUB_RETRIES (see docs/ENVIRONMENT.md).")]
pub struct CloneArgs {
    /// Hub repo id, optionally with @branch, @tag or @commit
    pub model: String,
    /// Target folder (see below)
    pub target: Option<String>,
    /// Branch, tag or commit to clone (same as REPO@REV)
    #[arg(long, value_name = "REV")]
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

/// The `data` of `clone --json` (mlx-knife's keys, then mlxfs's).
#[derive(Debug, Clone, Serialize)]
pub struct CloneData {
    pub model: String,
    pub clone_status: &'static str,
    pub message: String,
    pub target_dir: String,
    pub health_check: bool,
    pub source_repo: String,
    pub source_revision: String,
    pub content_hash: Option<String>,
    pub files: usize,
    pub size_bytes: u64,
    /// `healthy` or `unhealthy: <reason>`.
    pub health: String,
    pub resumed_bytes: u64,
}

fn data(spec: &RepoSpec, c: &Cloned) -> CloneData {
    CloneData {
        model: spec.to_string(),
        clone_status: "success",
        message: format!("Cloned to {}", c.target.display()),
        target_dir: c.target.to_string_lossy().into_owned(),
        health_check: true,
        source_repo: spec.repo.clone(),
        source_revision: c.commit.clone(),
        content_hash: c.content_hash.clone(),
        files: c.files,
        size_bytes: c.bytes,
        health: c.health.summary(),
        resumed_bytes: c.resumed_bytes,
    }
}

pub fn run(a: &CloneArgs, loc: &Locations, json: bool) -> Result<Output, CliError> {
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
    // The workspace home as every command sees it (an unusable one counts as unset, with the
    // warning `mlxfs` already printed), except that clone creates a missing one.
    let home = loc
        .workspace_home
        .clone()
        .or_else(|| loc.workspace_home_set.clone());
    let target = target_path(&spec, a.target.as_deref(), home.as_deref())?;
    check_target(&target, home.as_deref(), loc)?;
    // A name another workspace home already holds makes that name ambiguous from now on.
    let parent = target.parent().and_then(|p| std::fs::canonicalize(p).ok());
    let into_a_home = parent
        .as_deref()
        .is_some_and(|p| loc.workspace_homes().any(|h| h == p) || home.as_deref() == Some(p));
    if into_a_home
        && let Some(name) = target.file_name().and_then(|n| n.to_str())
        && let Some(other) = crate::catalog::scan_all_workspaces(loc)
            .into_iter()
            .find(|w| w.name == name && w.path.parent() != parent.as_deref())
    {
        crate::note!(
            "warning: {} is also a workspace: the name {name} will be ambiguous (use paths)",
            other.path.display()
        );
    }
    let hub = Hub::from_env()?;
    super::hubcmd::exit_on_interrupt();
    let p = progress(json, a.quiet);
    let c = clone(&hub, &spec, &target, p.as_ref())?;
    let d = data(&spec, &c);
    let human = render(&c, &d);
    Ok(Output::new(d, human))
}

pub fn render(c: &Cloned, d: &CloneData) -> String {
    let mut s = format!(
        "Cloned {} ({}) into {}\n  content hash {}",
        d.source_repo,
        short_rev(&d.source_revision),
        one_line(&d.target_dir),
        d.content_hash.as_deref().unwrap_or("")
    );
    if let Some(reason) = c.health.reason() {
        s.push_str(&format!("\n  warning: unhealthy: {}", one_line(reason)));
    }
    s
}
