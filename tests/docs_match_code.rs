//! The documentation says what the code does: every flag, configuration key (with its
//! default) and metric the exporter has is in the README, and the metric contract lists
//! every metric family.

mod support;

use std::collections::BTreeSet;

use chat_exporter::config;
use support::*;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn every_flag_is_documented() {
    let (code, help, _) = support::process::run_to_end(&["--help"], &[]);
    assert_eq!(code, 0);
    let readme = readme();
    let flags: BTreeSet<&str> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric()))
        .filter(|f| !matches!(*f, "help" | "version" | ""))
        .collect();
    assert!(flags.len() >= 10, "{flags:?}");
    for flag in flags {
        assert!(readme.contains(&format!("`--{flag}`")), "--{flag} is not in the README's flag table");
    }
}

/// The README's tables of keys: (`section.key`, default) from the platform and state
/// table, and (`key`, [default per platform column]) from the polling table.
fn documented_keys(readme: &str) -> (Vec<(String, String)>, Vec<String>, Vec<(String, Vec<String>)>) {
    let mut keys = Vec::new();
    let mut polling_columns = Vec::new();
    let mut polling = Vec::new();
    let code = |c: &str| c.strip_prefix('`').and_then(|c| c.strip_suffix('`')).map(str::to_string);
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        if cells[1] == "key" && cells.len() > 4 && cells[2] != "default" {
            polling_columns = cells[2..cells.len() - 2].iter().map(|c| c.to_lowercase().replace('.', "")).collect();
            continue;
        }
        let Some(key) = code(cells[1]) else { continue };
        if key.contains('.') && !key.starts_with('-') {
            if let Some(default) = code(cells[2]) {
                keys.push((key, default));
            } else if cells[2] == "—" {
                keys.push((key, String::new()));
            }
        } else if !polling_columns.is_empty() && cells.len() == polling_columns.len() + 4 {
            let defaults: Vec<String> = cells[2..2 + polling_columns.len()].iter().filter_map(|c| code(c)).collect();
            if defaults.len() == polling_columns.len() {
                polling.push((key, defaults));
            }
        }
    }
    (keys, polling_columns, polling)
}

fn toml_value(default: &str) -> String {
    if default.parse::<toml_like::Raw>().is_ok() {
        default.to_string()
    } else {
        format!("\"{default}\"")
    }
}

/// Keys a platform's section cannot do without, with a value for the test.
fn required(platform: &str) -> &'static [(&'static str, &'static str)] {
    match platform {
        "chatwoot" => &[("token", "\"t\""), ("account_id", "3")],
        "rocketchat" => &[("token", "\"t\""), ("user_id", "\"u\""), ("base_url", "\"https://chat.example.com\"")],
        _ => &[("token", "\"t\"")],
    }
}

/// Every key of every platform's section, of the shared polling settings and of the
/// state file is in the README; and each documented default, written into a file,
/// loads into exactly the configuration that leaving the key out gives.
#[test]
fn every_key_is_documented_with_its_default() {
    let (keys, columns, polling) = documented_keys(&readme());
    let dir = tempfile::tempdir().unwrap();
    for platform in chat_exporter::platforms::ALL {
        let name = platform.name();
        let column = columns
            .iter()
            .position(|c| *c == platform.title().to_lowercase().replace('.', ""))
            .unwrap_or_else(|| panic!("the README's polling table has no column for {}", platform.title()));
        let mut lines: Vec<String> = required(name).iter().map(|(k, v)| format!("{k} = {v}")).collect();
        for key in platform.section_keys() {
            let documented = keys.iter().find(|(k, _)| *k == format!("{name}.{key}"));
            let (_, default) = documented.unwrap_or_else(|| panic!("{name}.{key} is not in the README's key table"));
            if !default.is_empty() {
                lines.push(format!("{key} = {}", toml_value(default)));
            }
        }
        for key in config::polling_keys() {
            let (_, defaults) = polling
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} is not in the README's polling table"));
            lines.push(format!("{key} = {}", toml_value(&defaults[column])));
        }
        for (key, default) in keys.iter().filter(|(k, _)| k.starts_with("state.")) {
            assert!(!default.is_empty(), "{key} has a default");
        }
        let state: Vec<String> = keys
            .iter()
            .filter_map(|(k, d)| k.strip_prefix("state.").map(|k| format!("{k} = {}", toml_value(d))))
            .collect();
        assert_eq!(state.len(), 2, "state.enabled and state.path are documented");
        let text = format!("[{name}]\n{}\n[state]\n{}\n", lines.join("\n"), state.join("\n"));
        let documented = dir.path().join(format!("{name}-documented.toml"));
        std::fs::write(&documented, &text).unwrap();
        let bare = dir.path().join(format!("{name}-bare.toml"));
        let bare_lines: Vec<String> = required(name).iter().map(|(k, v)| format!("{k} = {v}")).collect();
        std::fs::write(&bare, format!("[{name}]\n{}\n", bare_lines.join("\n"))).unwrap();
        let from_docs =
            chat_exporter::platforms::load_from(Some(&documented), vec![]).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let defaults = chat_exporter::platforms::load_from(Some(&bare), vec![]).unwrap();
        assert_eq!(
            format!("{from_docs:?}"),
            format!("{defaults:?}"),
            "{name}: documented defaults differ from the code's"
        );
    }
    // Nothing documented that the code does not have.
    for (key, _) in &keys {
        let (section, name) = key.split_once('.').unwrap();
        if section == "state" {
            continue;
        }
        let platform = chat_exporter::platforms::find(section).unwrap_or_else(|| panic!("{key}: no such section"));
        assert!(platform.section_keys().contains(&name), "{key} is documented but not a key");
    }
}

