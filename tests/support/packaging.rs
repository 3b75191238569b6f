//! Helpers shared by the packaging tests (tests/packaging_*.rs): reading the repository's
//! files (as text, YAML, several YAML documents, KEY=VALUE env files), the exporter binary
//! (its `--help`, the flags it knows) and its configuration loader, and the facts of the
//! packaging that more than one area checks (the default port, the non-root uid, where the
//! binary is installed, the rule files of alerts/). Each test file includes it with
//! `#[path = "support/packaging.rs"] mod packaging_support;`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value as Yaml;

pub const ALERTS_DIR: &str = "alerts";
pub const DEFAULT_PORT: u16 = 9877;
pub const NONROOT_UID: u32 = 65532;
pub const BINARY_IN_IMAGE: &str = "/usr/local/bin/chat_exporter";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn yaml(relative: &str) -> Yaml {
    let mut value: Yaml =
        serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: invalid YAML: {e}"));
    value.apply_merge().unwrap_or_else(|e| panic!("{relative}: {e}"));
    value
}

pub fn yaml_documents(relative: &str) -> Vec<Yaml> {
    let text = read(relative);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            <Yaml as serde::Deserialize>::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: invalid YAML: {e}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

pub fn s<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{what}: expected a string, got {value:?}"))
}

pub fn strings(value: &Yaml, what: &str) -> Vec<String> {
    match value {
        Yaml::String(one) => vec![one.clone()],
        Yaml::Sequence(items) => items.iter().map(|v| s(v, what).to_string()).collect(),
        Yaml::Null => vec![],
        other => panic!("{what}: expected a string or a list of strings, got {other:?}"),
    }
}

pub fn mapping_keys(value: &Yaml) -> BTreeSet<String> {
    value.as_mapping().map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// `labels` ⊆ `of` for two YAML mappings of strings.
pub fn labels_subset(labels: &Yaml, of: &Yaml) -> bool {
    labels.as_mapping().is_some_and(|m| m.iter().all(|(k, v)| of.get(k) == Some(v)))
}

pub fn exporter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chat_exporter"))
}

/// `chat_exporter ARGS --help`, which must succeed.
pub fn help_of(args: &[&str]) -> String {
    let out = exporter().args(args).arg("--help").output().expect("run chat_exporter --help");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "chat_exporter {} --help failed:\n{text}", args.join(" "));
    text
}

/// Every `--flag` of `args` must be known to `chat_exporter SUBCOMMAND --help`.
pub fn assert_flags_known(subcommand: &[&str], args: &[String], what: &str) {
    let help = help_of(subcommand);
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag}="))
                || help.contains(&format!("{flag}\n")),
            "{what}: flag {flag} is not known to `chat_exporter {}`:\n{help}",
            subcommand.join(" ")
        );
    }
}

/// What the packaging checks read of a platform section, whichever the platform.
pub struct Account {
    /// Its section's name (`chatwoot`).
    pub platform: &'static str,
    pub base_url: String,
    pub token: String,
}

/// Loads an exporter configuration file with the exporter's own loader, and its platform
/// section as that platform reads it.
pub fn load_exporter_config(file: &Path, env: Vec<(String, String)>) -> (chat_exporter::platforms::Config, Account) {
    use chat_exporter::platforms::{chatwoot, movidesk, rocketchat};
    let rejected =
        |e: chat_exporter::config::ConfigError| -> ! { panic!("{}: the exporter rejects it: {e}", file.display()) };
    let config = chat_exporter::platforms::load_from(Some(file), env.clone()).unwrap_or_else(|e| rejected(e));
    let section = chat_exporter::platforms::read_section(Some(file), env).unwrap_or_else(|e| rejected(e));
    let platform = section.platform.name();
    let (base_url, token) = match platform {
        movidesk::NAME => {
            let c = movidesk::MovideskConfig::from_section(section.keys).unwrap_or_else(|e| rejected(e));
            (c.base_url, c.token)
        }
        chatwoot::NAME => {
            let c = chatwoot::ChatwootConfig::from_section(section.keys).unwrap_or_else(|e| rejected(e));
            (c.base_url, c.token)
        }
        rocketchat::NAME => {
            let c = rocketchat::RocketChatConfig::from_section(section.keys).unwrap_or_else(|e| rejected(e));
            (c.base_url, c.token)
        }
        other => panic!("{}: platform {other} has no case in load_exporter_config", file.display()),
    };
    (config, Account { platform, base_url, token: token.expose().to_string() })
}

/// The names of the platforms, in the order of the exporter's registry.
pub fn platform_names() -> Vec<&'static str> {
    chat_exporter::platforms::ALL.iter().map(|p| p.name()).collect()
}

/// `KEY=VALUE` lines of an env file, and with `commented` also the commented-out
/// settings of the exporter (`# CHAT_EXPORTER_...=VALUE`), the optional ones an example offers.
pub fn parse_env_file_lines(relative: &str, commented: bool) -> Vec<(String, String)> {
    let variable = regex::Regex::new(r"^#\s*(CHAT_EXPORTER_[A-Z0-9_]*)=(.*)$").unwrap();
    let mut out = parse_env_file(relative);
    if commented {
        for line in read(relative).lines().map(str::trim) {
            if let Some(c) = variable.captures(line) {
                out.push((c[1].to_string(), c[2].trim().to_string()));
            }
        }
    }
    out
}

pub fn parse_env_file(relative: &str) -> Vec<(String, String)> {
    read(relative)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{relative}: not KEY=VALUE: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Value following `flag` (`--flag value` or `--flag=value`).
pub fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{flag}=")).map(str::to_string)
        }
    })
}

pub fn image_is_pinned(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap();
    last.contains('@') || last.split_once(':').is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest")
}

/// The files of alerts/ holding Prometheus rule groups.
pub fn alert_rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(ALERTS_DIR))
        .expect("alerts/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .filter(|p| {
            let doc: Yaml = serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap_or(Yaml::Null);
            doc.get("groups").is_some()
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule file (YAML with `groups`) in alerts/");
    files
}
