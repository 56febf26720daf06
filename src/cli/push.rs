//! `mlxfs push WORKSPACE ORG/NAME`: upload a workspace to the hub.

use clap::Args;
use serde_json::Value;

use super::hubcmd::progress;
use super::output::CliError;
use crate::catalog::{Locations, Source, resolve};
use crate::hub::push::{PushOptions, data, plan, push};
use crate::hub::{ErrorKind, Hub, HubError, RepoSpec};

#[derive(Args, Debug)]
#[command(after_help = "\
Uploads a workspace in one commit through the hub's commit API; large files go through the
Git LFS upload protocol, streamed from disk. Files already on the hub unchanged are skipped.
Never uploaded: .hf_cache/ (runtime artifacts), the .mlxk_workspace.json sentinel, .git/,
__pycache__/, virtualenvs, editor and OS cruft (.DS_Store, ._*, *~, *.swp, *.pyc), partial
downloads, and names matched by a .hfignore file in the workspace. Links must stay inside
the workspace.

Needs HF_TOKEN with write access (--dry-run works without one for public repos).
--dry-run lists what would be uploaded, changed and deleted, and uploads nothing.")]
pub struct PushArgs {
    /// The workspace: a path, or a workspace name under MLXK_WORKSPACE_HOME
    pub workspace: String,
    /// Target hub repo `org/name`
    pub repo: String,
    /// Create the repo as private (with --create)
    #[arg(long)]
    pub private: bool,
    /// Create the repo if it does not exist
    #[arg(long)]
    pub create: bool,
    /// Branch to commit to (created from main if missing)
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Commit message
    #[arg(long = "commit", default_value = "mlxfs push", value_name = "MSG")]
    pub message: String,
    /// Show what would be uploaded; upload nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete files on the hub branch that are not in the workspace
    #[arg(long)]
    pub delete: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(a: &PushArgs, loc: &Locations, json: bool) -> Result<Value, CliError> {
    let spec = RepoSpec::parse(&a.repo)?;
    if spec.rev.is_some() {
        return Err(HubError::new(
            ErrorKind::InvalidSpec,
            "Give the branch with --branch, not @",
        )
        .into());
    }
    let m = resolve::resolve(&a.workspace, loc)?;
    // Uploading (and with --delete, deleting) needs the exact workspace, not a guess.
    if !resolve::is_explicit_path(&a.workspace) && m.short_name != a.workspace {
        return Err(CliError::new(
            "ambiguous_workspace",
            format!(
                "'{}' only approximately matches '{}'",
                a.workspace, m.short_name
            ),
        )
        .hint(format!(
            "Give the exact name or a path: mlxfs push {} {}",
            m.path.display(),
            a.repo
        )));
    }
    if m.source != Source::Workspace {
        return Err(CliError::new(
            "workspace_not_found",
            format!("'{}' is a hub cache model, not a workspace", m.name),
        )
        .hint(format!(
            "Clone it into a workspace first: mlxfs clone {}",
            m.name
        )));
    }
    let o = PushOptions {
        private: a.private,
        create: a.create,
        branch: a.branch.clone(),
        message: a.message.clone(),
        dry_run: a.dry_run,
        delete: a.delete,
    };
    let hub = Hub::from_env()?;
    if !a.dry_run && hub.token.is_none() {
        return Err(HubError::new(ErrorKind::Auth, "HF_TOKEN not set")
            .hint("Set HF_TOKEN to a token with write access (--dry-run works without one).")
            .into());
    }
    let p = plan(&hub, &m.path, &spec, &o)?;
    if a.dry_run {
        return Ok(data(&spec, &hub, &o, &p, None));
    }
    let pr = progress(json, a.quiet);
    let c = push(&hub, &spec, &o, &p, &pr)?;
    Ok(data(
        &spec,
        &hub,
        &o,
        &p,
        c.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
    ))
}

pub fn render(d: &Value) -> String {
    let mut s = d["message"].as_str().unwrap_or("").to_string();
    if d["dry_run"] == true {
        for (k, sign) in [
            ("added_files", "+"),
            ("modified_files", "~"),
            ("deleted_files", "-"),
        ] {
            for f in d[k].as_array().into_iter().flatten() {
                s.push_str(&format!("\n  {sign} {}", f.as_str().unwrap_or("")));
            }
        }
    } else if let Some(c) = d["commit_sha"].as_str() {
        s.push_str(&format!(
            "\n  commit {c} on {}",
            d["branch"].as_str().unwrap_or("")
        ));
    }
    if let Some(r) = d["remote_only_files"].as_array().filter(|r| !r.is_empty()) {
        s.push_str(&format!(
            "\n  {} file(s) on the hub are not in the workspace (kept; --delete removes them)",
            r.len()
        ));
    }
    s
}