mod toml_like {
    /// Numbers, booleans and arrays are written bare in TOML; anything else is a string.
    pub struct Raw;
    impl std::str::FromStr for Raw {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            if s.parse::<f64>().is_ok() || s == "true" || s == "false" || s.starts_with('[') {
                Ok(Raw)
            } else {
                Err(())
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_documented() {
    let sim = start_simulator(chat_exporter::simulator::SimOptions {
        scenario: chat_exporter::simulator::Scenario::Peak,
        ..manual_sim(51)
    })
    .await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    exp.follow(&sim.state, 40, 120).await;
    let text = exp.scrape_text().await;
    let families: BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let contract = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let readme = readme();
    for family in families {
        if family.starts_with("process_") {
            continue;
        }
        assert!(contract.contains(&format!("`{family}`")), "{family} is not in docs/metrics.md");
        assert!(readme.contains(&format!("`{family}`")), "{family} is not in the README's metric table");
    }
}

/// GitHub's anchors of docs/runbook.md's headings: lower case, punctuation other than `-`
/// and `_` dropped, spaces made `-`.
fn runbook_anchors() -> BTreeSet<String> {
    let runbook = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbook.md")).unwrap();
    runbook
        .lines()
        .filter_map(|l| l.trim_start_matches('#').strip_prefix(' ').filter(|_| l.starts_with('#')))
        .map(|heading| {
            heading
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// The project's text files, under its root (build output and hidden folders left out).
fn project_files(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            project_files(&path, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((path, text));
        }
    }
}

/// Every link to the project goes to the repository Cargo.toml declares (`repository`):
/// the runbook links of the alerts (`runbook_url`), of their tests and of the dashboards,
/// the unit's `Documentation=`, the image's source. Each runbook link's section is a
/// heading of docs/runbook.md.
#[test]
fn every_link_to_the_project_is_the_declared_repository_and_every_runbook_section_exists() {
    let repository = env!("CARGO_PKG_REPOSITORY");
    assert!(repository.starts_with("https://github.com/") && !repository.ends_with('/'), "{repository}");
    let runbook = format!("{repository}/blob/main/docs/runbook.md");
    let anchors = runbook_anchors();
    let link = regex::Regex::new(r#"https?://[^\s"'`<>()\[\]{}|\\]+"#).unwrap();
    let project_name = repository.rsplit('/').next().unwrap();
    let mut files = Vec::new();
    project_files(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), &mut files);
    let (mut runbook_links, mut wrong) = (0, Vec::new());
    for (path, text) in &files {
        for url in link.find_iter(text).map(|m| m.as_str().trim_end_matches(['.', ',', ';', ':'])) {
            let at = format!("{}: {url}", path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display());
            if url.contains("runbook.md") {
                runbook_links += 1;
                match url.strip_prefix(&runbook) {
                    // A template (`#<alert name in lower case>`) or the whole runbook.
                    Some("" | "#") => {}
                    Some(rest) => match rest.strip_prefix('#') {
                        Some(anchor) if anchors.contains(anchor) => {}
                        _ => wrong.push(format!("{at}: no such section in docs/runbook.md")),
                    },
                    None => wrong.push(format!("{at}: not under {runbook}")),
                }
            } else if let Some(path) = url.strip_prefix("https://github.com/") {
                let mut parts = path.split('/');
                let (owner, name) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                let ours = !owner.is_empty() && (name == project_name || repository.contains(&format!("/{owner}/")));
                if ours && !(url == repository || url.starts_with(&format!("{repository}/"))) {
                    wrong.push(format!("{at}: not under {repository}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong links to the project (its address is Cargo.toml's repository):\n{}",
        wrong.join("\n")
    );
    assert!(runbook_links >= 20, "the alerts and the dashboards link the runbook: {runbook_links} links found");
}
