//! The virtual tree the mount shows: workspaces and hub models merged into one folder
//! hierarchy with stable inode numbers, plus virtual metadata files rendered from the catalog.
//!
//! No fuser types here: the FUSE adapter (`crate::fuse`) asks this module for attributes,
//! directory entries, link targets and file contents, and for the invalidations a refresh
//! implies. Everything can be tested without mounting.

pub mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::catalog::{HubRepo, Locations, ModelRef, scan_hub, scan_workspaces};
use crate::hash::resolve_link;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;
/// The folder of virtual files at the root and in every model.
pub const META_DIR: &str = ".mlxfs";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows for a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    pub size: u64,
    pub blocks: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
}

/// A virtual file: which content to render.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Virtual {
    /// Root: the `list --json` envelope.
    ModelsJson,
    /// Root: one line per model.
    FleetHealth,
    /// Root: daemon facts.
    Status,
    /// Per model (index into `Tree::models`).
    ModelJson(usize),
    Health(usize),
    Hash(usize),
    Sentinel(usize),
}

#[derive(Clone, Debug)]
pub enum Content {
    Dir(BTreeMap<OsString, Ino>),
    /// A regular file read from this real path (a workspace file or a hub blob).
    Backed(PathBuf),
    /// A symlink with a relative target that stays inside its model.
    Link(OsString),
    Virtual(Virtual),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub parent: Ino,
    pub name: OsString,
    pub attr: Attr,
    pub content: Content,
}

/// A model shown in the tree.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub model: ModelRef,
    /// The model's folder in the tree.
    pub dir: Ino,
    /// Its path in the mount (`org/repo`, `org/repo@abc1234`, `my-ws`).
    pub mount_path: String,
}

/// One immutable snapshot of the tree. Refreshes build a new one.
#[derive(Debug)]
pub struct Tree {
    pub nodes: HashMap<Ino, Node>,
    pub models: Vec<ModelEntry>,
    pub generation: u64,
    pub built_at: SystemTime,
}

/// Why a request fails; the adapter maps it to an errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VfsError {
    NotFound,
    NotDir,
    IsDir,
    NotLink,
    Io(i32),
}

/// Path → inode number, never recycled, so unchanged paths keep their inode across refreshes.
#[derive(Debug)]
pub struct Inodes {
    by_path: HashMap<PathBuf, Ino>,
    next: Ino,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut by_path = HashMap::new();
        by_path.insert(PathBuf::new(), ROOT_INO);
        Inodes {
            by_path,
            next: ROOT_INO + 1,
        }
    }
}

impl Inodes {
    fn get(&mut self, vpath: &Path) -> Ino {
        if let Some(&i) = self.by_path.get(vpath) {
            return i;
        }
        let i = self.next;
        self.next += 1;
        self.by_path.insert(vpath.to_path_buf(), i);
        i
    }
}

/// Names macOS and Windows file managers probe or leave behind: never shown, answered with a
/// fast ENOENT and never forwarded to the file system.
pub fn is_os_junk(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b.starts_with(b"._")
        || matches!(
            b,
            b".DS_Store"
                | b".Spotlight-V100"
                | b".Trashes"
                | b".fseventsd"
                | b".TemporaryItems"
                | b".VolumeIcon.icns"
                | b".metadata_never_index"
                | b".metadata_never_index_unless_rootfs"
                | b".hidden"
                | b".localized"
                | b".apdisk"
                | b"Icon\r"
                | b"Thumbs.db"
                | b"desktop.ini"
                | b"autorun.inf"
                | b"$RECYCLE.BIN"
        )
}

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

/// `target` relative to the folder `from` (both relative to the same root, no `..` inside).
fn relative_to(target: &Path, from: &Path) -> PathBuf {
    let t: Vec<Component> = target.components().collect();
    let f: Vec<Component> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

struct Builder<'a> {
    inodes: &'a mut Inodes,
    nodes: HashMap<Ino, Node>,
    models: Vec<ModelEntry>,
}

