//! The command line: clap definitions, dispatch, and the JSON/human split. Each command lives
//! in its own module and returns its `data` (or a `CliError`); this module prints and exits.

pub mod archive;
pub mod clone;
pub mod convert;
pub mod health;
pub mod hubcmd;
pub mod list;
pub mod live;
pub mod mount;
pub mod output;
pub mod progress;
pub mod pull;
pub mod push;
pub mod restore;
pub mod rm;
pub mod run;
pub mod serve;
pub mod show;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::json;

use crate::catalog::Locations;
use crate::error::ErrorType;
use output::{CliError, Order, Output, emit, envelope, print_human_error, print_json};

const ABOUT: &str =
    "One catalog of your MLX models: the Hugging Face hub cache and your workspaces.";

const AFTER_HELP: &str = "\
Where models are found:
  hub cache    HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, where
               HF_HOME defaults to $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface
               (huggingface_hub's order)
  workspaces   each folder with a config.json directly under MLXK_WORKSPACE_HOME, then
               under each folder of MLXK_MODEL_PATH (`:`-separated, searched in order)
Models moved to another disk and linked back are followed; a link inside a model that
leads out of it is refused; whatever is skipped is listed by `list --all` with a reason.

Names: an exact name wins (workspaces first, then the hub cache); otherwise a
case-insensitive substring match, and several matches are an error that lists them (the
same workspace name in two homes too: name it by its path).
`org/name@abc1234` picks a snapshot by commit prefix; a path (/, ./, ../, ~) is exact.

Hub commands (clone, pull, push) use HF_ENDPOINT (default https://huggingface.co) and
HF_TOKEN (private or gated repos; push needs write access). Every environment variable
mlxfs reads is listed in docs/ENVIRONMENT.md.

Every command takes --json for mlx-knife's JSON envelope; exit codes: 0 success,
1 error, 2 usage error.";

#[derive(Parser, Debug)]
#[command(
    name = "mlxfs",
    about = ABOUT,
    after_help = AFTER_HELP,
    disable_version_flag = true,
    arg_required_else_help = false
)]
pub struct Cli {
    /// Print the version (with --json: the version envelope)
    #[arg(long, short = 'V', global = false)]
    pub version: bool,

    /// Print mlx-knife's JSON envelope on stdout instead of human output (accepted anywhere)
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List models (default view: healthy, runnable ones; --all for every model)
    #[command(alias = "ls")]
    List(list::ListArgs),
    /// Show one model's record, files, config and workspace state
    Show(show::ShowArgs),
    /// Check model file integrity (one model, or all)
    Health(health::HealthArgs),
    /// Mount every model as one read-only tree with virtual metadata files (FUSE)
    Mount(mount::MountArgs),
    /// Unmount an mlxfs mount (lazily when busy)
    Umount(mount::UmountArgs),
    /// Generate text with a model (mlx-lm), under an isolated Hugging Face cache
    Run(run::RunArgs),
    /// Download a hub model into a new managed workspace (the primary way to get a model)
    Clone(clone::CloneArgs),
    /// Download a hub model into the hub cache
    Pull(pull::PullArgs),
    /// Delete a model (or one revision) from the hub cache
    Rm(rm::RmArgs),
    /// Upload a workspace to a hub repo
    Push(push::PushArgs),
    /// Convert a workspace into a new managed workspace: repair its index, quantize, change
    /// dtype, dequantize (all or nothing, shard by shard)
    Convert(convert::ConvertArgs),
    /// Write a workspace into one reproducible archive file (tar, optionally zstd)
    Archive(archive::ArchiveArgs),
    /// Restore a workspace from an archive, verifying every file (all or nothing)
    Restore(restore::RestoreArgs),
    /// Serve every runnable model over an OpenAI-compatible HTTP API (one worker per model)
    #[command(alias = "server")]
    Serve(serve::ServeArgs),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::List(_) => "list",
            Command::Show(_) => "show",
            Command::Health(_) => "health",
            Command::Mount(_) => "mount",
            Command::Umount(_) => "umount",
            Command::Run(_) => "run",
            Command::Clone(_) => "clone",
            Command::Pull(_) => "pull",
            Command::Rm(_) => "rm",
            Command::Push(_) => "push",
            Command::Convert(_) => "convert",
            Command::Archive(_) => "archive",
            Command::Restore(_) => "restore",
            Command::Serve(_) => "serve",
        }
    }
}

