//! `mlxfs mount DIR` and `mlxfs umount DIR`.

use clap::Args;
use serde_json::json;
use std::path::PathBuf;

use super::output::{CliError, Output};
use crate::catalog::Locations;
use crate::env;
use crate::fuse::daemon::daemonize;
use crate::fuse::lifecycle::{self, MountOptions};
use crate::fuse::unmount::{Unmounted, umount};

#[derive(Args, Debug)]
#[command(after_help = "\
The mount shows one read-only tree:
  DIR/<workspace>/             each workspace (its real files, .hf_cache/ included)
  DIR/<org>/<repo>/            each hub model at its current revision (refs/main)
  DIR/<org>/<repo>@<rev7>/     further snapshots
  DIR/.mlxfs/models.json       the `mlxfs list --json` envelope
  DIR/.mlxfs/health            one line per model
  DIR/.mlxfs/status.json       daemon facts (read mode, sources, model count)
  .../<model>/.mlxfs/          model.json, health, hash, sentinel.json
A workspace named like a hub org keeps its name; the org appears as <org>@hub.
What the tree leaves out on purpose (a real .mlxfs inside a model, a name two models
would share) is listed in DIR/.mlxfs/status.json under `hidden`.

The folder lists its models as soon as it is mounted; a model's own folder answers once
every model folder has been read (a few tenths of a second for 1,000 models).

Weights are read with FUSE passthrough when possible (root, Linux >= 6.9), otherwise
through the daemon with the kernel page cache kept. New, removed or changed models appear
within about a second. Ctrl-C / SIGTERM unmount; a mount left by a killed daemon is
cleared by the next mount.")]
pub struct MountArgs {
    /// An empty folder to mount on, outside the hub cache and the workspace homes
    pub dir: PathBuf,
    /// Detach and run in the background (log in $XDG_STATE_HOME/mlxfs or ~/.local/state/mlxfs)
    #[arg(long)]
    pub daemon: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf unless root)
    #[arg(long)]
    pub allow_other: bool,
    /// Never use FUSE passthrough: every read goes through the daemon
    #[arg(long)]
    pub no_passthrough: bool,
    /// Worker threads serving requests
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    /// The mount point
    pub dir: PathBuf,
}

/// The daemon log's file name for a mount point (`/mnt/x` → `mount_mnt_x.log`), in mlxfs's
/// state folder.
pub fn log_name(mountpoint: &std::path::Path) -> String {
    let tag: String = mountpoint
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("mount{tag}.log")
}

pub fn run(a: &MountArgs, loc: &Locations) -> Result<Output, CliError> {
    let abs = std::path::absolute(&a.dir).unwrap_or_else(|_| a.dir.clone());
    if a.daemon && env::var_os(env::MLXFS_DAEMON_CHILD).is_none() {
        // Check here: the parent only waits for a mount to answer, which an existing mount
        // would do too.
        lifecycle::check_mountpoint(&a.dir, loc)?;
        let args: Vec<_> = std::env::args_os().collect();
        let log = crate::state::create_dir_or_temp().join(log_name(&abs));
        let pid = daemonize(&args, &a.dir, &log)?;
        crate::note!(
            "mlxfs: mounted at {} (daemon pid {pid}, log {})",
            crate::text::one_line(&a.dir.to_string_lossy()),
            crate::text::one_line(&log.to_string_lossy())
        );
        return Ok(Output::new(
            json!({"mountpoint": abs, "pid": pid, "log": log}),
            String::new(),
        ));
    }
    lifecycle::mount(
        loc.clone(),
        &MountOptions {
            dir: a.dir.clone(),
            allow_other: a.allow_other,
            passthrough: !a.no_passthrough,
            threads: a.threads as usize,
        },
    )?;
    Ok(Output::new(
        json!({"mountpoint": abs, "unmounted": true}),
        String::new(),
    ))
}

pub fn run_umount(a: &UmountArgs) -> Result<Output, CliError> {
    let how = umount(&a.dir)?;
    if how == Unmounted::Lazy {
        crate::note!(
            "mlxfs: {} was busy: detached now; it goes away when the last open file closes",
            a.dir.display()
        );
    }
    Ok(Output::new(
        json!({"mountpoint": a.dir, "lazy": how == Unmounted::Lazy}),
        String::new(),
    ))
}
