//! The arrows of docs/ARCHITECTURE.md, checked on the source: which top-level module may
//! import which, and no import cycle between the files of a module.
//!
//! The core (`catalog`, `hash`) never imports an adapter (`cli`, `fuse`, `vfs`, `runtime`,
//! `hub`) or the adapters' wording (`hints`); the leaf modules import only each other.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const LEAF: &[&str] = &[
    "text",
    "sys",
    "env",
    "error",
    "mountprobe",
    "osjunk",
    "timefmt",
    "jsonfmt",
    "envelope",
    "state",
    "media",
    "par",
    "staging",
];

/// What each module may import besides itself and the leaf modules.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    Some(match module {
        m if LEAF.contains(&m) => &[],
        "hash" => &[],
        "catalog" => &["hash"],
        "hints" => &["hash"],
        "vfs" => &["catalog", "hash", "hints"],
        "fuse" => &["vfs", "catalog", "hash", "hints"],
        "runtime" => &[],
        "hub" => &["catalog", "hash"],
        "archive" => &["catalog", "hash"],
        "convert" => &["catalog", "hash"],
        "serve" => &["catalog", "hash", "runtime"],
        "cli" => &[
            "catalog", "hash", "hints", "vfs", "fuse", "runtime", "hub", "serve", "archive",
            "convert",
        ],
        _ => return None,
    })
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of a file without comments (line comments and doc comments).
fn code(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::<name>` paths used in `text`, including `use crate::{a, b::c}` groups.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // `crate::note!(…)`: an exported macro, not a module.
            if !rest[name.len()..].starts_with('!') {
                out.insert(name);
            }
        }
    }
    out
}

/// The top-level module a source file belongs to (`src/catalog/health.rs` → `catalog`).
fn module_of(p: &Path) -> String {
    let rel = p.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn layers_import_only_what_the_architecture_allows() {
    let mut files = Vec::new();
    crate::support::rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let m = module_of(f);
        if m == "lib" || m == "main" {
            continue;
        }
        let ok = allowed(&m).unwrap_or_else(|| {
            panic!("module {m} is not in tests/it/arch.rs: say where it sits in the layers")
        });
        for r in crate_refs(&code(f)) {
            if r != m && !LEAF.contains(&r.as_str()) && !ok.contains(&r.as_str()) {
                wrong.push(format!("{} uses crate::{r}", f.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the arrows:\n{}",
        wrong.join("\n")
    );
}

/// Sibling files one file of a module folder refers to (`super::x`, `crate::<module>::x`).
fn sibling_refs(f: &Path, siblings: &BTreeSet<String>, module_path: &str) -> BTreeSet<String> {
    let text = code(f);
    let mut out = BTreeSet::new();
    for prefix in ["super::".to_string(), format!("crate::{module_path}::")] {
        let mut rest = text.as_str();
        while let Some(i) = rest.find(&prefix) {
            rest = &rest[i + prefix.len()..];
            let names: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect()
                    })
                    .collect()
            } else {
                vec![
                    rest.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect(),
                ]
            };
            out.extend(names.into_iter().filter(|n| siblings.contains(n)));
        }
    }
    out
}

#[test]
fn no_import_cycles_between_the_files_of_a_module() {
    // Every folder of src/ (mod.rs, the module's own items, is left out: children use it).
    let mut dirs = vec![src()];
    let mut cycles = Vec::new();
    while let Some(dir) = dirs.pop() {
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p.clone());
                if p.join("mod.rs").exists() {
                    files.insert(
                        e.file_name().to_string_lossy().into_owned(),
                        p.join("mod.rs"),
                    );
                }
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "mod.rs")
            {
                files.insert(
                    p.file_stem().unwrap().to_string_lossy().into_owned(),
                    p.clone(),
                );
            }
        }
        if dir == src() {
            continue; // the crate root: the layer test covers it
        }
        let module_path = dir
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .replace('/', "::");
        let names: BTreeSet<String> = files.keys().cloned().collect();
        let graph: BTreeMap<String, BTreeSet<String>> = files
            .iter()
            .filter(|(_, p)| p.file_name().is_some_and(|n| n != "mod.rs"))
            .map(|(n, p)| {
                let mut r = sibling_refs(p, &names, &module_path);
                r.remove(n);
                (n.clone(), r)
            })
            .collect();
        // Depth-first search for a back edge.
        fn visit(
            n: &str,
            g: &BTreeMap<String, BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
            found: &mut Vec<String>,
        ) {
            if let Some(i) = stack.iter().position(|s| s == n) {
                found.push(stack[i..].join(" -> ") + " -> " + n);
                return;
            }
            if !done.insert(n.to_string()) {
                return;
            }
            stack.push(n.to_string());
            for m in g.get(n).into_iter().flatten() {
                visit(m, g, stack, done, found);
            }
            stack.pop();
        }
        let mut done = BTreeSet::new();
        for n in graph.keys() {
            visit(n, &graph, &mut Vec::new(), &mut done, &mut cycles);
        }
        for c in &mut cycles {
            if !c.contains("::") {
                *c = format!("{module_path}: {c}");
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checks_see_what_they_check() {
    // The parser finds the imports it must judge (a check that sees nothing passes anything).
    let refs =
        crate_refs("use crate::{hash::sentinel, text::one_line};\nlet x = crate::vfs::Tree;");
    assert_eq!(
        refs,
        ["hash", "text", "vfs"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let catalog = src().join("catalog/record.rs");
    assert!(crate_refs(&code(&catalog)).contains("hash"));
    let siblings: BTreeSet<String> = ["detect", "health", "config"]
        .map(String::from)
        .into_iter()
        .collect();
    assert!(
        sibling_refs(&src().join("catalog/health.rs"), &siblings, "catalog").contains("detect")
    );
}
