//! Progress of a transfer. The core reports bytes; the CLI chooses a terminal bar or nothing.

use std::sync::Mutex;
use std::time::Duration;

/// Receives progress; must be cheap (called for every received chunk).
pub trait Progress: Send + Sync {
    /// A transfer of `files` files and `bytes` bytes begins.
    fn start(&self, _label: &str, _files: usize, _bytes: u64) {}
    /// `n` more bytes are done (downloaded, found complete, or verified).
    fn advance(&self, _n: u64) {}
    /// A line for the user (shown above the bar).
    fn note(&self, _line: &str) {}
    /// The transfer is over (successfully or not).
    fn finish(&self) {}
}

/// Shows nothing (`--json`, `--quiet`, tests).
pub struct Silent;
impl Progress for Silent {}

/// A terminal progress bar on stderr: bytes, rate, ETA.
pub struct Bar {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Bar {
    /// A bar when stderr is a terminal, else plain lines for notes only.
    pub fn new() -> Bar {
        Bar {
            bar: Mutex::new(None),
        }
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

impl Progress for Bar {
    fn start(&self, label: &str, files: usize, bytes: u64) {
        if !stderr_is_tty() {
            eprintln!("{label}: {files} files, {}", human_bytes(bytes));
            return;
        }
        let pb = indicatif::ProgressBar::new(bytes);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_message(format!("{label} ({files} files)"));
        pb.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().unwrap() = Some(pb);
    }
    fn advance(&self, n: u64) {
        if let Some(pb) = &*self.bar.lock().unwrap() {
            pb.inc(n);
        }
    }
    fn note(&self, line: &str) {
        match &*self.bar.lock().unwrap() {
            Some(pb) => pb.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn finish(&self) {
        if let Some(pb) = self.bar.lock().unwrap().take() {
            pb.finish_and_clear();
        }
    }
}

/// mlx-knife's `humanize_size`: decimal units, bytes without decimals (`1.7KB`, `4.5GB`).
pub fn human_bytes(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["B", "KB", "MB", "GB", "TB"] {
        if v < 1000.0 {
            return if unit == "B" {
                format!("{v:.0}{unit}")
            } else {
                format!("{v:.1}{unit}")
            };
        }
        v /= 1000.0;
    }
    format!("{v:.1}PB")
}
