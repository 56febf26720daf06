//! `mlxfs restore ARCHIVE [TARGET]`: an archive → a verified workspace (`crate::archive`).

use std::path::Path;

use clap::Args;
use serde::Serialize;

use super::archive::{Ui, stop_on_interrupt};
use super::hubcmd::progress;
use super::output::{CliError, Output};
use crate::archive::{Compression, Restored, open};
use crate::catalog::Locations;
use crate::hub::clone::{check_target, target_for};
use crate::text::{human_bytes, one_line, short_rev};

#[derive(Args, Debug)]
#[command(after_help = "\
Restores a workspace from an archive written by `mlxfs archive` (plain or zstd, told by its
first bytes, not its name).

TARGET: a path (`./models/x`, `/data/x`, `~/x`); a bare name goes under MLXK_WORKSPACE_HOME
(or the current folder when it is unset); without TARGET, $MLXK_WORKSPACE_HOME/<name>, the
name the workspace had when it was archived. The target must not exist or be an empty
folder, and may not be in any Hugging Face cache — the hub cache, mlxfs's run caches (the
state folder's hf-cache/, every workspace's .hf_cache/), a folder inside a models--…,
datasets--… or spaces--… repo folder, or inside a folder holding such repo folders or
huggingface_hub's .locks/ (a folder in a hub model's snapshots/ would be a bogus revision) —,
nor be a workspace home, a folder inside a model, the current folder or a mount point (a new
folder inside one is fine): the rule clone, convert and archive ask too.

Verified, all or nothing: the entries are unpacked into a hidden staging folder next to the
target, every file is checked against the size and sha256 in the archive's manifest, the
content hash against the workspace's sentinel, and only then is the folder renamed into
place — the workspace appears whole and clean, or not at all. A damaged, altered or hostile
archive (paths with `..` or absolute ones, links out of the workspace, devices, duplicate or
unlisted entries, a manifest that does not match, a truncated file) is refused with an
error saying what is wrong, and nothing is left behind.

Examples:
  mlxfs restore my-ws.tar                  # → $MLXK_WORKSPACE_HOME/my-ws
  mlxfs restore my-ws.tar.zst my-ws-copy   # → $MLXK_WORKSPACE_HOME/my-ws-copy
  mlxfs restore /backup/my-ws.tar ./here   # any path")]
pub struct RestoreArgs {
    /// The archive file
    pub archive: String,
    /// Target folder (see below)
    pub target: Option<String>,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

/// The `data` of `restore --json`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreData {
    /// The restored workspace (absolute).
    pub path: String,
    pub archive: String,
    pub name: String,
    pub files: usize,
    /// Bytes of file data.
    pub bytes: u64,
    pub entries: usize,
    /// The content hash, verified against the sentinel (`null`: the archive has none — it
    /// was made of a workspace that was not clean).
    pub content_hash: Option<String>,
    pub compression: Compression,
    pub source_repo: Option<String>,
    pub source_revision: Option<String>,
    /// The mlxfs version that wrote the archive.
    pub mlxfs_version: String,
}

pub fn run(a: &RestoreArgs, loc: &Locations, json: bool) -> Result<Output, CliError> {
    let archive = crate::catalog::resolve::expand_user(&a.archive);
    let opened = open(&archive)?;
    let name = opened.manifest.name.clone();
    // The workspace home as every command sees it; restore, like clone, creates a missing one.
    let home = loc
        .workspace_home
        .clone()
        .or_else(|| loc.workspace_home_set.clone());
    // The name an archive gives is untrusted: one with control characters (a newline, an
    // escape) does not become a folder unless the user names the folder.
    if a.target.is_none() && name.chars().any(char::is_control) {
        return Err(crate::hub::HubError::new(
            crate::hub::ErrorKind::InvalidTarget,
            format!(
                "The archive names its workspace '{}', which holds control characters",
                one_line(&name)
            ),
        )
        .hint(format!(
            "Give the target folder: mlxfs restore {} TARGET",
            a.archive
        ))
        .into());
    }
    let example = format!("mlxfs restore {} ./{name}", a.archive);
    let target = target_for(&name, a.target.as_deref(), home.as_deref(), &example)?;
    check_target(&target, home.as_deref(), loc)?;
    stop_on_interrupt();
    let bar = progress(json, a.quiet);
    if let Some(parent) = target.parent() {
        for p in crate::archive::sweep_leftovers(parent) {
            bar.note(&format!(
                "removed {}: left by an archive or restore that was killed",
                one_line(&p.to_string_lossy())
            ));
        }
    }
    bar.start(
        &format!("Restoring {}", one_line(&name)),
        opened.manifest.files(),
        opened.manifest.bytes(),
    );
    let r = opened.extract(&target, &Ui(bar.clone()));
    bar.finish();
    let done = r?;
    let d = data(&archive, &done);
    let human = render(&d);
    Ok(Output::new(d, human))
}

fn data(archive: &Path, r: &Restored) -> RestoreData {
    let m = &r.manifest;
    RestoreData {
        path: r.target.to_string_lossy().into_owned(),
        archive: std::path::absolute(archive)
            .unwrap_or_else(|_| archive.to_path_buf())
            .to_string_lossy()
            .into_owned(),
        name: m.name.clone(),
        files: m.files(),
        bytes: m.bytes(),
        entries: m.entries.len(),
        content_hash: r.content_hash.clone(),
        compression: r.compression,
        source_repo: m.source_repo.clone(),
        source_revision: m.source_revision.clone(),
        mlxfs_version: m.mlxfs_version.clone(),
    }
}

fn render(d: &RestoreData) -> String {
    let mut s = format!(
        "Restored {} into {} ({} files, {}), every file verified",
        one_line(&d.name),
        one_line(&d.path),
        d.files,
        human_bytes(d.bytes)
    );
    match &d.content_hash {
        Some(h) => s.push_str(&format!("\n  content hash {h} (clean)")),
        None => s.push_str(
            "\n  no content hash: the archive was made of a workspace that was not clean",
        ),
    }
    if let Some(repo) = &d.source_repo {
        s.push_str(&format!(
            "\n  source {}{}",
            one_line(repo),
            d.source_revision
                .as_deref()
                .map(|r| format!(" ({})", short_rev(r)))
                .unwrap_or_default()
        ));
    }
    s
}
