//! Hub operations: `clone` (hub → workspace), `pull` (hub → hub cache), `rm` (hub cache),
//! `push` (workspace → hub). Downloads go through the hf-hub crate's file streams (which also
//! handle the hub's xet storage); listings, repo creation and uploads use the same HTTP client.
//! Every write is staged and renamed into place, and every byte of a download is verified
//! against the hub's object id before it is renamed.
//!
//! Layering: this module knows HTTP and the cache layout; it uses `catalog` and `hash` for
//! resolution, health and content hashes, and reports progress through [`progress::Progress`]
//! so the CLI decides what a terminal shows.

pub mod client;
pub mod clone;
pub mod download;
pub mod progress;
pub mod pull;
pub mod push;
pub mod rm;

use std::fmt;
use std::io;

pub use client::Hub;

use crate::error::{Diagnostic, ErrorType};

/// What went wrong, by what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The repo id or revision given is not well-formed.
    InvalidSpec,
    /// The hub could not be reached, the connection broke or timed out.
    Network,
    /// 401: no token, or the token is invalid.
    Auth,
    /// 403: the token lacks permission, or the repo is gated.
    AccessDenied,
    RepoNotFound,
    RevisionNotFound,
    EntryNotFound,
    /// The hub answered with a server error (5xx) or something unexpected.
    Server,
    /// No space left on the target file system.
    DiskFull,
    /// The file system refused a write (permissions, read-only).
    Permission,
    /// Other local I/O problems.
    Io,
    /// Downloaded bytes do not match the hub's object id.
    Integrity,
    /// The clone target or pushed folder is not usable.
    InvalidTarget,
    /// Something is in the way (existing repo, held lock …).
    Conflict,
    /// `HF_HUB_OFFLINE` forbids contacting the hub.
    Offline,
    /// The hub refused the request itself (4xx other than auth, not found, conflict, 429).
    Rejected,
    /// The hub's answer does not follow the protocol (unreadable JSON, unusable ids or paths).
    Protocol,
    /// `rm` of a workspace: mlxfs deletes only from the hub cache.
    WorkspaceModel,
    /// `rm` while another process holds one of the model's locks (a download in progress).
    LocksPresent,
}

impl ErrorKind {
    /// The JSON envelope's `error.type`.
    pub fn error_type(self) -> ErrorType {
        use ErrorKind as K;
        match self {
            K::InvalidSpec => ErrorType::ValidationError,
            K::Network => ErrorType::NetworkError,
            K::Auth => ErrorType::AuthError,
            K::AccessDenied => ErrorType::AccessDenied,
            K::RepoNotFound => ErrorType::RepoNotFound,
            K::RevisionNotFound => ErrorType::RevisionNotFound,
            K::EntryNotFound => ErrorType::EntryNotFound,
            K::Server => ErrorType::ServerError,
            K::DiskFull => ErrorType::DiskFull,
            K::Permission => ErrorType::PermissionDenied,
            K::Io => ErrorType::IoError,
            K::Integrity => ErrorType::IntegrityError,
            K::InvalidTarget => ErrorType::InvalidTargetError,
            K::Conflict => ErrorType::Conflict,
            K::Offline => ErrorType::Offline,
            K::Rejected => ErrorType::RequestRejected,
            K::Protocol => ErrorType::ProtocolError,
            K::WorkspaceModel => ErrorType::WorkspaceModel,
            K::LocksPresent => ErrorType::LocksPresent,
        }
    }

    /// Worth retrying / resuming later (the hub or the network, not the request).
    pub fn transient(self) -> bool {
        matches!(self, ErrorKind::Network | ErrorKind::Server)
    }

    /// Bytes already downloaded stay useful after this failure (a clone keeps its staging
    /// folder for the next run): the network, the hub, a full disk, one corrupt file.
    pub fn keeps_download(self) -> bool {
        matches!(
            self,
            ErrorKind::Network
                | ErrorKind::Server
                | ErrorKind::DiskFull
                | ErrorKind::Integrity
                | ErrorKind::Io
        )
    }
}

/// An error of a hub operation: a kind, a message, what to do next, and extra JSON fields.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HubError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// Extra fields of the JSON error object (`lock_files` of `locks_present`).
    pub fields: Vec<(&'static str, serde_json::Value)>,
}

/// The advice of a `disk_full` ([`HubError::io`]).
const DISK_FULL_HINT: &str =
    "Free some space (or choose a target on another disk) and run the command again.";
/// The kinds of `disk_full`, `permission_denied` and `io_error` ([`crate::error::io_type`]).
const IO_KINDS: [ErrorKind; 3] = [ErrorKind::DiskFull, ErrorKind::Permission, ErrorKind::Io];

