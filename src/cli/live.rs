//! Answers from a live mount: `list` and `health` over the whole catalog may be answered by a
//! running mlxfs mount over the same sources (its `.mlxfs/catalog.json`, rendered after the
//! daemon proved its tree current: `vfs::live`, `vfs/watch.rs`). Only when everything
//! matches — the mount is this user's, its daemon is the same program with the same user,
//! groups and mount namespace, its sources are this command's folders, it says it is
//! current, and its data reads back exactly — is the answer used; anything else, silently,
//! means the disk. Reads only: nothing is written.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::catalog::Locations;
use crate::catalog::fleet::{Fleet, HealthData};
use crate::catalog::record::ListData;
use crate::env;
use crate::fuse::probe;
use crate::mountprobe::{CATALOG_FORMAT, CATALOG_JSON, META_DIR, identity};

/// `status.json` answers at once, even while the refresher rebuilds: a daemon that does not
/// is hung.
const STATUS_WAIT: Duration = Duration::from_secs(2);
/// `catalog.json` waits for the barrier (at most 10 s in the daemon) and, after a change, a
/// rendering of the whole catalog.
const CATALOG_WAIT: Duration = Duration::from_secs(30);
/// A reply larger than this is not an answer.
const MAX_REPLY: u64 = 1 << 30;

/// What `MLXFS_MOUNT_ANSWERS` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    On,
    Off,
    Debug,
}

/// The mode from the variable's value (anything unknown is `On`: the answer is the same).
pub fn mode_of(v: Option<&str>) -> Mode {
    match v.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
        Some("off" | "0" | "no" | "false") => Mode::Off,
        Some("debug") => Mode::Debug,
        _ => Mode::On,
    }
}

fn mode() -> Mode {
    mode_of(env::var(env::MLXFS_MOUNT_ANSWERS).as_deref())
}

/// Say where an answer came from (`MLXFS_MOUNT_ANSWERS=debug` only).
fn debug(m: Mode, what: &str) {
    if m == Mode::Debug {
        crate::note!("mlxfs: {}", crate::text::one_line(what));
    }
}

/// The whole catalog from a live mount, or `None` (then the caller reads the disk). `off`
/// is `--from-disk`.
pub fn fleet(loc: &Locations, from_disk: bool, command: &str) -> Option<Fleet> {
    let m = mode();
    if from_disk || m == Mode::Off {
        debug(m, &format!("{command}: from disk (asked to)"));
        return None;
    }
    match find(loc) {
        Ok((f, at)) => {
            debug(
                m,
                &format!(
                    "{command}: answered by the live mount at {}",
                    at.to_string_lossy()
                ),
            );
            Some(f)
        }
        Err(why) => {
            debug(m, &format!("{command}: from disk ({why})"));
            None
        }
    }
}

/// Say why a mount is not asked at all (a pattern, one model, `--verbose`).
pub fn not_asked(command: &str, why: &str) {
    debug(mode(), &format!("{command}: from disk ({why})"));
}

/// Read a regular file of the file system `dev` with a time limit (a hung daemon never hangs
/// the command; the thread left behind ends with the process).
fn read_bounded(p: PathBuf, dev: u64, wait: Duration) -> Result<Vec<u8>, String> {
    let (tx, rx) = mpsc::channel();
    let shown = p.to_string_lossy().into_owned();
    std::thread::Builder::new()
        .name("mlxfs-mount-read".into())
        .spawn(move || {
            let r = std::fs::File::open(&p).and_then(|f| {
                use std::io::Read;
                use std::os::unix::fs::MetadataExt;
                // The file itself must be the mount's (not one of a file system mounted
                // over it), and a regular file.
                let md = f.metadata()?;
                if md.dev() != dev || !md.is_file() {
                    return Err(std::io::Error::other("not a file of the mlxfs mount"));
                }
                let mut v = Vec::new();
                f.take(MAX_REPLY + 1).read_to_end(&mut v).map(|_| v)
            });
            let _ = tx.send(r);
        })
        .map_err(|e| e.to_string())?;
    match rx.recv_timeout(wait) {
        Ok(Ok(v)) if v.len() as u64 > MAX_REPLY => Err(format!("{shown} is too large")),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{shown}: {e}")),
        Err(_) => Err(format!(
            "{shown} did not answer within {} s",
            wait.as_secs()
        )),
    }
}

