//! Building a [`Tree`] from the catalog: workspaces at the top, hub models as `org/repo`
//! (current revision) and `org/repo@rev7` (further snapshots), `<org>@hub` when a workspace
//! takes the org's name. Hub files become regular files backed by their blobs; links inside a
//! workspace stay relative links; what cannot be shown is left out and recorded in
//! [`Tree::hidden`] (or reported by the model's health) — never silently.
//!
//! Every name here comes from disk and is untrusted: nothing is cut by byte index, a name that
//! cannot be a path component (`.`, `..`, empty) is replaced by the folder's own name, and two
//! things that would take one name never merge: the second is hidden and recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::tree::{Attr, Content, Hidden, Inodes, Kind, ModelEntry, Node, ROOT_INO, Tree, Virtual};
use crate::catalog::{
    HubRepo, Locations, ModelRef, distinct_names, runtime_cache, scan_all_workspaces, scan_hub,
};
use crate::hash::resolve_link;
use crate::mountprobe::META_DIR;
pub use crate::osjunk::is_os_junk;
use crate::text::short_rev;

fn dir_attr(mtime: SystemTime) -> Attr {
    Attr {
        kind: Kind::Dir,
        size: 4096,
        blocks: 8,
        mtime,
        perm: 0o555,
        nlink: 2,
    }
}

fn file_attr(md: &fs::Metadata) -> Attr {
    Attr {
        kind: Kind::File,
        size: md.len(),
        blocks: md.blocks(),
        mtime: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        perm: 0o444,
        nlink: 1,
    }
}

