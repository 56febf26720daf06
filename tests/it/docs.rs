//! The public contracts written in docs/ match the code: every `error.type` mlxfs can emit is
//! in docs/ERRORS.md (and nothing else is), and every environment variable it reads is in
//! docs/ENVIRONMENT.md and read only through `src/env.rs`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use mlxfs::error::ErrorType;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first backticked cell of each row of the first table in a markdown file.
fn first_column(p: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(p).unwrap();
    text.lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cell = l.split('|').nth(1)?.trim();
            cell.strip_prefix('`')?
                .strip_suffix('`')
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn every_error_type_is_documented_and_nothing_else() {
    let documented = first_column(&root().join("docs/ERRORS.md"));
    let code: BTreeSet<String> = ErrorType::ALL
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    assert_eq!(ErrorType::ALL.len(), code.len(), "two kinds share a string");
    let undocumented: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/ERRORS.md lacks {undocumented:?}; documents types the code never emits: {stale:?}"
    );
    for t in ErrorType::ALL {
        assert_eq!(ErrorType::parse(t.as_str()), Some(*t));
    }
}

#[test]
fn the_python_side_names_only_documented_types() {
    // The scripts report their errors by name: {"event": "error", ..., "type": ...} (on one
    // line: worker.py's tool calls and message parts have a "type" too), convert.py also
    // through `fail("type", ...)`, the refusals through `MediaError("type", ...)` and
    // `super().__init__("type", ...)`, generate.py through `_media_error("type", ...)`.
    for file in [
        "generate.py",
        "convert.py",
        "worker.py",
        "mlxfs_common.py",
        "mlxfs_audio.py",
    ] {
        let py = fs::read_to_string(root().join("src/runtime").join(file)).unwrap();
        let mut names = Vec::new();
        for line in py.lines() {
            for marker in [
                "\"type\": \"",
                "fail(\"",
                "MediaError(\"",
                "super().__init__(\"",
                "_media_error(\"",
            ] {
                if marker.starts_with("\"type") && !line.contains("\"event\": \"error\"") {
                    continue;
                }
                let mut rest = line;
                while let Some(i) = rest.find(marker) {
                    rest = &rest[i + marker.len()..];
                    names.push(rest.split('"').next().unwrap().to_string());
                }
            }
        }
        assert!(!names.is_empty(), "{file} names no error type?");
        for n in names {
            assert!(
                ErrorType::parse(&n).is_some(),
                "{file} emits `{n}`, which src/error.rs and docs/ERRORS.md lack"
            );
        }
    }
}

