//! The virtual tree without mounting: shape, stable inodes, and refresh diffs.

use std::ffi::OsStr;
use std::time::SystemTime;

use crate::support::*;
use mlxfs::vfs::{Inodes, Invalidation, ROOT_INO, build, diff};

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
    // Same paths, same inodes.
    assert_eq!(
        a.resolve_path("org/m/config.json".as_ref()),
        b.resolve_path("org/m/config.json".as_ref())
    );
}

#[test]
fn changes_become_invalidations_and_inodes_stay_stable() {
    let fx = Fx::new();
    fx.hub_model("org/m", &good_files());
    let loc = fx.locations();
    let stamp = SystemTime::now();
    let mut inodes = Inodes::default();
    let a = build(&loc, &mut inodes, 1, stamp);
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
