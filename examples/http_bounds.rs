//! The attacks of issue 9 against the release binary in demo mode, and what a scraper sees.
//!
//! 1. 1,100 slowloris connections (a partial request head, one more header line a second,
//!    reconnecting when closed): latency of a normal scrape on a new connection, and of
//!    `/-/ready`.
//! 2. 600 connections trickling an unfinished 360 KB request head (4 KiB every 100 ms,
//!    reconnecting when closed): the exporter's resident memory above idle (VmRSS from
//!    /proc/PID/status, sampled every 100 ms).
//! 3. 200 clients sending wrong passwords (a new one each time) to an exporter whose web
//!    config has cost-12 bcrypt hashes: latency of a scrape with credentials already
//!    verified, and of first logins from another address, from the flooding address, and
//!    while the flood comes from 200 addresses.
//!
//! Each attack runs against a fresh exporter started with `ulimit -n 1024` (systemd's
//! default soft limit). Everything stays on loopback; every loop stops by itself.
//!
//! Run: cargo run --release --example http_bounds [-- --bin PATH]
//! (without --bin, target/release/chat_exporter, built first with `cargo build --release`).

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What Prometheus waits by default before giving a scrape up.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

struct Exporter {
    child: Child,
    addr: String,
}

impl Exporter {
    fn start(bin: &Path, extra: &[&str]) -> Exporter {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n 1024 && exec "$0" "$@""#)
            .arg(bin)
            .args(["--demo", "--web.listen-address", "127.0.0.1:0", "--log.level", "warn"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chat_exporter");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut chunk = [0u8; 1024];
            let mut sent = false;
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&chunk[..n]));
                if !sent {
                    if let Some(rest) = text.split("chat_exporter listening on ").nth(1) {
                        if let Some(line) = rest.split('\n').next().filter(|_| rest.contains('\n')) {
                            let addr = line.split("://").nth(1).unwrap().split('/').next().unwrap().to_string();
                            let _ = tx.send(addr);
                            sent = true;
                        }
                    }
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("chat_exporter says where it listens");
        Exporter { child, addr }
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attackers' own runtime and threads, so that the measuring client does not queue
/// behind thousands of attack requests in its own runtime.
fn attacker() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    })
}

/// A client opening a new connection per request (the worst case for a scraper: its kept
/// connection may have been closed), from `source`.
fn client(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .timeout(SCRAPE_TIMEOUT)
        .build()
        .unwrap()
}

/// One request: its status and how long it took ("timed out" past the scrape timeout).
async fn timed(request: reqwest::RequestBuilder) -> (String, Duration) {
    let started = Instant::now();
    let outcome = match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status.to_string()
        }
        Err(e) if e.is_timeout() => "timed out".to_string(),
        Err(_) => "connection failed".to_string(),
    };
    (outcome, started.elapsed())
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    }
}

