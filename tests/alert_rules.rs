//! Checks of the alerting bundle in `alerts/` with the real Prometheus and Alertmanager
//! tools: `promtool check rules`, `promtool test rules` (the unit tests in
//! `alerts/tests/`), `amtool check-config` and `amtool config routes test`, plus
//! consistency checks between the rules, their unit tests and the runbook (every alert
//! tested and documented; the queue alerts one click from the platform's chat screen).
//!
//! The tools must be on PATH (Debian: `apt-get install prometheus prometheus-alertmanager`).
//! A missing tool fails the test with a message saying so: nothing is skipped.

#[path = "support/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

const RECORDING_RULES: &str = "alerts/recording_rules.yml";
const ALERTING_RULES: &str = "alerts/alerting_rules.yml";
const RULE_TESTS_DIR: &str = "alerts/tests";
const ALERTMANAGER_CONFIG: &str = "alerts/alertmanager.yml";
const RUNBOOK: &str = "docs/runbook.md";
const ALERTS_DOC: &str = "docs/alerts.md";
/// Under the repository Cargo.toml declares.
const RUNBOOK_URL_PREFIX: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/runbook.md#");

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn promtool() -> PathBuf {
    tools::require_tool(&["promtool"], "prometheus")
}

fn amtool() -> PathBuf {
    tools::require_tool(&["amtool"], "prometheus-alertmanager")
}

/// Runs the command from the repository root and panics with its output unless it succeeds.
fn run_ok(mut command: Command) -> String {
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    let shown = format!("{command:?}");
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{shown} failed ({}):\n{text}", output.status);
    text
}

/// `(alert name, severity)` for every alerting rule, in file order. A line-based reading
/// of the rule file: `- alert: Name` starts a rule, its `severity:` label follows it.
fn alerts() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in read(ALERTING_RULES).lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some(severity) = line.strip_prefix("severity:") {
            let last = out.last_mut().expect("a severity label outside an alerting rule");
            last.1 = severity.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
        }
    }
    assert!(out.len() >= 8, "expected at least 8 alerting rules in {ALERTING_RULES}, found {out:?}");
    out
}

fn rule_test_files() -> Vec<PathBuf> {
    let dir = repo_path(RULE_TESTS_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "expected the recording and alerting rule tests in {}, found {files:?}", dir.display());
    files
}

/// GitHub's anchor for a Markdown heading: lower case, punctuation other than `-` and
/// `_` removed, spaces turned into `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn promtool_check_rules() {
    let mut command = Command::new(promtool());
    command.args(["check", "rules", RECORDING_RULES, ALERTING_RULES]);
    let output = run_ok(command);
    assert!(output.contains("SUCCESS"), "promtool check rules printed no SUCCESS:\n{output}");
}

#[test]
fn promtool_test_rules() {
    let mut command = Command::new(promtool());
    command.args(["test", "rules"]).args(rule_test_files());
    let output = run_ok(command);
    assert!(!output.contains("FAILED"), "promtool test rules reported a failure:\n{output}");
}

#[test]
fn amtool_check_config() {
    let mut command = Command::new(amtool());
    command.args(["check-config", ALERTMANAGER_CONFIG]);
    let output = run_ok(command);
    assert!(output.contains("SUCCESS"), "amtool check-config printed no SUCCESS:\n{output}");
}

/// Every alert reaches the receiver its severity calls for: critical pages, warning tickets.
#[test]
fn alertmanager_routes_by_severity() {
    let amtool = amtool();
    for (alert, severity) in alerts() {
        let receiver = match severity.as_str() {
            "critical" => "pager",
            "warning" => "ticket",
            other => panic!("alert {alert} has severity {other:?}; expected critical or warning"),
        };
        let mut command = Command::new(&amtool);
        command.args([
            "config",
            "routes",
            "test",
            &format!("--config.file={ALERTMANAGER_CONFIG}"),
            &format!("--verify.receivers={receiver}"),
            &format!("alertname={alert}"),
            &format!("severity={severity}"),
            "app=Loja Online",
            "group=Vendas",
        ]);
        run_ok(command);
    }
}

