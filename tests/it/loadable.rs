//! Health tells the truth about what the loader will open (issue 25 §3): every file a loader
//! opens (`catalog::loader_files`) must be a regular file this user can read — a FIFO named
//! `tokenizer.json` once hung `run` in open() for ever —, a file no loader opens is only a
//! warning (a stray name that is not UTF-8), and a folder one may list but not enter is
//! listed with its reason at every level. In-process against fixture trees; permissions are
//! exercised for real on a thread (or a process) without `CAP_DAC_OVERRIDE` and
//! `CAP_DAC_READ_SEARCH`, where root's file modes stop reads as a user's do.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::cli::*;
use crate::support::unprivileged::*;
use crate::support::*;
use mlxfs::catalog::ModelRef;
use mlxfs::catalog::record::describe;

/// The kinds of non-files a model folder can hold where a loader expects a file, made at `p`,
/// and how health names each.
fn make_kind(kind: &str, p: &Path) {
    let _ = fs::remove_file(p);
    let _ = fs::remove_dir_all(p);
    match kind {
        "a FIFO" => mkfifo(p),
        "a socket" => drop(std::os::unix::net::UnixListener::bind(p).unwrap()),
        "a folder" => fs::create_dir(p).unwrap(),
        "a character device" => {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: mknod with a valid path: the node of /dev/null (1, 3), never opened.
            let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
            assert_eq!(r, 0, "mknod needs root");
        }
        other => panic!("{other}"),
    }
}

fn ws_reason(ws: &Path) -> (String, Option<String>, Vec<String>) {
    let ws = ws.to_path_buf();
    within(30, move || {
        let d = describe(&ModelRef::workspace(ws.clone(), "m".into()));
        (
            d.record.health.as_str().to_string(),
            d.record.reason,
            d.record.warnings,
        )
    })
}

/// The issue's example and its kind: a FIFO (socket, device, folder) where a loader opens a
/// file makes the model unhealthy, the reason naming the file and what it is — whichever file
/// of the one list it is, and never by opening it (the check would hang).
#[test]
fn each_file_a_loader_opens_must_be_a_regular_file() {
    crate::require!(Root);
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        "tokenizer.json",
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "chat_template.jinja",
        "chat_template.json",
        "generation_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "video_preprocessor_config.json",
        "model.safetensors.index.json",
        "additional_chat_templates/tools.jinja",
    ];
    for (i, name) in names.iter().enumerate() {
        for kind in ["a FIFO", "a socket", "a folder", "a character device"] {
            let ws = tmp.path().join(format!("m{i}-{}", kind.replace(' ', "-")));
            write_tree(&ws, &good_files());
            fs::create_dir_all(ws.join("additional_chat_templates")).unwrap();
            make_kind(kind, &ws.join(name));
            let (health, reason, _) = ws_reason(&ws);
            assert_eq!(health, "unhealthy", "{name} as {kind}");
            assert_eq!(
                reason.as_deref(),
                Some(format!("{name} is {kind}, not a regular file").as_str()),
                "{name} as {kind}"
            );
        }
    }
}

/// The same through a hub snapshot: the link leads to a blob that is a FIFO.
#[test]
fn a_hub_blob_that_is_a_fifo_is_named() {
    let fx = Fx::new();
    let snap = fx.hub_model("org/fifo", &good_files());
    let blob = snap.join(fs::read_link(snap.join("tokenizer.json")).unwrap());
    fs::remove_file(&blob).unwrap();
    mkfifo(&blob);
    let loc = fx.locations();
    let d = within(30, move || {
        describe(&mlxfs::catalog::resolve::resolve("org/fifo", &loc).unwrap()).record
    });
    assert_eq!(
        d.reason.as_deref(),
        Some("tokenizer.json is a FIFO, not a regular file")
    );
}

