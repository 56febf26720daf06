//! What changed between two trees, as the invalidations the kernel must get so that it
//! forgets stale names and attributes (FUSE `notify_inval_entry` / `notify_inval_inode`).

use std::ffi::OsString;

use super::tree::{Content, Ino, Tree};

/// A change the kernel must forget about after a refresh.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invalidation {
    /// The name `name` in folder `parent` changed (added, removed or now another inode).
    Entry { parent: Ino, name: OsString },
    /// Attributes or content of this inode changed.
    Inode(Ino),
}

/// What changed between two trees built with the same [`super::Inodes`] map.
///
/// The rules (checked against a reference model in tests/it/vfs.rs):
/// - a name added to, removed from, pointing at another inode, or of another kind, in a folder
///   that exists in both trees → `Entry { folder, name }` and `Inode(folder)`;
/// - a folder whose attributes changed → `Inode(folder)`;
/// - a file or link whose backing path, target or attributes changed, a virtual file whose
///   attributes changed, or a node whose kind changed → `Inode(node)`;
/// - whenever anything changed, every virtual file of the new tree → `Inode(file)` (their
///   contents are rendered from the whole catalog).
///
/// Nodes only in the old tree need nothing more: their names are invalidated in their parent
/// (or the parent itself went, and with it the kernel's path to them).
pub fn diff(old: &Tree, new: &Tree) -> Vec<Invalidation> {
    let mut out = Vec::new();
    for (ino, n) in &new.nodes {
        let Some(o) = old.nodes.get(&ino) else {
            continue;
        };
        match (&o.content, &n.content) {
            (Content::Dir(oc), Content::Dir(nc)) => {
                let mut changed = false;
                // A name whose inode stays but whose kind changed (a file replaced by a
                // folder) must go from the kernel's cache too: it cannot change an inode's type.
                let kind = |t: &Tree, i: &Ino| t.nodes.get(i).map(|n| n.attr.kind);
                for (name, i) in oc {
                    if nc.get(name) != Some(i) || kind(old, i) != kind(new, i) {
                        out.push(Invalidation::Entry {
                            parent: ino,
                            name: name.to_os_string(),
                        });
                        changed = true;
                    }
                }
                for name in nc.keys() {
                    if !oc.contains_key(name) {
                        out.push(Invalidation::Entry {
                            parent: ino,
                            name: name.to_os_string(),
                        });
                        changed = true;
                    }
                }
                if changed || o.attr != n.attr {
                    out.push(Invalidation::Inode(ino));
                }
            }
            (Content::Backed(op), Content::Backed(np)) if op == np && o.attr == n.attr => {}
            (Content::Link(ot), Content::Link(nt)) if ot == nt && o.attr == n.attr => {}
            // A virtual file whose stamp changed (a hub model's runtime cache, which lies
            // outside the tree) is a change too.
            (Content::Virtual(ov), Content::Virtual(nv)) if ov == nv && o.attr == n.attr => {}
            _ => out.push(Invalidation::Inode(ino)),
        }
    }
    if !out.is_empty() {
        for (ino, n) in &new.nodes {
            if matches!(n.content, Content::Virtual(_)) {
                out.push(Invalidation::Inode(ino));
            }
        }
    }
    out
}