/// Each alert has a unit test, a runbook section its `runbook_url` points at, and a line
/// in docs/alerts.md; each alert name carries the common prefix.
#[test]
fn every_alert_is_tested_and_documented() {
    let rules = read(ALERTING_RULES);
    let tests: String = rule_test_files().iter().map(|p| std::fs::read_to_string(p).expect("rule test file")).collect();
    let runbook_anchors: Vec<String> = read(RUNBOOK)
        .lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .map(github_anchor)
        .collect();
    let alerts_doc = read(ALERTS_DOC);

    // Every runbook link in the rules points at a heading of the runbook.
    let urls: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
        .map(|u| u.trim().trim_matches(|c| c == '\'' || c == '"'))
        .collect();
    for url in &urls {
        let anchor = url
            .strip_prefix(RUNBOOK_URL_PREFIX)
            .unwrap_or_else(|| panic!("runbook_url {url} does not start with {RUNBOOK_URL_PREFIX}"));
        assert!(runbook_anchors.iter().any(|a| a == anchor), "runbook_url {url}: no heading #{anchor} in {RUNBOOK}");
    }

    let names = alerts();
    assert_eq!(urls.len(), names.len(), "every alert needs exactly one runbook_url");
    for (alert, _) in &names {
        assert!(alert.starts_with("Chat"), "alert {alert} lacks the common prefix Chat");
        let url = format!("{RUNBOOK_URL_PREFIX}{}", alert.to_lowercase());
        assert!(urls.contains(&url.as_str()), "alert {alert} should link to {url}");
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "alert {alert} has no alert_rule_test in {RULE_TESTS_DIR}"
        );
        assert!(alerts_doc.contains(alert.as_str()), "alert {alert} is not described in {ALERTS_DOC}");
    }
}

/// The queue alerts (those reading `chat_conversations_waiting*`) are one click from the
/// platform's screen where chats are redistributed: an annotation `chat_screen_url` read
/// from the label Prometheus provisions on `chat_exporter_build_info`, and a runbook
/// section that sends the reader to "Redistributing chats".
#[test]
fn queue_alerts_link_the_platforms_chat_screen() {
    let doc: serde_yaml::Value = serde_yaml::from_str(&read(ALERTING_RULES)).expect("alerting rules are YAML");
    let runbook = read(RUNBOOK);
    let section = |alert: &str| -> String {
        let start = runbook.find(&format!("\n## {alert}\n")).unwrap_or_else(|| panic!("no runbook section {alert}"));
        let rest = &runbook[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
        rest[..end].to_string()
    };
    assert!(runbook.contains("\n## Redistributing chats\n"), "{RUNBOOK}: no section Redistributing chats");
    let mut queue_alerts = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let (Some(alert), Some(expr)) = (rule["alert"].as_str(), rule["expr"].as_str()) else { continue };
            if !expr.contains("chat_conversations_waiting") {
                continue;
            }
            queue_alerts.push(alert.to_string());
            let link = rule["annotations"]["chat_screen_url"].as_str().unwrap_or_default();
            assert!(
                link.contains("chat_exporter_build_info") && link.contains("label \"chat_screen_url\""),
                "{alert}: annotation chat_screen_url must read the label chat_screen_url of chat_exporter_build_info, is {link:?}"
            );
            let text = section(alert);
            assert!(
                text.contains("(#redistributing-chats)") && text.contains("chat_screen_url"),
                "{RUNBOOK} section {alert} must send the reader to the chat screen (#redistributing-chats, chat_screen_url)"
            );
        }
    }
    assert_eq!(queue_alerts, ["ChatQueueSpike", "ChatWaitTooLong", "ChatWaitingNoAgent"], "the queue alerts");
}