/// A shard the index names in a sub-folder is opened by the loader too; a FIFO that no
/// loader opens is only a warning.
#[test]
fn index_named_shards_are_loaded_and_stray_fifos_are_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("m");
    let index = br#"{"weight_map": {"a": "w/model-00001-of-00002.safetensors", "b": "w/model-00002-of-00002.safetensors"}}"#;
    write_tree(
        &ws,
        &[
            ("config.json".to_string(), LLAMA_CONFIG.as_bytes().to_vec()),
            ("model.safetensors.index.json".to_string(), index.to_vec()),
            (
                "w/model-00001-of-00002.safetensors".to_string(),
                tiny_weights(),
            ),
            (
                "model-00001-of-00002.safetensors".to_string(),
                tiny_weights(),
            ),
        ],
    );
    mkfifo(&ws.join("w/model-00002-of-00002.safetensors"));
    let (_, reason, _) = ws_reason(&ws);
    assert_eq!(
        reason.as_deref(),
        Some("w/model-00002-of-00002.safetensors is a FIFO, not a regular file")
    );

    let ws = tmp.path().join("stray");
    write_tree(&ws, &good_files());
    mkfifo(&ws.join("notes.txt"));
    let (health, reason, warnings) = ws_reason(&ws);
    assert_eq!((health.as_str(), reason), ("healthy", None));
    assert!(
        warnings.contains(&"notes.txt is a FIFO, not a regular file (no loader opens it)".into()),
        "{warnings:?}"
    );
}

/// Files a loader opens that this user may not read: the model is unhealthy, the reason names
/// the file and why (mlx said only "Failed to open file"). Checked as a user (without the
/// capabilities that let root read anything); root itself reads them, and the same model is
/// healthy for it — the check asks the disk, not the mode bits.
#[test]
fn loader_files_this_user_cannot_read_are_named() {
    crate::require!(Root);
    let tmp = tempfile::tempdir().unwrap();
    for (name, mode) in [
        ("model.safetensors", 0o000),
        ("tokenizer.json", 0o200),
        ("config.json", 0o000),
        ("tokenizer_config.json", 0o000),
    ] {
        let ws = tmp.path().join(name);
        write_tree(&ws, &good_files());
        fs::set_permissions(ws.join(name), fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(ws_reason(&ws).0, "healthy", "root may read {name}");
        let w = ws.clone();
        let (health, reason) = unprivileged(move || {
            let d = describe(&ModelRef::workspace(w, "m".into()));
            (d.record.health.as_str().to_string(), d.record.reason)
        });
        assert_eq!(
            (health.as_str(), reason.as_deref()),
            (
                "unhealthy",
                Some(format!("{name} cannot be read (Permission denied)").as_str())
            )
        );
    }
    // A file no loader opens may be unreadable.
    let ws = tmp.path().join("readme");
    write_tree(&ws, &good_files());
    fs::write(ws.join("README.md"), "private").unwrap();
    fs::set_permissions(ws.join("README.md"), fs::Permissions::from_mode(0o000)).unwrap();
    let health = unprivileged(move || {
        describe(&ModelRef::workspace(ws, "m".into()))
            .record
            .health
            .as_str()
            .to_string()
    });
    assert_eq!(health, "healthy");
}

/// A stray file whose name is not UTF-8 (a Latin-1 name from an unzipped Windows archive) is
/// a warning, not a reason: mlx-lm loads the model. (A weight file with such a name is still
/// a reason: `catalog::link_and_name_problems_are_this_models_reason`.)
#[test]
fn a_stray_name_that_is_not_utf8_is_a_warning() {
    let fx = Fx::new();
    let ws = fx.workspace("latin1", &good_files());
    fs::write(ws.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")), "x").unwrap();
    let (health, reason, warnings) = ws_reason(&ws);
    assert_eq!((health.as_str(), reason), ("healthy", None));
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("file names that are not valid UTF-8")
                && w.ends_with(": caf\u{fffd}.txt")),
        "{warnings:?}"
    );
}

/// `run` (and `run --force`) of such a model runs it, as mlx-lm would.
#[test]
fn run_loads_a_model_with_a_stray_latin1_name() {
    crate::require!(Python);
    let (fx, ws) = crate::support::python::with_tiny();
    fs::write(
        ws.join(std::ffi::OsStr::from_bytes(b"lisez-moi-\xe9.txt")),
        "x",
    )
    .unwrap();
    for extra in [&[][..], &["--force"][..]] {
        let data = crate::support::python::run_json(&fx, "tiny", extra);
        assert_eq!(data["generation_tokens"], 12, "{data}");
    }
}

