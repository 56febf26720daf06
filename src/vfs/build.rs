//! Building a [`Tree`] from the catalog: workspaces at the top, hub models as `org/repo`
//! (current revision) and `org/repo@rev7` (further snapshots), `<org>@hub` when a workspace
//! takes the org's name. Hub files become regular files backed by their blobs; links inside a
//! workspace stay relative links; what cannot be shown is left out and recorded in
//! [`Tree::hidden`] (or reported by the model's health) — never silently.
//!
//! Every name here comes from disk and is untrusted: nothing is cut by byte index, a name that
//! cannot be a path component (`.`, `..`, empty) is replaced by the folder's own name, and two
//! things that would take one name never merge: the second is hidden and recorded.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::tree::{
    Attr, Backing, Content, Hidden, Inodes, Kind, ModelEntry, Node, Nodes, ROOT_INO, Tree, Virtual,
};
use crate::catalog::{
    HubRepo, Locations, ModelRef, distinct_names, runtime_cache, scan_all_workspaces, scan_hub,
};
use crate::mountprobe::META_DIR;
pub use crate::osjunk::is_os_junk;
use crate::text::short_rev;

/// The permission bits of a folder the mount makes up (the root, an org folder, `.mlxfs/`):
/// those of a new folder, so that a copy of it is its copier's to change and remove. Writes
/// fail with EROFS whatever the bits say (the mount is read-only).
const SYNTHETIC_DIR_PERM: u16 = 0o755;

/// The permission bits of a file or folder on disk, as the mount shows them: the backing
/// ones (a copy out of the mount, `cp -a` or `rsync -a`, keeps what its source has; showing
/// 0555 folders made such a copy impossible to remove for anyone but root, issue 25 §5).
fn perm_of(md: &fs::Metadata) -> u16 {
    (md.mode() & 0o7777) as u16
}

fn dir_attr(mtime: SystemTime, perm: u16) -> Attr {
    Attr {
        kind: Kind::Dir,
        size: 4096,
        blocks: 8,
        mtime,
        perm,
        nlink: 2,
    }
}

fn file_attr(md: &fs::Metadata) -> Attr {
    Attr {
        kind: Kind::File,
        size: md.len(),
        blocks: md.blocks(),
        mtime: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        perm: perm_of(md),
        nlink: 1,
    }
}