/// `n` requests one after the other: "median / max" and the statuses seen.
async fn series(n: usize, make: impl Fn() -> reqwest::RequestBuilder) -> String {
    let mut times = Vec::new();
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..n {
        let (status, took) = timed(make()).await;
        *statuses.entry(status).or_default() += 1;
        times.push(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    times.sort();
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{n}× {s}")).collect();
    format!("median {}, max {} ({})", ms(times[n / 2]), ms(times[n - 1]), statuses.join(", "))
}

/// Connections that each send `head` and then `line` every `every`, up to `total` bytes,
/// reconnecting (and starting over) whenever the server closes them, until `until`.
fn trickle(
    addr: &str,
    n: usize,
    head: &'static [u8],
    line: &'static [u8],
    every: Duration,
    total: usize,
    until: Instant,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AtomicUsize>) {
    let reconnects = Arc::new(AtomicUsize::new(0));
    let tasks = (0..n)
        .map(|_| {
            let addr = addr.to_string();
            let reconnects = reconnects.clone();
            attacker().spawn(async move {
                let mut first = true;
                while Instant::now() < until {
                    if !first {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(every).await;
                    }
                    first = false;
                    let Ok(mut s) = TcpStream::connect(&addr).await else { continue };
                    if s.write_all(head).await.is_err() {
                        continue;
                    }
                    let mut sent = head.len();
                    let mut closed = false;
                    while Instant::now() < until && !closed {
                        tokio::time::sleep(every).await;
                        if sent < total {
                            closed = s.write_all(line).await.is_err();
                            sent += line.len();
                        } else {
                            // Done sending; notice when the server closes.
                            let mut buf = [0u8; 1024];
                            closed = matches!(
                                tokio::time::timeout(every, tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await,
                                Ok(Ok(0)) | Ok(Err(_))
                            );
                        }
                    }
                }
            })
        })
        .collect();
    (tasks, reconnects)
}

async fn slowloris(bin: &Path, rows: &mut Vec<[String; 3]>) {
    let exporter = Exporter::start(bin, &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = client("127.0.0.1");
    let url = format!("http://{}/metrics", exporter.addr);
    let ready = format!("http://{}/-/ready", exporter.addr);
    let idle = series(5, || c.get(&url)).await;
    let attack_started = Instant::now();
    let until = attack_started + Duration::from_secs(30);
    let (tasks, reconnects) = trickle(
        &exporter.addr,
        1100,
        b"GET /metrics HTTP/1.1\r\nHost: chat-exporter\r\n",
        b"X-Slow: 1\r\n",
        Duration::from_secs(1),
        usize::MAX,
        until,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scrape = series(9, || c.get(&url)).await;
    let probe = series(5, || c.get(&ready)).await;
    let attack_lasted = attack_started.elapsed();
    for t in tasks {
        t.abort();
    }
    rows.push(["none".into(), "scrape, new connection".into(), idle]);
    rows.push(["1,100 slowloris connections".into(), "scrape, new connection".into(), scrape]);
    rows.push(["1,100 slowloris connections".into(), "`/-/ready`".into(), probe]);
    rows.push([
        "1,100 slowloris connections".into(),
        "attack connections closed by the server".into(),
        format!("{} in {:.0} s", reconnects.load(Ordering::Relaxed), attack_lasted.as_secs_f64()),
    ]);
}

async fn trickling_heads(bin: &Path, rows: &mut Vec<[String; 3]>) {
    let exporter = Exporter::start(bin, &[]);
    let c = client("127.0.0.1");
    let url = format!("http://{}/metrics", exporter.addr);
    let _ = series(3, || c.get(&url)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = exporter.rss_kib();
    static CHUNK: [u8; 4096] = [b'a'; 4096];
    let until = Instant::now() + Duration::from_secs(12);
    let (tasks, _) = trickle(
        &exporter.addr,
        600,
        b"GET /metrics HTTP/1.1\r\nHost: chat-exporter\r\nX-Big: ",
        &CHUNK,
        Duration::from_millis(100),
        360 * 1024,
        until,
    );
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        let pid = exporter.child.id();
        tokio::spawn(async move {
            while Instant::now() < until {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let scrape = series(5, || c.get(&url)).await;
    let _ = sampler.await;
    for t in tasks {
        t.abort();
    }
    let peak = peak.load(Ordering::Relaxed);
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    rows.push(["none".into(), "resident memory (VmRSS)".into(), mib(idle)]);
    rows.push([
        "600 trickling 360 KB heads".into(),
        "peak resident memory above idle".into(),
        format!("{} (peak {})", mib(peak.saturating_sub(idle)), mib(peak)),
    ]);
    rows.push(["600 trickling 360 KB heads".into(), "scrape, new connection".into(), scrape]);
}

async fn bcrypt_flood(bin: &Path, rows: &mut Vec<[String; 3]>) {
    let dir = tempfile::tempdir().unwrap();
    let users = [("prometheus", "s3cret"), ("grafana", "0ther"), ("alertmanager", "th1rd"), ("extra", "f0urth")];
    let mut yaml = String::from("basic_auth_users:\n");
    for (user, password) in users {
        yaml.push_str(&format!("  {user}: '{}'\n", bcrypt::hash(password, 12).unwrap()));
    }
    let web = dir.path().join("web.yml");
    std::fs::write(&web, yaml).unwrap();
    let exporter = Exporter::start(bin, &["--web.config.file", web.to_str().unwrap()]);
    let url = format!("http://{}/metrics", exporter.addr);
    let scraper = client("127.0.0.1");
    let (status, took) = timed(scraper.get(&url).basic_auth("prometheus", Some("s3cret"))).await;
    rows.push(["none".into(), "first login, cost-12 hash".into(), format!("{} ({status})", ms(took))]);

    let flood = |sources: Vec<String>, seconds: u64| {
        let until = Instant::now() + Duration::from_secs(seconds);
        let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
        // Keep-alive connections, as a client hammering a server would use.
        let clients: Vec<reqwest::Client> = sources
            .iter()
            .map(|s| {
                reqwest::Client::builder()
                    .local_address(s.parse::<IpAddr>().unwrap())
                    .timeout(SCRAPE_TIMEOUT)
                    .build()
                    .unwrap()
            })
            .collect();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (c, url, statuses) = (clients[i % clients.len()].clone(), url.clone(), statuses.clone());
                attacker().spawn(async move {
                    let mut n = 0;
                    while Instant::now() < until {
                        n += 1;
                        let (status, _) =
                            timed(c.get(&url).basic_auth("prometheus", Some(format!("guess-{i}-{n}")))).await;
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                    }
                })
            })
            .collect();
        (tasks, statuses)
    };

    // From one address.
    let (tasks, statuses) = flood(vec!["127.0.0.2".to_string()], 12);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cached = series(9, || scraper.get(&url).basic_auth("prometheus", Some("s3cret"))).await;
    let (status, took) = timed(client("127.0.0.3").get(&url).basic_auth("grafana", Some("0ther"))).await;
    let (status_same, took_same) = timed(client("127.0.0.2").get(&url).basic_auth("alertmanager", Some("th1rd"))).await;
    for t in tasks {
        let _ = t.await;
    }
    let answered: Vec<String> = statuses.lock().unwrap().iter().map(|(s, n)| format!("{n}× {s}")).collect();
    let who = "200 wrong-password clients, one address";
    rows.push([who.into(), "scrape, credentials already verified".into(), cached]);
    rows.push([who.into(), "first login from another address".into(), format!("{} ({status})", ms(took))]);
    rows.push([
        who.into(),
        "first login from the flooding address".into(),
        format!("{} ({status_same})", ms(took_same)),
    ]);
    rows.push([who.into(), "answers to the flood in 12 s".into(), answered.join(", ")]);

    // From 200 addresses.
    let (tasks, _) = flood((1..=200).map(|i| format!("127.0.1.{i}")).collect(), 8);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cached = series(5, || scraper.get(&url).basic_auth("prometheus", Some("s3cret"))).await;
    let (status, took) = timed(client("127.0.0.4").get(&url).basic_auth("extra", Some("f0urth"))).await;
    for t in tasks {
        let _ = t.await;
    }
    let who = "200 wrong-password clients, 200 addresses";
    rows.push([who.into(), "scrape, credentials already verified".into(), cached]);
    rows.push([who.into(), "first login from another address".into(), format!("{} ({status})", ms(took))]);
}

fn binary() -> PathBuf {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bin") {
        return PathBuf::from(args.get(i + 1).expect("--bin PATH"));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "chat_exporter"])
        .current_dir(root)
        .status()
        .expect("cargo build --release");
    assert!(status.success(), "cargo build --release failed");
    root.join("target/release/chat_exporter")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bin = binary();
    let mut rows = Vec::new();
    slowloris(&bin, &mut rows).await;
    trickling_heads(&bin, &mut rows).await;
    bcrypt_flood(&bin, &mut rows).await;
    println!("| attack | measured | result |");
    println!("|---|---|---|");
    for [attack, what, result] in rows {
        println!("| {attack} | {what} | {result} |");
    }
}
