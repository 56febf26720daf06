//! mlxfs: one catalog of the MLX models in the Hugging Face hub cache and in workspaces.
//!
//! The core (`catalog`, `hash`) knows nothing of the CLI, FUSE, Python or HTTP; `cli` is a thin
//! adapter that turns its answers into mlx-knife-compatible JSON and human tables.

pub mod catalog;
pub mod cli;
pub mod envelope;
pub mod fuse;
pub mod hash;
pub mod hub;
pub mod jsonfmt;
pub mod runtime;
pub mod state;
pub mod timefmt;
pub mod vfs;
