//! Several workspace homes (`MLXK_MODEL_PATH`, ADR-022's multi-path search) and the list
//! columns of ADR-022's UX (`--full-paths`, `--origin`): found in order, shown everywhere,
//! and the same name in two homes is an ambiguity, never "first folder wins".

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use mlxfs::catalog::resolve::{ResolveError, resolve};
use mlxfs::catalog::{Locations, all_models};
use mlxfs::vfs::Tree;

use crate::support::cli::*;
use crate::support::*;

/// The fixture plus two more homes, `extra-a` and `extra-b`, in MLXK_MODEL_PATH.
struct Homes {
    fx: Fx,
    a: PathBuf,
    b: PathBuf,
}

impl Homes {
    fn new() -> Homes {
        let fx = Fx::new();
        let root = fx.ws_home.parent().unwrap().to_path_buf();
        let (a, b) = (root.join("extra-a"), root.join("extra-b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        Homes { fx, a, b }
    }

    fn model_path(&self) -> String {
        // An empty entry and a missing folder are skipped (the latter with a warning).
        format!(
            "{}::{}:{}",
            self.a.display(),
            self.b.display(),
            self.fx.home.join("nowhere").display()
        )
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        let mut v = self.fx.vars();
        v.push(("MLXK_MODEL_PATH", self.model_path()));
        v
    }

    fn loc(&self) -> Locations {
        let vars = self.vars();
        Locations::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
    }

    fn ws(&self, home: &Path, name: &str) -> PathBuf {
        let p = home.join(name);
        write_tree(&p, &good_files());
        p
    }

    fn mlxfs(&self, args: &[&str]) -> Output {
        mlxfs(&self.fx)
            .env("MLXK_MODEL_PATH", self.model_path())
            .args(args)
            .output()
            .unwrap()
    }
}

fn root_names(t: &Tree) -> Vec<String> {
    t.entries(mlxfs::vfs::ROOT_INO)
        .unwrap()
        .into_iter()
        .skip(2)
        .map(|(_, _, n)| n.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn model_path_is_read_in_order_and_bad_entries_are_reported() {
    let h = Homes::new();
    let loc = h.loc();
    assert_eq!(loc.workspace_home.as_deref(), Some(h.fx.ws_home.as_path()));
    assert_eq!(loc.model_path, vec![h.a.clone(), h.b.clone()]);
    let homes: Vec<&Path> = loc.workspace_homes().collect();
    assert_eq!(homes, [h.fx.ws_home.as_path(), &h.a, &h.b]);
    assert_eq!(loc.model_path_problems.len(), 1, "{loc:?}");
    assert!(loc.model_path_problems[0].0.ends_with("/nowhere"));
    // `~` is expanded; the workspace home named again is not a second home.
    let vars = [
        ("HOME", h.fx.home.to_str().unwrap()),
        ("MLXK_WORKSPACE_HOME", h.fx.ws_home.to_str().unwrap()),
        ("MLXK_MODEL_PATH", "~:"),
    ];
    let loc = loc_from(&vars);
    assert_eq!(loc.model_path, vec![h.fx.home.clone()]);
    let vars = [
        ("MLXK_WORKSPACE_HOME", h.fx.ws_home.to_str().unwrap()),
        ("MLXK_MODEL_PATH", h.fx.ws_home.to_str().unwrap()),
    ];
    assert!(loc_from(&vars).model_path.is_empty());
    // MLXK_MODEL_PATH alone is enough to find workspaces.
    h.ws(&h.b, "only-b");
    let vars = [
        ("HF_HOME", h.fx.hf_home.to_str().unwrap()),
        ("MLXK_MODEL_PATH", h.b.to_str().unwrap()),
    ];
    let names: Vec<String> = all_models(&loc_from(&vars))
        .into_iter()
        .map(|m| m.short_name)
        .collect();
    assert_eq!(names, ["only-b"]);
}

#[test]
fn every_home_is_searched_and_a_name_in_two_homes_is_ambiguous() {
    let h = Homes::new();
    let first = h.ws(&h.fx.ws_home, "qwen-small");
    let second = h.ws(&h.b, "qwen-small");
    let only_a = h.ws(&h.a, "llama-a");
    h.fx.hub_model("org/qwen-hub", &good_files());
    let loc = h.loc();

    // A name found in one home only resolves, whichever home holds it.
    assert_eq!(resolve("llama-a", &loc).unwrap().path, only_a);
    assert_eq!(resolve("llama", &loc).unwrap().path, only_a);
    // The same exact name in two homes: ambiguous, naming both paths; never the first home.
    match resolve("qwen-small", &loc) {
        Err(ResolveError::Ambiguous { matches, .. }) => {
            let mut want = [first.to_string_lossy(), second.to_string_lossy()];
            want.sort();
            assert_eq!(matches, want, "the paths tell them apart");
        }
        other => panic!("want ambiguous, got {other:?}"),
    }
    // A substring hitting both (and the hub model) lists all three.
    match resolve("qwen", &loc) {
        Err(ResolveError::Ambiguous { matches, .. }) => assert_eq!(matches.len(), 3),
        other => panic!("want ambiguous, got {other:?}"),
    }
    // Each stays reachable by its path.
    assert_eq!(
        resolve(second.to_str().unwrap(), &loc).unwrap().path,
        second
    );

    // The CLI: list shows all of them (duplicates by path), show names the ambiguity.
    let v = envelope(&h.mlxfs(&["list", "--json"]));
    let mut shown: Vec<&str> = v["data"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["display_name"]
                .as_str()
                .unwrap_or(m["name"].as_str().unwrap())
        })
        .collect();
    let (f, s) = (first.to_string_lossy(), second.to_string_lossy());
    shown.sort();
    let mut want = ["llama-a", "org/qwen-hub", &*f, &*s];
    want.sort();
    assert_eq!(shown, want);
    let o = h.mlxfs(&["show", "qwen-small", "--json"]);
    let v = exited(&o, 1);
    assert_eq!(v["error"]["type"], "ambiguous_match");
    let matches = v["error"]["matches"].to_string();
    assert!(matches.contains(&*f) && matches.contains(&*s), "{v}");
    // The bad entry is said once, on stderr, not in the JSON.
    let o = h.mlxfs(&["list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("MLXK_MODEL_PATH entry") && err.contains("nowhere"),
        "{err}"
    );

    // The mount shows every one of them; the two of the same name by their home.
    let v = vfs_for(&loc, &h.fx.tmp.path().join("mnt"));
    let names = root_names(&v.tree());
    for n in [
        "llama-a",
        "qwen-small@workspaces",
        "qwen-small@extra-b",
        "org",
    ] {
        assert!(names.contains(&n.to_string()), "{n} not in {names:?}");
    }
    assert!(!names.contains(&"qwen-small".to_string()), "{names:?}");
    assert!(
        v.tree()
            .resolve_path(Path::new(".mlxfs/status.json"))
            .is_ok()
    );
}

#[test]
fn same_named_homes_still_give_distinct_mount_names() {
    let fx = Fx::new();
    let root = fx.ws_home.parent().unwrap().to_path_buf();
    let (x, y) = (root.join("x/models"), root.join("y/models"));
    for d in [&x, &y] {
        fs::create_dir_all(d).unwrap();
        write_tree(&d.join("m"), &good_files());
    }
    let mp = format!("{}:{}", x.display(), y.display());
    let vars = [
        ("HF_HOME", fx.hf_home.to_str().unwrap()),
        ("MLXK_MODEL_PATH", mp.as_str()),
    ];
    let loc = loc_from(&vars);
    let v = vfs_for(&loc, &fx.tmp.path().join("mnt"));
    let names = root_names(&v.tree());
    assert!(names.contains(&"m@models-1".to_string()), "{names:?}");
    assert!(names.contains(&"m@models-2".to_string()), "{names:?}");
}

#[test]
fn list_full_paths_and_origin_columns() {
    let fx = Fx::new();
    fx.hub_model("mlx-community/Tiny-4bit", &good_files());
    let ws = fx.workspace("cloned", &good_files());
    managed_sentinel(&ws, "");
    fx.workspace("plain", &good_files());
    let run = |args: &[&str]| {
        let o = mlxfs(&fx).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let origin = fs::read_to_string(ws.join(".mlxk_workspace.json")).unwrap();
    let origin: Value = serde_json::from_str(&origin).unwrap();
    let origin = origin["source_repo"].as_str().unwrap().to_string();

    let t = run(&["list", "--origin"]);
    let header = t.lines().next().unwrap();
    let cols: Vec<&str> = header.split_whitespace().filter(|c| *c != "|").collect();
    assert_eq!(
        cols,
        ["Name", "Hash", "Size", "Modified", "Src", "Origin", "Type"]
    );
    let row = |name: &str| {
        t.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{t}"))
            .to_string()
    };
    assert!(row("cloned").contains(&origin), "{t}");
    assert!(row("Tiny-4bit").contains("mlx-community/Tiny-4bit"), "{t}");
    assert!(row("plain").split_whitespace().any(|c| c == "-"), "{t}");

    let t = run(&["list", "--full-paths"]);
    let snap = fx.hub().join("models--mlx-community--Tiny-4bit/snapshots");
    assert!(t.contains(&*ws.to_string_lossy()), "{t}");
    assert!(
        t.contains(&*fx.ws_home.join("plain").to_string_lossy()),
        "{t}"
    );
    assert!(t.contains(&*snap.to_string_lossy()), "{t}");
    // Both together, with the verbose columns.
    let t = run(&["list", "--full-paths", "--origin", "--verbose"]);
    let cols: Vec<&str> = t
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .filter(|c| *c != "|")
        .collect();
    assert_eq!(
        cols,
        [
            "Name",
            "Hash",
            "Size",
            "Modified",
            "Src",
            "Origin",
            "Clean",
            "Framework",
            "Type"
        ]
    );
    assert!(
        t.contains(&*ws.to_string_lossy()) && t.contains(&origin),
        "{t}"
    );
}

#[test]
fn serve_ids_tell_same_named_workspaces_apart() {
    use mlxfs::serve::catalog::Catalog;
    let h = Homes::new();
    let first = h.ws(&h.fx.ws_home, "qwen-small");
    let second = h.ws(&h.b, "qwen-small");
    h.ws(&h.a, "llama-a");
    let cat = Catalog::new(h.loc());
    let ids: Vec<String> = cat.models().into_iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        ["llama-a", "qwen-small@extra-b", "qwen-small@workspaces"]
    );
    assert_eq!(
        cat.resolve("qwen-small@extra-b").unwrap().model.path,
        second
    );
    assert_eq!(
        cat.resolve("qwen-small@workspaces").unwrap().model.path,
        first
    );
    // Ambiguous: the candidates by their ids, never as paths of the server's disk.
    let r = cat.resolve("qwen-small").unwrap_err();
    assert_eq!(r.matches, ["qwen-small@extra-b", "qwen-small@workspaces"]);
}