fn mtime_of(p: &Path) -> SystemTime {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// `target` relative to the folder `from` (both relative to the same root, no `..` inside).
pub(crate) fn relative_to(target: &Path, from: &Path) -> PathBuf {
    let t: Vec<Component> = target.components().collect();
    let f: Vec<Component> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in t.iter().skip(common) {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Can `name` be one component of a path in the tree?
fn usable_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

struct Builder<'a> {
    inodes: &'a mut Inodes,
    nodes: HashMap<Ino, Node>,
    models: Vec<ModelEntry>,
    /// Folders that are models (no other model may be placed inside one).
    model_dirs: HashSet<Ino>,
    hidden: Vec<Hidden>,
    /// The file system of the model folder being mirrored: folders on another are not entered.
    root_dev: Option<u64>,
}

use super::tree::Ino;

impl Builder<'_> {
    fn hide(&mut self, path: &Path, why: impl Into<String>) {
        self.hidden.push(Hidden {
            path: path.to_string_lossy().into_owned(),
            why: why.into(),
        });
    }

    fn child(&self, parent: Ino, name: &OsStr) -> Option<Ino> {
        match &self.nodes.get(&parent)?.content {
            Content::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    fn add(
        &mut self,
        parent: Ino,
        parent_vpath: &Path,
        name: &OsStr,
        attr: Attr,
        content: Content,
    ) -> (Ino, PathBuf) {
        let vpath = parent_vpath.join(name);
        let ino = self.inodes.get(&vpath);
        if let Some(Node {
            content: Content::Dir(children),
            ..
        }) = self.nodes.get_mut(&parent)
        {
            children.insert(name.to_os_string(), ino);
        }
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
                attr,
                content,
            },
        );
        (ino, vpath)
    }

    /// A folder that groups models (an org): the existing one, or a new one. `None` when the
    /// name is taken by something that is not such a folder (a model, a file).
    fn add_group_dir(
        &mut self,
        parent: Ino,
        parent_vpath: &Path,
        name: &OsStr,
        mtime: SystemTime,
    ) -> Option<(Ino, PathBuf)> {
        if let Some(existing) = self.child(parent, name) {
            let is_group = !self.model_dirs.contains(&existing)
                && self
                    .nodes
                    .get(&existing)
                    .is_some_and(|n| matches!(n.content, Content::Dir(_)));
            return is_group.then(|| (existing, parent_vpath.join(name)));
        }
        Some(self.add(
            parent,
            parent_vpath,
            name,
            dir_attr(mtime),
            Content::Dir(BTreeMap::new()),
        ))
    }

    fn add_dir(
        &mut self,
        parent: Ino,
        parent_vpath: &Path,
        name: &OsStr,
        mtime: SystemTime,
    ) -> (Ino, PathBuf) {
        self.add(
            parent,
            parent_vpath,
            name,
            dir_attr(mtime),
            Content::Dir(BTreeMap::new()),
        )
    }

    /// Mirror a model folder. `roots` are where links may lead (the model's own real folders:
    /// [`ModelRef::link_roots`]); `hub` turns links to
    /// files into regular files backed by their target. `top` is true for the model's own
    /// folder, where the virtual `.mlxfs/` takes its name.
    #[allow(clippy::too_many_arguments)]
    fn mirror(
        &mut self,
        dir_ino: Ino,
        vpath: &Path,
        real: &Path,
        root: &Path,
        roots: &crate::catalog::LinkRoots,
        hub: bool,
        top: bool,
    ) {
        let Ok(rd) = fs::read_dir(real) else { return };
        let mut entries: Vec<fs::DirEntry> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let path = e.path();
            if top && name == META_DIR {
                self.hide(
                    &path,
                    format!("the mount's virtual {META_DIR} folder takes this name"),
                );
                continue;
            }
            if is_os_junk(&name) || name.as_encoded_bytes().ends_with(b".incomplete") {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_symlink() {
                // Dangling links and links that leave the model are hidden; the model's
                // health names them.
                let Some(target) = fs::read_link(&path)
                    .ok()
                    .and_then(|t| resolve_link(real, &t))
                else {
                    continue;
                };
                let Ok(md) = fs::metadata(&target) else {
                    continue;
                };
                if !roots.contains(&target) {
                    continue;
                }
                if hub {
                    if md.is_file() {
                        self.add(
                            dir_ino,
                            vpath,
                            &name,
                            file_attr(&md),
                            Content::Backed(target),
                        );
                    } else {
                        self.hide(&path, "a hub snapshot link that is not to a file");
                    }
                    continue;
                }
                let (Ok(t_rel), Ok(from_rel)) =
                    (target.strip_prefix(root), real.strip_prefix(root))
                else {
                    continue;
                };
                let rel = relative_to(t_rel, from_rel).into_os_string();
                let attr = Attr {
                    kind: Kind::Symlink,
                    size: rel.len() as u64,
                    blocks: 0,
                    mtime: fs::symlink_metadata(&path)
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    perm: 0o777,
                    nlink: 1,
                };
                self.add(dir_ino, vpath, &name, attr, Content::Link(rel));
            } else if ft.is_dir() {
                let md = e.metadata().ok();
                // Another file system mounted inside a model (or the mount itself, reached
                // through a relocated folder) is not part of it: hidden and recorded.
                if self.root_dev.is_some() && md.as_ref().map(|m| m.dev()) != self.root_dev {
                    self.hide(&path, "another file system is mounted there");
                    continue;
                }
                let mtime = md
                    .and_then(|m| m.modified().ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let (ino, sub_vpath) = self.add_dir(dir_ino, vpath, &name, mtime);
                self.mirror(ino, &sub_vpath, &path, root, roots, hub, false);
            } else if ft.is_file() {
                let Ok(md) = e.metadata() else { continue };
                self.add(dir_ino, vpath, &name, file_attr(&md), Content::Backed(path));
            } else {
                self.hide(
                    &path,
                    "not a regular file, folder or link (a pipe, socket or device)",
                );
            }
        }
    }

    fn add_meta(
        &mut self,
        parent: Ino,
        vpath: &Path,
        files: &[(&str, Virtual)],
        mtime: SystemTime,
        runtime_cache_mtime: Option<SystemTime>,
    ) {
        let (ino, meta_vpath) = self.add_dir(parent, vpath, OsStr::new(META_DIR), mtime);
        for (name, v) in files {
            let attr = Attr {
                kind: Kind::File,
                size: 0, // rendered on demand: `Vfs::attr` asks the renderer
                blocks: 0,
                // A hub model's runtime cache lies outside the tree: its newest change is in
                // the attributes, so that a change there is a difference between two trees
                // (and the file is rendered anew).
                mtime: match v {
                    Virtual::RuntimeCache(_) => runtime_cache_mtime.unwrap_or(mtime),
                    _ => mtime,
                },
                perm: 0o444,
                nlink: 1,
            };
            self.add(
                ino,
                &meta_vpath,
                OsStr::new(name),
                attr,
                Content::Virtual(v.clone()),
            );
        }
    }

    /// Add one model folder named `name` in `parent`, unless the name is taken (then the model
    /// is hidden and recorded).
    fn add_model(&mut self, parent: Ino, parent_vpath: &Path, name: &OsStr, model: ModelRef) {
        if let Some(existing) = self.child(parent, name) {
            let what = self.models.iter().find(|m| m.dir == existing).map_or_else(
                || "a folder of the mount".to_string(),
                |m| format!("model {}", m.model.short_name),
            );
            let path = parent_vpath.join(name);
            self.hide(
                &model.path,
                format!(
                    "its name in the mount, {}, is taken by {what}",
                    path.display()
                ),
            );
            return;
        }
        let mtime = mtime_of(&model.path);
        let (ino, vpath) = self.add_dir(parent, parent_vpath, name, mtime);
        self.model_dirs.insert(ino);
        let idx = self.models.len();
        let real = fs::canonicalize(&model.path).unwrap_or_else(|_| model.path.clone());
        let roots = model.link_roots();
        let hub = model.repo_dir.is_some();
        if model.problem.is_none() {
            self.root_dev = fs::metadata(&real).map(|m| m.dev()).ok();
            self.mirror(ino, &vpath, &real, &real, &roots, hub, true);
        }
        self.add_meta(
            ino,
            &vpath,
            &[
                ("model.json", Virtual::ModelJson(idx)),
                ("health", Virtual::Health(idx)),
                ("hash", Virtual::Hash(idx)),
                ("sentinel.json", Virtual::Sentinel(idx)),
                ("runtime-cache.json", Virtual::RuntimeCache(idx)),
            ],
            mtime,
            runtime_cache::newest_change(&model.isolated_cache()),
        );
        self.models.push(ModelEntry {
            model,
            dir: ino,
            mount_path: vpath.to_string_lossy().into_owned(),
        });
    }

    /// Folder link counts: 2 + sub-folders.
    fn fix_nlink(&mut self) {
        let counts: Vec<(Ino, u32)> = self
            .nodes
            .iter()
            .filter_map(|(ino, n)| match &n.content {
                Content::Dir(ch) => Some((
                    *ino,
                    2u32.saturating_add(
                        ch.values()
                            .filter(|c| self.nodes.get(c).is_some_and(|n| n.attr.kind == Kind::Dir))
                            .count()
                            .try_into()
                            .unwrap_or(u32::MAX),
                    ),
                )),
                _ => None,
            })
            .collect();
        for (ino, n) in counts {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.attr.nlink = n;
            }
        }
    }
}

/// Where a hub repo appears: its folder path components. An org that a workspace (or the
/// mount's own `.mlxfs`) takes is renamed `<org>@hub`; a repo id that cannot be a path (an
/// empty, `.` or `..` part) appears under its `models--…` folder name.
fn hub_components(repo: &HubRepo, taken_at_root: &BTreeSet<OsString>) -> Vec<String> {
    let parts: Vec<&str> = repo.repo_id.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || !parts.iter().all(|p| usable_name(p)) {
        let folder = repo
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "models--".into());
        return vec![folder];
    }
    let mut parts: Vec<String> = parts.into_iter().map(str::to_string).collect();
    if parts.len() > 1
        && let Some(first) = parts.first_mut()
        && taken_at_root.contains(OsStr::new(first.as_str()))
    {
        first.push_str("@hub");
    }
    parts
}

