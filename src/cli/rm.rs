//! `mlxfs rm MODEL[@REV] [-f]`: delete from the hub cache.

use clap::Args;
use serde_json::{Value, json};

use super::hubcmd::{confirm, interactive};
use super::output::CliError;
use crate::catalog::Locations;
use crate::hub::rm::{RmError, RmFlags, RmOutcome, rm};

#[derive(Args, Debug)]
#[command(after_help = "\
Deletes a model from the hub cache. With @REV (a commit prefix or a branch under refs/) only
that snapshot goes, together with the blobs no other snapshot uses; blobs another snapshot
links to are always kept. Without @REV the whole model goes.

A name that only matches approximately, or a model with a download in progress (a held lock),
needs -f (on a terminal you are asked instead). Workspaces are your folders: mlxfs never
deletes them — use `rm -rf <path>`.")]
pub struct RmArgs {
    /// Hub model (`org/name`, `name@rev`)
    pub model: String,
    /// Delete without asking, even on an approximate match or held locks
    #[arg(long, short)]
    pub force: bool,
}

pub fn run(a: &RmArgs, loc: &Locations, json: bool) -> Result<Value, CliError> {
    let conv = |e: RmError| match e {
        RmError::Resolve(r) => CliError::from(r),
        RmError::Workspace(p) => CliError::new(
            "workspace_model",
            format!("Cannot delete workspace model. Use: rm -rf {p}"),
        )
        .hint("Workspaces are your folders; mlxfs only deletes from the hub cache."),
        RmError::Io(m) => CliError::new("io_error", m),
    };
    let mut flags = if a.force {
        RmFlags::force()
    } else {
        RmFlags::default()
    };
    let mut o = rm(loc, &a.model, flags).map_err(conv)?;
    // On a terminal, ask instead of refusing: first the name, then a held lock.
    while !json && interactive() {
        let q = match &o {
            RmOutcome::NeedsConfirmation { model, spec } => {
                flags.name_confirmed = true;
                format!("Delete '{model}' (matched from '{spec}')?")
            }
            RmOutcome::Locked { model, .. } => {
                flags.override_locks = true;
                format!("'{model}' has a download in progress. Delete anyway?")
            }
            RmOutcome::Deleted(_) => break,
        };
        if !confirm(&q) {
            return Ok(
                json!({"model": a.model, "action": "cancelled", "message": "Nothing deleted."}),
            );
        }
        o = rm(loc, &a.model, flags).map_err(conv)?;
    }
    if let RmOutcome::Locked { locks, .. } = &o {
        let mut e = CliError::new(
            "locks_present",
            "Model has active locks. Use --force to override.",
        )
        .hint("A download of this model is running (another mlxfs, mlx-knife or Python process).");
        e.extra.insert("lock_files".into(), json!(locks));
        return Err(e);
    }
    Ok(o.data())
}

pub fn render(d: &Value) -> String {
    let mut s = d["message"].as_str().unwrap_or("").to_string();
    if d["action"] == "requires_confirmation" {
        s.push_str("; add -f to delete it");
    }
    if let Some(f) = d["freed_bytes"].as_u64() {
        s.push_str(&format!(
            "\n  freed {} ({} blobs removed, {} shared blobs kept)",
            crate::hub::progress::human_bytes(f),
            d["blobs_removed"],
            d["blobs_kept"]
        ));
    }
    s
}

/// Human mode: an unconfirmed deletion did nothing — not a success.
pub fn exit_code(d: &Value, json: bool) -> i32 {
    if !json
        && matches!(
            d["action"].as_str(),
            Some("requires_confirmation") | Some("cancelled")
        )
    {
        1
    } else {
        0
    }
}
