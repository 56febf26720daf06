//! Every environment variable mlxfs reads, in one place. `docs/ENVIRONMENT.md` documents each
//! (a test compares it with [`READ`]); code reads variables only through these names.
//!
//! An empty variable counts as unset everywhere (huggingface_hub's and mlx-knife's rule).

/// The hub cache folder itself (huggingface_hub). Wins over `HF_HOME`.
pub const HF_HUB_CACHE: &str = "HF_HUB_CACHE";
/// The hub cache folder, huggingface_hub's older name: used when `HF_HUB_CACHE` is unset.
pub const HUGGINGFACE_HUB_CACHE: &str = "HUGGINGFACE_HUB_CACHE";
/// The Hugging Face home: the hub cache is `$HF_HOME/hub`, the token `$HF_HOME/token`.
pub const HF_HOME: &str = "HF_HOME";
/// The user's cache folder: `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`.
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// The home folder: `~` in paths, `~/.cache/huggingface`, `~/.local/state/mlxfs`.
pub const HOME: &str = "HOME";
/// The workspace home: each folder with a `config.json` directly under it is a workspace
/// (mlx-knife).
pub const MLXK_WORKSPACE_HOME: &str = "MLXK_WORKSPACE_HOME";
/// The hub's base URL (default `https://huggingface.co`).
pub const HF_ENDPOINT: &str = "HF_ENDPOINT";
/// An access token for private and gated repos, and for `push`.
pub const HF_TOKEN: &str = "HF_TOKEN";
/// A file holding the token (when `HF_TOKEN` is unset; default `$HF_HOME/token`).
pub const HF_TOKEN_PATH: &str = "HF_TOKEN_PATH";
/// `1`/`true`/`yes`/`on`: never contact the hub (hub commands fail with `offline`).
pub const HF_HUB_OFFLINE: &str = "HF_HUB_OFFLINE";
/// Seconds a stalled hub connection may wait before it counts as failed (default 60).
pub const MLXFS_HUB_TIMEOUT: &str = "MLXFS_HUB_TIMEOUT";
/// How many times a download that failed for a transient reason is retried from where its
/// bytes stopped (default 3).
pub const MLXFS_HUB_RETRIES: &str = "MLXFS_HUB_RETRIES";
/// The Python environment for `run` (a venv folder or an interpreter), after `--python`.
pub const MLXFS_PYTHON: &str = "MLXFS_PYTHON";
/// An activated venv: `run`'s Python when neither `--python` nor `MLXFS_PYTHON` is given.
pub const VIRTUAL_ENV: &str = "VIRTUAL_ENV";
/// Where `python3` (for `run`) and `fusermount3` (for the mount) are looked up.
pub const PATH: &str = "PATH";
/// mlxfs's state folder is `$XDG_STATE_HOME/mlxfs` (daemon logs, per-model run caches).
pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";
/// Internal: set by `mount --daemon` for the detached child it starts.
pub const MLXFS_DAEMON_CHILD: &str = "MLXFS_DAEMON_CHILD";

/// Every variable mlxfs reads.
pub const READ: &[&str] = &[
    HF_HUB_CACHE,
    HUGGINGFACE_HUB_CACHE,
    HF_HOME,
    XDG_CACHE_HOME,
    HOME,
    MLXK_WORKSPACE_HOME,
    HF_ENDPOINT,
    HF_TOKEN,
    HF_TOKEN_PATH,
    HF_HUB_OFFLINE,
    MLXFS_HUB_TIMEOUT,
    MLXFS_HUB_RETRIES,
    MLXFS_PYTHON,
    VIRTUAL_ENV,
    PATH,
    XDG_STATE_HOME,
    MLXFS_DAEMON_CHILD,
];

/// Variables `run` sets for the Python it starts (the isolated cache), never read back.
pub const SET_FOR_PYTHON: &[&str] = &[
    HF_HOME,
    HF_HUB_CACHE,
    "HF_XET_CACHE",
    HF_HUB_OFFLINE,
    "TRANSFORMERS_OFFLINE",
];

/// A variable of the process environment as text; unset, empty or not valid UTF-8 counts as
/// unset.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A variable as raw bytes (paths need not be UTF-8); unset or empty counts as unset.
pub fn var_os(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}