/// `run`, `convert` and `health` of a model whose `tokenizer.json` is a FIFO answer at once
/// (`run` once blocked in open() for ever): unhealthy, named; `run` and `convert` exit 1.
#[test]
fn commands_refuse_a_fifo_tokenizer_at_once() {
    let fx = Fx::new();
    let ws = fx.workspace("fifo-tok", &good_files());
    make_kind("a FIFO", &ws.join("tokenizer.json"));
    for args in [
        vec!["run", "fifo-tok", "hi"],
        vec!["convert", "fifo-tok", "out", "--quantize", "4"],
        vec!["health", "fifo-tok"],
    ] {
        let mut c = mlxfs(&fx);
        c.current_dir(&fx.ws_home).args(&args).arg("--json");
        let o = within(30, move || c.output().unwrap());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&o.stderr)));
        // `health` reports (exit 0, mlx-knife's); the others refuse.
        let code = if args[0] == "health" { 0 } else { 1 };
        assert_eq!(o.status.code(), Some(code), "{args:?}: {v}");
        let text = v.to_string();
        assert!(
            text.contains("tokenizer.json is a FIFO, not a regular file"),
            "{args:?}: {v}"
        );
        if args[0] != "health" {
            assert_eq!(v["error"]["type"], "model_unhealthy", "{args:?}: {v}");
        }
    }
}

