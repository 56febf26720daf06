//! Shared bits of the hub commands (clone, pull, rm, push): error conversion, progress choice,
//! and the yes/no question on a terminal.

use std::io::{BufRead, Write};
use std::sync::Arc;

use super::output::CliError;
use crate::hub::HubError;
use crate::hub::progress::{Bar, Progress, Silent};

impl From<HubError> for CliError {
    fn from(e: HubError) -> CliError {
        let mut c = CliError::new(e.kind.as_str(), e.message);
        c.hint = e.hint;
        c
    }
}

/// A progress bar on a terminal; nothing with `--json` or `--quiet`.
pub fn progress(json: bool, quiet: bool) -> Arc<dyn Progress> {
    if json || quiet {
        Arc::new(Silent)
    } else {
        Arc::new(Bar::new())
    }
}

/// Both stdin and stderr are terminals (someone can answer).
pub fn interactive() -> bool {
    // SAFETY: isatty only inspects descriptors.
    unsafe { libc::isatty(0) == 1 && libc::isatty(2) == 1 }
}

/// Ask `question [y/N]` on stderr; false unless the answer starts with y.
pub fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "Yes" | "YES")
}

const INTERRUPTED: &[u8] =
    b"\nInterrupted: what was downloaded is kept; run the same command again to resume.\n";

extern "C" fn on_interrupt(sig: libc::c_int) {
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the message is static.
    unsafe {
        libc::write(2, INTERRUPTED.as_ptr().cast(), INTERRUPTED.len());
        libc::_exit(128 + sig);
    }
}

/// Ctrl-C / SIGTERM during a download: say how to resume, then exit at once. Every byte on
/// disk is in a partial file that the next run continues, so stopping anywhere is safe.
pub fn exit_on_interrupt() {
    // SAFETY: the handler only calls async-signal-safe functions.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}
