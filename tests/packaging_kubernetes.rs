//! Packaging checks of the Kubernetes manifests, with no cluster: each platform's overlay
//! (deploy/kubernetes/overlays/PLATFORM) is rendered by `kubectl kustomize`, and every
//! rendering passes the same checks: it parses and agrees on labels, ports, paths, volumes
//! and names, its ConfigMap's configuration loads with the exporter's own loader as that
//! platform, and its ServiceMonitor links to that platform's chat screen. The base names no
//! platform, and the PrometheusRule holds exactly the groups of the rule files in alerts/
//! (regenerate it with `CHAT_EXPORTER_BLESS=1 cargo test --test packaging_kubernetes`).
//!
//! `kubectl` (whose `kustomize` is built in; on this project's machines from their image's
//! package kubectl) or `kustomize` must be on PATH: a missing tool fails the test.

#[path = "support/packaging.rs"]
mod packaging_support;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value as Yaml;

use packaging_support::{
    alert_rule_files, assert_flags_known, flag_value, image_is_pinned, labels_subset, load_exporter_config,
    platform_names, read, root, s, strings, yaml, yaml_documents, ALERTS_DIR, DEFAULT_PORT, NONROOT_UID,
};

const BASE_DIR: &str = "deploy/kubernetes/base";
const OVERLAYS_DIR: &str = "deploy/kubernetes/overlays";
const SECRET_EXAMPLE: &str = "deploy/kubernetes/secret.example.yaml";
const PROMETHEUS_RULE: &str = "deploy/kubernetes/base/prometheusrule.yaml";
const BLESS_ENV: &str = "CHAT_EXPORTER_BLESS";

/// The manifests of one rendering, each with the kind it is.
struct Manifests {
    what: String,
    docs: Vec<Yaml>,
}

impl Manifests {
    /// `kubectl kustomize DIR` (or `kustomize build DIR`), split into its documents.
    fn render(relative: &str) -> Self {
        let tool = tools::require_tool(&["kubectl", "kustomize"], "kubectl");
        let mut command = Command::new(&tool);
        if tool.file_name().is_some_and(|n| n == "kubectl") {
            command.arg("kustomize");
        } else {
            command.arg("build");
        }
        let out = command.arg(root().join(relative)).output().expect("run kustomize");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{} kustomize {relative} failed:\n{}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = serde_yaml::Deserializer::from_str(&text)
            .map(|doc| <Yaml as serde::Deserialize>::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: {e}")))
            .filter(|doc| !doc.is_null())
            .collect();
        Manifests { what: relative.to_string(), docs }
    }

    fn one(&self, kind: &str) -> &Yaml {
        let found: Vec<&Yaml> =
            self.docs.iter().filter(|d| d.get("kind").and_then(Yaml::as_str) == Some(kind)).collect();
        assert_eq!(found.len(), 1, "{}: expected exactly one {kind}", self.what);
        found[0]
    }
}

fn at<'a>(doc: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(doc, |v, key| v.get(key).unwrap_or_else(|| panic!("missing {path} (at {key})")))
}

