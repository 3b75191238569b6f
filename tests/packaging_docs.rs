//! Packaging checks of the operating documents: docs/deployment.md, docs/runbook.md and the
//! README name only files that exist (but the ones the reader makes from an example).

#[path = "support/packaging.rs"]
mod packaging_support;

use packaging_support::{platform_names, read, root};

const DOCUMENTS: &[&str] = &["docs/deployment.md", "docs/runbook.md", "README.md"];

/// Files the reader creates from an example: each platform's environment file for compose.
fn made_by_the_reader(path: &str) -> bool {
    platform_names().iter().any(|p| path == format!("deploy/{p}.env"))
}

/// The files a path names: itself, or with `PLATFORM` in it, one for each platform.
fn named_files(path: &str) -> Vec<String> {
    match path.contains("PLATFORM") {
        true => platform_names().iter().map(|p| path.replace("PLATFORM", p)).collect(),
        false => vec![path.to_string()],
    }
}

#[test]
fn operating_docs_name_existing_files() {
    let path_re = regex::Regex::new(r"`((?:deploy|alerts|grafana|docs|tests|src|scripts|examples)/[A-Za-z0-9_./-]+|docker-compose[A-Za-z0-9_.-]*\.yml|Dockerfile|\.dockerignore)`").unwrap();
    for document in DOCUMENTS {
        let text = read(document);
        let mut missing = Vec::new();
        for c in path_re.captures_iter(&text) {
            let named = c[1].trim_end_matches('/');
            for p in named_files(named) {
                if made_by_the_reader(&p) || p.contains('*') {
                    continue;
                }
                if !root().join(&p).exists() {
                    missing.push(p);
                }
            }
        }
        assert!(missing.is_empty(), "{document} names files that do not exist: {missing:?}");
    }
}

/// The files made from an example are kept out of git, and their examples exist.
#[test]
fn files_made_from_examples_are_ignored_by_git() {
    let gitignore = read(".gitignore");
    for platform in platform_names() {
        let env = format!("deploy/{platform}.env");
        assert!(gitignore.lines().any(|l| l.trim() == env), ".gitignore: {env} (it holds a token)");
        assert!(root().join(format!("{env}.example")).is_file(), "{env}.example");
    }
}

/// The text of the section `heading` (`## X` or `### X`), up to the next heading of its
/// level or above outside a code block.
fn section(document: &str, heading: &str) -> String {
    let level = heading.split(' ').next().unwrap().len();
    let start = document.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no section {heading:?}")) + 1;
    let mut out = String::new();
    let mut in_code = false;
    for (i, line) in document[start..].lines().enumerate() {
        in_code ^= line.starts_with("```");
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if i > 0 && !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// When the exporter cannot tell, the runbook's advice is given for each platform: what its
/// token, limit and status are, and its own screen to watch the queue meanwhile.
#[test]
fn runbook_gives_the_source_down_advice_per_platform() {
    let runbook = read("docs/runbook.md");
    let source_down = section(&runbook, "## ChatExporterSourceDown");
    let meanwhile = section(&runbook, "### While the exporter cannot tell");
    for platform in chat_exporter::platforms::ALL {
        let row = format!("\n| {} |", platform.title());
        assert!(
            source_down.contains(&row),
            "ChatExporterSourceDown: no row for {} (token, limit, status)",
            platform.title()
        );
        assert!(meanwhile.contains(&row), "While the exporter cannot tell: no screen for {}", platform.title());
    }
    assert!(
        section(&runbook, "## ChatExporterDown").contains("(#while-the-exporter-cannot-tell)"),
        "ChatExporterDown sends the reader to the platform's own screen"
    );
}
