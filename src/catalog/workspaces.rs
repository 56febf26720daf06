//! Workspaces: the model folders directly under each workspace home (`MLXK_WORKSPACE_HOME`,
//! then `MLXK_MODEL_PATH`'s), the names that tell apart a workspace name two homes share,
//! and the staging folders that are never a workspace.

use std::fs;
use std::path::{Path, PathBuf};

use super::folders::{io_reason, unusable_folder};
use super::locations::Locations;
use super::model_ref::ModelRef;
use crate::par::par_map_io;

/// A workspace found under the workspace home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceDir {
    /// Folder name (the name users type; lossy when not UTF-8).
    pub name: String,
    /// `home/name` (not resolved further).
    pub path: PathBuf,
    /// A folder name that is not UTF-8 cannot be typed or hashed: reported, not hidden.
    pub problem: Option<String>,
}

impl WorkspaceDir {
    pub fn into_model(self) -> ModelRef {
        let mut m = ModelRef::workspace(self.path, self.name);
        m.problem = self.problem;
        m
    }
}

/// Staging folders of writers in progress (mlxfs's and mlx-knife's): never a workspace. The
/// one naming rule is [`crate::staging`]'s.
pub use crate::staging::is_staging_name;

/// Is `p` a model folder (holds a `config.json`, even a dangling link)?
pub fn has_config(p: &Path) -> bool {
    fs::symlink_metadata(p.join("config.json")).is_ok()
}

/// The workspaces of every home ([`Locations::workspace_homes`]), home by home in search
/// order, each home's by name. The same name may occur in two homes: callers that pick by
/// name must treat that as ambiguous ([`duplicate_names`]), never take the first.
pub fn scan_all_workspaces(loc: &Locations) -> Vec<WorkspaceDir> {
    let mut out = Vec::new();
    for home in loc.workspace_homes() {
        out.extend(scan_workspaces(home));
    }
    out
}

/// Workspace names that occur more than once across the homes.
pub fn duplicate_names(ws: &[WorkspaceDir]) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    ws.iter()
        .filter(|w| !seen.insert(w.name.as_str()))
        .map(|w| w.name.clone())
        .collect()
}

/// The name that tells a workspace apart when its folder name occurs in two homes
/// (`MLXK_MODEL_PATH`): `<name>@<home folder name>` for every one of them (no home wins), with
/// `-<n>` (the home's place in the search order) added if that still collides; `None` for a
/// name that is unique. The mount's root entries and `serve`'s model ids use it.
pub fn distinct_names(workspaces: &[WorkspaceDir]) -> Vec<Option<String>> {
    let dups = duplicate_names(workspaces);
    let home_of = |w: &WorkspaceDir| w.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut homes: Vec<PathBuf> = Vec::new();
    for w in workspaces {
        let h = home_of(w);
        if !homes.contains(&h) {
            homes.push(h);
        }
    }
    let label = |h: &Path| {
        h.file_name()
            .map_or_else(|| "root".to_string(), |n| n.to_string_lossy().into_owned())
    };
    let mut names: Vec<Option<String>> = workspaces
        .iter()
        .map(|w| {
            dups.contains(&w.name)
                .then(|| format!("{}@{}", w.name, label(&home_of(w))))
        })
        .collect();
    let clashes: Vec<bool> = (0..names.len())
        .map(|i| names[i].is_some() && (0..names.len()).any(|j| j != i && names[j] == names[i]))
        .collect();
    for (i, w) in workspaces.iter().enumerate() {
        if clashes[i] {
            let n = homes.iter().position(|h| *h == home_of(w)).unwrap_or(0) + 1;
            if let Some(s) = &mut names[i] {
                s.push_str(&format!("-{n}"));
            }
        }
    }
    names
}

/// Direct sub-folders of the workspace home with a `config.json`, sorted by name. A linked
/// entry (a workspace moved to another disk) is followed wherever it leads; a link that leads
/// nowhere, or a folder that cannot be read, is listed with that problem — it may be a
/// workspace whose disk is not attached. Other entries (files, folders without a
/// `config.json`) are not models and are not listed.
pub fn scan_workspaces(home: &Path) -> Vec<WorkspaceDir> {
    let Ok(rd) = fs::read_dir(home) else {
        return Vec::new();
    };
    // One `config.json` lookup per entry: cold, disk latency, so many are kept in flight.
    let entries: Vec<fs::DirEntry> = rd.flatten().collect();
    let mut out: Vec<WorkspaceDir> = par_map_io(&entries, |e| {
        let os_name = e.file_name();
        let name = os_name.to_string_lossy().into_owned();
        if is_staging_name(&name) {
            return None;
        }
        let mut problem = os_name
            .to_str()
            .is_none()
            .then(|| "Folder name is not valid UTF-8: rename the workspace folder".to_string());
        let path = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_symlink() {
            match fs::metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return None,
                Err(_) => problem = unusable_folder(&path),
            }
        } else if !ft.is_dir() {
            return None;
        }
        let config = fs::symlink_metadata(path.join("config.json"));
        if problem.is_none()
            && let Err(e) = &config
        {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                // The folder lists its names (or not) but cannot be entered: it may hold a
                // model this user cannot use; said, never left out.
                problem = Some(match fs::read_dir(&path) {
                    Ok(_) => format!("cannot be entered ({})", io_reason(e)),
                    Err(e) => format!("cannot be read ({})", io_reason(&e)),
                });
            } else if let Err(e) = fs::read_dir(&path) {
                problem = Some(format!("cannot be read ({})", io_reason(&e)));
            }
        }
        (problem.is_some() || config.is_ok()).then_some(WorkspaceDir {
            name,
            path,
            problem,
        })
    })
    .into_iter()
    .flatten()
    .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
