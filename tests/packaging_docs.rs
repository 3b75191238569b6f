//! Packaging checks of the deployment guide: docs/deployment.md names only files that exist.

#[path = "support/packaging.rs"]
mod packaging_support;

use packaging_support::{read, root};

#[test]
fn deployment_doc_names_existing_files() {
    let doc = read("docs/deployment.md");
    let path_re = regex::Regex::new(r"`((?:deploy|alerts|grafana|docs|tests|src)/[A-Za-z0-9_./-]+|docker-compose[A-Za-z0-9_.-]*\.yml|Dockerfile|\.dockerignore)`").unwrap();
    let mut missing = Vec::new();
    for c in path_re.captures_iter(&doc) {
        let p = c[1].trim_end_matches('/');
        // Files the reader creates from an example.
        if p == "deploy/movidesk.env" || p.contains('*') {
            continue;
        }
        if !root().join(p).exists() {
            missing.push(p.to_string());
        }
    }
    assert!(missing.is_empty(), "docs/deployment.md names files that do not exist: {missing:?}");
}
