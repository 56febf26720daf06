//! `mlxfs archive WS [OUT]`: a workspace → one reproducible file (`crate::archive`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use serde::Serialize;

use super::hubcmd::progress;
use super::output::{CliError, Output};
use crate::archive::write::{DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL, Options, Plan, write};
use crate::archive::{Archived, Compression};
use crate::catalog::{Locations, Source, resolve};
use crate::error::ErrorType;
use crate::hub::progress::Progress as Bar;
use crate::text::{human_bytes, one_line};

#[derive(Args, Debug)]
#[command(after_help = "\
Writes the workspace — its files, its sentinel and its .hf_cache/ — into one tar file, with
a manifest first (format and mlxfs version, content hash, source repo and revision, and the
size and sha256 of every file). OS junk (.DS_Store, ._*, Thumbs.db, …) is left out where the
content hash does not count it.

Reproducible: the same workspace always gives the same bytes (sorted entries, times, owners
and modes normalised, no user or host names), so two archives can be compared with `cmp`.

Only a clean workspace (its files match the content hash in its sentinel) is archived with
its content hash, which `mlxfs restore` then checks; --allow-dirty archives any workspace
folder as it is, without one. Links must stay inside the workspace (hub-cache snapshot links
in .hf_cache/ do); FIFOs and devices are refused. A hub-cache model is not a workspace:
`mlxfs clone` it first.

OUT defaults to ./<name>.tar (./<name>.tar.zst with --zstd); an existing folder gets
<name>.tar inside it. OUT may not be in any Hugging Face cache (the hub cache, mlxfs's run
caches, another cache: as `mlxfs restore --help` says) or inside a model. The archive is written to a temp file next to OUT and renamed at the
end: interrupted (Ctrl-C, SIGTERM, SIGHUP), it leaves nothing; the temp file of a run that
was killed outright is removed by the next archive into the same folder.

Examples:
  mlxfs archive my-ws                      # → ./my-ws.tar
  mlxfs archive ./my-ws /backup/           # → /backup/my-ws.tar
  mlxfs archive my-ws my-ws.tar.zst --zstd # compressed (weights barely compress)
  mlxfs restore my-ws.tar                  # → $MLXK_WORKSPACE_HOME/my-ws")]
pub struct ArchiveArgs {
    /// The workspace: a name under MLXK_WORKSPACE_HOME or a path (a folder in the current
    /// one needs no ./ unless a workspace has exactly its name)
    pub workspace: String,
    /// The archive to write (default ./<name>.tar; a folder: <name>.tar inside it)
    pub out: Option<String>,
    /// Compress with zstd (off by default: weights barely compress)
    #[arg(long)]
    pub zstd: bool,
    /// zstd level, 1-19 [default: 3]
    #[arg(long, value_name = "N", requires = "zstd",
          value_parser = clap::value_parser!(i32).range(1..=MAX_ZSTD_LEVEL as i64))]
    pub zstd_level: Option<i32>,
    /// zstd worker threads (0: compress on the main thread; any N ≥ 1 gives the same bytes)
    #[arg(long, value_name = "N", requires = "zstd", default_value_t = 0)]
    pub zstd_threads: u32,
    /// Archive a workspace that is not clean (the archive then carries no content hash)
    #[arg(long)]
    pub allow_dirty: bool,
    /// Replace OUT if it exists
    #[arg(long)]
    pub force: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

/// The `data` of `archive --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveData {
    /// The archive written (absolute).
    pub path: String,
    /// Its size.
    pub bytes: u64,
    pub workspace: String,
    pub name: String,
    pub files: usize,
    /// Bytes of file data in it.
    pub file_bytes: u64,
    pub entries: usize,
    /// The content hash it carries (`null` for a workspace that was not clean).
    pub content_hash: Option<String>,
    pub clean: bool,
    pub compression: Compression,
    /// OS junk left out.
    pub skipped: Vec<String>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(sig: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // A second Ctrl-C: stop now. SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) }
    }
}

/// Ctrl-C / SIGTERM stop the archive or restore at the next chunk; what it wrote is removed.
pub(super) fn stop_on_interrupt() {
    // The handler only touches an atomic and calls _exit.
    super::hubcmd::on_stop_signals(on_interrupt);
}

/// The CLI's bar behind the core's `Progress`, with Ctrl-C as its "stop".
pub(super) struct Ui(pub Arc<dyn Bar>);

impl crate::archive::Progress for Ui {
    fn advance(&self, n: u64) {
        self.0.advance(n);
    }
    fn cancelled(&self) -> bool {
        INTERRUPTED.load(Ordering::Relaxed)
    }
}

