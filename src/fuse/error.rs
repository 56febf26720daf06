//! What can go wrong with a mount or an unmount, by what the user can do about it.

use crate::error::{Diagnostic, ErrorType};

/// What went wrong with a mount or unmount, by what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountErrorKind {
    /// No `/dev/fuse` (the fuse module, or a container without it).
    FuseUnavailable,
    /// Not root and no `fusermount3`.
    FusermountMissing,
    /// Not allowed to mount there, or to read the folder.
    PermissionDenied,
    /// The kernel refused the mount, or the daemon did not come up.
    MountFailed,
    /// The FUSE session ended with an error.
    SessionFailed,
    /// `umount` of a folder that is not a mount point.
    NotMounted,
    /// `umount` of something that is not a FUSE mount.
    NotMlxfs,
    /// Neither a normal nor a lazy unmount worked.
    UnmountFailed,
    /// A stale mount (dead daemon) that could not be cleared.
    StaleMount,
    MountpointMissing,
    /// The mount point cannot be examined (another I/O error).
    MountpointError,
    MountpointNotDir,
    AlreadyMounted,
    MountpointNotEmpty,
    /// The mount point lies inside a folder the mount shows (the hub cache, a workspace
    /// home), or one of those inside it: the daemon would read itself.
    MountpointInSources,
}

impl MountErrorKind {
    /// The JSON envelope's `error.type`.
    pub fn error_type(self) -> ErrorType {
        use MountErrorKind as K;
        match self {
            K::FuseUnavailable => ErrorType::FuseUnavailable,
            K::FusermountMissing => ErrorType::FusermountMissing,
            K::PermissionDenied => ErrorType::PermissionDenied,
            K::MountFailed => ErrorType::MountFailed,
            K::SessionFailed => ErrorType::SessionFailed,
            K::NotMounted => ErrorType::NotMounted,
            K::NotMlxfs => ErrorType::NotMlxfs,
            K::UnmountFailed => ErrorType::UnmountFailed,
            K::StaleMount => ErrorType::StaleMount,
            K::MountpointMissing => ErrorType::MountpointMissing,
            K::MountpointError => ErrorType::MountpointError,
            K::MountpointNotDir => ErrorType::MountpointNotDir,
            K::AlreadyMounted => ErrorType::AlreadyMounted,
            K::MountpointNotEmpty => ErrorType::MountpointNotEmpty,
            K::MountpointInSources => ErrorType::MountpointInSources,
        }
    }
}

/// A mount or unmount failure with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct MountError {
    pub kind: MountErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl MountError {
    pub fn new(kind: MountErrorKind, message: impl Into<String>, hint: Option<&str>) -> MountError {
        MountError {
            kind,
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
}

impl Diagnostic for MountError {
    fn error_type(&self) -> ErrorType {
        self.kind.error_type()
    }
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}
