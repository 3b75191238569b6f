//! Packaging checks of the Kubernetes manifests, with no cluster: they parse and agree on
//! labels, ports, paths, volumes and names, and the PrometheusRule holds exactly the groups of
//! the rule files in alerts/ (regenerate it with
//! `CHAT_EXPORTER_BLESS=1 cargo test --test packaging_kubernetes`).

#[path = "support/packaging.rs"]
mod packaging_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;

use packaging_support::{
    alert_rule_files, assert_flags_known, flag_value, image_is_pinned, labels_subset, load_exporter_config, read, root,
    s, strings, yaml, yaml_documents, ALERTS_DIR, DEFAULT_PORT, NONROOT_UID,
};

const KUBERNETES_DIR: &str = "deploy/kubernetes";
const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
const BLESS_ENV: &str = "CHAT_EXPORTER_BLESS";

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
    let (cfg, movidesk) = load_exporter_config(
        &config_path,
        vec![("CHAT_EXPORTER_MOVIDESK__TOKEN_FILE".to_string(), token.display().to_string())],
    );
    assert_eq!(movidesk.base_url, "https://api.movidesk.com/public/v1");
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
         Regenerate it: {BLESS_ENV}=1 cargo test --test packaging_kubernetes prometheusrule",
        names.join(", ")
    );
}