fn add_hub_repo(
    b: &mut Builder,
    repo: &HubRepo,
    taken_at_root: &BTreeSet<OsString>,
    orgs: &BTreeSet<String>,
) {
    let mut parts = hub_components(repo, taken_at_root);
    let Some(leaf) = parts.pop() else { return };
    let mtime = mtime_of(&repo.dir);
    let (mut parent, mut vpath) = (ROOT_INO, PathBuf::new());
    for p in &parts {
        match b.add_group_dir(parent, &vpath, OsStr::new(p), mtime) {
            Some((ino, v)) => {
                parent = ino;
                vpath = v;
            }
            None => {
                let taken = vpath.join(p);
                b.hide(
                    &repo.dir,
                    format!(
                        "its folder in the mount, {}, is taken by a model",
                        taken.display()
                    ),
                );
                return;
            }
        }
    }
    // An org-less repo named like a workspace or like an org folder: `<name>@hub`.
    let leaf = if parts.is_empty()
        && (taken_at_root.contains(OsStr::new(leaf.as_str())) || orgs.contains(&leaf))
    {
        format!("{leaf}@hub")
    } else {
        leaf
    };
    // No snapshot, or refs/main names one that is not cached: the model's own name shows the
    // problem (its `.mlxfs/health` says why); cached snapshots stay reachable as `@rev7`.
    if repo.current.is_none() {
        b.add_model(parent, &vpath, OsStr::new(&leaf), ModelRef::hub(repo, None));
    }
    for (i, s) in repo.snapshots.iter().enumerate() {
        let model = ModelRef::hub(repo, Some(i));
        let name = if Some(i) == repo.current {
            leaf.clone()
        } else {
            format!("{leaf}@{}", short_rev(&s.commit))
        };
        b.add_model(parent, &vpath, OsStr::new(&name), model);
    }
}

