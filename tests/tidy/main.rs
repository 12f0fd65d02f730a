//! Architecture invariants of docs/ARCHITECTURE.md, checked over the source tree (in the
//! spirit of rust-analyzer's tidy tests): the layers, who may depend on `ring`, who may see
//! sealed bytes, and that no type holding a `Secret` can be serialized.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Every package of the workspace (its directory name) with the names of its normal
/// (not dev-) dependencies, read from its Cargo.toml.
fn packages() -> BTreeMap<String, (PathBuf, Vec<String>)> {
    let mut out = BTreeMap::new();
    for group in ["crates", "bins"] {
        for entry in fs::read_dir(root().join(group)).unwrap() {
            let dir = entry.unwrap().path();
            let manifest = dir.join("Cargo.toml");
            let Ok(text) = fs::read_to_string(&manifest) else {
                continue;
            };
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, (dir, normal_dependencies(&text)));
        }
    }
    out
}

/// The keys of the `[dependencies]` table (and `[target.*.dependencies]`), in any of the
/// forms `name = ...`, `name.workspace = true`.
fn normal_dependencies(manifest: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let section = line.trim_matches(|c| c == '[' || c == ']');
            in_deps = section == "dependencies"
                || (section.starts_with("target.") && section.ends_with(".dependencies"));
            continue;
        }
        if !in_deps || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            let name = key.strip_suffix(".workspace").unwrap_or(key).trim();
            deps.push(name.trim_matches('"').to_owned());
        }
    }
    deps
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_broked_crypto_depends_on_ring() {
    for (name, (_, deps)) in packages() {
        if deps.iter().any(|d| d == "ring") {
            assert_eq!(name, "broked-crypto", "{name} depends on ring directly");
        }
    }
}

/// Test-only cargo features (`test-hooks`: the rotation fault hook, docs/rotation.md;
/// `test-kit`: the probes' test helpers) are enabled only from `[dev-dependencies]`, so that
/// no binary built for use reads a test hook.
#[test]
fn test_features_only_in_dev_dependencies() {
    let mut manifests = vec![root().join("Cargo.toml"), root().join("tests/Cargo.toml")];
    manifests.extend(
        packages()
            .into_values()
            .map(|(dir, _)| dir.join("Cargo.toml")),
    );
    let mut checked = 0;
    for manifest in manifests {
        let text = fs::read_to_string(&manifest).unwrap();
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            for feature in ["\"test-hooks\"", "\"test-kit\""] {
                // A feature's own definition (`test-hooks = []`) is not enabling it.
                if line.contains(feature) && section != "features" {
                    checked += 1;
                    assert!(
                        section == "dev-dependencies" || section.ends_with(".dev-dependencies"),
                        "{}: {feature} is enabled in [{section}]; enable test features only \
                         in [dev-dependencies]",
                        manifest.display()
                    );
                }
            }
        }
    }
    assert!(
        checked > 0,
        "no manifest enables a test feature: is this test stale?"
    );
}

#[test]
fn lower_layers_never_depend_on_higher_ones() {
    // What each layer may depend on among the workspace's own crates (docs/ARCHITECTURE.md).
    let allowed = |name: &str| -> Option<&[&str]> {
        Some(match name {
            "broked-core" => &[],
            "broked-crypto" => &["broked-core"],
            // The store never sees plaintext and does not know how values are sealed.
            "broked-store" => &["broked-core"],
            "broked-probe" => &["broked-core"],
            n if n.starts_with("broked-probe-") => &["broked-core", "broked-probe"],
            "broked-testenv" => &[],
            "broked-tunnel" => &["broked-core", "broked-probe"],
            "broked-connections" => &[
                "broked-core",
                "broked-crypto",
                "broked-store",
                "broked-probe",
                "broked-probe-postgres",
                "broked-probe-mysql",
                "broked-probe-sqlite",
                "broked-probe-http",
                "broked-probe-sftp",
                "broked-probe-s3",
                "broked-probe-tcp",
                "broked-tunnel",
            ],
            // The binaries are thin over the library: never the store or crypto directly.
            "broked-server" | "broked" => &["broked-connections", "broked-core"],
            _ => return None,
        })
    };
    let packages = packages();
    for (name, (_, deps)) in &packages {
        let Some(allowed) = allowed(name) else {
            panic!("{name}: add it to the layer table of this test and docs/ARCHITECTURE.md");
        };
        for dep in deps.iter().filter(|d| packages.contains_key(*d)) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{name} must not depend on {dep} (docs/ARCHITECTURE.md, Layers)"
            );
        }
    }
}

