//! `mlxfs push WORKSPACE ORG/NAME`: upload a workspace to the hub.

use clap::Args;
use serde_json::{Value, json};

use super::hubcmd::progress;
use super::output::{CliError, Output};
use crate::catalog::{Locations, Source, resolve};
use crate::error::ErrorType;
use crate::hub::push::{Plan, PushOptions, plan, push};
use crate::hub::{ErrorKind, Hub, HubError, RepoSpec};
use crate::text::{human_bytes, one_line};

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
    /// The workspace: a path, or a workspace name (MLXK_WORKSPACE_HOME, MLXK_MODEL_PATH); a
    /// folder in the current one needs no ./ unless a workspace has exactly its name
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
    #[arg(long, value_name = "BRANCH", default_value = "main")]
    pub branch: String,
    /// The commit message
    #[arg(long = "commit", default_value = "mlxfs push", value_name = "MESSAGE")]
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

/// The `data` of a push (mlx-knife's keys, then mlxfs's). `commit` is (id, URL) of the
/// commit made, if any.
pub fn data(
    spec: &RepoSpec,
    hub: &Hub,
    o: &PushOptions,
    plan: &Plan,
    commit: Option<(&str, &str)>,
) -> Value {
    let summary = json!({"added": plan.added.len(), "modified": plan.modified.len(), "deleted": plan.deleted.len()});
    let no_changes = plan.changes() == 0 && !plan.create_repo;
    let message = if o.dry_run {
        if no_changes {
            "Dry-run: no changes".to_string()
        } else {
            format!(
                "Dry-run: would upload {} files ({}) +{} ~{} -{}",
                plan.added.len() + plan.modified.len(),
                human_bytes(plan.upload_bytes()),
                plan.added.len(),
                plan.modified.len(),
                plan.deleted.len()
            )
        }
    } else if no_changes {
        "No changes; nothing was committed.".to_string()
    } else {
        format!(
            "Committed {} files (+{} ~{} -{}).",
            plan.added.len() + plan.modified.len(),
            plan.added.len(),
            plan.modified.len(),
            plan.deleted.len()
        )
    };
    json!({
        "repo_id": spec.repo,
        "branch": o.branch,
        "commit_sha": commit.map(|c| c.0),
        "commit_url": commit.map(|c| c.1),
        "repo_url": format!("{}/{}", hub.endpoint, spec.repo),
        "uploaded_files_count": if o.dry_run { 0 } else { plan.added.len() + plan.modified.len() },
        "local_files_count": plan.local.len(),
        "no_changes": no_changes,
        "created_repo": plan.create_repo && !o.dry_run,
        "message": message,
        "change_summary": summary,
        "dry_run": o.dry_run,
        "would_create_repo": plan.create_repo && o.dry_run,
        "would_create_branch": plan.create_branch && o.dry_run,
        "added_files": plan.added,
        "modified_files": plan.modified,
        "deleted_files": plan.deleted,
        "remote_only_files": plan.remote_only,
        "upload_bytes": plan.upload_bytes(),
    })
}

pub fn run(a: &PushArgs, loc: &Locations, json: bool) -> Result<Output, CliError> {
    let spec = RepoSpec::parse(&a.repo)?;
    if spec.rev.is_some() {
        return Err(HubError::new(
            ErrorKind::InvalidSpec,
            "Give the branch with --branch, not @",
        )
        .into());
    }
    let m = resolve::resolve_workspace_arg(&a.workspace, loc)?;
    // Uploading (and with --delete, deleting) needs the exact workspace, not a guess.
    if !resolve::is_explicit_path(&a.workspace) && m.short_name != a.workspace {
        return Err(CliError::new(
            ErrorType::AmbiguousWorkspace,
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
            ErrorType::WorkspaceNotFound,
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
    let d = if a.dry_run {
        data(&spec, &hub, &o, &p, None)
    } else {
        let pr = progress(json, a.quiet);
        let c = push(&hub, &spec, &o, &p, &pr)?;
        data(
            &spec,
            &hub,
            &o,
            &p,
            c.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
        )
    };
    let human = render(&d);
    Ok(Output::new(d, human))
}

/// The human form of a push: the message, then the changes (dry run) or the commit.
pub fn render(d: &Value) -> String {
    let mut s = d["message"].as_str().unwrap_or("").to_string();
    if d["dry_run"] == true {
        for (k, sign) in [
            ("added_files", "+"),
            ("modified_files", "~"),
            ("deleted_files", "-"),
        ] {
            for f in d[k].as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "\n  {sign} {}",
                    one_line(f.as_str().unwrap_or(""))
                ));
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
