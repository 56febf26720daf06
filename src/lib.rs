//! mlxfs: one catalog of the MLX models in the Hugging Face hub cache and in workspaces.
//!
//! The core (`catalog`, `hash`) knows nothing of the CLI, FUSE, Python or HTTP; the adapters
//! (`cli`, `fuse` over `vfs`, `runtime`, `hub`) turn its answers into output. The leaf modules
//! (`text`, `sys`, `env`, `error`, `mountprobe`, `timefmt`, `jsonfmt`, `envelope`, `state`,
//! `media`, `par`) import nothing else of mlxfs; `hints` is wording shared by the adapters. The
//! arrows are checked by a test (tests/it/arch.rs) and drawn in docs/ARCHITECTURE.md.

pub mod archive;
pub mod catalog;
pub mod cli;
pub mod convert;
pub mod env;
pub mod envelope;
pub mod error;
pub mod fuse;
pub mod hash;
pub mod hints;
pub mod hub;
pub mod jsonfmt;
pub mod media;
pub mod mountprobe;
pub mod osjunk;
pub mod par;
pub mod runtime;
pub mod serve;
pub mod staging;
pub mod state;
pub mod sys;
pub mod text;
pub mod timefmt;
pub mod vfs;
