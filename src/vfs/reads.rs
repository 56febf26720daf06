//! How the mount's files are read, as `status.json` tells it: why the whole mount reads
//! through the daemon when it does, and which files the kernel would not take for FUSE
//! passthrough — by file system, with why. The adapter decides what a refusal means
//! (`fuse::MlxFs::passthrough`); this keeps the facts and answers "read this one through the
//! daemon?" for each open.
//!
//! One refusal used to turn passthrough off for every file until unmount (issue 25 §5: a
//! single model on another FUSE file system made every model slow); now it costs the file,
//! or the files of its file system when the reason is the file system's.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::tree::Ino;

/// How many of a file system's files `status.json` names (`files_total` counts them all).
pub const LISTED_FILES: usize = 32;

/// Why the kernel refused passthrough for a file, as the adapter saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reason, for people (names the errno).
    pub why: String,
    /// The reason holds for every file of the file system (the kernel would refuse each of
    /// them): they are read through the daemon without asking again.
    pub whole_file_system: bool,
    /// The file system's type and mount point (from the mount table), when known.
    pub file_system: Option<String>,
    pub mount_point: Option<String>,
}

/// Files of one file system read through the daemon for one reason (`status.json`
/// `read_through_daemon`).
#[derive(Debug, Clone, Serialize)]
pub struct DaemonReads {
    /// The file system's device number, `major:minor` (as in /proc/self/mountinfo).
    pub device: String,
    pub file_system: Option<String>,
    pub mount_point: Option<String>,
    pub why: String,
    pub whole_file_system: bool,
    /// Mount paths of the first [`LISTED_FILES`] files, in the order they were opened.
    pub files: Vec<String>,
    /// How many files in all.
    pub files_total: usize,
    #[serde(skip)]
    dev: u64,
    #[serde(skip)]
    inos: HashSet<Ino>,
}

#[derive(Default)]
struct State {
    /// Why every file is read through the daemon (no passthrough at all), when so.
    why_daemon: Option<String>,
    by_file_system: Vec<DaemonReads>,
}

/// The read facts of one mount (see the module doc). Cheap when nothing was refused: one
/// atomic load per open.
#[derive(Default)]
pub struct Reads {
    any: AtomicBool,
    state: Mutex<State>,
}

impl Reads {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the whole mount reads through the daemon (`None`: it does not, or nobody said).
    pub fn why_daemon(&self) -> Option<String> {
        self.state().why_daemon.clone()
    }

    pub fn set_why_daemon(&self, why: Option<String>) {
        self.state().why_daemon = why;
    }

    /// Is the file `ino`, on the file system `dev`, read through the daemon without asking
    /// the kernel again? Yes when its file system refuses every file, or when this inode was
    /// read through the daemon before, whatever file it shows now (an inode must not mix
    /// opens with and without passthrough: the kernel fails an open of the other kind with
    /// EIO while one is open).
    pub fn through_daemon(&self, dev: u64, ino: Ino) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        self.state()
            .by_file_system
            .iter()
            .any(|r| r.inos.contains(&ino) || r.dev == dev && r.whole_file_system)
    }

    /// Record that file `ino` (mount path `path()`, on file system `dev`) is read through the
    /// daemon: because of `refusal`, or (`None`) because [`Reads::through_daemon`] said so.
    pub fn note(
        &self,
        dev: u64,
        ino: Ino,
        path: impl FnOnce() -> String,
        refusal: Option<Refusal>,
    ) {
        let mut st = self.state();
        let found = st.by_file_system.iter().position(|r| match &refusal {
            Some(f) => r.dev == dev && r.why == f.why,
            None => r.inos.contains(&ino) || r.dev == dev && r.whole_file_system,
        });
        let i = match (found, refusal) {
            (Some(i), _) => i,
            (None, Some(f)) => {
                st.by_file_system.push(DaemonReads {
                    device: format!("{}:{}", libc::major(dev), libc::minor(dev)),
                    file_system: f.file_system,
                    mount_point: f.mount_point,
                    why: f.why,
                    whole_file_system: f.whole_file_system,
                    files: Vec::new(),
                    files_total: 0,
                    dev,
                    inos: HashSet::new(),
                });
                st.by_file_system.len() - 1
            }
            (None, None) => return,
        };
        let r = &mut st.by_file_system[i];
        if r.inos.insert(ino) {
            r.files_total += 1;
            if r.files.len() < LISTED_FILES {
                r.files.push(path());
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// What `status.json` shows as `read_through_daemon`: a list of [`DaemonReads`].
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.state().by_file_system).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(why: &str, whole: bool) -> Option<Refusal> {
        Some(Refusal {
            why: why.into(),
            whole_file_system: whole,
            file_system: Some("fuse (mlxfs)".into()),
            mount_point: Some("/mnt/other".into()),
        })
    }

    #[test]
    fn refusals_cover_their_file_or_their_file_system() {
        let r = Reads::default();
        assert!(!r.through_daemon(7, 10));
        // One file refused: that inode only, on any file system it shows later.
        r.note(7, 10, || "a/weights".into(), refusal("ENOMEM", false));
        assert!(r.through_daemon(7, 10) && r.through_daemon(8, 10));
        assert!(
            !r.through_daemon(7, 11),
            "another file of the same file system"
        );
        // A whole file system refused: every file on it, none elsewhere.
        r.note(9, 20, || "b/config.json".into(), refusal("ELOOP", true));
        assert!(r.through_daemon(9, 21) && !r.through_daemon(8, 21));
        r.note(9, 21, || "b/weights".into(), None);
        r.note(9, 21, || "b/weights".into(), None); // counted once
        r.note(8, 22, || "c/x".into(), None); // nothing refused it: not recorded
        let v = r.to_json();
        assert_eq!(v.as_array().unwrap().len(), 2, "{v:#}");
        assert_eq!(v[0]["device"], "0:7");
        assert_eq!(v[0]["files"], serde_json::json!(["a/weights"]));
        assert_eq!(
            v[1]["files"],
            serde_json::json!(["b/config.json", "b/weights"])
        );
        assert_eq!(v[1]["files_total"], 2);
        assert_eq!(v[1]["whole_file_system"], true);
        assert_eq!(v[1]["mount_point"], "/mnt/other");
        assert!(v[1].get("inos").is_none() && v[1].get("dev").is_none());
    }

    #[test]
    fn only_the_first_files_are_named() {
        let r = Reads::default();
        r.note(1, 1, || "f1".into(), refusal("ELOOP", true));
        for i in 2..100 {
            r.note(1, i, || format!("f{i}"), None);
        }
        let v = r.to_json();
        assert_eq!(v[0]["files"].as_array().unwrap().len(), LISTED_FILES);
        assert_eq!(v[0]["files_total"], 99);
    }
}
