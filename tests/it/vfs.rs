//! The virtual tree without mounting: its rules (names, what is shown and hidden, virtual
//! files, open files), refreshes, and `diff` checked against a reference model of what the
//! kernel must be told.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use proptest::prelude::*;

use crate::support::*;
use mlxfs::vfs::{
    Content, Ino, Inodes, Invalidation, Kind, ROOT_INO, Tree, Vfs, VfsError, Virtual, build, diff,
    fingerprint,
};

/// A fixture with the hub model `org/m` and its first tree (build 1): fixture, locations,
/// the stamp, the inodes and the tree.
fn org_m_tree() -> (Fx, mlxfs::catalog::Locations, SystemTime, Inodes, Tree) {
    let fx = Fx::new();
    fx.hub_model("org/m", &good_files());
    let loc = fx.locations();
    let stamp = SystemTime::now();
    let mut inodes = Inodes::default();
    let a = build(&loc, &mut inodes, 1, stamp);
    (fx, loc, stamp, inodes, a)
}

fn vfs_of(fx: &Fx) -> Vfs {
    vfs_for(&fx.locations(), &fx.tmp.path().join("mnt"))
}

fn names(t: &Tree, dir: &str) -> Vec<String> {
    let ino = t.resolve_path(Path::new(dir)).unwrap();
    t.entries(ino)
        .unwrap()
        .into_iter()
        .skip(2)
        .map(|(_, _, n)| n.to_string_lossy().into_owned())
        .collect()
}

/// Read a whole file of the tree through open/read/release, as the kernel would.
fn cat(v: &Vfs, path: &str) -> Vec<u8> {
    let ino = v.tree().resolve_path(Path::new(path)).unwrap();
    let (fh, _) = v.open(ino, false).unwrap();
    let mut out = Vec::new();
    loop {
        let n = v.read(fh, out.len() as u64, 7, |r| {
            let b = r.unwrap();
            out.extend_from_slice(b);
            b.len()
        });
        if n == 0 {
            break;
        }
    }
    v.release(fh).unwrap();
    out
}

#[test]
fn a_rescan_that_finds_nothing_new_changes_nothing() {
    let fx = Fx::new();
    fx.hub_model("org/m", &good_files());
    fx.workspace("ws", &good_files());
    let loc = fx.locations();
    let stamp = SystemTime::now();
    let mut inodes = Inodes::default();
    let a = build(&loc, &mut inodes, 1, stamp);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = build(&loc, &mut inodes, 2, stamp);
    assert_eq!(diff(&a, &b), vec![]);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(fingerprint(&loc, &inodes, stamp), a.fingerprint);
    // Same paths, same inodes.
    assert_eq!(
        a.resolve_path("org/m/config.json".as_ref()),
        b.resolve_path("org/m/config.json".as_ref())
    );
}