/// Build the tree from the catalog. Models are scanned, not described: rendering the virtual
/// files (health, records, hashes) happens on demand.
/// `stamp` is the time shown for the synthetic folders (the root, `.mlxfs/`): constant for a
/// mount, so that a rescan that finds nothing new produces an identical tree.
pub fn build(loc: &Locations, inodes: &mut Inodes, generation: u64, stamp: SystemTime) -> Tree {
    let mut b = Builder {
        inodes,
        nodes: HashMap::new(),
        models: Vec::new(),
        model_dirs: HashSet::new(),
        hidden: Vec::new(),
        root_dev: None,
    };
    b.nodes.insert(
        ROOT_INO,
        Node {
            parent: ROOT_INO,
            name: OsString::new(),
            attr: dir_attr(stamp),
            content: Content::Dir(BTreeMap::new()),
        },
    );
    let root_vpath = PathBuf::new();
    b.add_meta(
        ROOT_INO,
        &root_vpath,
        &[
            ("models.json", Virtual::ModelsJson),
            ("health", Virtual::FleetHealth),
            ("status.json", Virtual::Status),
            (crate::mountprobe::CATALOG_JSON, Virtual::Catalog),
        ],
        stamp,
        None,
    );
    let workspaces = scan_all_workspaces(loc);
    let names: Vec<OsString> = distinct_names(&workspaces)
        .into_iter()
        .zip(&workspaces)
        .map(|(d, w)| match d {
            Some(d) => OsString::from(d),
            None => w
                .path
                .file_name()
                .map(OsStr::to_os_string)
                .unwrap_or_default(),
        })
        .collect();
    // Names at the root that hub orgs must not take: workspaces and the mount's own folder.
    let mut taken_at_root: BTreeSet<OsString> = names.iter().cloned().collect();
    taken_at_root.insert(META_DIR.into());
    for (w, name) in workspaces.into_iter().zip(names) {
        if name == META_DIR {
            b.hide(
                &w.path,
                format!("a workspace named {META_DIR}: the mount's virtual folder takes the name"),
            );
            continue;
        }
        b.add_model(ROOT_INO, &root_vpath, &name, w.into_model());
    }
    let repos = scan_hub(&loc.hub_cache);
    let orgs: BTreeSet<String> = repos
        .iter()
        .filter_map(|r| {
            let parts: Vec<&str> = r.repo_id.split('/').filter(|p| !p.is_empty()).collect();
            (parts.len() > 1).then(|| parts[0].to_string())
        })
        .collect();
    for repo in &repos {
        add_hub_repo(&mut b, repo, &taken_at_root, &orgs);
    }
    b.fix_nlink();
    Tree {
        nodes: b.nodes,
        models: b.models,
        hidden: b.hidden,
        generation,
        built_at: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_targets() {
        assert_eq!(
            relative_to(Path::new("w/m.st"), Path::new("")),
            Path::new("w/m.st")
        );
        assert_eq!(
            relative_to(Path::new("config.json"), Path::new("w")),
            Path::new("../config.json")
        );
        assert_eq!(
            relative_to(Path::new("a/b"), Path::new("a/c/d")),
            Path::new("../../b")
        );
        assert_eq!(relative_to(Path::new("a"), Path::new("a")), Path::new("."));
    }

    #[test]
    fn junk_names() {
        for n in [
            ".DS_Store",
            "._foo",
            ".Spotlight-V100",
            "Icon\r",
            "Thumbs.db",
        ] {
            assert!(is_os_junk(OsStr::new(n)), "{n}");
        }
        for n in ["config.json", ".hf_cache", "_x"] {
            assert!(!is_os_junk(OsStr::new(n)), "{n}");
        }
    }
}