/// The first mount that answers for these sources.
fn find(loc: &Locations) -> Result<(Fleet, PathBuf), String> {
    let mine = loc
        .canonical_sources()
        .ok_or("a source folder's path is not UTF-8")?;
    let spelled = loc.sources();
    let me = identity();
    let mounts: Vec<(PathBuf, u64)> = probe::mlxfs_mounts()
        .into_iter()
        .filter(|m| m.user_id == Some(me.euid))
        .filter_map(|m| Some((m.dir, m.dev?)))
        .collect();
    if mounts.is_empty() {
        return Err("no mlxfs mount of this user".into());
    }
    let mut why = Vec::new();
    for (mnt, dev) in mounts.iter().take(64) {
        match answer(mnt, *dev, &mine, &spelled, &me) {
            Ok(f) => return Ok((f, mnt.clone())),
            Err(e) => why.push(format!("{}: {e}", mnt.to_string_lossy())),
        }
    }
    Err(why.join("; "))
}

/// The sources a `status.json` names, canonicalised here as this command's are.
fn status_sources(status: &Value) -> Option<Value> {
    let s = status.get("sources")?;
    let path = |v: &Value| -> Option<PathBuf> { v.as_str().map(PathBuf::from) };
    let loc = Locations {
        hub_cache: path(s.get("hub_cache")?)?,
        workspace_home: match s.get("workspace_home")? {
            Value::Null => None,
            v => Some(path(v)?),
        },
        workspace_home_problem: None,
        workspace_home_set: None,
        model_path: s
            .get("model_path")?
            .as_array()?
            .iter()
            .map(path)
            .collect::<Option<Vec<_>>>()?,
        model_path_problems: Vec::new(),
    };
    loc.canonical_sources()
}

fn answer(
    mnt: &Path,
    dev: u64,
    mine: &Value,
    spelled: &Value,
    me: &crate::mountprobe::Identity,
) -> Result<Fleet, String> {
    let meta = mnt.join(META_DIR);
    // Cheap first: a mount over other folders is never asked for its catalog.
    let status = read_bounded(meta.join("status.json"), dev, STATUS_WAIT)?;
    let status: Value =
        serde_json::from_slice(&status).map_err(|_| "status.json is not JSON".to_string())?;
    if status_sources(&status).as_ref() != Some(mine) {
        return Err("other sources".into());
    }
    // Records print paths under the sources as spelled: the same folders reached another way
    // (a link to the hub cache) would print the daemon's paths, not this command's.
    if status.get("sources") != Some(spelled) {
        return Err("the same folders spelled differently (paths would be printed as the mount spells them)".into());
    }
    let raw = read_bounded(meta.join(CATALOG_JSON), dev, CATALOG_WAIT)?;
    let cat: Value =
        serde_json::from_slice(&raw).map_err(|_| format!("{CATALOG_JSON} is not JSON"))?;
    check(&cat, mine, me)
}

