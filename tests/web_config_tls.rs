//! `--web.config.file` end to end: the exporter binary serves /metrics over TLS with basic
//! authentication (and, on a second instance, with client certificates), and a real
//! Prometheus (the Debian package `prometheus`, which must be on PATH) scrapes it.
//!
//! Checked through Prometheus' API: `up == 1` with the right CA and credentials (and with a
//! valid client certificate), `up == 0` with a wrong password (401), with plain HTTP against
//! the TLS port, and without a client certificate where one is required. Checked directly:
//! 401 + `WWW-Authenticate: Basic` without credentials, health endpoints open without
//! credentials, the 401 counter exposed, a bad web config refused at startup.
//!
//! The certificates are made at test time (rcgen), so nothing here expires.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::Value;

use support::process::ExporterProcess;

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

/// A child process killed (and reaped) when the test ends, whatever the outcome.
struct ChildGuard {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl ChildGuard {
    fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}\n---- end of {} ----", self.name, self.output(), self.name);
        }
    }
}

/// Spawn `cmd` with stdout and stderr collected line by line; lines are also sent to `lines`.
fn spawn(name: &'static str, mut cmd: Command, lines: Option<mpsc::Sender<String>>) -> ChildGuard {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
    let output = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    for reader in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
        let output = output.clone();
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if let Some(tx) = &lines {
                    let _ = tx.send(line.clone());
                }
                output.lock().unwrap().push(line);
            }
        });
    }
    ChildGuard { name, child, output }
}

