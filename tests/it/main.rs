//! The integration tests, as one test binary (so `support/`, with its local hub server, is
//! compiled once). Suites that need FUSE, root or the Python venv skip with a one-line reason
//! where the machine lacks it; `scripts/test.sh` sets `MLXFS_REQUIRE_ALL=1`, which turns every
//! such skip into a failure (CI runs them all).
//!
//! A suite tests one part of mlxfs and imports nothing from another suite: what two suites
//! share lives in `support/` — `cli` runs the binary (`mlxfs(&fx)…ok()`), `python` the venv and
//! the tiny models, `serve` a running server and its clients, `mnt` FUSE mounts, `fakehub` a
//! local hub, `unprivileged` checks as a user whose file modes count.

mod support;

// The source: the module arrows of docs/ARCHITECTURE.md.
mod arch;
// `archive` and `restore`: round trips, byte-identical archives, every hostile archive refused.
mod archive;
// The catalog core in-process: health reasons, resolution rules, records.
mod catalog;
// The binary end to end without Python: envelopes, exit codes, tables, reads that never write.
mod cli;
// `convert`: refusals before anything is written, `--repair-index`; the modes need the venv.
mod convert;
// Models on other disks, linked caches, sidecar files, `rm` accounting (some need root, FUSE, venv).
mod disks;
// The contracts in docs/ (error types, environment variables) match the code.
mod docs;
// Content hash v2 against mlx-knife's own values, the clean check, the sentinel writer.
mod hash_v2;
// Several workspace homes (`MLXK_MODEL_PATH`) and the list columns that tell them apart.
mod homes;
// Property tests: nothing on disk crashes a command or the mount (`PROPTEST_CASES=N` sets the
// cases per property; 500 by default).
mod hostile;
// Hub commands against the local hub (support/fakehub.rs): clone, pull, rm, push, resume.
mod hub;
// Answers from a live mount equal the disk's (needs FUSE; some need root).
mod live;
// Health says what a loader will open: FIFOs, unreadable files, closed folders (needs root).
mod loadable;
// Vision and speech models through `run` and `serve` (needs the venv; some FUSE or root).
mod media;
// Real FUSE mounts: tree, virtual files, reads, mmap, EROFS, lifecycle (needs FUSE).
mod mount;
// The workspace promise end to end, offline in a network namespace (needs the venv and root).
mod offline;
// Workspaces this user may read but not write (needs root; runs need the venv).
mod readonly;
// `run` with real inference on the tiny model (needs the venv).
mod run;
// `run` at its edges: signals, hangs at exit, the context length (needs the venv).
mod run_edges;
// A model's runtime cache: what inspect finds and how health, show and the mount report it.
mod runtime_cache;
// The Python scripts with plain python3, no MLX: they compile, their pure parts, the protocol.
mod scripts;
// `serve`: routes, errors, the openai client, workers (needs the venv).
mod serve;
// Writers refuse harmful targets (`catalog::target`), one rule for all.
mod targets;
// The virtual tree without mounting: rules, refreshes, `diff` against a reference model.
mod vfs;
// The model worker of `serve` in-process (needs the venv).
mod worker;