fn version_data() -> serde_json::Value {
    json!({
        "cli_version": env!("CARGO_PKG_VERSION"),
        "json_api_spec_version": "0.2.4",
        "system": null,
    })
}

/// Parse `args`, run, print; returns the process exit code.
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    let json_anywhere = args.iter().skip(1).any(|a| a == "--json");
    let matches = Cli::command().try_get_matches_from(&args);
    let cli = match matches.and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                emit(e.render().to_string().trim_end());
                return 0;
            }
            if json_anywhere {
                // clap's message up to the usage line, on one line (`… not provided: <MODEL>`).
                let msg = e.render().to_string();
                let text: Vec<&str> = msg
                    .lines()
                    .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let text = text.join(" ");
                let err = CliError::new(
                    ErrorType::CommandError,
                    text.trim_start_matches("error: ").to_string(),
                );
                print_json(&envelope(None, Order::DataFirst, Err(&err)));
            } else {
                let _ = e.print();
            }
            return 2;
        }
    };

    if cli.version {
        if cli.json {
            print_json(&envelope(
                Some("version"),
                Order::DataFirst,
                Ok(&version_data()),
            ));
        } else {
            emit(&format!("mlxfs {}", env!("CARGO_PKG_VERSION")));
        }
        return 0;
    }
    let Some(cmd) = cli.command else {
        if cli.json {
            let err = CliError::new(ErrorType::CommandError, "No command specified");
            print_json(&envelope(None, Order::DataFirst, Err(&err)));
            return 1;
        }
        emit(Cli::command().render_help().to_string().trim_end());
        return 2;
    };

    let loc = Locations::from_env();
    if let Some((value, why)) = &loc.workspace_home_problem {
        crate::note!(
            "warning: MLXK_WORKSPACE_HOME={value} is unusable ({why}); its workspaces are not searched"
        );
    }
    for (value, why) in &loc.model_path_problems {
        crate::note!(
            "warning: MLXK_MODEL_PATH entry {value} is unusable ({why}); its workspaces are not searched"
        );
    }
    let name = cmd.name();
    let json = cli.json;
    let (order, result): (Order, Result<Output, CliError>) = match &cmd {
        Command::List(a) => (Order::DataFirst, list::run(a, &loc)),
        Command::Show(a) => (Order::DataFirst, show::run(a, &loc)),
        Command::Health(a) => (Order::ErrorFirst, health::run(a, &loc)),
        Command::Mount(a) => (Order::ErrorFirst, mount::run(a, &loc)),
        Command::Umount(a) => (Order::ErrorFirst, mount::run_umount(a)),
        Command::Run(a) => (Order::DataFirst, run::run(a, &loc, json)),
        Command::Clone(a) => (Order::ErrorFirst, clone::run(a, &loc, json)),
        Command::Pull(a) => (Order::ErrorFirst, pull::run(a, &loc, json)),
        Command::Rm(a) => (Order::ErrorFirst, rm::run(a, &loc, json)),
        Command::Push(a) => (Order::ErrorFirst, push::run(a, &loc, json)),
        Command::Convert(a) => (Order::ErrorFirst, convert::run(a, &loc, json)),
        Command::Archive(a) => (Order::ErrorFirst, archive::run(a, &loc, json)),
        Command::Restore(a) => (Order::ErrorFirst, restore::run(a, &loc, json)),
        Command::Serve(a) => (Order::DataFirst, serve::run(a, &loc, json)),
    };
    match result {
        Ok(o) if o.silent => o.code,
        Ok(o) if json => {
            print_json(&envelope(Some(name), order, Ok(&o.data)));
            o.code
        }
        Ok(o) => {
            let code = o.code;
            let text = o.human();
            if !text.is_empty() {
                emit(&text);
            }
            code
        }
        Err(e) if json => {
            print_json(&envelope(Some(name), order, Err(&e)));
            1
        }
        Err(e) => {
            print_human_error(name, &e);
            1
        }
    }
}
