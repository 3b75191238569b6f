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

/// Each documented key with its documented default, written into a file, loads into
/// exactly the configuration that leaving the key out gives.
#[test]
fn every_documented_key_exists_with_its_documented_default() {
    let readme = readme();
    let mut sections: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let (Some(key), Some(default)) = (
            cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`')),
            cells[2].strip_prefix('`').and_then(|c| c.strip_suffix('`')),
        ) else {
            continue;
        };
        let Some((section, name)) = key.split_once('.') else { continue };
        if !matches!(section, "movidesk" | "state") {
            continue;
        }
        let value =
            if default.parse::<toml_like::Raw>().is_ok() { default.to_string() } else { format!("\"{default}\"") };
        sections.entry(section.to_string()).or_default().push(format!("{name} = {value}"));
    }
    assert!(sections["movidesk"].len() >= 9, "{sections:?}");
    let dir = tempfile::tempdir().unwrap();
    let documented = dir.path().join("documented.toml");
    let mut text = String::new();
    for (section, lines) in &sections {
        text.push_str(&format!("[{section}]\n{}\n", lines.join("\n")));
    }
    text = text.replace("[movidesk]\n", "[movidesk]\ntoken = \"t\"\n");
    std::fs::write(&documented, &text).unwrap();
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "[movidesk]\ntoken = \"t\"\n").unwrap();
    let from_docs = config::load_from(Some(&documented), vec![]).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let defaults = config::load_from(Some(&bare), vec![]).unwrap();
    assert_eq!(format!("{from_docs:?}"), format!("{defaults:?}"), "documented defaults differ from the code's");
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
