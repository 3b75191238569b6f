//! The layers of docs/architecture.md, held by the code: every `crate::…` path in `src/`
//! (outside comments) names only a layer that the importing layer may import, so the
//! imports run one way, with no circle; and a platform's folder never names another
//! platform.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each layer may import, as docs/architecture.md's table says. A layer is a top
/// module of the crate, but for `source::error`, a leaf of its own.
const ALLOWED: &[(&str, &[&str])] = &[
    ("app", &["*"]),
    ("cli", &[]),
    ("platforms", &["config", "self_metrics", "simulator", "source", "source::error", "budget", "model"]),
    ("simulator", &[]),
    (
        "poller",
        &[
            "source",
            "source::error",
            "clock",
            "tracker",
            "state",
            "exposition",
            "health",
            "self_metrics",
            "memory",
            "budget",
            "model",
        ],
    ),
    ("source", &["budget", "config", "model", "self_metrics", "source::error"]),
    ("source::error", &[]),
    ("budget", &["self_metrics"]),
    ("state", &["tracker", "model", "source::error"]),
    ("tracker", &["model"]),
    ("exposition", &["tracker", "model", "self_metrics"]),
    ("health", &[]),
    ("http", &["exposition", "health"]),
    ("self_metrics", &["source::error"]),
    ("model", &[]),
    ("config", &[]),
    ("memory", &[]),
    ("clock", &[]),
    ("lib", &["*"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file of `src/` belongs to.
fn layer_of_file(relative: &Path) -> String {
    let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    match parts.as_slice() {
        [source, error] if source == "source" && error == "error" => "source::error".to_string(),
        [first, ..] => first.clone(),
        [] => unreachable!("a file has a name"),
    }
}

/// The layer a `crate::a::b` path names.
fn layer_of_path(first: &str, second: Option<&str>) -> String {
    match (first, second) {
        ("source", Some("error")) => "source::error".to_string(),
        _ => first.to_string(),
    }
}

/// Code without its comments (line comments and doc comments; this crate has no block
/// comments holding paths).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|line| match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    })
}

/// Every `crate::…` path of each file, as (file, line, first and second segments).
fn crate_paths(file_text: &str) -> Vec<(usize, String, Option<String>)> {
    let path = regex::Regex::new(r"\bcrate::([a-z_]+)(?:::([a-z_]+))?").unwrap();
    let mut found = Vec::new();
    for (n, line) in code_lines(file_text).enumerate() {
        for c in path.captures_iter(line) {
            found.push((n + 1, c[1].to_string(), c.get(2).map(|m| m.as_str().to_string())));
        }
    }
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_import_points_down_the_layers() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(src()).unwrap();
        if relative == Path::new("main.rs") {
            continue; // the binary: it names the library as `chat_exporter::`, from above
        }
        let layer = layer_of_file(relative);
        let Some(may) = allowed.get(layer.as_str()) else {
            wrong.push(format!("{}: layer {layer} is not in docs/architecture.md's table", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, first, second) in crate_paths(&text) {
            let named = layer_of_path(&first, second.as_deref());
            if named == layer {
                continue;
            }
            edges.insert((layer.clone(), named.clone()));
            if !may.contains(&"*") && !may.contains(&named.as_str()) {
                wrong.push(format!("{}:{line}: {layer} names {named}", relative.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
    assert!(edges.len() > 20, "the crate's imports were read: {edges:?}");
    // No circle (the table alone could hold one).
    let mut order: Vec<String> = Vec::new();
    let layers: BTreeSet<String> = edges.iter().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
    let mut remaining: BTreeSet<(String, String)> =
        edges.iter().filter(|(a, _)| a != "app" && a != "lib").cloned().collect();
    let mut left: BTreeSet<String> = layers.into_iter().filter(|l| l != "app" && l != "lib").collect();
    while let Some(leaf) = left.iter().find(|l| !remaining.iter().any(|(a, _)| a == *l)).cloned() {
        left.remove(&leaf);
        remaining.retain(|(_, b)| *b != leaf);
        order.push(leaf);
    }
    assert!(left.is_empty(), "a circle among {left:?}: {remaining:?}");
}

#[test]
fn a_platform_names_no_other_platform() {
    let platforms = src().join("platforms");
    let names: Vec<String> = std::fs::read_dir(&platforms)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.len() >= 3, "{names:?}");
    let mut wrong = Vec::new();
    for name in &names {
        let mut files = Vec::new();
        rust_files(&platforms.join(name), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, first, second) in crate_paths(&text) {
                if first == "platforms" {
                    match second {
                        Some(other) if other != *name => {
                            wrong.push(format!("{}:{line}: names {other}", file.display()))
                        }
                        _ => wrong.push(format!("{}:{line}: names the registry", file.display())),
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
