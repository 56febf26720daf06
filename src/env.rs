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
/// The user's cache folder: `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface` (and for
/// `run`'s libraries every other cache default derives from it too; `run` overrides it).
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// The home folder: `~` in paths, `~/.cache/huggingface`, `~/.local/state/mlxfs`.
pub const HOME: &str = "HOME";
/// The workspace home: each folder with a `config.json` directly under it is a workspace
/// (mlx-knife).
pub const MLXK_WORKSPACE_HOME: &str = "MLXK_WORKSPACE_HOME";
/// Further workspace homes, `:`-separated, searched after `MLXK_WORKSPACE_HOME` (ADR-022).
pub const MLXK_MODEL_PATH: &str = "MLXK_MODEL_PATH";
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
/// The BLAS library Python loads for mlx before importing it (`run`, `serve` workers):
/// unset/`auto` = the system's OpenBLAS when mlx-cpu bundles the reference BLAS, `bundled` =
/// never, or a library path. Read by the Python side (runtime/generate.py `_fast_blas`).
pub const MLXFS_BLAS: &str = "MLXFS_BLAS";
pub const MLXFS_PYTHON: &str = "MLXFS_PYTHON";
/// An activated venv: `run`'s Python when neither `--python` nor `MLXFS_PYTHON` is given.
pub const VIRTUAL_ENV: &str = "VIRTUAL_ENV";
/// Where `python3` (for `run`) and `fusermount3` (for the mount) are looked up.
pub const PATH: &str = "PATH";
/// mlxfs's state folder is `$XDG_STATE_HOME/mlxfs` (daemon logs, per-model run caches).
pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";
/// `list` and `health` answered from a live mlxfs mount over the same sources when it can
/// prove its catalog current: unset/`on` = yes, `off` = never (as `--from-disk`), `debug` =
/// yes, and say on stderr where each answer came from (or why not from a mount).
pub const MLXFS_MOUNT_ANSWERS: &str = "MLXFS_MOUNT_ANSWERS";
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
    MLXK_MODEL_PATH,
    HF_ENDPOINT,
    HF_TOKEN,
    HF_TOKEN_PATH,
    HF_HUB_OFFLINE,
    MLXFS_HUB_TIMEOUT,
    MLXFS_HUB_RETRIES,
    MLXFS_PYTHON,
    MLXFS_BLAS,
    VIRTUAL_ENV,
    PATH,
    XDG_STATE_HOME,
    MLXFS_MOUNT_ANSWERS,
    MLXFS_DAEMON_CHILD,
];

// Set by `run` for the Python it starts, never read back: the isolated cache.

/// huggingface_hub's assets cache (`hf_hub.cached_assets_path`).
pub const HF_ASSETS_CACHE: &str = "HF_ASSETS_CACHE";
/// The same under its legacy name (read when `HF_ASSETS_CACHE` is unset).
pub const HUGGINGFACE_ASSETS_CACHE: &str = "HUGGINGFACE_ASSETS_CACHE";
/// The Xet chunk cache (huggingface_hub, and hf_xet's own Rust code).
pub const HF_XET_CACHE: &str = "HF_XET_CACHE";
/// Where transformers (and datasets) copy a model's own Python code.
pub const HF_MODULES_CACHE: &str = "HF_MODULES_CACHE";
/// transformers 4's cache, under its three historical names.
pub const TRANSFORMERS_CACHE: &str = "TRANSFORMERS_CACHE";
pub const PYTORCH_TRANSFORMERS_CACHE: &str = "PYTORCH_TRANSFORMERS_CACHE";
pub const PYTORCH_PRETRAINED_BERT_CACHE: &str = "PYTORCH_PRETRAINED_BERT_CACHE";
/// PyTorch's home; transformers 4 moves `$TORCH_HOME/transformers` into the hub cache once.
pub const TORCH_HOME: &str = "TORCH_HOME";
/// The datasets library's caches.
pub const HF_DATASETS_CACHE: &str = "HF_DATASETS_CACHE";
pub const HF_METRICS_CACHE: &str = "HF_METRICS_CACHE";
pub const HF_DATASETS_DOWNLOADED_DATASETS_PATH: &str = "HF_DATASETS_DOWNLOADED_DATASETS_PATH";
pub const HF_DATASETS_EXTRACTED_DATASETS_PATH: &str = "HF_DATASETS_EXTRACTED_DATASETS_PATH";
/// transformers' offline switch (huggingface_hub reads it too).
pub const TRANSFORMERS_OFFLINE: &str = "TRANSFORMERS_OFFLINE";