#[test]
fn every_environment_variable_is_documented_and_read_in_one_place() {
    let documented = first_column(&root().join("docs/ENVIRONMENT.md"));
    let read: BTreeSet<String> = mlxfs::env::READ.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        documented, read,
        "docs/ENVIRONMENT.md and src/env.rs `READ` must list the same variables"
    );
    // Outside env.rs nothing reads the environment by itself.
    let mut files = Vec::new();
    crate::support::rust_files(&root().join("src"), &mut files);
    let mut wrong = Vec::new();
    for f in files {
        if f.ends_with("src/env.rs") {
            continue;
        }
        for (i, l) in fs::read_to_string(&f).unwrap().lines().enumerate() {
            let code = l.split("//").next().unwrap_or("");
            if code.contains("std::env::var") || code.contains("env::var(\"") {
                wrong.push(format!("{}:{}: {}", f.display(), i + 1, l.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "read the environment through src/env.rs:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_variable_run_sets_is_documented() {
    // The "Set by mlxfs" section names every variable `run` sets for Python.
    let text = fs::read_to_string(root().join("docs/ENVIRONMENT.md")).unwrap();
    let section = text
        .split("## Set by mlxfs")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/ENVIRONMENT.md has a `## Set by mlxfs` section");
    let named: BTreeSet<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.contains('_')
                && w.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_string)
        .collect();
    let set: BTreeSet<String> = mlxfs::env::SET_FOR_PYTHON
        .iter()
        .map(|s| s.to_string())
        .collect();
    let missing: Vec<_> = set.difference(&named).collect();
    assert!(missing.is_empty(), "docs/ENVIRONMENT.md lacks {missing:?}");
    // Other names there may only be variables mlxfs reads (`HF_TOKEN`: left alone).
    let read: BTreeSet<String> = mlxfs::env::READ.iter().map(|s| s.to_string()).collect();
    let stray: Vec<_> = named
        .difference(&set)
        .filter(|n| !read.contains(*n))
        .collect();
    assert!(
        stray.is_empty(),
        "docs/ENVIRONMENT.md names {stray:?}, which run never sets"
    );
    for (var, _) in mlxfs::env::ISOLATED_CACHE {
        assert!(
            set.contains(*var),
            "{var} is isolated but not in SET_FOR_PYTHON"
        );
    }
}

/// Every file docs/ARCHITECTURE.md's change map ("Where to change what") sends a reader to
/// exists: a path ending in `.rs` or `.py` is looked up under `src/` (or from the repository's
/// root when it starts with `tests/` or `scripts/`), a `name.rs` without a folder under `src/`.
#[test]
fn the_change_map_names_files_that_exist() {
    let text = fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let start = text
        .find("## Where to change what")
        .expect("the change map");
    let map = &text[start..];
    let map = &map[..map[3..].find("\n## ").map_or(map.len(), |i| i + 3)];
    let mut named = 0;
    for cell in map.split('`').skip(1).step_by(2) {
        let path = cell.split_whitespace().next().unwrap_or("");
        if !(path.ends_with(".rs") || path.ends_with(".py")) {
            continue;
        }
        let file = if path.starts_with("tests/") || path.starts_with("scripts/") {
            root().join(path)
        } else {
            root().join("src").join(path)
        };
        assert!(
            file.is_file(),
            "the change map names {path}, which is not there"
        );
        named += 1;
    }
    assert!(named >= 20, "only {named} files named");
}

/// docs/ERRORS.md's table of the generation routes' fields agrees with `serve::request::FIELDS`:
/// every field is named in its kind's row (honoured, no-op, refused), in the column of each
/// route that takes it (chat, completions; the completions column may say "the same sampling
/// fields" for those both routes honour).
#[test]
fn the_field_table_is_the_field_list() {
    use mlxfs::serve::request::{FIELDS, Field, Kind};
    let text = fs::read_to_string(root().join("docs/ERRORS.md")).unwrap();
    let start = text
        .find("### The fields of `/v1/chat/completions`")
        .expect("the field table");
    let cells = |row: &str| -> [BTreeSet<String>; 2] {
        let line = text[start..]
            .lines()
            .find(|l| l.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("no {row} row"));
        let cols: Vec<&str> = line.split(" | ").collect();
        [1, 2].map(|i| {
            cols[i]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        })
    };
    let sampling_too = text[start..]
        .lines()
        .any(|l| l.starts_with("| honoured |") && l.contains("the same sampling fields"));
    for (name, kinds, field) in FIELDS {
        let row = match field {
            Field::Honoured => "honoured",
            Field::NoOp { .. } => "no-op",
            Field::Refused { .. } => "refused",
        };
        let [chat, completions] = cells(row);
        for kind in *kinds {
            let (col, named) = match kind {
                Kind::Chat => ("chat", chat.contains(*name)),
                Kind::Completion => (
                    "completions",
                    completions.contains(*name)
                        || (sampling_too
                            && matches!(field, Field::Honoured)
                            && kinds.contains(&Kind::Chat)
                            && chat.contains(*name)),
                ),
            };
            assert!(
                named,
                "docs/ERRORS.md: `{name}` is missing from the {row} row, {col} column"
            );
        }
    }
}
