//! `mlxfs rm MODEL[@REV] [-f]`: delete from the hub cache.

use clap::Args;
use serde_json::{Value, json};

use super::hubcmd::{confirm, interactive};
use super::output::{CliError, Output};
use crate::catalog::{Locations, resolve};
use crate::hub::rm::{RmFlags, RmOutcome, rm};
use crate::hub::{ErrorKind, HubError};
use crate::text::{human_bytes, one_line};

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

/// mlx-knife's `data` for rm (+ mlxfs fields).
pub fn data(o: &RmOutcome) -> Value {
    match o {
        RmOutcome::NeedsConfirmation { model, spec, what } => json!({
            "model": model, "action": "requires_confirmation",
            "message": format!("Would delete '{what}' (matched from '{spec}')"),
            "requires_confirmation": true, "matches": [], "lock_files_cleaned": 0,
        }),
        RmOutcome::Locked { model, locks } => json!({
            "model": model, "action": "locked", "message": "", "requires_confirmation": false,
            "matches": [], "lock_files_cleaned": 0, "locks_detected": true, "lock_files": locks,
        }),
        RmOutcome::Deleted(d) => {
            let what = match &d.commit {
                Some(c) => format!("{}@{}", d.model, c),
                None => d.model.clone(),
            };
            let mut v = json!({
                "model": d.model,
                "action": if d.commit.is_some() { "delete_hash" } else { "delete_model" },
                "message": format!("Deleted {what}"),
                "requires_confirmation": false, "matches": [],
                "lock_files_cleaned": d.lock_files_cleaned,
            });
            if let Some(c) = &d.commit {
                v["commit_hash"] = json!(c);
            }
            v["whole_model_removed"] = json!(d.whole_model);
            v["blobs_removed"] = json!(d.blobs_removed);
            v["blobs_kept"] = json!(d.blobs_kept);
            v["freed_bytes"] = json!(d.freed_bytes);
            if !d.relocated_removed.is_empty() {
                v["relocated_removed"] = json!(d.relocated_removed);
            }
            if !d.relocated_kept.is_empty() {
                v["relocated_kept"] = json!(
                    d.relocated_kept
                        .iter()
                        .map(|(p, why)| json!({"path": p, "reason": why}))
                        .collect::<Vec<_>>()
                );
            }
            v
        }
    }
}

pub fn run(a: &RmArgs, loc: &Locations, json: bool) -> Result<Output, CliError> {
    let m = resolve::resolve(&a.model, loc)?;
    let mut flags = if a.force {
        RmFlags::force()
    } else {
        RmFlags::default()
    };
    let mut o = rm(loc, &m, &a.model, flags)?;
    // On a terminal, ask instead of refusing: first the name, then a held lock.
    while !json && interactive() {
        let q = match &o {
            RmOutcome::NeedsConfirmation { spec, what, .. } => {
                flags.name_confirmed = true;
                format!(
                    "Delete '{}' (matched from '{}')?",
                    one_line(what),
                    one_line(spec)
                )
            }
            RmOutcome::Locked { model, .. } => {
                flags.override_locks = true;
                format!(
                    "'{}' has a download in progress. Delete anyway?",
                    one_line(model)
                )
            }
            RmOutcome::Deleted(_) => break,
        };
        if !confirm(&q) {
            let d = json!({"model": a.model, "action": "cancelled", "message": "Nothing deleted."});
            // Human mode: an unconfirmed deletion did nothing — not a success.
            return Ok(Output::new(d, "Nothing deleted.".into()).code(1));
        }
        o = rm(loc, &m, &a.model, flags)?;
    }
    if let RmOutcome::Locked { locks, .. } = &o {
        return Err(HubError::new(
            ErrorKind::LocksPresent,
            "Model has active locks. Use --force to override.",
        )
        .hint("A download of this model is running (another mlxfs, mlx-knife or Python process).")
        .field("lock_files", json!(locks))
        .into());
    }
    let d = data(&o);
    let code = i32::from(!json && matches!(o, RmOutcome::NeedsConfirmation { .. }));
    Ok(Output::new(d, render(&o)).code(code))
}

pub fn render(o: &RmOutcome) -> String {
    match o {
        RmOutcome::NeedsConfirmation { spec, what, .. } => format!(
            "Would delete '{}' (matched from '{}'); add -f to delete it",
            one_line(what),
            one_line(spec)
        ),
        RmOutcome::Locked { .. } => String::new(),
        RmOutcome::Deleted(d) => {
            let what = match &d.commit {
                Some(c) => format!("{}@{}", d.model, c),
                None => d.model.clone(),
            };
            let mut t = format!(
                "Deleted {}\n  freed {} ({} blobs removed, {} shared blobs kept)",
                one_line(&what),
                human_bytes(d.freed_bytes),
                d.blobs_removed,
                d.blobs_kept
            );
            for p in &d.relocated_removed {
                t.push_str(&format!(
                    "\n  removed {} (linked from the cache)",
                    one_line(&p.to_string_lossy())
                ));
            }
            for (p, why) in &d.relocated_kept {
                t.push_str(&format!(
                    "\n  kept {} (linked from the cache): {}",
                    one_line(&p.to_string_lossy()),
                    one_line(why)
                ));
            }
            t
        }
    }
}
