//! Shared bits of the hub commands (clone, pull, rm, push): progress choice, the yes/no
//! question on a terminal, and what Ctrl-C says during a download.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use super::progress::Bar;
use crate::hub::progress::{Progress, Silent};

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
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Ask `question [y/N]` on stderr; false unless the answer starts with y.
pub fn confirm(question: &str) -> bool {
    let mut err = std::io::stderr();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
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
    on_stop_signals(on_interrupt);
}

/// Install `handler` for SIGINT, SIGTERM and SIGHUP (a closed terminal or a dropped SSH
/// session). The handler must only do async-signal-safe things (atomics, write(2), _exit(2)).
pub(super) fn on_stop_signals(handler: extern "C" fn(libc::c_int)) {
    // SAFETY: installing a handler is sound; what it may do is the caller's promise above.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, handler as *const () as libc::sighandler_t);
        }
    }
}
