//! The house has no circles (issue 7): the top-level modules under `src/` import each
//! other in one direction only, as drawn in ARCHITECTURE.md ("Which module may use which").
//!
//! A module is a top-level file or folder under `src/` (`src/config.rs` with `src/config/`
//! is `config`). Module `a` uses module `b` when any of `a`'s files names `crate::b`
//! (in code, `use` lists or doc links alike: a doc link is a dependency a reader follows).
//! `main.rs` and `lib.rs` are not modules; `app` is the composition root, which may use
//! anything and which nothing else may use.
//!
//! Reads the source text only, so it runs in milliseconds and needs no build of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges allowed to close a circle. Keep it empty: a circle means one of the two modules
/// owns something that belongs below both (see ARCHITECTURE.md for where things went).
const ALLOWED_CYCLE_EDGES: &[(&str, &str)] = &[];

/// The composition root: wires everything together, so nothing may import it.
const ROOT: &str = "app";

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `path` (the file itself when it is one).
fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .expect("readable src dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules: names of `src/*.rs` and `src/*/`, without `main` and `lib`.
fn modules() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .expect("src/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .filter(|m| m != "main" && m != "lib")
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules `text` names through `crate::`: `crate::a::..` and every
/// first segment of a `crate::{a::.., b, c::{..}}` list.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(is_ident) {
            continue; // e.g. `my_crate::`
        }
        if let Some(list) = after.strip_prefix('{') {
            // Top-level items of the list: the identifier after `{` or after a `,` at depth 1.
            let mut depth = 1;
            let mut expect_item = true;
            let mut chars = list.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => expect_item = true,
                    c if expect_item && depth == 1 && is_ident(c) => {
                        let name: String = list[i..].chars().take_while(|c| is_ident(*c)).collect();
                        for _ in 1..name.len() {
                            chars.next();
                        }
                        if name != "self" {
                            found.insert(name);
                        }
                        expect_item = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = after.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Module -> the other top-level modules it names.
fn graph() -> Graph {
    let modules = modules();
    let mut graph = Graph::new();
    for module in &modules {
        let mut files = Vec::new();
        rust_files(&src().join(module), &mut files);
        rust_files(&src().join(format!("{module}.rs")), &mut files);
        let uses = graph.entry(module.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for name in crate_references(&text) {
                if &name != module && modules.contains(&name) {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// One circle through `from`, as `a -> b -> .. -> a`, if there is one.
fn circle_from(graph: &Graph, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        node: &str,
        target: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if ALLOWED_CYCLE_EDGES.contains(&(node, next.as_str())) {
                continue;
            }
            path.push(next.clone());
            if next == target {
                return true;
            }
            if seen.insert(next.clone()) && walk(graph, next, target, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

fn describe(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, uses)| {
            let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
            format!("  {m} -> {}", uses.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn top_level_modules_import_each_other_in_one_direction() {
    let graph = graph();
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle_from(&graph, m))
        .map(|path| path.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "circles between top-level modules (move what both need below both):\n{}\n\ngraph:\n{}",
        circles.join("\n"),
        describe(&graph)
    );
}

#[test]
fn only_the_composition_root_is_imported_by_nobody() {
    let graph = graph();
    let importers: Vec<&str> = graph
        .iter()
        .filter(|(m, uses)| m.as_str() != ROOT && uses.contains(ROOT))
        .map(|(m, _)| m.as_str())
        .collect();
    assert!(
        importers.is_empty(),
        "`{ROOT}` wires everything together; only main.rs, lib.rs and tests may use it, \
         but these do: {importers:?}"
    );
}

#[test]
fn domain_imports_nothing_of_ours_and_store_only_domain() {
    let graph = graph();
    let domain = &graph["domain"];
    assert!(domain.is_empty(), "domain is pure and imports {domain:?}");
    let store: Vec<&String> = graph["store"].iter().filter(|m| *m != "domain").collect();
    assert!(
        store.is_empty(),
        "store may only import domain, but imports {store:?}"
    );
}

#[test]
fn references_are_read_from_paths_and_use_lists() {
    let text = "use crate::{config::{A, B}, domain, self};\nlet x = crate::engine::Engine::new();\n\
                /// See [`X`](crate::store::X). my_crate::nope";
    let found: Vec<String> = crate_references(text).into_iter().collect();
    assert_eq!(found, ["config", "domain", "engine", "store"]);
}

#[test]
fn a_circle_is_found() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        circle_from(&graph, "a").map(|p| p.join(" -> ")),
        Some("a -> b -> c -> a".into())
    );
    graph.get_mut("c").unwrap().clear();
    assert_eq!(circle_from(&graph, "a"), None);
}
