//! What a terminal shows while the hub layer transfers: an indicatif bar on stderr (bytes,
//! rate, ETA) when stderr is a terminal, one summary line otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use crate::hub::progress::Progress;
use crate::text::human_bytes;

/// A terminal progress bar on stderr.
#[derive(Default)]
pub struct Bar {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Bar {
    /// A bar when stderr is a terminal, else plain lines for the start and for notes.
    pub fn new() -> Bar {
        Bar::default()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<indicatif::ProgressBar>> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Progress for Bar {
    fn start(&self, label: &str, files: usize, bytes: u64) {
        if !std::io::stderr().is_terminal() {
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
        *self.slot() = Some(pb);
    }
    fn advance(&self, n: u64) {
        if let Some(pb) = &*self.slot() {
            pb.inc(n);
        }
    }
    fn note(&self, line: &str) {
        match &*self.slot() {
            Some(pb) => pb.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn finish(&self) {
        if let Some(pb) = self.slot().take() {
            pb.finish_and_clear();
        }
    }
}
