//! Real FUSE mounts of a fixture (shared by the mount, live, hub and media tests).

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Fx;
use super::cli::mlxfs;

pub struct Mount {
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// The daemon's stderr.
    pub log: PathBuf,
}

impl Mount {
    pub fn start(fx: &Fx, extra: &[&str]) -> Mount {
        let dir = fx.tmp.path().join(format!("mnt-{}", extra.join("")));
        fs::create_dir_all(&dir).unwrap();
        // The daemon's stderr (its log) goes to a file: a pipe nobody reads could fill up.
        let log = dir.with_extension("log");
        let child = mlxfs(fx)
            .arg("mount")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let m = Mount {
            dir,
            child: Some(child),
            log,
        };
        m.wait_ready();
        m
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if fs::read(self.dir.join(".mlxfs/status.json")).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mount at {} did not come up", self.dir.display());
    }

    /// Wait up to 10 s for `rel` to appear in the mount; fail saying `what` (and the log).
    #[track_caller]
    pub fn wait_for(&self, rel: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.p(rel).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.p(rel).exists(), "{what}; log:\n{}", self.log());
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> Value {
        serde_json::from_slice(&fs::read(self.p(".mlxfs/status.json")).unwrap()).unwrap()
    }
}

pub fn mounted(dir: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*d))
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
