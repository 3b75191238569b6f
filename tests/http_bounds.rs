//! The HTTP server's bounds (issue 9): slow and silent connections, oversized request heads,
//! TLS clients that never say hello, and basic authentication under a wrong-password flood.
//!
//! The attacks that need the default bounds run against the real binary in demo mode, with
//! its open-file limit at 1024 (systemd's default soft limit), where an unbounded server runs
//! out of descriptors. The timeouts are checked against `serve_with_limits` in-process with
//! short values, so that no test waits for the 10 s defaults. Every check asserts an outcome
//! within a generous bound (5 s), not a timing figure: `examples/http_bounds.rs` measures.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;
use axum::routing;
use axum::Router;
use chat_exporter::http::web::serve::MAX_CONNECTIONS;
use chat_exporter::http::web::{serve_with_limits, Limits, WebConfig};
use support::process::ExporterProcess;

/// Generous bound for anything that should be quick.
const PROMPTLY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The exporter in demo mode, started with `ulimit -n 1024` (the connection cap must hold
/// below the process' own file limit); killed on drop.
fn start_exporter(extra: &[&str]) -> ExporterProcess {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n 1024 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_chat_exporter"))
        .args(["--demo", "--web.listen-address", "127.0.0.1:0"])
        .args(extra);
    ExporterProcess::spawn(cmd)
}

/// `n` connections to `addr`, each having sent `prefix` and nothing more.
fn open_stalled(addr: &str, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            if !prefix.is_empty() {
                s.write_all(prefix).unwrap();
            }
            s
        })
        .collect()
}

/// How many of `conns` the server has closed.
fn closed(conns: &[TcpStream]) -> usize {
    conns
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 1024];
            let gone = match (&**s).read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            };
            s.set_nonblocking(false).unwrap();
            gone
        })
        .count()
}

const SLOW_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: chat-exporter\r\nX-Slow: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_connections_do_not_delay_a_scrape() {
    let exporter = start_exporter(&[]);
    // More than the open-file limit of the exporter (1024): an unbounded server stops
    // accepting and scrapes time out.
    let stalled = open_stalled(&exporter.address(), 1100, SLOW_HEAD);
    let client = reqwest::Client::builder().timeout(PROMPTLY).build().unwrap();
    let started = Instant::now();
    let scrape = client.get(format!("http://{}/metrics", exporter.address())).send().await;
    let scrape = scrape.unwrap_or_else(|e| panic!("a scrape among 1,100 slow connections failed: {e}"));
    assert_eq!(scrape.status(), 200);
    assert!(scrape.text().await.unwrap().contains("chat_exporter_build_info"));
    let ready = client.get(format!("http://{}/-/ready", exporter.address())).send().await.expect("/-/ready answers");
    assert!(ready.status() == 200 || ready.status() == 503, "{}", ready.status());
    eprintln!("scrape and /-/ready among 1,100 slow connections: {:?}", started.elapsed());
    // The cap: the server holds at most MAX_CONNECTIONS, closing those waiting longest.
    let closed = closed(&stalled);
    assert!(closed >= 1100 - MAX_CONNECTIONS, "only {closed} of 1,100 slow connections were closed");
}

#[test]
fn an_oversized_request_head_gets_431_and_the_connection_is_closed() {
    let exporter = start_exporter(&[]);
    let mut s = TcpStream::connect(&exporter.address()).unwrap();
    s.set_read_timeout(Some(PROMPTLY)).unwrap();
    // A head past the limit, not finished: the server has read all of it when it answers,
    // so it closes with a FIN (no unread data, no reset that could overtake the answer).
    let mut head = SLOW_HEAD.to_vec();
    head.resize(chat_exporter::http::web::serve::MAX_HEADER_BYTES + 1024, b'a');
    s.write_all(&head).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("the server answers and closes the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// In-process, short timeouts
// ---------------------------------------------------------------------------------------------

struct InProcess {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    async fn start(web: Option<WebConfig>, limits: Limits) -> InProcess {
        // An answer larger than any socket's buffers, shared by every request.
        let large = bytes::Bytes::from(vec![b'#'; 32 << 20]);
        let app = Router::new()
            .route("/metrics", routing::get(|| async { "metrics\n" }))
            .route("/large", routing::get(move || std::future::ready(large.clone())))
            .route("/-/healthy", routing::get(|| async { "Healthy\n" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with_limits(listener, app, web, limits, async {
            let _ = stopped.await;
        }));
        InProcess { addr, stop: Some(stop), server }
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let server = &mut self.server;
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("shutdown").unwrap().unwrap();
    }
}

fn short_limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(300),
        keep_alive_timeout: Duration::from_millis(1500),
        tls_handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    }
}

/// Blocks until the server closes `s` (EOF or reset); how long that took.
fn wait_closed(s: &mut TcpStream) -> Duration {
    let started = Instant::now();
    s.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("the connection is still open after {:?}", started.elapsed())
            }
            Err(_) => return started.elapsed(),
        }
    }
}

