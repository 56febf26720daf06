//! The integration tests, as one test binary (so `support/`, with its local hub server, is
//! compiled once). Suites that need FUSE, root or the Python venv skip with a one-line reason
//! where the machine lacks it; `scripts/test.sh` sets `MLXFS_REQUIRE_ALL=1`, which turns every
//! such skip into a failure (CI runs them all).

mod support;

mod arch;
mod archive;
mod catalog;
mod cli;
mod convert;
mod disks;
mod docs;
mod hash_v2;
mod homes;
mod hostile;
mod hub;
mod live;
mod loadable;
mod media;
mod mount;
mod offline;
mod readonly;
mod run;
mod run_edges;
mod runtime_cache;
mod scripts;
mod serve;
mod targets;
mod vfs;
mod worker;