fn yaml_files(relative: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// The address of each platform's chat screen, as docs/dashboards.md gives it, as a pattern
/// the overlay's ServiceMonitor must match (its host and account are the user's).
fn chat_screen_pattern(platform: &str) -> regex::Regex {
    let pattern = match platform {
        "movidesk" => r"^https://[^/]+\.movidesk\.com/Chat$",
        "chatwoot" => r"^https://[^/]+/app/accounts/[0-9]+/conversations$",
        "rocketchat" => r"^https://[^/]+/omnichannel/current$",
        other => panic!("no chat screen known for platform {other}: add it here and in docs/dashboards.md"),
    };
    regex::Regex::new(pattern).unwrap()
}

/// The base names no platform and lists every manifest beside it; there is one overlay per
/// platform, each on the base; the Secret example is the one Secret every overlay mounts.
#[test]
fn kubernetes_layout_base_and_one_overlay_per_platform() {
    let base = yaml(&format!("{BASE_DIR}/kustomization.yaml"));
    let listed: BTreeSet<String> = strings(at(&base, "resources"), "resources").into_iter().collect();
    let files: BTreeSet<String> = yaml_files(BASE_DIR)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files, "{BASE_DIR}/kustomization.yaml resources");
    let dns_label = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
    for path in yaml_files(BASE_DIR) {
        let name = format!("{BASE_DIR}/{}", path.file_name().unwrap().to_string_lossy());
        let text = read(&name).to_lowercase();
        for platform in platform_names() {
            // The rule file is generated from alerts/, whose descriptions may name a platform.
            if name != PROMETHEUS_RULE {
                assert!(!text.contains(platform), "{name} names {platform}: the platform belongs in an overlay");
            }
        }
        for doc in yaml_documents(&name) {
            for key in ["apiVersion", "kind"] {
                assert!(doc.get(key).and_then(Yaml::as_str).is_some(), "{name}: {key}");
            }
            if doc.get("kind").and_then(Yaml::as_str) != Some("Kustomization") {
                let n = s(at(&doc, "metadata.name"), "metadata.name");
                assert!(dns_label.is_match(n), "{name}: metadata.name {n} is not a DNS label");
            }
        }
    }
    let overlays: BTreeSet<String> = std::fs::read_dir(root().join(OVERLAYS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let platforms: BTreeSet<String> = platform_names().into_iter().map(String::from).collect();
    assert_eq!(overlays, platforms, "{OVERLAYS_DIR}: one overlay per platform, named after it");
    for platform in &platforms {
        let k = yaml(&format!("{OVERLAYS_DIR}/{platform}/kustomization.yaml"));
        assert_eq!(strings(at(&k, "resources"), "resources"), ["../../base"], "overlay {platform}: on the base");
    }
    let secret = yaml(SECRET_EXAMPLE);
    assert_eq!(s(at(&secret, "kind"), "kind"), "Secret");
}

#[test]
fn kubernetes_overlays_are_consistent() {
    for platform in platform_names() {
        let m = Manifests::render(&format!("{OVERLAYS_DIR}/{platform}"));
        check_rendering(&m, platform);
    }
}

/// The checks every platform's rendering passes.
fn check_rendering(m: &Manifests, platform: &str) {
    let what = m.what.as_str();
    let dns_label = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
    for doc in &m.docs {
        let name = s(at(doc, "metadata.name"), "metadata.name");
        assert!(dns_label.is_match(name), "{what}: metadata.name {name} is not a DNS label");
        assert_eq!(
            at(doc, "metadata.labels").get("app.kubernetes.io/part-of").and_then(Yaml::as_str),
            Some("chat_exporter"),
            "{what}: {name} has the label app.kubernetes.io/part-of"
        );
    }
    let kinds: BTreeSet<&str> = m.docs.iter().map(|d| s(at(d, "kind"), "kind")).collect();
    let expected: BTreeSet<&str> =
        ["ConfigMap", "Deployment", "PersistentVolumeClaim", "PrometheusRule", "Service", "ServiceMonitor"].into();
    assert_eq!(kinds, expected, "{what}: kinds rendered (the Secret is the user's, see {SECRET_EXAMPLE})");

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
            .unwrap_or_else(|| panic!("{what}: volume {name}"))
    };
    let config_file = flag_value(&args, "--config.file").expect("--config.file");
    let config_mount =
        mounts.iter().find(|mt| s(at(mt, "mountPath"), "mountPath") == config_file).expect("config file mounted");
    let config_volume = volume(s(at(config_mount, "name"), "name"));
    assert_eq!(
        at(config_volume, "configMap.name"),
        at(configmap, "metadata.name"),
        "{what}: the config volume is the ConfigMap (its generated name)"
    );
    let key = s(at(config_mount, "subPath"), "subPath");
    let toml = configmap
        .get("data")
        .and_then(|d| d.get(key))
        .and_then(Yaml::as_str)
        .unwrap_or_else(|| panic!("{what}: ConfigMap data.{key}"));
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
        .unwrap_or_else(|| panic!("{what}: the ConfigMap config reads the token from token_file"));
    let token_mount = mounts
        .iter()
        .find(|mt| token_file.starts_with(&format!("{}/", s(at(mt, "mountPath"), "mountPath"))))
        .unwrap_or_else(|| panic!("{what}: token_file {token_file} is not under a volume mount"));
    let secret_name = s(at(volume(s(at(token_mount, "name"), "name")), "secret.secretName"), "secretName");
    let secret_key = Path::new(&token_file).file_name().unwrap().to_string_lossy().to_string();
    let secret = yaml(SECRET_EXAMPLE);
    assert_eq!(
        s(at(&secret, "metadata.name"), "name"),
        secret_name,
        "{SECRET_EXAMPLE} names the Secret the Deployment of {what} mounts"
    );
    assert!(at(&secret, "stringData").get(secret_key.as_str()).is_some(), "{SECRET_EXAMPLE} has key {secret_key}");
    // The exporter accepts the ConfigMap's configuration (token file pointed at a stand-in),
    // as the overlay's platform.
    let token = dir.path().join("token");
    std::fs::write(&token, "x").unwrap();
    let rewritten = toml.replace(&token_file, &token.display().to_string());
    std::fs::write(&config_path, rewritten).unwrap();
    let (cfg, account) = load_exporter_config(&config_path, vec![]);
    assert_eq!(account.platform, platform, "{what}: the ConfigMap's configuration is a [{platform}] one");
    assert_eq!(account.token, "x", "{what}: the token comes from token_file");
    assert!(account.base_url.starts_with("https://"), "{what}: base_url {} is https", account.base_url);
    assert!(cfg.state.enabled, "{what}: the Kubernetes configuration keeps a state file");
    let state_mount = mounts
        .iter()
        .find(|mt| cfg.state.path.starts_with(s(at(mt, "mountPath"), "mountPath")))
        .unwrap_or_else(|| panic!("{what}: state.path {} is not under a volume mount", cfg.state.path.display()));
    let claim = s(at(volume(s(at(state_mount, "name"), "name")), "persistentVolumeClaim.claimName"), "claimName");
    let pvc = m.one("PersistentVolumeClaim");
    assert_eq!(s(at(pvc, "metadata.name"), "name"), claim, "{what}: the state volume is the PersistentVolumeClaim");
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
    assert!(
        labels_subset(at(monitor, "spec.selector.matchLabels"), at(service, "spec.selector")),
        "ServiceMonitor selects the exporter's pods' Service"
    );
    // The platform's chat screen, on the target (then kept on chat_exporter_build_info).
    let screen = at(endpoint, "relabelings")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r.get("targetLabel").and_then(Yaml::as_str) == Some("chat_screen_url"))
        .map(|r| s(at(r, "replacement"), "replacement").to_string())
        .unwrap_or_else(|| panic!("{what}: no relabeling sets chat_screen_url"));
    assert!(
        chat_screen_pattern(platform).is_match(&screen),
        "{what}: chat_screen_url {screen:?} is not {platform}'s chat screen ({})",
        chat_screen_pattern(platform)
    );
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
         Regenerate it: {BLESS_ENV}=1 cargo test --test packaging_kubernetes prometheusrule",
        names.join(", ")
    );
}
