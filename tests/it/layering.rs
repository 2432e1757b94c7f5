//! The layering the README describes, checked: a module may use only
//! modules of its own layer or below, and no two modules of one layer use
//! each other in a cycle. A new top-level module fails this test until it
//! is given a layer in [`LAYERS`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top; see the README's "Layout".
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &[
            "pg",
            "store",
            "http",
            "k8s",
            "progress",
            "failpoint",
            "scratch",
            "time",
            "serde_duration",
        ],
    ),
    ("data and checks", &["fixtures", "integrity", "wal", "playbook"]),
    (
        "operations",
        &[
            "backup",
            "basebackup",
            "restore",
            "table_restore",
            "pitr",
            "reindex",
            "sessions",
            "failover",
            "canary",
            "workload",
            "check",
            "expire",
        ],
    ),
    ("environments", &["env"]),
    ("harness", &["drill", "fault"]),
    ("reports", &["checklist", "report"]),
    ("drills", &["drills"]),
    ("front", &["cli"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// Top-level module of a file under src/: `src/pg/cluster.rs` -> `pg`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `code` names as `crate::<module>` (outside
/// comments), groups included (`crate::{pg::{A, B}, store}` across lines);
/// `super::<module>` too in a file directly under src/.
fn used_modules(code: &str, top_level_file: bool) -> BTreeSet<String> {
    let code: String = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut prefixes = vec!["crate::"];
    if top_level_file {
        prefixes.push("super::");
    }
    let mut used = BTreeSet::new();
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            let Some(group) = rest.strip_prefix('{') else {
                used.insert(ident(rest));
                continue;
            };
            // Each item of the group at depth 1 starts with a module name.
            let mut depth = 1;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                if item_start && !c.is_whitespace() {
                    used.insert(ident(&group[i..]));
                    item_start = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    _ => {}
                }
            }
        }
    }
    used.retain(|name| !name.is_empty());
    used
}

#[test]
fn arrows_only_run_down_and_no_layer_has_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let code = std::fs::read_to_string(file).unwrap();
        let top_level_file = file.parent() == Some(src.as_path()) || file.ends_with(format!("{module}/mod.rs"));
        let Some(layer) = layer_of(&module) else {
            problems.push(format!(
                "module `{module}` has no layer: add it to LAYERS (and the README's layout)"
            ));
            continue;
        };
        for used in used_modules(&code, top_level_file) {
            // Itself, or an item of the crate root (`crate::Result`); a
            // module without a layer is reported when its own files are read.
            let Some(used_layer) = layer_of(&used).filter(|_| used != module) else {
                continue;
            };
            if used_layer > layer {
                problems.push(format!(
                    "{}: `{module}` ({}) uses `{used}` ({}), a layer above it",
                    file.strip_prefix(&src).unwrap().display(),
                    LAYERS[layer].0,
                    LAYERS[used_layer].0
                ));
            }
            graph.entry(module.clone()).or_default().insert(used);
        }
    }
    // Cycles: a module reaching itself through others.
    for start in graph.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let cycle = format!("cycle: {} -> {start}", path.join(" -> "));
                    if !problems.contains(&cycle) && path.iter().min() == Some(start) {
                        problems.push(cycle);
                    }
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the layering is broken:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_scanner_sees_uses_and_ignores_comments() {
    let code = "use crate::report::junit;\nuse crate::{\n    drill,\n    env::{Backend, EnvError},\n    store,\n};\n\
                // crate::cli in a comment\nlet x = super::pg::quote_ident;\n";
    let used = used_modules(code, true);
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["drill", "env", "pg", "report", "store"]
    );
    assert_eq!(
        used_modules(code, false).len(),
        4,
        "super:: only counts directly under src/"
    );
}
