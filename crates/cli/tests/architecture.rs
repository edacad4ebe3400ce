//! The map of the code stays true: the dependency diagram of docs/architecture.md lists exactly
//! each crate's direct workspace dependencies (`cargo metadata`), and every crate's root module
//! (lib.rs, or main.rs for the binary) names each of its modules in its opening module map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Crate directory name for a package name: `aviary-core` → `core`, `aviary` → `cli`.
fn short(package: &str) -> String {
    match package.strip_prefix("aviary-") {
        Some(s) => s.to_string(),
        None => "cli".to_string(),
    }
}

/// Each workspace crate and its direct normal dependencies on workspace crates.
fn metadata() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let packages = m["packages"].as_array().expect("packages");
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(d))
                .map(short)
                .collect();
            (short(p["name"].as_str().unwrap_or_default()), deps)
        })
        .collect()
}

/// The diagram: the code block after "Crates and dependency direction" that uses arrows;
/// `a, b → c, d (why)` lines, `(none)` for no dependency.
fn diagram() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("docs/architecture.md")).expect("architecture.md");
    let section = text
        .split("## Crates and dependency direction")
        .nth(1)
        .expect("a 'Crates and dependency direction' section");
    let block = section
        .split("```")
        .skip(1)
        .step_by(2)
        .find(|b| b.contains('→'))
        .expect("a code block with the dependency arrows");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in block.lines().filter(|l| l.contains('→')) {
        let (from, to) = line.split_once('→').expect("an arrow");
        let to = to.split(" (").next().unwrap_or_default();
        let to: BTreeSet<String> = to
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s != "none")
            .collect();
        for f in from.split(',').map(str::trim) {
            let previous = edges.insert(f.to_string(), to.clone());
            assert!(previous.is_none(), "{f} has two lines in the diagram");
        }
    }
    edges
}

#[test]
fn the_dependency_diagram_is_cargo_metadata() {
    let actual = metadata();
    let drawn = diagram();
    for (krate, deps) in &actual {
        let shown = drawn.get(krate);
        assert_eq!(
            shown,
            Some(deps),
            "docs/architecture.md: `{krate} → …` must list its workspace dependencies {deps:?} (cargo metadata)"
        );
    }
    let unknown: Vec<&String> = drawn.keys().filter(|k| !actual.contains_key(*k)).collect();
    assert!(
        unknown.is_empty(),
        "docs/architecture.md names crates that do not exist: {unknown:?}"
    );
}

/// `mod name;` declarations of a root module.
fn modules(source: &str) -> Vec<String> {
    source
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_string)
        })
        .collect()
}

#[test]
fn every_crate_root_maps_its_modules() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .flatten()
    {
        let src = entry.path().join("src");
        let Some(file) = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| src.join(f))
            .find(|f| f.is_file())
        else {
            continue;
        };
        let source = std::fs::read_to_string(&file).expect("readable");
        let map: String = source
            .lines()
            .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !map.is_empty(),
            "{} does not open with a module map",
            file.display()
        );
        for m in modules(&source) {
            if !map.contains(&format!("`{m}`")) {
                missing.push(format!("{}: module `{m}`", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the module map:\n{}",
        missing.join("\n")
    );
}
