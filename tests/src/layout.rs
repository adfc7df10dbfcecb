//! The layout of a crate's modules: which of them use which, and whether
//! they use each other in a circle.
//!
//! A module is a file or folder directly under the crate's `src/` (the
//! crate roots `lib.rs` and `main.rs`, and `bin/`, stand above every module
//! and are left out). Module `a` uses module `b` when `crate::b` appears in
//! code of `a` (a `use`, or a path in an expression), comments left out.
//! Run `cargo test -p anycast-tests --lib layout` to check every crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module of the crate whose sources are in `src` with the modules it
/// uses.
pub fn uses(src: &Path) -> std::io::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(src)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let module = name.strip_suffix(".rs").unwrap_or(name).to_owned();
        if ["lib", "main", "bin"].contains(&module.as_str()) {
            continue;
        }
        let code = modules.entry(module).or_default();
        for file in rust_files(&path)? {
            for line in std::fs::read_to_string(file)?.lines() {
                let line = line.trim_start();
                if !line.starts_with("//") {
                    code.push_str(line);
                    code.push('\n');
                }
            }
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    Ok(modules
        .iter()
        .map(|(module, code)| {
            let used = code
                .split("crate::")
                .skip(1)
                .map(|rest| {
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
                .filter(|other| other != module && names.contains(other))
                .collect();
            (module.clone(), used)
        })
        .collect())
}

/// The `.rs` files at `path`: itself if it is one, else every one under it.
fn rust_files(path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path)? {
            files.extend(rust_files(&entry?.path())?);
        }
        Ok(files)
    } else if path.extension().is_some_and(|e| e == "rs") {
        Ok(vec![path.to_path_buf()])
    } else {
        Ok(Vec::new())
    }
}

/// A circle of modules that use each other (`a -> b -> ... -> a`), if
/// there is one.
pub fn circle(uses: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    /// Depth first from `module`, `path` the modules on the way to it.
    fn visit<'a>(
        module: &'a str,
        uses: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| *m == module) {
            let mut circle: Vec<String> = path[start..].iter().map(|m| (*m).to_owned()).collect();
            circle.push(module.to_owned());
            return Some(circle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for other in uses.get(module).into_iter().flatten() {
            if let Some(circle) = visit(other, uses, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    uses.keys()
        .find_map(|module| visit(module, uses, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
            g.entry((*b).to_owned()).or_default();
        }
        g
    }

    #[test]
    fn a_circle_is_found_and_a_tree_has_none() {
        assert_eq!(circle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
        assert_eq!(
            circle(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }

    /// The resolver's and the agent's modules use each other in no circle:
    /// each module can be read, tested and moved with what it uses alone.
    #[test]
    fn no_crate_has_modules_that_use_each_other_in_a_circle() {
        let root = crate::harness::workspace_root();
        for krate in [
            "selection",
            "resolver",
            "push-agent",
            "proto",
            "lookup",
            "lab",
            "daemon",
        ] {
            let uses = uses(&root.join(krate).join("src")).unwrap();
            assert!(uses.len() > 1 || krate == "daemon", "{krate}: {uses:?}");
            assert_eq!(
                circle(&uses),
                None,
                "{krate}'s modules use each other in a circle"
            );
        }
    }

    /// The selection core stays pure: no async runtime, no DNS, no HTTP in
    /// what it depends on.
    #[test]
    fn the_selection_core_depends_on_no_runtime_dns_or_http() {
        let manifest = crate::harness::workspace_root().join("selection/Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let manifest: toml::Table = toml::from_str(&text).unwrap();
        let dependencies = manifest["dependencies"].as_table().unwrap();
        for crate_name in dependencies.keys() {
            assert!(
                [
                    "anycast-proto",
                    "foldhash",
                    "rand",
                    "serde",
                    "smallvec",
                    "thiserror",
                ]
                .contains(&crate_name.as_str()),
                "selection/Cargo.toml depends on {crate_name}"
            );
        }
    }
}