fn get(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    s.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") || !answer.ends_with(b"\n") {
        let n = s.read(&mut buf).expect("an answer");
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_heads_are_closed_after_the_header_read_timeout_and_idle_ones_after_keep_alive() {
    let server = InProcess::start(None, short_limits()).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // Never finishes its head; another never says anything.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(SLOW_HEAD).unwrap();
        let mut silent = TcpStream::connect(addr).unwrap();
        let waited = wait_closed(&mut slow);
        assert!(waited >= Duration::from_millis(200), "closed too early: {waited:?}");
        wait_closed(&mut silent);

        // Keep-alive: a connection idle for longer than the header-read timeout but shorter
        // than the keep-alive timeout still serves its next request.
        let mut kept = TcpStream::connect(addr).unwrap();
        assert!(get(&mut kept, "/metrics").starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(700));
        assert!(get(&mut kept, "/metrics").starts_with("HTTP/1.1 200"), "the idle connection was closed too soon");
        let idle = wait_closed(&mut kept);
        assert!(idle >= Duration::from_millis(1000), "closed before the keep-alive timeout: {idle:?}");
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_a_fresh_client_is_served() {
    let limits = Limits { max_connections: 16, ..Limits::default() };
    let server = InProcess::start(None, limits).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // The oldest connection, its head unfinished.
        let mut oldest = TcpStream::connect(addr).unwrap();
        oldest.write_all(SLOW_HEAD).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let stalled = open_stalled(&addr.to_string(), 64, SLOW_HEAD);
        let mut fresh = TcpStream::connect(addr).unwrap();
        assert!(get(&mut fresh, "/-/healthy").starts_with("HTTP/1.1 200"));
        assert!(closed(&stalled) >= 64 - 16, "the cap must close the connections waiting longest");
        drop(stalled);
        // It was the first closed.
        wait_closed(&mut oldest);
    })
    .await
    .unwrap();
    server.stop().await;
}