#[test]
fn the_binaries_never_name_the_store_or_crypto() {
    assert!(
        names_path("use ring::aead;", "ring") && names_path("x = broked_store::A", "broked_store")
    );
    assert!(
        !names_path("String::new()", "ring") && !names_path("my_broked_store::x", "broked_store")
    );
    for bin in ["broked", "broked-server"] {
        let mut files = Vec::new();
        rust_files(&root().join("bins").join(bin), &mut files);
        assert!(!files.is_empty());
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for forbidden in ["broked_store", "broked_crypto", "rusqlite", "ring"] {
                assert!(
                    !names_path(&text, forbidden),
                    "{} names {forbidden}",
                    f.display()
                );
            }
        }
    }
}

/// Whether `text` names the crate `krate` as a path (`krate::`, `use krate`), not as part of
/// another identifier (`String::` is not `ring::`).
fn names_path(text: &str, krate: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(krate).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = &text[i + krate.len()..];
        !before.is_some_and(ident) && (after.starts_with("::") || after.starts_with(';'))
    })
}

/// `#[derive(...Serialize...)]` on a struct or enum whose body mentions `Secret`.
fn serializable_secret_holders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[derive(") {
        let after = &rest[i..];
        let end = after.find(")]").unwrap_or(after.len());
        let derive = &after[..end];
        rest = &after[end.min(after.len())..];
        if !derive.contains("Serialize") {
            continue;
        }
        // The item the derive belongs to: up to its closing brace (or `;` for a tuple/unit).
        let Some(open) = rest.find(['{', ';']) else {
            continue;
        };
        let header = rest[..open].trim();
        if rest.as_bytes()[open] == b';' {
            if header.contains("Secret") {
                found.push(header.to_owned());
            }
            continue;
        }
        let mut depth = 0;
        let mut close = open;
        for (j, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = &rest[open..close];
        if header.contains("Secret") || body.contains("Secret") {
            found.push(header.lines().last().unwrap_or(header).trim().to_owned());
        }
    }
    found
}

#[test]
fn no_serializable_type_holds_a_secret() {
    // The checker itself: it must find what it looks for.
    assert_eq!(
        serializable_secret_holders(
            "#[derive(Debug, serde::Serialize)]\npub struct Leaky {\n    pw: Secret,\n}\n\
             #[derive(Serialize)]\nstruct Fine { n: u32 }\n"
        ),
        ["pub struct Leaky"]
    );
    let mut files = Vec::new();
    for dir in ["crates", "bins"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut offenders = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for item in serializable_secret_holders(&text) {
            offenders.push(format!("{}: {item}", f.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "a Serialize type holds a Secret: {offenders:#?}"
    );
}

/// The top-level modules of a crate's `src` and, for each, the other top-level modules its
/// files name with `crate::` (the crate root, which re-exports, is not a node).
fn module_graph(src: &Path) -> BTreeMap<String, Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = fs::read_to_string(f).unwrap();
        let entry = graph.entry(top.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() && name != top && !entry.contains(&name) {
                entry.push(name);
            }
        }
    }
    let modules: Vec<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, Vec<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.iter().any(|d| d == node) {
            return None;
        }
        path.push(node.to_owned());
        for next in &graph[node] {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.push(node.to_owned());
        None
    }
    let mut done = Vec::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn no_two_files_of_a_crate_import_each_other_in_a_circle() {
    // The checker itself.
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), vec!["b".to_owned()]);
    g.insert("b".to_owned(), vec!["a".to_owned()]);
    assert!(find_cycle(&g).is_some());
    g.insert("b".to_owned(), vec![]);
    assert!(find_cycle(&g).is_none());
    for (name, (dir, _)) in packages() {
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = module_graph(&src);
        assert_eq!(
            find_cycle(&graph),
            None,
            "{name}: files import each other in a circle"
        );
    }
}