/// Everything a reply must be to be used; the fleet it carries, read back exactly.
pub fn check(cat: &Value, mine: &Value, me: &crate::mountprobe::Identity) -> Result<Fleet, String> {
    if cat.get("format").and_then(Value::as_u64) != Some(CATALOG_FORMAT) {
        return Err("another catalog format".into());
    }
    if cat.get("current") != Some(&Value::Bool(true)) {
        let why = cat
            .get("why_not_current")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(format!("not provably current: {why}"));
    }
    let theirs: crate::mountprobe::Identity = cat
        .get("identity")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or("no daemon identity")?;
    if theirs.program.is_none() || theirs.mount_namespace.is_none() || theirs != *me {
        return Err("the daemon is another program, user or mount namespace".into());
    }
    if cat.get("sources") != Some(mine) {
        return Err("other sources".into());
    }
    let list_raw = cat.get("list").ok_or("no list")?;
    let health_raw = cat.get("health").ok_or("no health")?;
    let list: ListData =
        serde_json::from_value(list_raw.clone()).map_err(|e| format!("list: {e}"))?;
    let health: HealthData =
        serde_json::from_value(health_raw.clone()).map_err(|e| format!("health: {e}"))?;
    // What is printed is what the disk path prints: the typed data serialized again. It must
    // be the reply exactly (a field this program does not know would otherwise be lost).
    if serde_json::to_value(&list).ok().as_ref() != Some(list_raw)
        || serde_json::to_value(&health).ok().as_ref() != Some(health_raw)
    {
        return Err("the data does not read back exactly".into());
    }
    Ok(Fleet { list, health })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(me: &crate::mountprobe::Identity, mine: &Value) -> Value {
        json!({
            "format": CATALOG_FORMAT,
            "current": true,
            "why_not_current": null,
            "identity": me,
            "pid": 1,
            "build": 3,
            "generation": 2,
            "sources": mine,
            "list": {"models": [], "count": 0, "system": null},
            "health": {"healthy": [], "unhealthy": [],
                       "summary": {"total": 0, "healthy_count": 0, "unhealthy_count": 0}},
        })
    }

    #[test]
    fn modes() {
        assert_eq!(mode_of(None), Mode::On);
        assert_eq!(mode_of(Some("")), Mode::On);
        assert_eq!(mode_of(Some("OFF")), Mode::Off);
        assert_eq!(mode_of(Some("0")), Mode::Off);
        assert_eq!(mode_of(Some(" debug ")), Mode::Debug);
        assert_eq!(mode_of(Some("\u{0}weird")), Mode::On);
    }

    #[test]
    fn only_an_exact_current_reply_is_used() {
        let me = identity();
        let mine = json!({"hub_cache": "/h", "workspace_home": null, "model_path": []});
        let good = reply(&me, &mine);
        assert!(check(&good, &mine, &me).is_ok());
        let bad = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            check(&v, &mine, &me).unwrap_err()
        };
        assert!(bad(&|v| v["current"] = json!(false)).contains("not provably current"));
        assert!(bad(&|v| v["current"] = json!("true")).contains("not provably current"));
        bad(&|v| v["format"] = json!(2));
        bad(&|v| v["sources"]["hub_cache"] = json!("/other"));
        bad(&|v| v["sources"]["model_path"] = json!(["/x"]));
        bad(&|v| v["identity"]["euid"] = json!(me.euid + 1));
        bad(&|v| v["identity"]["program"] = json!(null));
        bad(&|v| v["identity"]["version"] = json!("0.0.0"));
        bad(&|v| {
            v.as_object_mut().unwrap().remove("identity");
        });
        bad(&|v| {
            v.as_object_mut().unwrap().remove("list");
        });
        bad(&|v| v["list"]["count"] = json!(-1));
        bad(&|v| v["list"]["extra"] = json!(1));
        bad(&|v| v["health"] = json!([]));
        bad(&|v| v["list"]["models"] = json!([{"name": 1}]));
    }

    #[test]
    fn status_sources_are_canonicalised_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        let s = json!({"sources": {"hub_cache": real.join("link"), "workspace_home": null,
                                   "model_path": [real.join("link")]}});
        let c = status_sources(&s).unwrap();
        assert_eq!(c["hub_cache"], json!(real.to_str().unwrap()));
        assert_eq!(c["model_path"][0], json!(real.to_str().unwrap()));
        for hostile in [
            json!({}),
            json!({"sources": 1}),
            json!({"sources": {"hub_cache": 5, "workspace_home": null, "model_path": []}}),
            json!({"sources": {"hub_cache": "/h", "workspace_home": null, "model_path": [3]}}),
            json!({"sources": {"hub_cache": "/h", "model_path": []}}),
        ] {
            assert!(status_sources(&hostile).is_none(), "{hostile}");
        }
    }
}