/// Everything a tree shows from disk is in its fingerprint: a change of a hub repo folder's
/// own time alone (its org folder shows it) is a new fingerprint, so a refresh rebuilds.
#[test]
fn the_fingerprint_covers_a_repo_folders_own_time() {
    let (fx, loc, stamp, mut inodes, a) = org_m_tree();
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::open(fx.hub().join("models--org--m"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    assert_ne!(fingerprint(&loc, &inodes, stamp), a.fingerprint);
    let b = build(&loc, &mut inodes, 2, stamp);
    let org = b.resolve_path("org".as_ref()).unwrap();
    assert_eq!(b.node(org).unwrap().attr.mtime, t);
    assert!(diff(&a, &b).contains(&Invalidation::Inode(org)));
}

#[test]
fn changes_become_invalidations_and_inodes_stay_stable() {
    let (fx, loc, stamp, mut inodes, a) = org_m_tree();
    let cfg = a.resolve_path("org/m/config.json".as_ref()).unwrap();
    fx.workspace("fresh", &good_files());
    let b = build(&loc, &mut inodes, 2, stamp);
    let changes = diff(&a, &b);
    assert!(changes.contains(&Invalidation::Entry {
        parent: ROOT_INO,
        name: "fresh".into()
    }));
    assert!(changes.contains(&Invalidation::Inode(ROOT_INO)));
    assert_eq!(b.resolve_path("org/m/config.json".as_ref()).unwrap(), cfg);
    // Removing it again: its name is invalidated; a re-added path gets its old inode back.
    let fresh = b.lookup(ROOT_INO, OsStr::new("fresh")).unwrap();
    std::fs::remove_dir_all(fx.ws_home.join("fresh")).unwrap();
    let c = build(&loc, &mut inodes, 3, stamp);
    assert!(diff(&b, &c).contains(&Invalidation::Entry {
        parent: ROOT_INO,
        name: "fresh".into()
    }));
    fx.workspace("fresh", &good_files());
    let d = build(&loc, &mut inodes, 4, stamp);
    assert_eq!(d.lookup(ROOT_INO, OsStr::new("fresh")).unwrap(), fresh);
}

#[test]
fn tree_rules_names_links_and_what_is_hidden() {
    let fx = Fx::new();
    let snap1 = fx.hub_snapshot("acme/model", &"1".repeat(40), &good_files(), false);
    fx.hub_snapshot("acme/model", &"2".repeat(40), &good_files(), true);
    fx.hub_model("gpt2", &good_files());
    fx.hub_model("solo", &good_files());
    fx.workspace("acme", &good_files()); // takes the org's name
    fx.workspace("gpt2", &good_files()); // takes an org-less repo's name
    let ws = fx.workspace("links", &good_files());
    symlink("config.json", ws.join("alias.json")).unwrap();
    symlink("/etc/hostname", ws.join("escape")).unwrap();
    symlink("nowhere", ws.join("dangling")).unwrap();
    fs::write(ws.join(".DS_Store"), "junk").unwrap();
    fs::write(ws.join("._config.json"), "junk").unwrap();
    fs::write(ws.join("part.incomplete"), "half").unwrap();
    fs::create_dir_all(ws.join("sub/.mlxfs")).unwrap(); // not at the model's top: shown
    fs::write(ws.join(".mlxfs"), "a real file").unwrap(); // at the top: hidden, said
    fs::create_dir_all(fx.ws_home.join(".mlxfs")).unwrap(); // a workspace named .mlxfs
    fs::write(fx.ws_home.join(".mlxfs/config.json"), "{}").unwrap();
    fs::write(snap1.join("../../blobs/x.incomplete"), "half").unwrap();

    let v = vfs_of(&fx);
    let t = v.tree();
    let root = names(&t, "");
    assert_eq!(
        root,
        [
            ".mlxfs", "acme", "acme@hub", "gpt2", "gpt2@hub", "links", "solo"
        ],
        "{root:?}"
    );
    assert_eq!(names(&t, "acme@hub"), ["model", "model@1111111"]);
    assert_eq!(
        names(&t, ".mlxfs"),
        ["catalog.json", "health", "models.json", "status.json"]
    );
    // In a workspace: links that stay inside are links, the rest hidden; junk never shown.
    // A model's virtual .mlxfs/ is not listed (a copier would take it along), but answers.
    let l = names(&t, "links");
    assert_eq!(
        l,
        [
            "alias.json",
            "config.json",
            "model.safetensors",
            "sub",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    assert_eq!(
        names(&t, "links/.mlxfs"),
        [
            "hash",
            "health",
            "model.json",
            "runtime-cache.json",
            "sentinel.json"
        ]
    );
    assert_eq!(
        names(&t, "links/sub"),
        [".mlxfs"],
        "a real .mlxfs deeper is listed"
    );
    let alias = t.resolve_path(Path::new("links/alias.json")).unwrap();
    assert_eq!(v.readlink(alias).unwrap(), "config.json");
    assert_eq!(
        v.readlink(t.resolve_path(Path::new("links/config.json")).unwrap()),
        Err(VfsError::NotLink)
    );
    // Hub files are regular files backed by their blobs.
    let cfg = t
        .resolve_path(Path::new("acme@hub/model/config.json"))
        .unwrap();
    assert_eq!(t.node(cfg).unwrap().attr.kind, Kind::File);
    assert_eq!(
        cat(&v, "acme@hub/model/config.json"),
        LLAMA_CONFIG.as_bytes()
    );
    // nlink of a folder: 2 + its sub-folders.
    let links = t.resolve_path(Path::new("links")).unwrap();
    assert_eq!(t.node(links).unwrap().attr.nlink, 4); // sub, .mlxfs
    // What is hidden is said in status.json.
    let status: serde_json::Value = serde_json::from_slice(&cat(&v, ".mlxfs/status.json")).unwrap();
    let hidden: Vec<&str> = strs(&status["hidden"], "path");
    let ws_mlxfs = ws.join(".mlxfs");
    let home_mlxfs = fx.ws_home.join(".mlxfs");
    assert!(hidden.contains(&ws_mlxfs.to_str().unwrap()), "{status:#}");
    assert!(hidden.contains(&home_mlxfs.to_str().unwrap()), "{status:#}");
    assert_eq!(status["refresh_error"], serde_json::Value::Null);
    // The model's record warns about the hidden .mlxfs too.
    let rec: serde_json::Value =
        serde_json::from_slice(&cat(&v, "links/.mlxfs/model.json")).unwrap();
    assert!(
        rec["warnings"][0].as_str().unwrap().contains(".mlxfs"),
        "{rec:#}"
    );
    // Every model of the catalog is in the fleet file, one line each.
    let fleet = String::from_utf8(cat(&v, ".mlxfs/health")).unwrap();
    assert_eq!(fleet.lines().count(), t.models.len());
    assert!(
        fleet.contains("links\tunhealthy: Dangling symlinks: dangling"),
        "{fleet}"
    );
}

#[test]
fn open_files_keep_what_they_rendered_and_writes_are_refused() {
    let fx = Fx::new();
    fx.workspace("ws", &good_files());
    let v = vfs_of(&fx);
    let t = v.tree();
    let health = t.resolve_path(Path::new(".mlxfs/health")).unwrap();
    let (fh, _) = v.open(health, false).unwrap();
    let before = v.getattr(health, Some(fh)).unwrap().size;
    // A new model changes the file; the open handle still reads (and sizes) what it opened.
    fx.workspace("ws2", &good_files());
    assert!(!v.refresh().is_empty());
    let now = v.attr(&v.tree(), health).unwrap().size;
    assert!(now > before);
    assert_eq!(v.getattr(health, Some(fh)).unwrap().size, before);
    let got = v.read(fh, 0, u32::MAX, |r| r.unwrap().len() as u64);
    assert_eq!(got, before);
    v.release(fh).unwrap();
    assert_eq!(v.release(fh), Err(VfsError::BadHandle));
    assert_eq!(
        v.read(fh, 0, 1, |r| r.map(|b| b.len())),
        Err(VfsError::BadHandle)
    );
    // Writes, folders and links.
    let cfg = t.resolve_path(Path::new("ws/config.json")).unwrap();
    assert_eq!(v.open(cfg, true).unwrap_err(), VfsError::ReadOnly);
    assert_eq!(v.open(ROOT_INO, false).unwrap_err(), VfsError::IsDir);
    assert!(v.handles.is_empty());
    // A backed file reads its bytes, in pieces, past the end too.
    assert_eq!(cat(&v, "ws/config.json"), LLAMA_CONFIG.as_bytes());
    let (fh, _) = v.open(cfg, false).unwrap();
    assert_eq!(v.read(fh, 1 << 40, 10, |r| r.unwrap().len()), 0);
    v.release(fh).unwrap();
}

#[test]
fn the_issue_example_builds_and_names_the_snapshot_by_characters() {
    // Two snapshots, one with a multi-byte character across byte 7 (issue 9).
    let fx = Fx::new();
    fx.hub_snapshot("org/m", "1234567890abcdef", &good_files(), false);
    let odd = fx.hub_snapshot("org/m", "abcdefé12", &good_files(), false);
    crate::support::hostile_trees::set_mtime(&odd, 1_546_300_800); // 2019-01-01: the older one
    let v = vfs_of(&fx);
    assert_eq!(names(&v.tree(), "org"), ["m", "m@abcdefé"]);
    let loc = fx.locations();
    let m = mlxfs::catalog::resolve::resolve("org/m@abcdefé", &loc).unwrap();
    assert_eq!(m.revision.as_deref(), Some("abcdefé12"));
    assert_eq!(m.spec(), "org/m@abcdefé");
    match mlxfs::catalog::resolve::resolve("org/m@zzz", &loc) {
        Err(mlxfs::catalog::resolve::ResolveError::HashNotFound { available, .. }) => {
            assert_eq!(available, ["1234567", "abcdefé"]);
        }
        other => panic!("{other:?}"),
    }
}

/// A mount starts on names only (issue 15 §4: mount to first `ls`): the partial tree has the
/// root's entries and the model folders, none of their contents; a request that needs more
/// waits; `complete` swaps in the tree a full build gives (same root inodes), wakes it, and
/// has the kernel forget nothing when the root's entries stayed the same.
#[test]
fn a_partial_start_shows_the_root_and_completes_to_the_full_tree() {
    let fx = Fx::new();
    fx.hub_snapshot("acme/model", &"1".repeat(40), &good_files(), false);
    fx.hub_snapshot("acme/model", &"2".repeat(40), &good_files(), true);
    fx.hub_model("solo", &good_files());
    fx.workspace("acme", &good_files());
    fx.workspace("ws", &good_files());
    let full = vfs_of(&fx);
    assert!(full.is_ready() && !full.tree().partial);
    let v = std::sync::Arc::new(mlxfs::vfs::Vfs::new_partial(fx.locations(), full.info()));
    let t = v.tree();
    assert!(t.partial && !v.is_ready());
    assert_eq!(t.generation, 0);
    assert_eq!(names(&t, ""), names(&full.tree(), ""));
    assert_eq!(names(&t, "acme@hub"), ["model", "model@1111111"]);
    // No model folder is read; its virtual .mlxfs/ answers by name, unlisted.
    assert!(names(&t, "ws").is_empty(), "{:?}", names(&t, "ws"));
    assert!(t.resolve_path(Path::new("ws/.mlxfs/health")).is_ok());
    assert_eq!(t.models.len(), full.tree().models.len());

    let waiter = std::thread::spawn({
        let v = v.clone();
        move || {
            v.wait_ready();
            v.tree().generation
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!waiter.is_finished(), "a request waits for the full tree");
    assert_eq!(v.complete(), vec![], "the root's entries did not change");
    assert_eq!(waiter.join().unwrap(), 1);
    let done = v.tree();
    assert!(v.is_ready() && !done.partial);
    assert_eq!(
        t.entries(ROOT_INO).unwrap(),
        done.entries(ROOT_INO).unwrap(),
        "same names, same inodes"
    );
    let shape = |t: &Tree| -> BTreeMap<PathBuf, (Kind, String)> {
        flatten(t)
            .into_iter()
            .map(|(p, s)| (p, (s.kind, s.what)))
            .collect()
    };
    assert_eq!(shape(&done), shape(&full.tree()));
    assert_eq!(
        cat(&v, "ws/config.json"),
        fs::read(fx.ws_home.join("ws/config.json")).unwrap()
    );
    assert_eq!(v.complete(), vec![], "once only");
    assert_eq!(v.refresh(), vec![], "a rescan after it finds nothing new");
}

// ------------------------------------------------------------------ the reference model

/// What the kernel may have cached about one path: its inode and what `stat`/`read` show.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    ino: Ino,
    kind: Kind,
    /// Attributes and content (a file's backing path, a link's target, a virtual file's
    /// kind), as text; folders: attributes only (their names are entries of their own).
    what: String,
}

fn flatten(t: &Tree) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    for ino in t.nodes.keys() {
        let n = &t.nodes[ino];
        let what = match &n.content {
            Content::Dir(_) => format!("{:?}", n.attr),
            Content::Backed(p) => format!("{:?} {p:?}", n.attr),
            Content::Link(l) => format!("{:?} {l:?}", n.attr),
            Content::Virtual(_) => "virtual".into(),
        };
        out.insert(
            t.path_of(ino).unwrap(),
            Seen {
                ino,
                kind: n.attr.kind,
                what,
            },
        );
    }
    out
}

/// The invalidations the kernel must get when `old` is replaced by `new`, derived from paths
/// alone: a name that appeared, went, or changed kind → its entry in a folder both trees have,
/// and that folder; a path whose attributes or content changed → its inode; and, when
/// anything changed, every virtual file (rendered from the whole catalog).
fn expected(old: &Tree, new: &Tree) -> BTreeSet<Invalidation> {
    let (o, n) = (flatten(old), flatten(new));
    let mut want = BTreeSet::new();
    let paths: BTreeSet<&PathBuf> = o.keys().chain(n.keys()).collect();
    for p in paths {
        let (a, b) = (o.get(p), n.get(p));
        let Some(parent) = p.parent() else { continue };
        let parent_in_both = match (o.get(parent), n.get(parent)) {
            (Some(x), Some(y)) if x.ino == y.ino && x.kind == Kind::Dir && y.kind == Kind::Dir => {
                Some(y.ino)
            }
            _ => None,
        };
        let entry_changed = match (a, b) {
            (Some(x), Some(y)) => x.ino != y.ino || x.kind != y.kind,
            (None, None) => false,
            _ => true,
        };
        if entry_changed && let Some(pi) = parent_in_both {
            want.insert(Invalidation::Entry {
                parent: pi,
                name: p.file_name().map(OsStr::to_os_string).unwrap_or_default(),
            });
            want.insert(Invalidation::Inode(pi));
        }
        if let (Some(x), Some(y)) = (a, b)
            && x.ino == y.ino
            && (x.kind != y.kind || (x.what != y.what && x.what != "virtual"))
        {
            want.insert(Invalidation::Inode(y.ino));
        }
    }
    if !want.is_empty() {
        for (ino, node) in &new.nodes {
            if matches!(node.content, Content::Virtual(_)) {
                want.insert(Invalidation::Inode(ino));
            }
        }
    }
    want
}

/// One edit of a small catalog whose names collide on purpose (`org` is a hub org and can
/// be a workspace; `solo` an org-less repo and a workspace).
#[derive(Debug, Clone)]
enum Edit {
    AddWorkspace(usize),
    RemoveWorkspace(usize),
    WriteFile(usize, usize, usize),
    RemoveFile(usize, usize),
    /// A file becomes a folder, a folder a file (same name, so the same inode).
    ChangeKind(usize, usize),
    /// A link (re)pointed at another file of the workspace.
    Link(usize, usize, bool),
    AddSnapshot(usize, usize, bool),
    RemoveSnapshot(usize, usize),
    RemoveRepo(usize),
    Touch(usize),
}

const WS: &[&str] = &["a", "org", "solo"];
const REPOS: &[&str] = &["org/m", "org/n", "solo", "x/y"];
const FILES: &[&str] = &["f", "g"];

fn edit() -> impl Strategy<Value = Edit> {
    let w = 0..WS.len();
    let r = 0..REPOS.len();
    let f = 0..FILES.len();
    prop_oneof![
        3 => w.clone().prop_map(Edit::AddWorkspace),
        1 => w.clone().prop_map(Edit::RemoveWorkspace),
        3 => (w.clone(), f.clone(), 0usize..40).prop_map(|(a, b, c)| Edit::WriteFile(a, b, c)),
        1 => (w.clone(), f.clone()).prop_map(|(a, b)| Edit::RemoveFile(a, b)),
        2 => (w.clone(), f.clone()).prop_map(|(a, b)| Edit::ChangeKind(a, b)),
        2 => (w.clone(), f, any::<bool>()).prop_map(|(a, b, c)| Edit::Link(a, b, c)),
        3 => (r.clone(), 0usize..3, any::<bool>()).prop_map(|(a, b, c)| Edit::AddSnapshot(a, b, c)),
        1 => (r.clone(), 0usize..3).prop_map(|(a, b)| Edit::RemoveSnapshot(a, b)),
        1 => r.prop_map(Edit::RemoveRepo),
        1 => w.prop_map(Edit::Touch),
    ]
}

fn commit(i: usize) -> String {
    format!("{i}").repeat(40)
}

fn apply(fx: &Fx, e: &Edit) {
    let ws = |i: usize| fx.ws_home.join(WS[i]);
    let repo = |i: usize| {
        fx.hub()
            .join(format!("models--{}", REPOS[i].replace('/', "--")))
    };
    match e {
        Edit::AddWorkspace(i) => {
            if !ws(*i).exists() {
                fx.workspace(WS[*i], &good_files());
            }
        }
        Edit::RemoveWorkspace(i) => {
            let _ = fs::remove_dir_all(ws(*i));
        }
        Edit::WriteFile(i, f, n) => {
            if ws(*i).is_dir() {
                let p = ws(*i).join(FILES[*f]);
                if !p.is_dir() {
                    let _ = fs::write(p, vec![b'x'; *n]);
                }
            }
        }
        Edit::RemoveFile(i, f) => {
            let p = ws(*i).join(FILES[*f]);
            let _ = fs::remove_file(&p);
            let _ = fs::remove_dir_all(&p);
        }
        Edit::ChangeKind(i, f) => {
            let p = ws(*i).join(FILES[*f]);
            if p.is_file() {
                let _ = fs::remove_file(&p);
                let _ = fs::create_dir_all(p.join("inner"));
            } else if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
                let _ = fs::write(&p, "now a file");
            } else if ws(*i).is_dir() {
                let _ = fs::write(&p, "a file");
            }
        }
        Edit::Link(i, f, to_tokenizer) => {
            if ws(*i).is_dir() {
                let l = ws(*i).join(format!("link-{}", FILES[*f]));
                let _ = fs::remove_file(&l);
                let target = if *to_tokenizer {
                    "tokenizer.json"
                } else {
                    "config.json"
                };
                let _ = symlink(target, l);
            }
        }
        Edit::AddSnapshot(r, c, main) => {
            if !repo(*r).join("snapshots").join(commit(*c)).exists() {
                fx.hub_snapshot(REPOS[*r], &commit(*c), &good_files(), *main);
            }
        }
        Edit::RemoveSnapshot(r, c) => {
            let _ = fs::remove_dir_all(repo(*r).join("snapshots").join(commit(*c)));
        }
        Edit::RemoveRepo(r) => {
            let _ = fs::remove_dir_all(repo(*r));
        }
        Edit::Touch(i) => {
            let p = ws(*i).join("config.json");
            if p.is_file() {
                crate::support::hostile_trees::set_mtime(&p, 1_700_000_000);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Random edits of a catalog: after each, `diff` of the trees is exactly what the
    /// reference model says the kernel must forget, and unchanged paths keep their inode.
    #[test]
    fn diff_matches_the_reference_model(
        start in prop::collection::vec(edit(), 0..6),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let fx = Fx::new();
        for e in &start {
            apply(&fx, e);
        }
        let loc = fx.locations();
        let stamp = SystemTime::UNIX_EPOCH;
        let mut inodes = Inodes::default();
        let mut old = build(&loc, &mut inodes, 1, stamp);
        for (g, e) in edits.iter().enumerate() {
            apply(&fx, e);
            // The fingerprint a refresh compares first: computed without building, equal to
            // the one of the tree built from the same disk, and never the same when the
            // kernel has something to forget (a refresh would otherwise miss the change).
            let fp = fingerprint(&loc, &inodes, stamp);
            let new = build(&loc, &mut inodes, g as u64 + 2, stamp);
            prop_assert_eq!(fp, new.fingerprint);
            let got: BTreeSet<Invalidation> = diff(&old, &new).into_iter().collect();
            prop_assert!(got.is_empty() || new.fingerprint != old.fingerprint, "after {:?}", e);
            prop_assert_eq!(&got, &expected(&old, &new), "after {:?}", e);
            // Paths in both trees keep their inode.
            let (o, n) = (flatten(&old), flatten(&new));
            for (p, s) in &n {
                if let Some(before) = o.get(p) {
                    prop_assert_eq!(before.ino, s.ino, "{}", p.display());
                }
            }
            old = new;
        }
    }
}

#[test]
fn a_folder_that_replaces_a_file_drops_the_name_too() {
    let fx = Fx::new();
    let ws = fx.workspace("w", &good_files());
    fs::write(ws.join("x"), "file").unwrap();
    let loc = fx.locations();
    let mut inodes = Inodes::default();
    let a = build(&loc, &mut inodes, 1, SystemTime::UNIX_EPOCH);
    fs::remove_file(ws.join("x")).unwrap();
    fs::create_dir(ws.join("x")).unwrap();
    let b = build(&loc, &mut inodes, 2, SystemTime::UNIX_EPOCH);
    let w = b.resolve_path(Path::new("w")).unwrap();
    let x = b.resolve_path(Path::new("w/x")).unwrap();
    let got = diff(&a, &b);
    assert!(got.contains(&Invalidation::Entry {
        parent: w,
        name: OsString::from("x")
    }));
    assert!(got.contains(&Invalidation::Inode(x)));
    // Virtual files are refreshed with any change.
    let health = b.resolve_path(Path::new(".mlxfs/health")).unwrap();
    assert!(matches!(
        b.node(health).unwrap().content,
        Content::Virtual(Virtual::FleetHealth)
    ));
    assert!(got.contains(&Invalidation::Inode(health)));
}

/// What the mount opens is what the tree saw: a link or a FIFO put in a file's place after
/// the tree was built is refused at once (never followed, never waited on).
#[test]
fn opens_refuse_links_and_fifos_planted_after_the_build() {
    let fx = Fx::new();
    let ws = fx.workspace("w", &good_files());
    fs::write(ws.join("notes.txt"), "mine").unwrap();
    fs::write(ws.join("pipe.txt"), "mine").unwrap();
    fs::create_dir_all(ws.join("sub")).unwrap();
    fs::write(ws.join("sub/deep.txt"), "mine").unwrap();
    let victim = fx.tmp.path().join("victim");
    fs::write(&victim, "SECRET").unwrap();
    fs::create_dir_all(fx.tmp.path().join("elsewhere")).unwrap();
    fs::write(fx.tmp.path().join("elsewhere/deep.txt"), "SECRET").unwrap();
    let v = vfs_of(&fx);
    let t = v.tree();
    let ino = |p: &str| t.resolve_path(Path::new(p)).unwrap();
    let (notes, pipe, deep) = (ino("w/notes.txt"), ino("w/pipe.txt"), ino("w/sub/deep.txt"));
    fs::remove_file(ws.join("notes.txt")).unwrap();
    symlink(&victim, ws.join("notes.txt")).unwrap();
    fs::remove_file(ws.join("pipe.txt")).unwrap();
    let c =
        std::ffi::CString::new(ws.join("pipe.txt").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    fs::remove_dir_all(ws.join("sub")).unwrap();
    symlink(fx.tmp.path().join("elsewhere"), ws.join("sub")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = [notes, pipe, deep].map(|i| v.open(i, false).map(|_| ()));
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("an open waited on a FIFO");
    for (what, res) in ["a link", "a FIFO", "a link in the path"].iter().zip(r) {
        assert!(res.is_err(), "{what} was opened");
    }
}

/// Links the tree cannot show (dangling, a loop, leading out of the model)
/// are in its hidden list with why: nothing is left out silently.
#[test]
fn links_the_tree_cannot_show_are_said_hidden() {
    let fx = Fx::new();
    let ws = fx.workspace("links", &good_files());
    fs::create_dir_all(ws.join("sub")).unwrap();
    std::os::unix::fs::symlink("..", ws.join("sub/up")).unwrap();
    std::os::unix::fs::symlink("nowhere", ws.join("dangling")).unwrap();
    std::os::unix::fs::symlink("self", ws.join("self")).unwrap();
    std::os::unix::fs::symlink("/etc", ws.join("out")).unwrap();
    let vfs = crate::support::vfs_for(&fx.locations(), &fx.tmp.path().join("mnt"));
    let t = vfs.tree();
    let why = |suffix: &str| {
        t.hidden
            .iter()
            .find(|h| h.path.ends_with(suffix))
            .map(|h| h.why.clone())
            .unwrap_or_else(|| {
                panic!(
                    "{suffix} not in {:?}",
                    t.hidden.iter().map(|h| &h.path).collect::<Vec<_>>()
                )
            })
    };
    assert!(why("/links/dangling").contains("leads nowhere"));
    assert!(why("/links/self").contains("a loop"));
    assert!(why("/links/out").contains("leads out"));
    // The rest of the model shows, a link to a parent folder as a link.
    assert!(t.resolve_path(Path::new("links/config.json")).is_ok());
    assert!(t.resolve_path(Path::new("links/sub/up")).is_ok());
    assert!(!t.hidden.iter().any(|h| h.path.ends_with("/sub/up")));
}