/// Every cache variable the Python libraries of `run` consult, with the folder `run` points
/// it at, relative to the run's isolated cache (`""`: the cache itself). `run` sets every one,
/// whatever the user's environment says, so that none — a legacy name included — can lead a
/// library back to the shared cache. The list comes from the libraries' source:
///
/// - huggingface_hub 2.4, `constants.py`: `HF_HOME` (default `$XDG_CACHE_HOME/huggingface`),
///   `HF_HUB_CACHE` falling back to the legacy `HUGGINGFACE_HUB_CACHE`, `HF_ASSETS_CACHE`
///   falling back to `HUGGINGFACE_ASSETS_CACHE`, `HF_XET_CACHE`;
/// - hf_xet 1.8 (Rust): `HF_XET_CACHE`, `HF_HOME` and `XDG_CACHE_HOME` (the strings in its
///   library);
/// - transformers 5, `utils/hub.py`: `HF_MODULES_CACHE`; transformers 4, `utils/hub.py`:
///   `TRANSFORMERS_CACHE` ← `PYTORCH_TRANSFORMERS_CACHE` ← `PYTORCH_PRETRAINED_BERT_CACHE`,
///   and `TORCH_HOME` (4.x moves `$TORCH_HOME/transformers`, default
///   `$XDG_CACHE_HOME/torch/transformers`, into the hub cache when none of those three is
///   set: setting them turns that move of a shared folder off);
/// - datasets, `config.py`: `HF_DATASETS_CACHE`, `HF_METRICS_CACHE`, `HF_MODULES_CACHE`,
///   `HF_DATASETS_DOWNLOADED_DATASETS_PATH`, `HF_DATASETS_EXTRACTED_DATASETS_PATH`;
/// - `XDG_CACHE_HOME`, from which every default above derives.
///
/// The token is left alone (`HF_TOKEN`, `HF_TOKEN_PATH`): authentication keeps working; see
/// `cli/run.rs`.
pub const ISOLATED_CACHE: &[(&str, &str)] = &[
    (HF_HOME, ""),
    (HF_HUB_CACHE, "hub"),
    (HUGGINGFACE_HUB_CACHE, "hub"),
    (HF_ASSETS_CACHE, "assets"),
    (HUGGINGFACE_ASSETS_CACHE, "assets"),
    (HF_XET_CACHE, "xet"),
    (HF_MODULES_CACHE, "modules"),
    (TRANSFORMERS_CACHE, "hub"),
    (PYTORCH_TRANSFORMERS_CACHE, "hub"),
    (PYTORCH_PRETRAINED_BERT_CACHE, "hub"),
    (TORCH_HOME, "torch"),
    (HF_DATASETS_CACHE, "datasets"),
    (HF_METRICS_CACHE, "metrics"),
    (HF_DATASETS_DOWNLOADED_DATASETS_PATH, "datasets/downloads"),
    (
        HF_DATASETS_EXTRACTED_DATASETS_PATH,
        "datasets/downloads/extracted",
    ),
    (XDG_CACHE_HOME, "xdg-cache"),
];

/// Every variable `run` may set for the Python it starts (docs/ENVIRONMENT.md lists each):
/// the isolated cache, the token file (only when neither `HF_TOKEN` nor `HF_TOKEN_PATH` is
/// set), and with `--offline` the two offline switches.
pub const SET_FOR_PYTHON: &[&str] = &[
    HF_HOME,
    HF_HUB_CACHE,
    HUGGINGFACE_HUB_CACHE,
    HF_ASSETS_CACHE,
    HUGGINGFACE_ASSETS_CACHE,
    HF_XET_CACHE,
    HF_MODULES_CACHE,
    TRANSFORMERS_CACHE,
    PYTORCH_TRANSFORMERS_CACHE,
    PYTORCH_PRETRAINED_BERT_CACHE,
    TORCH_HOME,
    HF_DATASETS_CACHE,
    HF_METRICS_CACHE,
    HF_DATASETS_DOWNLOADED_DATASETS_PATH,
    HF_DATASETS_EXTRACTED_DATASETS_PATH,
    XDG_CACHE_HOME,
    HF_TOKEN_PATH,
    HF_HUB_OFFLINE,
    TRANSFORMERS_OFFLINE,
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

/// Set a variable of this process's environment for the Python it runs next (the isolated
/// cache's variables of `run` and `convert`). Only before this process starts any thread: the
/// embedded interpreter, a subprocess and the generation all come later.
pub fn set_before_threads(name: &str, value: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: the callers set the environment before any thread of this process is started.
    unsafe { std::env::set_var(name, value) };
}
