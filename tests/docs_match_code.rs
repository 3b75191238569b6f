//! The documentation says what the code does: every flag, configuration key (with its
//! default) and metric the exporter has is in the README, and the metric contract lists
//! every metric family; the README's "Your first real account" gives the Rust version
//! Cargo.toml declares, smallest configurations the exporter loads for every platform, and a
//! scrape job the alerts select, relabelled as the shipped Prometheus configuration does.

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

/// The README's section `## title`, up to the next `## ` outside a code block.
fn readme_section(readme: &str, title: &str) -> String {
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("README: no section {title}")) + 1;
    let mut out = String::new();
    let mut in_code = false;
    for (i, line) in readme[start..].lines().enumerate() {
        in_code ^= line.starts_with("```");
        if i > 0 && !in_code && line.starts_with("## ") {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The code blocks of `text` fenced as ```lang.
fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, l) if l == format!("```{lang}") => current = Some(String::new()),
            (Some(block), "```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn first_real_account_states_the_declared_rust_version() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let declared = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("Cargo.toml declares rust-version");
    let section = readme_section(&readme(), "Your first real account");
    assert!(
        section.contains(&format!("Rust {declared} or later")),
        "README, Your first real account: the minimum Rust version is Cargo.toml's rust-version {declared}"
    );
    assert_eq!(env!("CARGO_PKG_RUST_VERSION"), declared);
}

/// Each smallest configuration loads, with nothing but its platform's token in the
/// environment, as its platform; there is one for every platform.
#[test]
fn first_real_account_configurations_load() {
    let section = readme_section(&readme(), "Your first real account");
    let dir = tempfile::tempdir().unwrap();
    let mut seen = BTreeSet::new();
    for (i, block) in code_blocks(&section, "toml").iter().enumerate() {
        let file = dir.path().join(format!("smallest-{i}.toml"));
        // A placeholder for the user's own value, written as an ellipsis.
        std::fs::write(&file, block.replace('…', "u")).unwrap();
        let name = block.trim().strip_prefix('[').and_then(|r| r.split(']').next()).expect("a platform section");
        let token = config::env_variable(&format!("{name}.token"));
        let loaded = chat_exporter::platforms::load_from(Some(&file), vec![(token.clone(), "t".to_string())])
            .unwrap_or_else(|e| panic!("README's smallest [{name}] with {token}: {e}\n{block}"));
        assert_eq!(loaded.platform.name(), name);
        assert_eq!(loaded.state.path, std::path::PathBuf::from(config::DEFAULT_STATE_PATH));
        seen.insert(name.to_string());
    }
    let all: BTreeSet<String> = chat_exporter::platforms::ALL.iter().map(|p| p.name().to_string()).collect();
    assert_eq!(seen, all, "README, Your first real account: a smallest configuration for every platform");
}

/// The scrape job is the one the alerts select, relabelled as deploy/prometheus/prometheus.yml.
#[test]
fn first_real_account_scrape_job_is_the_alerts_job() {
    let section = readme_section(&readme(), "Your first real account");
    let blocks = code_blocks(&section, "yaml");
    let snippet: serde_yaml::Value = serde_yaml::from_str(blocks.first().expect("a scrape_configs snippet")).unwrap();
    let job = &snippet["scrape_configs"][0];
    let name = job["job_name"].as_str().expect("job_name");
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/alerts/alerting_rules.yml")).unwrap();
    let selector = regex::Regex::new(r#"up\{job=~"([^"]+)"\}"#).unwrap();
    let job_regex = selector.captures(&rules).map(|c| c[1].to_string()).expect("the alerts select up{job=~...}");
    assert!(regex::Regex::new(&format!("^(?:{job_regex})$")).unwrap().is_match(name), "{name} vs {job_regex}");
    assert!(section.contains(&format!("`{name}`")), "the README names the job");
    let shipped: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let shipped_job = shipped["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"].as_str() == Some(name))
        .expect("the shipped configuration has the job");
    assert_eq!(
        job["metric_relabel_configs"], shipped_job["metric_relabel_configs"],
        "the relabelling of chat_screen_url"
    );
    assert!(job["static_configs"][0]["labels"]["chat_screen_url"].as_str().is_some_and(|u| u.starts_with("https://")));
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