/// The output path: OUT as given (a folder gets `<name><ext>` inside), else `./<name><ext>`.
fn out_path(out: Option<&str>, name: &str, ext: &str) -> PathBuf {
    let file = format!("{name}{ext}");
    match out {
        None => PathBuf::from(".").join(file),
        Some(o) => {
            let p = crate::catalog::resolve::expand_user(o);
            if o.ends_with('/') || p.is_dir() {
                p.join(file)
            } else {
                p
            }
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub fn run(a: &ArchiveArgs, loc: &Locations, json: bool) -> Result<Output, CliError> {
    // `-` conventionally means stdout, which an archive (written beside its target, then
    // renamed into place) cannot be: refused rather than a file named `-`.
    if a.out.as_deref() == Some("-") {
        return Err(CliError::new(
            ErrorType::InvalidTargetError,
            "an archive cannot be written to stdout (`-`)",
        )
        .hint("give a file or a folder (./- if a file named '-' is really meant)"));
    }
    let m = resolve::resolve_workspace_arg(&a.workspace, loc)?;
    if m.source != Source::Workspace {
        return Err(CliError::new(
            ErrorType::WorkspaceNotFound,
            format!("'{}' is a hub cache model, not a workspace", m.name),
        )
        .hint(format!(
            "Clone it into a workspace first (`mlxfs clone {}`), then archive that.",
            m.name
        )));
    }
    let opts = Options {
        compression: if a.zstd {
            Compression::Zstd
        } else {
            Compression::None
        },
        zstd_level: a.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL),
        zstd_threads: a.zstd_threads,
        allow_dirty: a.allow_dirty,
        force: a.force,
    };
    let plan = Plan::new(&m.path, a.allow_dirty)?;
    let ext = if a.zstd { ".tar.zst" } else { ".tar" };
    let out = absolute(&out_path(a.out.as_deref(), &plan.manifest.name, ext));
    crate::archive::write::check_out(&plan, &out, a.force)?;
    // The rule of every writer (clone, convert, restore): never into a Hugging Face cache or
    // another model's folder.
    if let Err(r) = crate::catalog::target::place(&out, loc) {
        use crate::catalog::target::Misplaced;
        let why = match r {
            Misplaced::HubCache { cache, .. } => format!(
                "it lies in the hub cache ({}), whose layout belongs to huggingface_hub",
                cache.display()
            ),
            Misplaced::RunCache { cache, .. } => format!(
                "it lies in a run cache of mlxfs ({}), a Hugging Face cache whose layout \
                 belongs to huggingface_hub",
                cache.display()
            ),
            Misplaced::CacheRepo { repo: cache } | Misplaced::CacheRoot { root: cache } => {
                format!(
                    "it lies in a Hugging Face cache ({}), whose layout belongs to huggingface_hub",
                    cache.display()
                )
            }
            Misplaced::InsideModel { model } => format!(
                "it lies inside the model folder {} (the file would become part of that model)",
                model.display()
            ),
        };
        return Err(CliError::new(
            ErrorType::InvalidTargetError,
            format!("Cannot write the archive to {}: {why}", out.display()),
        )
        .hint("Write the archive somewhere else (e.g. ./ or a backup folder)."));
    }
    stop_on_interrupt();
    let bar = progress(json, a.quiet);
    if let Some(dir) = out.parent() {
        for p in crate::archive::sweep_leftovers(dir) {
            bar.note(&format!(
                "removed {}: left by an archive or restore that was killed",
                one_line(&p.to_string_lossy())
            ));
        }
    }
    if let Some(why) = &plan.dirty {
        bar.note(&format!(
            "warning: {} is not clean ({}); the archive carries no content hash",
            one_line(&plan.manifest.name),
            one_line(why)
        ));
    }
    // The bar counts bytes read; a compressed archive reads the files twice (hash, then
    // write), which the label says, so that the total is not taken for the model's size.
    let label = match opts.passes() {
        1 => format!("Archiving {}", one_line(&plan.manifest.name)),
        n => format!(
            "Archiving {} ({} of files, read {n} times: hashed, then compressed)",
            one_line(&plan.manifest.name),
            crate::text::human_bytes(plan.manifest.bytes())
        ),
    };
    bar.start(
        &label,
        plan.manifest.files(),
        plan.manifest.bytes().saturating_mul(opts.passes()),
    );
    let r = write(&plan, &out, &opts, &Ui(bar.clone()));
    bar.finish();
    let done = r?;
    let d = data(&m.path, &plan, &done);
    let human = render(&d);
    Ok(Output::new(d, human))
}

fn data(ws: &Path, plan: &Plan, a: &Archived) -> ArchiveData {
    ArchiveData {
        path: a.path.to_string_lossy().into_owned(),
        bytes: a.archive_bytes,
        workspace: ws.to_string_lossy().into_owned(),
        name: a.manifest.name.clone(),
        files: a.manifest.files(),
        file_bytes: a.manifest.bytes(),
        entries: a.manifest.entries.len(),
        content_hash: a.manifest.content_hash.clone(),
        clean: plan.dirty.is_none(),
        compression: a.compression,
        skipped: plan.skipped.clone(),
    }
}

fn render(d: &ArchiveData) -> String {
    let mut s = format!(
        "Archived {} into {} ({} files, {} of data; archive {}, {})",
        one_line(&d.name),
        one_line(&d.path),
        d.files,
        human_bytes(d.file_bytes),
        human_bytes(d.bytes),
        match d.compression {
            Compression::None => "not compressed",
            Compression::Zstd => "zstd",
        }
    );
    match &d.content_hash {
        Some(h) => s.push_str(&format!("\n  content hash {h}")),
        None => s.push_str("\n  no content hash (the workspace was not clean)"),
    }
    if !d.skipped.is_empty() {
        s.push_str(&format!(
            "\n  left out {} OS junk file(s): {}",
            d.skipped.len(),
            d.skipped
                .iter()
                .map(|p| one_line(p).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s
}