fn mtime_of(p: &Path) -> SystemTime {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A folder's time and permission bits (the epoch and [`SYNTHETIC_DIR_PERM`] when it cannot
/// be read).
fn dir_stat(p: &Path) -> (SystemTime, u16) {
    match fs::metadata(p) {
        Ok(m) => (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), perm_of(&m)),
        Err(_) => (SystemTime::UNIX_EPOCH, SYNTHETIC_DIR_PERM),
    }
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
    nodes: Nodes,
    models: Vec<ModelEntry>,
    /// Folders that are models (no other model may be placed inside one).
    model_dirs: HashSet<Ino>,
    hidden: Vec<Hidden>,
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

    /// Add node `name` to folder `parent` and return its inode.
    fn add_node(&mut self, parent: Ino, name: &OsStr, attr: Attr, content: Content) -> Ino {
        let mut ino = self.inodes.get(parent, name);
        if let Content::Backed(b) = &content
            && self.inodes.pinned.get(&ino).is_some_and(|id| *id != b.id)
        {
            ino = self.inodes.replace(parent, name);
        }
        if self.nodes.contains_key(&ino) {
            // Two names whose keys collide: never one inode for both.
            ino = self.inodes.fresh();
        }
        let name: Arc<OsStr> = Arc::from(name);
        if let Some(Node {
            content: Content::Dir(children),
            ..
        }) = self.nodes.get_mut(&parent)
        {
            children.insert(name.clone(), ino);
        }
        self.nodes.insert(
            ino,
            Node {
                parent,
                name,
                attr,
                content,
            },
        );
        ino
    }

    /// [`Builder::add_node`] for a node whose mount path is wanted too.
    fn add(
        &mut self,
        parent: Ino,
        parent_vpath: &Path,
        name: &OsStr,
        attr: Attr,
        content: Content,
    ) -> (Ino, PathBuf) {
        (
            self.add_node(parent, name, attr, content),
            parent_vpath.join(name),
        )
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
            dir_attr(mtime, SYNTHETIC_DIR_PERM),
            Content::Dir(BTreeMap::new()),
        ))
    }

    fn add_dir(
        &mut self,
        parent: Ino,
        parent_vpath: &Path,
        name: &OsStr,
        mtime: SystemTime,
        perm: u16,
    ) -> (Ino, PathBuf) {
        self.add(
            parent,
            parent_vpath,
            name,
            dir_attr(mtime, perm),
            Content::Dir(BTreeMap::new()),
        )
    }

    fn add_meta(
        &mut self,
        parent: Ino,
        vpath: &Path,
        files: &[(&str, Virtual)],
        mtime: SystemTime,
        runtime_cache_mtime: Option<SystemTime>,
    ) {
        let (ino, meta_vpath) = self.add_dir(
            parent,
            vpath,
            OsStr::new(META_DIR),
            mtime,
            SYNTHETIC_DIR_PERM,
        );
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

    /// Add one model folder named `name` in `parent` with what [`scan_model`] found in it,
    /// unless the name is taken (then the model is hidden and recorded).
    fn add_model(
        &mut self,
        parent: Ino,
        parent_vpath: &Path,
        name: &OsStr,
        model: ModelRef,
        scan: ModelScan,
    ) {
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
        let mtime = scan.mtime;
        let (ino, vpath) = self.add_dir(parent, parent_vpath, name, mtime, scan.perm);
        self.model_dirs.insert(ino);
        let idx = self.models.len();
        // Items come parents first: each folder's inode is known before its entries.
        let mut inos: Vec<Ino> = Vec::with_capacity(scan.items.len());
        for item in scan.items {
            let dir = match item.parent {
                MODEL_ROOT => ino,
                i => inos.get(i as usize).copied().unwrap_or(ino),
            };
            inos.push(self.add_node(dir, &item.name, item.attr, item.content));
        }
        self.hidden.extend(scan.hidden);
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
            scan.runtime_cache_mtime,
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
                    ino,
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

/// [`Item::parent`] of the entries of the model folder itself.
const MODEL_ROOT: u32 = u32::MAX;

/// One entry below a model folder, as [`scan_model`] found it.
#[derive(Hash)]
struct Item {
    /// Index in [`ModelScan::items`] of its folder, or [`MODEL_ROOT`].
    parent: u32,
    name: OsString,
    attr: Attr,
    content: Content,
}

/// What the tree shows of one model folder, read from disk with no tree at hand, so that
/// models are scanned in parallel (a cold page cache waits on the disk one `stat` at a time
/// per thread) and put in the tree one after the other.
#[derive(Hash)]
struct ModelScan {
    mtime: SystemTime,
    /// The model folder's permission bits.
    perm: u16,
    /// Parents before their entries, each folder's entries sorted by name.
    items: Vec<Item>,
    hidden: Vec<Hidden>,
    /// The newest change in the model's isolated runtime cache (see [`Builder::add_meta`]).
    runtime_cache_mtime: Option<SystemTime>,
}

/// Read model `model`'s folder: its entries (unless the model has a problem), its time, and
/// its runtime cache's newest change.
fn scan_model(model: &ModelRef) -> ModelScan {
    let (mtime, perm) = dir_stat(&model.path);
    let mut scan = ModelScan {
        mtime,
        perm,
        items: Vec::new(),
        hidden: Vec::new(),
        runtime_cache_mtime: runtime_cache::newest_change(&model.isolated_cache()),
    };
    if model.problem.is_none() {
        let roots = model.link_roots();
        let real = match roots.real_path_of(&model.path) {
            Some(r) => r.to_path_buf(),
            None => crate::sys::real_path(&model.path).unwrap_or_else(|_| model.path.clone()),
        };
        let mut walk = Walk {
            root: &real,
            roots: &roots,
            hub: model.repo_dir.is_some(),
            root_dev: fs::metadata(&real).map(|m| m.dev()).ok(),
            scan: &mut scan,
            last_dir: None,
            links: Default::default(),
            blobs: crate::catalog::inventory::Blobs::of(&roots),
        };
        walk.dir(MODEL_ROOT, &real, true);
    }
    scan.items.shrink_to_fit();
    scan
}

/// The walk of one model folder.
struct Walk<'a> {
    /// The model's real (canonical) folder.
    root: &'a Path,
    /// Where links may lead: the model's own real folders ([`ModelRef::link_roots`]).
    roots: &'a crate::catalog::LinkRoots,
    /// A hub model: links to files become regular files backed by their targets.
    hub: bool,
    /// The model folder's file system: folders on another are not entered.
    root_dev: Option<u64>,
    scan: &'a mut ModelScan,
    /// The folder of the last backed file (shared with the next one in the same folder).
    last_dir: Option<Arc<Path>>,
    links: crate::catalog::inventory::Links,
    /// A hub model's `blobs/` by inode (snapshot links without `readlink`).
    blobs: Option<crate::catalog::inventory::Blobs>,
}

impl Walk<'_> {
    fn hide(&mut self, path: &Path, why: impl Into<String>) {
        self.scan.hidden.push(Hidden {
            path: path.to_string_lossy().into_owned(),
            why: why.into(),
        });
    }

    fn push(&mut self, parent: u32, name: OsString, attr: Attr, content: Content) -> u32 {
        self.scan.items.push(Item {
            parent,
            name,
            attr,
            content,
        });
        u32::try_from(self.scan.items.len() - 1).unwrap_or(MODEL_ROOT)
    }

    /// Mirror folder `real` as the entries of item `parent`. `top` is true for the model's own
    /// folder, where the virtual `.mlxfs/` takes its name. A folder is pushed before the walk
    /// enters it, so items stay parents-first.
    fn dir(&mut self, parent: u32, real: &Path, top: bool) {
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
                // Dangling links, loops and links that leave the model are hidden, and said
                // so in the mount's hidden list (the model's health names them too).
                let blob = self.blobs.as_mut().and_then(|b| b.follow(&path));
                let (Some(target), Some(md)) = blob.map_or_else(
                    || self.links.follow(real, &path),
                    |(t, m)| (Some(t), Some(m)),
                ) else {
                    self.hide(&path, "a link that leads nowhere (dangling, or a loop)");
                    continue;
                };
                if !self.roots.contains(&target) {
                    self.hide(&path, "a link that leads out of the model");
                    continue;
                }
                if self.hub {
                    if md.is_file() {
                        let backing =
                            Backing::new(&target, (md.dev(), md.ino()), &mut self.last_dir);
                        self.push(parent, name, file_attr(&md), Content::Backed(backing));
                    } else {
                        self.hide(&path, "a hub snapshot link that is not to a file");
                    }
                    continue;
                }
                let (Ok(t_rel), Ok(from_rel)) =
                    (target.strip_prefix(self.root), real.strip_prefix(self.root))
                else {
                    self.hide(&path, "a link that leads out of the model's folder");
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
                self.push(parent, name, attr, Content::Link(rel));
            } else if ft.is_dir() {
                let md = e.metadata().ok();
                // Another file system mounted inside a model (or the mount itself, reached
                // through a relocated folder) is not part of it: hidden and recorded.
                if self.root_dev.is_some() && md.as_ref().map(|m| m.dev()) != self.root_dev {
                    self.hide(&path, "another file system is mounted there");
                    continue;
                }
                let mtime = md
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let perm = md.as_ref().map_or(SYNTHETIC_DIR_PERM, perm_of);
                let attr = dir_attr(mtime, perm);
                let i = self.push(parent, name, attr, Content::Dir(BTreeMap::new()));
                self.dir(i, &path, false);
            } else if ft.is_file() {
                let Ok(md) = e.metadata() else { continue };
                let backing = Backing::new(&path, (md.dev(), md.ino()), &mut self.last_dir);
                self.push(parent, name, file_attr(&md), Content::Backed(backing));
            } else {
                self.hide(
                    &path,
                    "not a regular file, folder or link (a pipe, socket or device)",
                );
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
            .unwrap_or_else(|| crate::catalog::RepoKind::Model.prefix().into());
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

/// The models of hub repo `repo` in the order [`add_hub_repo`] places them: the repo itself
/// when it has no current revision, then each cached snapshot.
fn hub_models(repo: &HubRepo) -> Vec<ModelRef> {
    let bare = repo.current.is_none().then(|| ModelRef::hub(repo, None));
    bare.into_iter()
        .chain((0..repo.snapshots.len()).map(|i| ModelRef::hub(repo, Some(i))))
        .collect()
}

/// Place hub repo `repo` with its models and their scans (from [`hub_models`], in order);
/// `mtime` is the repo folder's time, which its org folder shows.
fn add_hub_repo(
    b: &mut Builder,
    repo: &HubRepo,
    taken_at_root: &BTreeSet<OsString>,
    orgs: &BTreeSet<String>,
    mtime: SystemTime,
    models: Vec<(ModelRef, ModelScan)>,
) {
    let mut parts = hub_components(repo, taken_at_root);
    let Some(leaf) = parts.pop() else { return };
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
    for (model, scan) in models {
        let name = match &model.revision {
            Some(commit) if !model.is_current => format!("{leaf}@{}", short_rev(commit)),
            _ => leaf.clone(),
        };
        b.add_model(parent, &vpath, OsStr::new(&name), model, scan);
    }
}

/// What [`build`] places, in order.
#[derive(Hash)]
enum Placement {
    /// Something left out before it is scanned.
    Hide(PathBuf, String),
    Workspace(OsString, ModelRef),
    /// Index into [`Plan::repos`].
    Repo(usize),
}

/// The catalog's models in the order the tree places them, with the names at the root that
/// hub orgs must not take.
#[derive(Hash)]
struct Plan {
    placements: Vec<Placement>,
    repos: Vec<HubRepo>,
    /// Workspaces' names and the mount's own folder.
    taken_at_root: BTreeSet<OsString>,
    orgs: BTreeSet<String>,
}

impl Plan {
    fn new(loc: &Locations) -> Plan {
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
        let mut taken_at_root: BTreeSet<OsString> = names.iter().cloned().collect();
        taken_at_root.insert(META_DIR.into());
        let mut placements: Vec<Placement> = Vec::new();
        for (w, name) in workspaces.into_iter().zip(names) {
            if name == META_DIR {
                placements.push(Placement::Hide(
                    w.path.clone(),
                    format!(
                        "a workspace named {META_DIR}: the mount's virtual folder takes the name"
                    ),
                ));
                continue;
            }
            placements.push(Placement::Workspace(name, w.into_model()));
        }
        let repos = scan_hub(&loc.hub_cache);
        let orgs: BTreeSet<String> = repos
            .iter()
            .filter_map(|r| {
                let parts: Vec<&str> = r.repo_id.split('/').filter(|p| !p.is_empty()).collect();
                (parts.len() > 1).then(|| parts[0].to_string())
            })
            .collect();
        placements.extend((0..repos.len()).map(Placement::Repo));
        Plan {
            placements,
            repos,
            taken_at_root,
            orgs,
        }
    }

    /// Scan every placed model, [`SCAN_ROUND`] placements at a time on [`SCAN_THREADS`]
    /// threads, and hand each placement with its models and scans to `place`, in order.
    /// Everything the tree takes from disk is read here (so that the fingerprint covers it):
    /// a repo's own folder time too (its org folder shows it).
    /// With `deep` false nothing is read: every model is placed with an empty scan (the
    /// names of a [`build_shallow`] tree).
    fn scan(&self, deep: bool, mut place: impl FnMut(&Placement, Scanned)) {
        let scan = |m: &ModelRef| {
            if deep {
                scan_model(m)
            } else {
                ModelScan {
                    mtime: SystemTime::UNIX_EPOCH,
                    perm: SYNTHETIC_DIR_PERM,
                    items: Vec::new(),
                    hidden: Vec::new(),
                    runtime_cache_mtime: None,
                }
            }
        };
        for round in self.placements.chunks(SCAN_ROUND) {
            let one = |p: &Placement| match p {
                Placement::Hide(..) => Scanned::default(),
                Placement::Workspace(_, m) => Scanned {
                    repo_mtime: None,
                    models: vec![(m.clone(), scan(m))],
                },
                Placement::Repo(i) => {
                    self.repos
                        .get(*i)
                        .map_or_else(Scanned::default, |repo| Scanned {
                            repo_mtime: deep.then(|| mtime_of(&repo.dir)),
                            models: hub_models(repo)
                                .into_iter()
                                .map(|m| {
                                    let scan = scan(&m);
                                    (m, scan)
                                })
                                .collect(),
                        })
                }
            };
            let scans = if deep {
                crate::par::par_map_on(SCAN_THREADS, round, one)
            } else {
                round.iter().map(one).collect()
            };
            for (p, models) in round.iter().zip(scans) {
                place(p, models);
            }
        }
    }
}

/// What [`Plan::scan`] read for one placement.
#[derive(Default, Hash)]
struct Scanned {
    /// A hub repo's folder time.
    repo_mtime: Option<SystemTime>,
    models: Vec<(ModelRef, ModelScan)>,
}

/// Models placed per round of parallel scans: enough to keep the disk busy, few enough that
/// the scans waiting to be placed stay small next to the tree (issue 15 §4).
const SCAN_ROUND: usize = 128;

/// Threads that scan model folders (the scans mostly wait on the disk).
const SCAN_THREADS: usize = 32;

/// A 128-bit fingerprint of everything a tree is built from (two keyed SipHash-1-3 of the
/// same data, keys from [`Inodes`], so they are the same for every build of one mount).
struct Fingerprint(std::hash::DefaultHasher, std::hash::DefaultHasher);

impl Fingerprint {
    /// Started with what every build of `plan` shares: the synthetic folders' time and the
    /// plan (the scans are added as they come).
    fn of_plan(inodes: &Inodes, stamp: SystemTime, plan: &Plan) -> Fingerprint {
        use std::hash::BuildHasher;
        let [a, b] = inodes.fingerprint_keys();
        let mut fp = Fingerprint(a.build_hasher(), b.build_hasher());
        fp.add(&stamp);
        fp.add(plan);
        fp
    }

    fn add(&mut self, t: &impl std::hash::Hash) {
        t.hash(&mut self.0);
        t.hash(&mut self.1);
    }

    fn finish(&self) -> u128 {
        use std::hash::Hasher;
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

/// The fingerprint [`build`] would give [`Tree::fingerprint`] now, computed from the same
/// scans without building anything: equal fingerprints, equal trees. A rescan that finds
/// nothing new then costs one round of scans in memory, not a second tree (issue 15 §4).
pub fn fingerprint(loc: &Locations, inodes: &Inodes, stamp: SystemTime) -> u128 {
    let plan = Plan::new(loc);
    let mut fp = Fingerprint::of_plan(inodes, stamp, &plan);
    plan.scan(true, |_, scanned| fp.add(&scanned));
    fp.finish()
}

/// Build the tree from the catalog. Models are scanned, not described: rendering the virtual
/// files (health, records, hashes) happens on demand.
/// `stamp` is the time shown for the synthetic folders (the root, `.mlxfs/`): constant for a
/// mount, so that a rescan that finds nothing new produces an identical tree.
pub fn build(loc: &Locations, inodes: &mut Inodes, generation: u64, stamp: SystemTime) -> Tree {
    build_with(loc, inodes, generation, stamp, true)
}

/// The tree's names down to the model folders, without reading a model folder: what the
/// mount answers for its root while the first full [`build`] runs (issue 15 §4: mount to
/// first `ls`). Model folders are empty and their times are the epoch; the tree is marked
/// [`Tree::partial`], and the adapter answers from it only the root's own attributes and
/// entries, with no caching. The inode numbers are those the full build gives (same
/// [`Inodes`]).
pub fn build_shallow(
    loc: &Locations,
    inodes: &mut Inodes,
    generation: u64,
    stamp: SystemTime,
) -> Tree {
    build_with(loc, inodes, generation, stamp, false)
}

fn build_with(
    loc: &Locations,
    inodes: &mut Inodes,
    generation: u64,
    stamp: SystemTime,
    deep: bool,
) -> Tree {
    let plan = Plan::new(loc);
    let mut fp = Fingerprint::of_plan(inodes, stamp, &plan);
    let mut b = Builder {
        inodes,
        nodes: Nodes::default(),
        models: Vec::new(),
        model_dirs: HashSet::new(),
        hidden: Vec::new(),
    };
    b.nodes.insert(
        ROOT_INO,
        Node {
            parent: ROOT_INO,
            name: Arc::from(OsStr::new("")),
            attr: dir_attr(stamp, SYNTHETIC_DIR_PERM),
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
    plan.scan(deep, |p, scanned| {
        fp.add(&scanned);
        let Scanned { repo_mtime, models } = scanned;
        match p {
            Placement::Hide(path, why) => b.hide(path, why.clone()),
            Placement::Workspace(name, _) => {
                for (m, scan) in models {
                    b.add_model(ROOT_INO, &root_vpath, name, m, scan);
                }
            }
            Placement::Repo(i) => {
                if let Some(repo) = plan.repos.get(*i) {
                    let mtime = repo_mtime.unwrap_or(SystemTime::UNIX_EPOCH);
                    add_hub_repo(&mut b, repo, &plan.taken_at_root, &plan.orgs, mtime, models);
                }
            }
        }
    });
    b.fix_nlink();
    b.nodes.shrink_to_fit();
    Tree {
        nodes: b.nodes,
        models: b.models,
        hidden: b.hidden,
        generation,
        built_at: SystemTime::now(),
        fingerprint: fp.finish(),
        partial: !deep,
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
