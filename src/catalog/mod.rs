//! The catalog core: where models live (hub cache, workspace home, explicit paths), the model
//! record of each, and name resolution. No FUSE, Python or HTTP here.

pub mod capability;
pub mod config;
pub mod detect;
pub mod fleet;
pub mod folders;
pub mod health;
pub mod hub_cache;
pub mod inventory;
pub mod loader_files;
pub mod locations;
pub mod mlx_lm_types;
pub mod model_ref;
pub mod record;
pub mod resolve;
pub mod runtime_cache;
pub mod safetensors_header;
pub mod shards;
pub mod target;
pub mod verdict;
pub mod workspaces;

pub(crate) use folders::io_reason;
pub use folders::{for_each_below, unusable_folder};
pub use hub_cache::{
    HubRepo, RepoDir, RepoKind, Snapshot, dir_from_repo_id, repo_id_from_dir, scan_hub,
};
pub use locations::{Locations, expand_vars, hf_home};
pub use model_ref::{CacheLocation, IsolatedCache, LinkRoots, ModelRef, Source};
pub use workspaces::{
    WorkspaceDir, distinct_names, duplicate_names, has_config, is_staging_name,
    scan_all_workspaces, scan_workspaces,
};

/// Every model of the catalog at its current revision: workspaces first (by name), then hub
/// models (by repo id).
pub fn all_models(loc: &Locations) -> Vec<ModelRef> {
    let mut out: Vec<ModelRef> = scan_all_workspaces(loc)
        .into_iter()
        .map(WorkspaceDir::into_model)
        .collect();
    for repo in scan_hub(&loc.hub_cache) {
        out.push(ModelRef::hub(&repo, repo.current));
    }
    out
}