/// Clients that ask for an answer larger than their sockets' buffers and never read it
/// hold every slot (512, the default cap, as the issue's 512 scrapers did): a fresh
/// client is still served, since a connection asked to close at the cap gets
/// `CLOSE_GRACE` to finish its response, not for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_their_answer_do_not_lock_out_a_scrape() {
    let limits = Limits::default();
    let clients = limits.max_connections;
    let server = InProcess::start(None, limits).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let readers_none = open_stalled(&addr.to_string(), clients, b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n");
        // Every one of them busy writing into a full socket.
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        let mut fresh = TcpStream::connect(addr).unwrap();
        assert!(get(&mut fresh, "/-/healthy").starts_with("HTTP/1.1 200"), "a fresh client is served");
        eprintln!("served after {:?} with {clients} clients not reading", started.elapsed());
        drop(readers_none);
    })
    .await
    .unwrap();
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for localhost / 127.0.0.1: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn tls_web_config(dir: &Path, extra: &str) -> (std::path::PathBuf, String) {
    let (cert, key) = self_signed();
    std::fs::write(dir.join("server.pem"), &cert).unwrap();
    std::fs::write(dir.join("server-key.pem"), &key).unwrap();
    let path = dir.join("web.yml");
    std::fs::write(&path, format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n{extra}"))
        .unwrap();
    (path, cert)
}

fn tls_client(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(PROMPTLY)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_that_never_say_hello_do_not_lock_out_a_client_or_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (web, cert) = tls_web_config(dir.path(), "");
    let exporter = start_exporter(&["--web.config.file", web.to_str().unwrap()]);
    let silent = open_stalled(&exporter.address(), 600, b"");
    let url = format!("https://localhost:{}/metrics", exporter.address().rsplit(':').next().unwrap());
    let answer = tls_client(&cert).get(&url).send().await;
    let answer = answer.unwrap_or_else(|e| panic!("a TLS client among 600 silent connections failed: {e}"));
    assert_eq!(answer.status(), 200);
    assert!(closed(&silent) >= 600 - MAX_CONNECTIONS);
    drop(silent);
    // Hundreds of connections closed at the cap, and as many refused handshakes: a few
    // warning lines, each counting what it did not log.
    std::thread::sleep(Duration::from_millis(300));
    let stderr = exporter.stderr.lock().unwrap().clone();
    let warnings = stderr.lines().filter(|l| l.contains("WARN")).count();
    assert!(warnings <= 4, "{warnings} warning lines:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_never_says_hello_is_closed_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (web, cert) = tls_web_config(dir.path(), "");
    let web = WebConfig::load(&web).unwrap();
    let server = InProcess::start(Some(web), short_limits()).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(addr).unwrap();
        let waited = wait_closed(&mut silent);
        assert!(waited >= Duration::from_millis(200), "closed too early: {waited:?}");
    })
    .await
    .unwrap();
    let answer = tls_client(&cert).get(format!("https://localhost:{}/-/healthy", addr.port())).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Basic authentication
// ---------------------------------------------------------------------------------------------

fn auth_config(users: &[(&str, &str, u32)]) -> WebConfig {
    let mut yaml = String::from("basic_auth_users:\n");
    for (user, password, cost) in users {
        yaml.push_str(&format!("  {user}: '{}'\n", bcrypt::hash(password, *cost).unwrap()));
    }
    WebConfig::from_yaml_str(&yaml, Path::new("/nonexistent")).unwrap()
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address is loopback).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(PROMPTLY)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cost_the_same_bcrypt_work_as_wrong_passwords_and_successes_are_cached() {
    let web = auth_config(&[("prometheus", "s3cret", 6), ("light", "x", 4)]);
    let auth = web.basic_auth().unwrap();
    let server = InProcess::start(Some(web), Limits::default()).await;
    let url = format!("http://{}/metrics", server.addr);
    let client = client_from("127.0.0.1");
    let work = || (auth.bcrypt_verifications(), auth.bcrypt_rounds());

    let status = |user: &'static str, password: &'static str| {
        let request = client.get(&url).basic_auth(user, Some(password));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("nobody", "s3cret").await, 401);
    let unknown_user = work();
    assert_eq!(status("prometheus", "wrong").await, 401);
    let wrong_password = (work().0 - unknown_user.0, work().1 - unknown_user.1);
    assert_eq!(unknown_user, (1, 1 << 6), "an unknown user costs one verification at the highest configured cost");
    assert_eq!(wrong_password, unknown_user, "a wrong password costs the same as an unknown user");

    assert_eq!(status("prometheus", "s3cret").await, 200);
    let after_login = work();
    for _ in 0..5 {
        assert_eq!(status("prometheus", "s3cret").await, 200);
    }
    assert_eq!(work(), after_login, "verified credentials are cached: no bcrypt on later scrapes");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_delays_neither_a_cached_scrape_nor_a_first_login() {
    // Cost 10: some 50-100 ms a check, so 200 queued wrong passwords would take 10-20 s.
    let web = auth_config(&[("prometheus", "s3cret", 10), ("grafana", "0ther", 10)]);
    let auth = web.basic_auth().unwrap();
    let server = InProcess::start(Some(web), Limits::default()).await;
    let url = format!("http://{}/metrics", server.addr);
    let scraper = client_from("127.0.0.1");
    assert_eq!(scraper.get(&url).basic_auth("prometheus", Some("s3cret")).send().await.unwrap().status(), 200);

    // 200 clients sending wrong passwords (each a new one) from another address, for 3 s.
    let flood_until = Instant::now() + Duration::from_secs(3);
    let flooder = client_from("127.0.0.2");
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let (client, url, statuses) = (flooder.clone(), url.clone(), statuses.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < flood_until {
                    n += 1;
                    if let Ok(r) =
                        client.get(&url).basic_auth("prometheus", Some(format!("guess-{i}-{n}"))).send().await
                    {
                        *statuses.lock().unwrap().entry(r.status().as_u16()).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let verifications_before = auth.bcrypt_verifications();

    let started = Instant::now();
    let cached = scraper.get(&url).basic_auth("prometheus", Some("s3cret")).send().await;
    assert_eq!(cached.expect("the cached scrape is answered").status(), 200);
    let cached_took = started.elapsed();

    let started = Instant::now();
    let first = client_from("127.0.0.3").get(&url).basic_auth("grafana", Some("0ther")).send().await;
    assert_eq!(first.expect("the first login is answered").status(), 200, "a first login from another address");
    let first_took = started.elapsed();

    for task in flood {
        task.await.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    eprintln!("cached scrape {cached_took:?}, first login {first_took:?}, flood answers {statuses:?}");
    assert!(auth.bcrypt_verifications() > verifications_before, "the flood did keep bcrypt busy");
    assert!(statuses.get(&401).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(statuses.keys().all(|s| *s == 401 || *s == 503), "{statuses:?}");
    server.stop().await;
}
