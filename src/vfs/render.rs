//! Contents of the virtual files, rendered from the catalog core on demand and cached: records
//! and health per tree generation, hash status per model keyed on the stat data of its files
//! (so an unchanged workspace is never hashed twice). Nothing is rendered under a lock.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::live::Barrier;
use super::{Tree, Vfs, Virtual};
use crate::catalog::Source;
use crate::catalog::record::{self, Described, describe, show_model};
use crate::catalog::runtime_cache;
use crate::envelope::{self, Order};
use crate::hash::sentinel::{self, Clean};
use crate::jsonfmt::to_python_json;
use crate::text::one_line;
use crate::{hints, sys};

type Rendered = Arc<Vec<u8>>;

#[derive(Default)]
pub struct Renderer {
    /// (generation, file) → content.
    files: Mutex<HashMap<(u64, Virtual), Rendered>>,
    /// model folder → (stat signature, hash line).
    hashes: Mutex<HashMap<PathBuf, (u64, String)>>,
    /// The refresher's end of the barrier, once it runs (`vfs/watch.rs` sets it).
    pub barrier: OnceLock<Barrier>,
    /// `catalog.json` as last rendered while provably current: (refresher build, content).
    catalog: Mutex<Option<(u64, Rendered)>>,
    /// Held while `catalog.json` renders: readers at the same build wait for one rendering.
    catalog_render: Mutex<()>,
}

/// How long an open of `catalog.json` waits for the refresher (a rebuild of a large catalog
/// included); past it the file says it cannot prove anything.
pub const SYNC_WAIT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn text(s: String) -> Rendered {
    Arc::new(s.into_bytes())
}

fn json_text(v: &Value) -> Rendered {
    text(to_python_json(v) + "\n")
}

/// A cheap fingerprint of a folder's files: names, sizes, mtimes, link targets (no reads).
pub fn stat_signature(root: &std::path::Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let dev = fs::metadata(root).map(|m| m.dev()).ok();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            p.hash(&mut h);
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            (md.len(), md.mtime(), md.mtime_nsec(), md.mode()).hash(&mut h);
            if md.file_type().is_symlink() {
                fs::read_link(&p).ok().hash(&mut h);
            } else if md.is_dir() && Some(md.dev()) == dev {
                // Never onto another file system (a mount inside a workspace, the mount).
                stack.push(p);
            }
        }
    }
    h.finish()
}

impl Renderer {
    /// Drop every rendered file (they render again on their next read).
    pub fn forget(&self) {
        lock(&self.files).clear();
    }

    /// Describe model `idx` once per generation and keep only what its files show (the
    /// health line and model.json), not the whole description.
    fn describe_into_cache(&self, tree: &Tree, idx: usize) {
        let Some(entry) = tree.models.get(idx) else {
            return;
        };
        let d: Described = describe(&entry.model);
        let health = text(format!("{}\n", one_line(&health_line(&d))));
        let model = json_text(&show_model(&d));
        let mut files = lock(&self.files);
        files.insert((tree.generation, Virtual::Health(idx)), health);
        files.insert((tree.generation, Virtual::ModelJson(idx)), model);
    }

    fn cached(&self, tree: &Tree, v: &Virtual) -> Option<Rendered> {
        lock(&self.files)
            .get(&(tree.generation, v.clone()))
            .cloned()
    }

    pub fn render(&self, vfs: &Vfs, tree: &Tree, v: &Virtual) -> Rendered {
        match v {
            // Its size is that of what an open now would read: a `stat` asks the barrier
            // too (as `models.json` renders the list for its size).
            Virtual::Catalog => return self.catalog(vfs),
            // Daemon facts change without a new tree (a refresh that failed, a file the
            // kernel would not take for passthrough): rendered anew each time (it is small).
            Virtual::Status => return self.render_uncached(vfs, tree, v),
            _ => {}
        }
        let key = (tree.generation, v.clone());
        if let Some(r) = lock(&self.files).get(&key) {
            return r.clone();
        }
        let r = self.render_uncached(vfs, tree, v);
        let mut files = lock(&self.files);
        files.retain(|(g, _), _| *g >= tree.generation);
        files.insert(key, r.clone());
        r
    }

    /// `catalog.json` for an open: ask the refresher whether the tree is current (it rebuilds
    /// first when anything changed), then the catalog — rendered once per refresher build —
    /// or, when currency cannot be proven, only why.
    pub fn catalog(&self, vfs: &Vfs) -> Rendered {
        let answer = match self.barrier.get() {
            Some(b) => b.sync(SYNC_WAIT),
            None => Err("this daemon watches no changes".to_string()),
        };
        let a = match answer {
            Ok(a) => a,
            Err(why) => return json_text(&catalog_head(vfs, None, Some(&why))),
        };
        if let Some(why) = &a.unprovable {
            return json_text(&catalog_head(vfs, Some(a.build), Some(why)));
        }
        let _one = lock(&self.catalog_render);
        if let Some((b, r)) = lock(&self.catalog).as_ref()
            && *b == a.build
        {
            return r.clone();
        }
        let fleet = crate::catalog::fleet::fleet(&vfs.loc);
        let mut v = catalog_head(vfs, Some(a.build), None);
        if let Value::Object(o) = &mut v {
            o.insert(
                "list".into(),
                serde_json::to_value(&fleet.list).unwrap_or(Value::Null),
            );
            o.insert(
                "health".into(),
                serde_json::to_value(&fleet.health).unwrap_or(Value::Null),
            );
        }
        drop(fleet);
        let r = json_text(&v);
        *lock(&self.catalog) = Some((a.build, r.clone()));
        trim_heap();
        r
    }

