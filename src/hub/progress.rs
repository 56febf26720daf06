//! Progress of a transfer. The hub layer reports bytes through [`Progress`]; the CLI chooses
//! what a terminal shows (`crate::cli::progress`).

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