/// `run` of a model whose weights this user cannot read is refused before Python starts,
/// naming the file (mlx said "Failed to open file").
#[test]
fn run_refuses_unreadable_weights_naming_them() {
    crate::require!(Root);
    let fx = Fx::new();
    let ws = fx.workspace("locked", &good_files());
    fs::set_permissions(
        ws.join("model.safetensors"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let mut c = mlxfs(&fx);
    c.args(["run", "locked", "hi", "--json"]);
    let o = unprivileged_cmd(&mut c).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(1), "{v}");
    assert_eq!(v["error"]["type"], "model_unhealthy", "{v}");
    assert_eq!(
        v["error"]["message"],
        "locked is unhealthy: model.safetensors cannot be read (Permission denied)"
    );
}

/// Folders one may list but not enter (mode 644: `r` without `x`) are listed with their reason
/// at every level: a workspace, a `models--org--name` folder, `snapshots/`, a snapshot, a
/// folder inside a model — never silently left out of `list --all`.
#[test]
fn folders_one_may_list_but_not_enter_are_listed_with_their_reason() {
    crate::require!(Root);
    let fx = Fx::new();
    let [ws, inner] = fx.good_workspaces(["closed-ws", "closed-inner"]);
    fs::create_dir_all(inner.join("extra")).unwrap();
    fs::write(inner.join("extra/notes.txt"), "x").unwrap();
    let repo = fx
        .hub_model("org/closed-repo", &good_files())
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let snaps = fx
        .hub_model("org/closed-snapshots", &good_files())
        .parent()
        .unwrap()
        .to_path_buf();
    let snap = fx.hub_model("org/closed-snapshot", &good_files());
    fx.workspace("open", &good_files());
    let closed: Vec<PathBuf> = vec![ws, inner.join("extra"), repo, snaps, snap];
    for d in &closed {
        fs::set_permissions(d, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let loc = fx.locations();
    let listed = unprivileged(move || mlxfs::catalog::record::list(&loc, None).models);
    let reason = |name: &str| {
        listed
            .iter()
            .find(|m| m.name == name || m.name.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} is not listed: {listed:#?}"))
            .reason
            .clone()
            .unwrap_or_else(|| "healthy".into())
    };
    assert_eq!(reason("open"), "healthy");
    assert_eq!(reason("closed-ws"), "cannot be entered (Permission denied)");
    // No loader reads in `extra/`: a warning (`a_folder_no_loader_reads_may_be_closed`).
    assert_eq!(reason("closed-inner"), "healthy");
    assert_eq!(
        reason("org/closed-repo"),
        "cannot be entered (Permission denied)"
    );
    assert_eq!(
        reason("org/closed-snapshots"),
        "snapshots/ cannot be entered (Permission denied)"
    );
    assert_eq!(
        reason("org/closed-snapshot"),
        "The model folder cannot be entered (Permission denied)"
    );
    for d in &closed {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A workspace home this user may not read is said to be unusable (`list` warns), never
/// searched as if it were empty.
#[test]
fn a_workspace_home_one_may_not_read_is_said_so() {
    crate::require!(Root);
    let fx = Fx::new();
    fx.workspace("inside", &good_files());
    fs::set_permissions(&fx.ws_home, fs::Permissions::from_mode(0o000)).unwrap();
    let vars = fx.vars();
    let loc = unprivileged(move || {
        mlxfs::catalog::Locations::from_vars(|k| {
            vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        })
    });
    fs::set_permissions(&fx.ws_home, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(loc.workspace_home, None);
    assert_eq!(
        loc.workspace_home_problem.map(|p| p.1).as_deref(),
        Some("cannot be read (Permission denied)")
    );
}

/// A folder no loader reads in may be one this user cannot enter (Meta's Llama repositories
/// ship `original/` with consolidated `.pth` weights no MLX loader opens, here mode 644): the
/// model is healthy and the record says so in a warning; and so are what lies in such a folder
/// — a link that leads nowhere, an LFS pointer left for a file no loader opens. Where a
/// loader does read (the template folder, a folder of shards the index names) the same
/// folder is the model's reason. Checked as a user (root enters anything).
#[test]
fn a_folder_no_loader_reads_may_be_closed() {
    crate::require!(Root);
    let tmp = tempfile::tempdir().unwrap();
    let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n";
    let as_user = |ws: &Path| {
        let w = ws.to_path_buf();
        unprivileged(move || {
            let r = describe(&ModelRef::workspace(w, "m".into())).record;
            (r.health.as_str().to_string(), r.reason, r.warnings)
        })
    };
    let closed = |d: &Path| fs::set_permissions(d, fs::Permissions::from_mode(0o644)).unwrap();

    let llama = tmp.path().join("llama");
    write_tree(&llama, &good_files());
    write_tree(
        &llama.join("original"),
        &files(&[("consolidated.00.pth", b"weights"), ("params.json", b"{}")]),
    );
    closed(&llama.join("original"));
    let (health, reason, warnings) = as_user(&llama);
    assert_eq!((health.as_str(), reason), ("healthy", None));
    assert!(
        warnings.contains(
            &"folders that cannot be read or entered (no loader reads in them): original".into()
        ),
        "{warnings:?}"
    );

    // What lies in a folder no loader reads: warnings too.
    let pulled = tmp.path().join("pulled");
    write_tree(&pulled, &good_files());
    write_tree(
        &pulled.join("original"),
        &files(&[("consolidated.00.pth", lfs), ("tokenizer.model", lfs)]),
    );
    std::os::unix::fs::symlink("../../blobs/gone", pulled.join("original/params.json")).unwrap();
    fs::write(pulled.join("original/consolidated.01.pth.partial"), b"half").unwrap();
    let (health, reason, warnings) = ws_reason(&pulled);
    assert_eq!((health.as_str(), reason), ("healthy", None));
    assert!(
        warnings.contains(
            &"LFS pointers instead of files (no loader opens them): \
              original/consolidated.00.pth, original/tokenizer.model"
                .into()
        ),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(
            &"links that lead nowhere (in folders no loader reads): original/params.json".into()
        ),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(
            &"partial download markers (in folders no loader reads): \
              original/consolidated.01.pth.partial"
                .into()
        ),
        "{warnings:?}"
    );

    // Where a loader reads, the same folder is the reason.
    let templates = tmp.path().join("templates");
    write_tree(&templates, &good_files());
    write_tree(
        &templates.join("additional_chat_templates"),
        &files(&[("tool_use.jinja", b"{{ messages }}")]),
    );
    closed(&templates.join("additional_chat_templates"));
    assert_eq!(
        as_user(&templates).1.as_deref(),
        Some("Unreadable folders: additional_chat_templates")
    );
    let sharded = tmp.path().join("sharded");
    let w = tiny_weights();
    write_tree(
        &sharded,
        &files(&[
            ("config.json", LLAMA_CONFIG.as_bytes()),
            ("model.safetensors", &w),
            (
                "model.safetensors.index.json",
                br#"{"weight_map": {"w": "weights/model-00001-of-00001.safetensors"}}"#,
            ),
            ("weights/model-00001-of-00001.safetensors", &w),
        ]),
    );
    closed(&sharded.join("weights"));
    assert_eq!(
        as_user(&sharded).1.as_deref(),
        Some("Unreadable folders: weights")
    );
    // An LFS pointer or a dangling link a loader would open stays a reason.
    let tok = tmp.path().join("tok");
    write_tree(&tok, &good_files());
    fs::write(tok.join("tokenizer.model"), lfs).unwrap();
    assert_eq!(
        ws_reason(&tok).1.as_deref(),
        Some("LFS pointers instead of files: tokenizer.model")
    );
    for d in [
        llama.join("original"),
        templates.join("additional_chat_templates"),
        sharded.join("weights"),
    ] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `run` of such a model, as a user who cannot enter `original/`, runs it (it refused:
/// "Unreadable folders: original", `--force` too).
#[test]
fn run_loads_a_model_whose_original_folder_is_closed() {
    crate::require!(Root, Python);
    let (fx, ws) = crate::support::python::with_tiny();
    write_tree(
        &ws.join("original"),
        &files(&[("consolidated.00.pth", b"weights")]),
    );
    fs::set_permissions(ws.join("original"), fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = crate::support::python::explain_fuse(&fx, "tiny");
    c.arg("--json");
    let o = unprivileged_cmd(&mut c).output().unwrap();
    fs::set_permissions(ws.join("original"), fs::Permissions::from_mode(0o755)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["data"]["generation_tokens"], 12, "{v}");
}

/// What mlxfs cannot read it does not state. A workspace whose folder cannot be looked at (its
/// home, an `MLXK_MODEL_PATH` entry, is mode 644: listed, not entered), one whose folder
/// cannot be entered, one whose `config.json` cannot be read, a hub repo without a snapshot:
/// `model_type` is `unknown` (a value of mlx-knife's JSON API) and `capabilities` empty,
/// never mlx-knife's defaults for a model without hints (`base`, `["text-generation"]`); a
/// time that cannot be read is mlx-knife's own value for it (the epoch: the field is never
/// null in its format), and the human forms print `-` for it and for a size not measured.
#[test]
fn what_cannot_be_read_is_not_stated() {
    crate::require!(Root);
    let fx = Fx::new();
    let home = fx.tmp.path().join("mp");
    write_tree(&home.join("x"), &good_files());
    fs::set_permissions(&home, fs::Permissions::from_mode(0o644)).unwrap();
    let closed = fx.workspace("closed", &good_files());
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o644)).unwrap();
    let locked = fx.workspace("locked-config", &good_files());
    fs::set_permissions(
        locked.join("config.json"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let snap = fx.hub_model("org/gone", &good_files());
    fs::remove_dir_all(snap.parent().unwrap()).unwrap();
    fx.workspace("open", &good_files());

    let mut vars = fx.vars();
    vars.push(("MLXK_MODEL_PATH", home.to_string_lossy().into_owned()));
    let env = vars.clone();
    let listed = unprivileged(move || {
        let loc = mlxfs::catalog::Locations::from_vars(|k| {
            env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        });
        mlxfs::catalog::record::list(&loc, None).models
    });
    let rec = |name: &str| {
        let r = listed
            .iter()
            .find(|m| m.display_name.as_deref() == Some(name) || m.name == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {listed:#?}"));
        let v = serde_json::to_value(r).unwrap();
        (
            v["last_modified"].as_str().unwrap().to_string(),
            v["model_type"].clone(),
            v["capabilities"].clone(),
            v["framework"].clone(),
            v["context_length"].clone(),
        )
    };
    let unknown = |time: &str| {
        (
            time.to_string(),
            serde_json::json!("unknown"),
            serde_json::json!([]),
            serde_json::json!("Unknown"),
            serde_json::Value::Null,
        )
    };
    assert_eq!(rec("x"), unknown("1970-01-01T00:00:00Z"));
    let t = rec("closed").0;
    assert_ne!(t, "1970-01-01T00:00:00Z", "the folder's own time is known");
    assert_eq!(rec("closed"), unknown(&t));
    // The files are there (framework by its weights); the config cannot be read.
    let r = rec("locked-config");
    assert_eq!(
        (r.1, r.2),
        (serde_json::json!("unknown"), serde_json::json!([]))
    );
    let r = rec("org/gone");
    assert_eq!(
        (r.1, r.2),
        (serde_json::json!("unknown"), serde_json::json!([]))
    );
    // A model that can be read keeps mlx-knife's detection.
    assert_eq!(rec("open").1, serde_json::json!("chat"));

    // `show` and `list` as that user: nothing made up.
    let human = |args: &[&str]| {
        let mut c = with_vars(&vars);
        c.args(args);
        let o = unprivileged_cmd(&mut c).output().unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let shown = human(&["show", "x"]);
    for line in ["Type: unknown", "Capabilities: -", "Size: -", "Modified: -"] {
        assert!(shown.lines().any(|l| l == line), "{line}:\n{shown}");
    }
    let table = human(&["list", "x", "--all"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("x "))
        .unwrap_or_else(|| panic!("{table}"))
        .split('|')
        .map(str::trim)
        .collect();
    // Name | Hash | Size | Modified | Src | Clean | Framework | Type
    assert_eq!((row[3], row[7]), ("-", "unknown"), "{table}");

    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();
}
