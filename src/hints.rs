//! Wording shared by the adapters (the CLI and the mount): the core reports facts (an
//! [`Unknown`] clean state, a [`Fix`]); this turns them into sentences that name mlxfs's own
//! commands. Nothing in `catalog` or `hash` uses it.

use crate::hash::sentinel::{Fix, Unknown};

/// Why a workspace's clean state is unknown, with the command that fixes it when there is one
/// (`sentinel has no v2 content hash — run `mlxfs show my-ws --recalc-hash` to upgrade it`).
pub fn clean_unknown(why: &Unknown, name: &str) -> String {
    let purpose = match why.fix() {
        None => return why.to_string(),
        Some(Fix::Upgrade) => "to upgrade it",
        Some(Fix::Rebuild) => "to rebuild",
    };
    format!("{why} — run `mlxfs show {name} --recalc-hash` {purpose}")
}