/// Starts the exporter in demo mode with a web config; returns it and `(scheme, host:port)`
/// from its `listening on SCHEME://HOST:PORT/metrics` line.
fn start_exporter(web_config: &Path) -> (ExporterProcess, String, String) {
    let exporter = ExporterProcess::start(
        &["--demo", "--web.listen-address", "127.0.0.1:0", "--web.config.file", web_config.to_str().unwrap()],
        &[],
    );
    let scheme = exporter.metrics_url.split("://").next().unwrap().to_string();
    let address = exporter.address();
    (exporter, scheme, address)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "chat_exporter test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "chat_exporter test server");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(vec!["prometheus.test".to_string()]).unwrap();
    client.distinguished_name.push(DnType::CommonName, "prometheus");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();

    Pki {
        ca_pem: ca_cert.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Poll Prometheus' targets API until every target has been scraped at least once.
async fn wait_for_scrapes(http: &reqwest::Client, prom: &str, jobs: &[&str], prometheus: &ChildGuard) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(resp) = http.get(format!("{prom}/api/v1/targets?state=active")).send().await {
            if let Ok(body) = resp.json::<Value>().await {
                let targets: Vec<Value> = body["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
                let scraped = |job: &str| {
                    targets
                        .iter()
                        .any(|t| t["labels"]["job"] == job && t["health"].as_str().is_some_and(|h| h != "unknown"))
                };
                if jobs.iter().all(|j| scraped(j)) {
                    return targets;
                }
            }
        }
        if Instant::now() >= deadline {
            panic!("Prometheus did not scrape every target within 90 s:\n{}", prometheus.output());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn up_by_job(http: &reqwest::Client, prom: &str) -> std::collections::BTreeMap<String, f64> {
    let body: Value = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", "up")])
        .send()
        .await
        .expect("query Prometheus")
        .json()
        .await
        .expect("Prometheus answer is JSON");
    assert_eq!(body["status"], "success", "{body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["metric"]["job"].as_str().unwrap().to_string(), r["value"][1].as_str().unwrap().parse::<f64>().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_with_basic_auth_and_client_certs() {
    let prometheus_bin = support::tools::require_tool(&["prometheus"], "prometheus");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = make_pki();
    write(d, "ca.pem", &pki.ca_pem);
    write(d, "server.pem", &pki.server_cert_pem);
    write(d, "server-key.pem", &pki.server_key_pem);
    write(d, "client.pem", &pki.client_cert_pem);
    write(d, "client-key.pem", &pki.client_key_pem);

    // Exporter A: TLS + basic auth. Relative paths resolve against the web config's directory.
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    let web_basic = write(
        d,
        "web-basic.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  min_version: TLS12\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  {USER}: '{hash}'\n"
        ),
    );
    // Exporter B: TLS + required, verified client certificates.
    let web_mtls = write(
        d,
        "web-mtls.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
            d.join("server.pem").display(),
            d.join("server-key.pem").display()
        ),
    );

    let (exporter_a, scheme_a, addr_a) = start_exporter(&web_basic);
    let (exporter_b, scheme_b, addr_b) = start_exporter(&web_mtls);
    assert_eq!(scheme_a, "https", "the listening line must say https when TLS is configured");
    assert_eq!(scheme_b, "https");

    // Direct checks with a client that trusts the test CA.
    let tls_client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = tls_client.get(format!("https://{addr_a}/metrics")).send().await.expect("https GET /metrics");
    assert_eq!(resp.status(), 401, "no credentials must give 401");
    assert_eq!(
        resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Basic"),
        "401 must carry WWW-Authenticate: Basic"
    );
    assert_eq!(resp.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"));
    let resp =
        tls_client.get(format!("https://{addr_a}/metrics")).basic_auth(USER, Some("wrong")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a wrong password must give 401");
    for path in ["/-/healthy", "/-/ready"] {
        let resp = tls_client.get(format!("https://{addr_a}{path}")).send().await.unwrap();
        assert!(
            resp.status().is_success() || resp.status() == 503,
            "{path} must not ask for credentials (probes), got {}",
            resp.status()
        );
    }
    let resp =
        tls_client.get(format!("https://{addr_a}/metrics")).basic_auth(USER, Some(PASSWORD)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "right credentials must give 200");
    // Plain HTTP against the TLS port must not get metrics.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    // (An error, i.e. the connection closed, is a refusal as well.)
    if let Ok(resp) = plain.get(format!("http://{addr_a}/metrics")).basic_auth(USER, Some(PASSWORD)).send().await {
        assert_eq!(resp.status(), 400, "plain HTTP on the TLS port must be refused");
    }
    // Without a client certificate, exporter B refuses the handshake.
    let no_cert = tls_client.get(format!("https://{addr_b}/metrics")).send().await;
    assert!(no_cert.is_err(), "mutual TLS must refuse a client without a certificate, got {no_cert:?}");

    // A real Prometheus, configured with the CA, the credentials and the client certificate.
    let prom_port = free_port();
    let prom_config = write(
        d,
        "prometheus.yml",
        &format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: tls_basic_auth
    scheme: https
    tls_config:
      ca_file: {ca}
    basic_auth:
      username: {USER}
      password: '{PASSWORD}'
    static_configs:
      - targets: ['{addr_a}']
  - job_name: wrong_password
    scheme: https
    tls_config:
      ca_file: {ca}
    basic_auth:
      username: {USER}
      password: not-the-password
    static_configs:
      - targets: ['{addr_a}']
  - job_name: plain_http_on_tls_port
    scheme: http
    basic_auth:
      username: {USER}
      password: '{PASSWORD}'
    static_configs:
      - targets: ['{addr_a}']
  - job_name: mutual_tls
    scheme: https
    tls_config:
      ca_file: {ca}
      cert_file: {client_cert}
      key_file: {client_key}
    static_configs:
      - targets: ['{addr_b}']
  - job_name: mutual_tls_without_client_cert
    scheme: https
    tls_config:
      ca_file: {ca}
    static_configs:
      - targets: ['{addr_b}']
"#,
            ca = d.join("ca.pem").display(),
            client_cert = d.join("client.pem").display(),
            client_key = d.join("client-key.pem").display(),
        ),
    );
    let mut cmd = Command::new(&prometheus_bin);
    cmd.arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--log.level=warn");
    let prometheus = spawn("prometheus", cmd, None);
    let prom = format!("http://127.0.0.1:{prom_port}");

    let jobs =
        ["tls_basic_auth", "wrong_password", "plain_http_on_tls_port", "mutual_tls", "mutual_tls_without_client_cert"];
    let targets = wait_for_scrapes(&plain, &prom, &jobs, &prometheus).await;
    let last_error = |job: &str| -> String {
        targets
            .iter()
            .find(|t| t["labels"]["job"] == job)
            .and_then(|t| t["lastError"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let up = up_by_job(&plain, &prom).await;
    let report =
        format!("up by job: {up:?}\nlast errors: {:?}", jobs.iter().map(|j| (j, last_error(j))).collect::<Vec<_>>());

    eprintln!("{report}");
    assert_eq!(up.get("tls_basic_auth"), Some(&1.0), "TLS + basic auth scrape must succeed\n{report}");
    assert_eq!(up.get("mutual_tls"), Some(&1.0), "mutual TLS scrape must succeed\n{report}");
    assert_eq!(up.get("wrong_password"), Some(&0.0), "{report}");
    assert!(last_error("wrong_password").contains("401"), "wrong password must fail with 401\n{report}");
    assert_eq!(up.get("plain_http_on_tls_port"), Some(&0.0), "plain HTTP on the TLS port must fail\n{report}");
    assert_eq!(up.get("mutual_tls_without_client_cert"), Some(&0.0), "{report}");

    // The refusals are counted. The exposition may be refreshed only at the exporter's next
    // poll, so wait for the count to show (demo polls every few seconds).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = tls_client
            .get(format!("https://{addr_a}/metrics"))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counted = body
            .lines()
            .find(|l| l.starts_with("chat_exporter_http_unauthorized_requests_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok());
        match counted {
            Some(n) if n >= 3.0 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
            Some(n) => panic!("401s must be counted (2 direct + Prometheus' wrong_password job), got {n}"),
            None => panic!("chat_exporter_http_unauthorized_requests_total missing from /metrics:\n{body}"),
        }
    }

    drop(prometheus);
    drop(exporter_a);
    drop(exporter_b);
}

#[test]
fn a_bad_web_config_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let web = write(dir.path(), "web.yml", "tls_server_config:\n  cert_file: missing.pem\n");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat_exporter"));
    cmd.args(["--demo", "--web.listen-address", "127.0.0.1:0", "--web.config.file"]).arg(&web);
    let mut exporter = spawn("exporter (bad web config)", cmd, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = exporter.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            panic!(
                "a web config without key_file must stop the exporter at startup; still running after 30 s:\n{}",
                exporter.output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(200)); // let the reader threads drain the pipes
    let text = exporter.output();
    assert!(!status.success(), "a web config without key_file must stop the exporter:\n{text}");
    assert!(text.contains("tls_server_config.key_file"), "the error must name the key:\n{text}");
}

/// deploy/web-config.example.yml, with its certificate paths pointed at test certificates,
/// starts the exporter over TLS and lets `prometheus:example-password` in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_web_config_is_accepted() {
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/web-config.example.yml");
    let example = std::fs::read_to_string(&example_path).expect("deploy/web-config.example.yml");
    assert!(
        example.contains("/etc/chat_exporter/tls/"),
        "the example keeps its certificates under /etc/chat_exporter/tls/"
    );
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki();
    write(dir.path(), "server.crt", &pki.server_cert_pem);
    write(dir.path(), "server.key", &pki.server_key_pem);
    let web = write(
        dir.path(),
        "web-config.yml",
        &example.replace("/etc/chat_exporter/tls/", &format!("{}/", dir.path().display())),
    );
    let (_exporter, scheme, addr) = start_exporter(&web);
    assert_eq!(scheme, "https");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://{addr}/metrics"))
        .basic_auth("prometheus", Some("example-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the example's user and password (see its comments)");
    assert_eq!(resp.headers().get("x-frame-options").and_then(|v| v.to_str().ok()), Some("deny"));
    let resp = client.get(format!("https://{addr}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

/// A certificate made as `openssl req -x509` makes one: self-signed and marked a CA, with
/// the names given (none: only the subject's CN, `localhost`). (PEM, key PEM).
fn self_signed(names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `healthcheck --ca-file` trusts what curl's `--cacert` trusts: a self-signed
/// certificate as itself (webpki alone refuses one marked a CA as the server's own), with
/// subjectAltName or with only a CN, and a private CA as before; never a certificate the
/// file does not hold, nor one whose names are another host's.
#[test]
fn healthcheck_trusts_a_self_signed_certificate_as_curl_does() {
    use support::process::run_to_end;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let healthcheck =
        |url: &str, ca: &Path| run_to_end(&["healthcheck", "--url", url, "--ca-file", ca.to_str().unwrap()], &[]);
    let stranger = write(d, "stranger.pem", &self_signed(&["localhost", "127.0.0.1"]).0);
    let cases = [("with-names", &["localhost", "127.0.0.1"][..], "127.0.0.1"), ("cn-only", &[][..], "localhost")];
    for (name, names, host) in cases {
        let (cert, key) = self_signed(names);
        let cert_file = write(d, &format!("{name}.pem"), &cert);
        write(d, &format!("{name}-key.pem"), &key);
        let web = write(
            d,
            &format!("{name}-web.yml"),
            &format!("tls_server_config:\n  cert_file: {name}.pem\n  key_file: {name}-key.pem\n"),
        );
        let (exporter, scheme, address) = start_exporter(&web);
        assert_eq!(scheme, "https");
        let port = address.rsplit(':').next().unwrap();
        let url = format!("https://{host}:{port}/-/healthy");
        let (code, _, err) = healthcheck(&url, &cert_file);
        assert_eq!(code, 0, "{name}: the server's own self-signed certificate is trusted: {err}");
        let (code, _, err) = healthcheck(&url, &stranger);
        assert_ne!(code, 0, "{name}: another self-signed certificate is no trust");
        assert!(err.contains("certificate"), "{name}: {err}");
        drop(exporter);
    }
    // Names are still checked where the certificate has them.
    let (cert, key) = self_signed(&["chat.example.net"]);
    let cert_file = write(d, "elsewhere.pem", &cert);
    write(d, "elsewhere-key.pem", &key);
    let web = write(
        d,
        "elsewhere-web.yml",
        "tls_server_config:\n  cert_file: elsewhere.pem\n  key_file: elsewhere-key.pem\n",
    );
    let (_exporter, _, address) = start_exporter(&web);
    let (code, _, err) = healthcheck(&format!("https://{address}/-/healthy"), &cert_file);
    assert_ne!(code, 0, "a certificate for chat.example.net is not 127.0.0.1's");
    assert!(err.contains("not valid for name") || err.contains("NotValidForName"), "{err}");

    // A private CA, as before.
    let pki = make_pki();
    let ca = write(d, "ca.pem", &pki.ca_pem);
    write(d, "server.pem", &pki.server_cert_pem);
    write(d, "server-key.pem", &pki.server_key_pem);
    let web = write(d, "ca-web.yml", "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n");
    let (_exporter, _, address) = start_exporter(&web);
    let (code, _, err) = healthcheck(&format!("https://{address}/-/healthy"), &ca);
    assert_eq!(code, 0, "a certificate signed by the private CA: {err}");
}