    fn render_uncached(&self, vfs: &Vfs, tree: &Tree, v: &Virtual) -> Rendered {
        match v {
            Virtual::Catalog => self.catalog(vfs),
            Virtual::ModelsJson => {
                let r = json_text(&envelope::build(
                    Some("list"),
                    Order::DataFirst,
                    Ok(serde_json::to_value(record::list(&vfs.loc, None)).unwrap_or(Value::Null)),
                ));
                trim_heap();
                r
            }
            Virtual::FleetHealth => {
                // One model, one line: names and reasons are escaped (`\n` → `\\n`), so no
                // name can forge another model's line.
                let mut out = String::new();
                for (i, m) in tree.models.iter().enumerate() {
                    let line = self.render(vfs, tree, &Virtual::Health(i));
                    out.push_str(&one_line(&m.mount_path));
                    out.push('\t');
                    out.push_str(&String::from_utf8_lossy(&line));
                }
                trim_heap();
                text(out)
            }
            Virtual::Status => {
                let info = vfs.info();
                let secs = |t: std::time::SystemTime| crate::timefmt::iso_utc(sys::epoch_secs(t));
                json_text(&json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": std::process::id(),
                    "mountpoint": info.mountpoint.to_string_lossy(),
                    "sources": vfs.loc.sources(),
                    "models": tree.models.len(),
                    "read_mode": info.read_mode.as_str(),
                    "read_mode_why": vfs.reads.why_daemon(),
                    "read_through_daemon": vfs.reads.to_json(),
                    "mounted_at": secs(info.mounted_at),
                    "generation": tree.generation,
                    "refreshed_at": secs(tree.built_at),
                    "refresh_error": info.refresh_error,
                    "hidden": tree.hidden,
                }))
            }
            Virtual::ModelJson(i) | Virtual::Health(i) => {
                self.describe_into_cache(tree, *i);
                self.cached(tree, v).unwrap_or_else(|| text(String::new()))
            }
            Virtual::Sentinel(i) => {
                let Some(m) = tree.models.get(*i).map(|e| &e.model) else {
                    return text(String::new());
                };
                if m.source == Source::Workspace
                    && let Ok(raw) =
                        crate::sys::read_file_nofollow(&m.path.join(crate::hash::SENTINEL_FILENAME))
                {
                    return Arc::new(raw);
                }
                let origin = match m.source {
                    Source::Cache => json!({
                        "source_repo": m.name,
                        "source_revision": m.revision,
                        "managed": false,
                    }),
                    Source::Workspace => json!({
                        "source_repo": null,
                        "source_revision": null,
                        "managed": false,
                    }),
                };
                json_text(&origin)
            }
            Virtual::RuntimeCache(i) => match tree.models.get(*i) {
                Some(e) => json_text(
                    &serde_json::to_value(runtime_cache::inspect(&e.model.isolated_cache()))
                        .unwrap_or(Value::Null),
                ),
                None => text(String::new()),
            },
            // Once per generation (a `getattr` would otherwise walk the workspace each time);
            // across generations the stat-keyed cache spares unchanged workspaces a rehash.
            Virtual::Hash(idx) => self.hash_status(tree, *idx),
        }
    }

    /// `hash`: a workspace's clean state (cached on its files' stat data), or a hub commit.
    fn hash_status(&self, tree: &Tree, idx: usize) -> Rendered {
        let Some(m) = tree.models.get(idx).map(|e| &e.model) else {
            return text(String::new());
        };
        if m.source == Source::Cache {
            let line = match &m.revision {
                Some(r) => format!("{r} pinned"),
                None => "unknown: no snapshot".into(),
            };
            return text(format!("{}\n", one_line(&line)));
        }
        let sig = stat_signature(&m.path);
        if let Some((s, line)) = lock(&self.hashes).get(&m.path)
            && *s == sig
        {
            return text(line.clone());
        }
        let read = sentinel::read(&m.path);
        let line = match sentinel::clean_check(&m.path, &read) {
            Clean::Clean { stored } => format!("{} clean", stored.unwrap_or_default()),
            Clean::Modified {
                computed: Some(c),
                stored,
                ..
            } => format!(
                "{c} modified (sentinel {})",
                stored.as_deref().unwrap_or("none")
            ),
            Clean::Modified {
                computed: None,
                why_unhashable,
                ..
            } => format!(
                "unknown: {} (modified since the sentinel)",
                why_unhashable.unwrap_or_default()
            ),
            Clean::Unknown { why, .. } => {
                format!("unknown: {}", hints::clean_unknown(&why, &m.spec()))
            }
        };
        // One line whatever the sentinel or the file names hold.
        let line = format!("{}\n", one_line(&line));
        lock(&self.hashes).insert(m.path.clone(), (sig, line.clone()));
        text(line)
    }
}

/// The part of `catalog.json` every answer has: whether it is current (and why not), who
/// rendered it, from which sources.
fn catalog_head(vfs: &Vfs, build: Option<u64>, why_not: Option<&str>) -> Value {
    json!({
        "format": crate::mountprobe::CATALOG_FORMAT,
        "current": why_not.is_none() && build.is_some(),
        "why_not_current": why_not,
        "identity": crate::mountprobe::identity(),
        "pid": std::process::id(),
        "build": build,
        "generation": vfs.tree().generation,
        "sources": vfs.loc.canonical_sources(),
    })
}

/// Give memory freed after a large render (or a rescan) back to the system: glibc keeps it
/// in per-thread arenas otherwise, and the daemon's RSS would only grow.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `healthy` or `unhealthy: <reason>` (not escaped: the caller escapes it for its line).
pub fn health_line(d: &Described) -> String {
    d.health.summary()
}