impl Builder<'_> {
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

    fn add_dir(
        &mut self,
        parent: Ino,
        parent_vpath: &Path,
        name: &OsStr,
        mtime: SystemTime,
    ) -> (Ino, PathBuf) {
        if let Some(Node {
            content: Content::Dir(children),
            ..
        }) = self.nodes.get(&parent)
            && let Some(&existing) = children.get(name)
        {
            return (existing, parent_vpath.join(name));
        }
        self.add(
            parent,
            parent_vpath,
            name,
            dir_attr(mtime),
            Content::Dir(BTreeMap::new()),
        )
    }

    /// Mirror a model folder. `boundary` is where links may lead (the workspace itself, or the
    /// `models--…` folder whose `blobs/` hub snapshot links point into); `hub` turns links to
    /// files into regular files backed by their target.
    fn mirror(
        &mut self,
        dir_ino: Ino,
        vpath: &Path,
        real: &Path,
        root: &Path,
        boundary: &Path,
        hub: bool,
    ) {
        let Ok(rd) = fs::read_dir(real) else { return };
        let mut entries: Vec<fs::DirEntry> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            if name == META_DIR
                || is_os_junk(&name)
                || name.as_encoded_bytes().ends_with(b".incomplete")
            {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_symlink() {
                let Some(target) = fs::read_link(&path)
                    .ok()
                    .and_then(|t| resolve_link(real, &t))
                else {
                    continue;
                };
                let Ok(md) = fs::metadata(&target) else {
                    continue;
                }; // dangling: hidden
                if !target.starts_with(boundary) {
                    continue; // leads out of the model: hidden (health reports it)
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
                let mtime = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let (ino, sub_vpath) = self.add_dir(dir_ino, vpath, &name, mtime);
                self.mirror(ino, &sub_vpath, &path, root, boundary, hub);
            } else if ft.is_file() {
                let Ok(md) = e.metadata() else { continue };
                self.add(dir_ino, vpath, &name, file_attr(&md), Content::Backed(path));
            }
        }
    }

    fn add_meta(
        &mut self,
        parent: Ino,
        vpath: &Path,
        files: &[(&str, Virtual)],
        mtime: SystemTime,
    ) {
        let (ino, meta_vpath) = self.add_dir(parent, vpath, OsStr::new(META_DIR), mtime);
        for (name, v) in files {
            let attr = Attr {
                kind: Kind::File,
                size: 0, // rendered on demand: the adapter asks the renderer
                blocks: 0,
                mtime,
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

    fn add_model(&mut self, parent: Ino, parent_vpath: &Path, name: &OsStr, model: ModelRef) {
        let mtime = fs::metadata(&model.path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (ino, vpath) = self.add_dir(parent, parent_vpath, name, mtime);
        let idx = self.models.len();
        let real = fs::canonicalize(&model.path).unwrap_or_else(|_| model.path.clone());
        let boundary = model
            .repo_dir
            .as_ref()
            .map(|r| fs::canonicalize(r).unwrap_or_else(|_| r.clone()))
            .unwrap_or_else(|| real.clone());
        let hub = model.repo_dir.is_some();
        if model.problem.is_none() {
            self.mirror(ino, &vpath, &real, &real, &boundary, hub);
        }
        self.add_meta(
            ino,
            &vpath,
            &[
                ("model.json", Virtual::ModelJson(idx)),
                ("health", Virtual::Health(idx)),
                ("hash", Virtual::Hash(idx)),
                ("sentinel.json", Virtual::Sentinel(idx)),
            ],
            mtime,
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
                    2 + ch
                        .values()
                        .filter(|c| self.nodes.get(c).is_some_and(|n| n.attr.kind == Kind::Dir))
                        .count() as u32,
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

/// Where a hub repo appears: its folder path components (org collisions renamed `<org>@hub`).
fn hub_components(repo_id: &str, workspace_names: &BTreeSet<OsString>) -> Vec<String> {
    let mut parts: Vec<String> = repo_id
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(first) = parts.first_mut()
        && workspace_names.contains(OsStr::new(first.as_str()))
    {
        first.push_str("@hub");
    }
    parts
}

/// Build the tree from the catalog. Models are scanned, not described: rendering the virtual
/// files (health, records, hashes) happens on demand.
/// `stamp` is the time shown for the synthetic folders (the root, `.mlxfs/`): constant for a
/// mount, so that a rescan that finds nothing new produces an identical tree.
pub fn build(loc: &Locations, inodes: &mut Inodes, generation: u64, stamp: SystemTime) -> Tree {
    let now = stamp;
    let mut b = Builder {
        inodes,
        nodes: HashMap::new(),
        models: Vec::new(),
    };
    b.nodes.insert(
        ROOT_INO,
        Node {
            parent: ROOT_INO,
            name: OsString::new(),
            attr: dir_attr(now),
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
        ],
        now,
    );
    let workspaces = loc
        .workspace_home
        .as_deref()
        .map(scan_workspaces)
        .unwrap_or_default();
    let ws_names: BTreeSet<OsString> = workspaces
        .iter()
        .filter_map(|w| w.path.file_name().map(OsStr::to_os_string))
        .collect();
    for w in workspaces {
        let name = w
            .path
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        b.add_model(ROOT_INO, &root_vpath, &name, w.into_model());
    }
    for repo in scan_hub(&loc.hub_cache) {
        add_hub_repo(&mut b, &repo, &ws_names);
    }
    b.fix_nlink();
    Tree {
        nodes: b.nodes,
        models: b.models,
        generation,
        built_at: SystemTime::now(),
    }
}

fn add_hub_repo(b: &mut Builder, repo: &HubRepo, ws_names: &BTreeSet<OsString>) {
    let mut parts = hub_components(&repo.repo_id, ws_names);
    let Some(leaf) = parts.pop() else { return };
    let mtime = fs::metadata(&repo.dir)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let (mut parent, mut vpath) = (ROOT_INO, PathBuf::new());
    for p in &parts {
        let (ino, v) = b.add_dir(parent, &vpath, OsStr::new(p), mtime);
        parent = ino;
        vpath = v;
    }
    let org_less_collides = parts.is_empty() && ws_names.contains(OsStr::new(leaf.as_str()));
    let leaf = if org_less_collides {
        format!("{leaf}@hub")
    } else {
        leaf
    };
    if repo.snapshots.is_empty() {
        b.add_model(parent, &vpath, OsStr::new(&leaf), ModelRef::hub(repo, None));
        return;
    }
    for (i, s) in repo.snapshots.iter().enumerate() {
        let model = ModelRef::hub(repo, Some(i));
        let name = if Some(i) == repo.current {
            leaf.clone()
        } else {
            format!("{leaf}@{}", &s.commit[..s.commit.len().min(7)])
        };
        b.add_model(parent, &vpath, OsStr::new(&name), model);
    }
}

impl Tree {
    pub fn node(&self, ino: Ino) -> Result<&Node, VfsError> {
        self.nodes.get(&ino).ok_or(VfsError::NotFound)
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, VfsError> {
        match &self.node(parent)?.content {
            Content::Dir(children) => children.get(name).copied().ok_or(VfsError::NotFound),
            _ => Err(VfsError::NotDir),
        }
    }

    /// Entries of a folder with `.` and `..` first.
    pub fn entries(&self, ino: Ino) -> Result<Vec<(Ino, Kind, OsString)>, VfsError> {
        let node = self.node(ino)?;
        let Content::Dir(children) = &node.content else {
            return Err(VfsError::NotDir);
        };
        let mut out = Vec::with_capacity(children.len() + 2);
        out.push((ino, Kind::Dir, OsString::from(".")));
        out.push((node.parent, Kind::Dir, OsString::from("..")));
        for (name, &c) in children {
            if let Some(n) = self.nodes.get(&c) {
                out.push((c, n.attr.kind, name.clone()));
            }
        }
        Ok(out)
    }

    /// The inode at a mount-relative path (`org/repo/config.json`).
    pub fn resolve_path(&self, path: &Path) -> Result<Ino, VfsError> {
        let mut ino = ROOT_INO;
        for c in path.components() {
            if let Component::Normal(n) = c {
                ino = self.lookup(ino, n)?;
            }
        }
        Ok(ino)
    }
}

/// A change the kernel must forget about after a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The name `name` in folder `parent` changed (added, removed or now another inode).
    Entry { parent: Ino, name: OsString },
    /// Attributes or content of this inode changed.
    Inode(Ino),
}

/// What changed between two trees. Virtual files are invalidated whenever anything changed.
pub fn diff(old: &Tree, new: &Tree) -> Vec<Invalidation> {
    let mut out = Vec::new();
    for (ino, n) in &new.nodes {
        let Some(o) = old.nodes.get(ino) else {
            continue;
        };
        match (&o.content, &n.content) {
            (Content::Dir(oc), Content::Dir(nc)) => {
                let mut changed = false;
                for (name, i) in oc {
                    if nc.get(name) != Some(i) {
                        out.push(Invalidation::Entry {
                            parent: *ino,
                            name: name.clone(),
                        });
                        changed = true;
                    }
                }
                for name in nc.keys() {
                    if !oc.contains_key(name) {
                        out.push(Invalidation::Entry {
                            parent: *ino,
                            name: name.clone(),
                        });
                        changed = true;
                    }
                }
                if changed || o.attr != n.attr {
                    out.push(Invalidation::Inode(*ino));
                }
            }
            (Content::Backed(op), Content::Backed(np)) if op == np && o.attr == n.attr => {}
            (Content::Link(ot), Content::Link(nt)) if ot == nt && o.attr == n.attr => {}
            (Content::Virtual(_), Content::Virtual(_)) => {}
            _ => out.push(Invalidation::Inode(*ino)),
        }
    }
    if !out.is_empty() {
        for (ino, n) in &new.nodes {
            if matches!(n.content, Content::Virtual(_)) {
                out.push(Invalidation::Inode(*ino));
            }
        }
    }
    out
}

/// Facts for `status.json`.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub mountpoint: PathBuf,
    pub read_mode: String,
    pub mounted_at: SystemTime,
}

/// The tree plus its renderer: what the FUSE adapter talks to.
pub struct Vfs {
    pub loc: Locations,
    tree: RwLock<Arc<Tree>>,
    inodes: Mutex<Inodes>,
    pub renderer: render::Renderer,
    pub info: RwLock<DaemonInfo>,
}

impl Vfs {
    pub fn new(loc: Locations, info: DaemonInfo) -> Vfs {
        let mut inodes = Inodes::default();
        let tree = build(&loc, &mut inodes, 1, info.mounted_at);
        render::trim_heap();
        Vfs {
            loc,
            tree: RwLock::new(Arc::new(tree)),
            inodes: Mutex::new(inodes),
            renderer: render::Renderer::default(),
            info: RwLock::new(info),
        }
    }

    /// The current tree (cheap: an `Arc` clone under a short read lock).
    pub fn tree(&self) -> Arc<Tree> {
        self.tree.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Rescan, swap in the new tree, and return what the kernel must invalidate.
    pub fn refresh(&self) -> Vec<Invalidation> {
        let old = self.tree();
        let new = {
            let mut inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            let stamp = self
                .info
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .mounted_at;
            Arc::new(build(&self.loc, &mut inodes, old.generation + 1, stamp))
        };
        let changes = diff(&old, &new);
        if !changes.is_empty() {
            *self.tree.write().unwrap_or_else(|e| e.into_inner()) = new;
        } else {
            drop(new);
        }
        drop(old);
        render::trim_heap();
        changes
    }

    /// Attributes of a node; a virtual file's size is that of its rendered content.
    pub fn attr(&self, tree: &Tree, ino: Ino) -> Result<Attr, VfsError> {
        let n = tree.node(ino)?;
        let mut a = n.attr.clone();
        if let Content::Virtual(v) = &n.content {
            let data = self.renderer.render(self, tree, v);
            a.size = data.len() as u64;
            a.blocks = a.size.div_ceil(512);
        }
        Ok(a)
    }

    pub fn readlink(&self, ino: Ino) -> Result<OsString, VfsError> {
        match &self.tree().node(ino)?.content {
            Content::Link(t) => Ok(t.clone()),
            _ => Err(VfsError::NotLink),
        }
    }
}

/// What an `open` gives access to.
#[derive(Debug, Clone)]
pub enum Opened {
    Backed(PathBuf),
    Virtual(Arc<Vec<u8>>),
}

impl Vfs {
    pub fn open(&self, ino: Ino) -> Result<Opened, VfsError> {
        let tree = self.tree();
        match &tree.node(ino)?.content {
            Content::Backed(p) => Ok(Opened::Backed(p.clone())),
            Content::Virtual(v) => Ok(Opened::Virtual(self.renderer.render(self, &tree, v))),
            Content::Dir(_) => Err(VfsError::IsDir),
            Content::Link(_) => Err(VfsError::NotFound),
        }
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
