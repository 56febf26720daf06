//! One error vocabulary. Every layer's error is an enum of kinds a user can act on; each kind
//! maps to one [`ErrorType`], the `error.type` of the JSON envelope, and every error offers its
//! hint the same way, through [`Diagnostic`].
//!
//! The `error.type` strings are a public JSON contract (scripts match on them): `ErrorType::ALL`
//! is the complete list, `docs/ERRORS.md` documents each one, and a test fails when either
//! lacks one the other has. Some are mlx-knife's CamelCase names, kept for compatibility.

use std::fmt;

macro_rules! error_types {
    ($($variant:ident => $s:literal,)*) => {
        /// Every `error.type` mlxfs can emit.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorType {
            $($variant,)*
        }

        impl ErrorType {
            /// All of them, in declaration order.
            pub const ALL: &'static [ErrorType] = &[$(ErrorType::$variant,)*];

            /// The string in the JSON envelope.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorType::$variant => $s,)*
                }
            }
        }
    };
}

error_types! {
    // Resolution of a model name or path (catalog).
    ModelNotFound => "model_not_found",
    AmbiguousMatch => "ambiguous_match",
    HashNotFound => "hash_not_found",
    // The command line (mlx-knife's name).
    CommandError => "CommandError",
    // Hub operations (clone, pull, rm, push).
    ValidationError => "ValidationError",
    NetworkError => "network_error",
    AuthError => "auth_error",
    AccessDenied => "access_denied",
    RepoNotFound => "repo_not_found",
    RevisionNotFound => "revision_not_found",
    EntryNotFound => "entry_not_found",
    ServerError => "server_error",
    DiskFull => "disk_full",
    PermissionDenied => "permission_denied",
    IoError => "io_error",
    IntegrityError => "integrity_error",
    InvalidTargetError => "InvalidTargetError",
    Conflict => "conflict",
    Offline => "offline",
    RequestRejected => "request_rejected",
    ProtocolError => "protocol_error",
    WorkspaceModel => "workspace_model",
    LocksPresent => "locks_present",
    AmbiguousWorkspace => "ambiguous_workspace",
    WorkspaceNotFound => "workspace_not_found",
    // The mount.
    FuseUnavailable => "fuse_unavailable",
    FusermountMissing => "fusermount_missing",
    MountFailed => "mount_failed",
    SessionFailed => "session_failed",
    NotMounted => "not_mounted",
    NotMlxfs => "not_mlxfs",
    UnmountFailed => "unmount_failed",
    StaleMount => "stale_mount",
    MountpointMissing => "mountpoint_missing",
    MountpointError => "mountpoint_error",
    MountpointNotDir => "mountpoint_not_dir",
    AlreadyMounted => "already_mounted",
    MountpointNotEmpty => "mountpoint_not_empty",
    MountpointInSources => "mountpoint_in_sources",
    // Running a model.
    ContextLengthExceeded => "context_length_exceeded",
    ModelUnhealthy => "model_unhealthy",
    ModelIncompatible => "model_incompatible",
    InvalidPrompt => "invalid_prompt",
    CacheDirFailed => "cache_dir_failed",
    PythonNotFound => "python_not_found",
    PythonFailed => "python_failed",
    PythonInitFailed => "python_init_failed",
    PythonError => "python_error",
    MissingDependency => "missing_dependency",
    LoadFailed => "load_failed",
    DraftMismatch => "draft_mismatch",
    RemoteCodeRequired => "remote_code_required",
    GenerationFailed => "generation_failed",
    InvalidMedia => "invalid_media",
    MediaTooLarge => "media_too_large",
    DecoderMissing => "decoder_missing",
    // Archive and restore.
    InvalidArchive => "invalid_archive",
    UnsupportedArchive => "unsupported_archive",
    WorkspaceModified => "workspace_modified",
    Unarchivable => "unarchivable",
    Interrupted => "interrupted",
    // Convert (the two CamelCase names are mlx-knife's).
    InvalidArgumentError => "InvalidArgumentError",
    HealthCheckFailed => "HealthCheckFailed",
    ConversionFailed => "conversion_failed",
    // The HTTP API of `serve` (beside the model errors above).
    InvalidRequest => "invalid_request",
    AuthenticationError => "authentication_error",
    NotFound => "not_found",
    PayloadTooLarge => "payload_too_large",
    ServiceUnavailable => "service_unavailable",
    WorkerFailed => "worker_failed",
}

impl ErrorType {
    /// The type named by a string (the Python side of `run` reports errors by name); `None`
    /// for a name mlxfs does not define.
    pub fn parse(s: &str) -> Option<ErrorType> {
        ErrorType::ALL.iter().copied().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hint of a `permission_denied` from a local write, whichever command wrote.
pub const PERMISSION_HINT: &str = "Check that you may write there (owner, mode, read-only mount).";

/// Classify a local I/O error, for every writer (clone, pull, archive, restore, convert):
/// ENOSPC and EDQUOT are `disk_full` ("`what`: no space left on the device", with
/// `disk_full_hint`, the writer's advice on where else to write); EACCES, EPERM and EROFS are
/// `permission_denied` ("`what`: `e`", with [`PERMISSION_HINT`]); anything else is `io_error`
/// ("`what`: `e`", no hint). `kinds` are the writer's own kinds for these three, in that
/// order (each maps to the `error.type` named). docs/ERRORS.md lists the three.
pub fn io_type<K>(
    e: &std::io::Error,
    what: &str,
    disk_full_hint: &'static str,
    kinds: [K; 3],
) -> (K, String, Option<String>) {
    let [disk_full, permission, other] = kinds;
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => (
            disk_full,
            format!("{what}: no space left on the device"),
            Some(disk_full_hint.to_string()),
        ),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => (
            permission,
            format!("{what}: {e}"),
            Some(PERMISSION_HINT.to_string()),
        ),
        _ => (other, format!("{what}: {e}"), None),
    }
}

/// What every error of every layer offers: its message (`Display`), its type, what the user
/// can do about it, and extra JSON fields of the error object (e.g. `matches`).
pub trait Diagnostic: fmt::Display {
    /// The `error.type` of the JSON envelope.
    fn error_type(&self) -> ErrorType;
    /// What to do next, when there is something to say.
    fn hint(&self) -> Option<String> {
        None
    }
    /// Extra fields of the JSON error object, after `type` and `message`.
    fn fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }
}