impl HubError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> HubError {
        HubError {
            kind,
            message: message.into(),
            hint: None,
            fields: Vec::new(),
        }
    }
    /// Add an extra field to the JSON error object.
    pub fn field(mut self, k: &'static str, v: serde_json::Value) -> HubError {
        self.fields.push((k, v));
        self
    }
    pub fn hint(mut self, h: impl Into<String>) -> HubError {
        self.hint = Some(h.into());
        self
    }
    /// Add a sentence to the hint (keeping what is there).
    pub fn add_hint(mut self, h: &str) -> HubError {
        self.hint = Some(match self.hint.take() {
            Some(old) => format!("{old} {h}"),
            None => h.to_string(),
        });
        self
    }
    /// Classify a local I/O error ([`crate::error::io_type`]); `what` says what was being
    /// done.
    pub fn io(e: &io::Error, what: &str) -> HubError {
        let (kind, message, hint) = crate::error::io_type(e, what, DISK_FULL_HINT, IO_KINDS);
        HubError {
            kind,
            message,
            hint,
            fields: Vec::new(),
        }
    }
}

impl Diagnostic for HubError {
    fn error_type(&self) -> ErrorType {
        self.kind.error_type()
    }
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
    fn fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.fields.clone()
    }
}

pub type Result<T> = std::result::Result<T, HubError>;

/// `org/name[@rev]` as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    pub repo: String,
    pub rev: Option<String>,
}

impl RepoSpec {
    /// Parse and validate (mlx-knife's rules: ≤ 96 characters, no empty path parts; plus the
    /// hub's: at most `org/name`, names of letters, digits, `-`, `_`, `.`).
    pub fn parse(s: &str) -> Result<RepoSpec> {
        let (repo, rev) = match s.split_once('@') {
            Some((r, v)) => (r, Some(v)),
            None => (s, None),
        };
        let bad = |why: &str| {
            HubError::new(
                ErrorKind::InvalidSpec,
                format!("Invalid model name '{s}': {why}"),
            )
            .hint("Give a hub repo id like `mlx-community/Qwen3-0.6B-4bit`, optionally with `@<branch or commit>`.")
        };
        if repo.is_empty() {
            return Err(bad("empty"));
        }
        if repo.chars().count() > 96 {
            return Err(bad("must be at most 96 characters"));
        }
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad(
                "must be `org/name` with no leading, trailing or double slashes",
            ));
        }
        for p in &parts {
            if *p == "." || *p == ".." || p.starts_with('.') && p.len() <= 2 {
                return Err(bad("`.` and `..` are not names"));
            }
            if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(bad(
                    "names may only contain letters, digits, `-`, `_` and `.`",
                ));
            }
        }
        if let Some(r) = rev
            && (r.is_empty()
                || r.contains("..")
                || r.starts_with('/')
                || r.contains(char::is_whitespace))
        {
            return Err(bad("the revision after `@` is empty or malformed"));
        }
        Ok(RepoSpec {
            repo: repo.to_string(),
            rev: rev.map(str::to_string),
        })
    }

    /// The name part: `name` of `org/name`.
    pub fn basename(&self) -> &str {
        self.repo.rsplit('/').next().unwrap_or(&self.repo)
    }

    /// `org` and `name` (an org-less id has an empty org).
    pub fn owner_name(&self) -> (&str, &str) {
        match self.repo.split_once('/') {
            Some((o, n)) => (o, n),
            None => ("", &self.repo),
        }
    }

    pub fn revision(&self) -> &str {
        self.rev.as_deref().unwrap_or("main")
    }
}

impl fmt::Display for RepoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rev {
            Some(r) => write!(f, "{}@{}", self.repo, r),
            None => f.write_str(&self.repo),
        }
    }
}

pub use crate::text::{hex, is_commit};

pub use crate::sys::free_space;

/// Refuse early when `need` more bytes will not fit next to `p`.
pub fn check_space(p: &std::path::Path, need: u64) -> Result<()> {
    if let Some(free) = free_space(p)
        && need > free
    {
        return Err(HubError::new(
            ErrorKind::DiskFull,
            format!(
                "{} more bytes are needed in {} but only {} are free",
                need,
                p.display(),
                free
            ),
        )
        .hint("Free some space (or choose a target on another disk) and run the command again."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = RepoSpec::parse("mlx-community/Qwen3-0.6B-4bit@main").unwrap();
        assert_eq!(s.repo, "mlx-community/Qwen3-0.6B-4bit");
        assert_eq!(s.rev.as_deref(), Some("main"));
        assert_eq!(s.basename(), "Qwen3-0.6B-4bit");
        assert_eq!(RepoSpec::parse("gpt2").unwrap().owner_name(), ("", "gpt2"));
        for bad in [
            "", "/a", "a/", "a//b", "a/b/c", "a/b@", "../x", "a/b c", "a/..",
        ] {
            let e = RepoSpec::parse(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidSpec, "{bad}");
        }
        assert!(RepoSpec::parse(&format!("o/{}", "x".repeat(95))).is_err());
    }
}
