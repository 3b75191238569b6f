//! What the exporter costs at a contact centre of a chosen size.
//!
//! The simulator serves Movidesk's API (the platform with the tightest budget) for a
//! scripted world of the chosen size: nothing changes unless this program says so. The
//! real `chat_exporter` binary polls it over loopback HTTP every 2 s, with the request
//! budget raised so that the platform is never the limit and the state file on. Its CPU
//! and memory are read from /proc, so they are its own; the bytes written to the state
//! file are read from the state directory. Then 16 connections scrape `/metrics` as fast
//! as they can, and nginx serving the same bytes from a static file, in the same run.
//!
//! Run: scripts/scale.sh [SIZE...]   (installs nginx when missing)
//!  or: cargo run --release --example scale [-- SIZE...]
//! SIZE is OPEN/AGENTS/WAITING (e.g. 4000/400/1000); by default 100/20/25, 1000/100/250
//! and 4000/400/1000.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_exporter::simulator::{self, RunningSimulator, SimOptions};

/// Idle polls measured, and seconds each side spends scraping.
const IDLE_POLLS: usize = 10;
const SCRAPE_SECONDS: u64 = 5;
const CONNECTIONS: usize = 16;

#[derive(Clone, Copy)]
struct Size {
    open: usize,
    agents: usize,
    waiting: usize,
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n: Vec<usize> = s
            .split('/')
            .map(|x| x.parse().map_err(|_| format!("{s}: expected OPEN/AGENTS/WAITING")))
            .collect::<Result<_, _>>()?;
        match n[..] {
            [open, agents, waiting] if waiting <= open && agents > 0 => Ok(Size { open, agents, waiting }),
            _ => Err(format!("{s}: expected OPEN/AGENTS/WAITING, waiting at most open, at least one agent")),
        }
    }
}

struct Row {
    size: Size,
    idle_cpu_ms: f64,
    idle_bytes: f64,
    transitions: usize,
    burst_cpu_s: f64,
    burst_bytes: u64,
    rss_mib: f64,
    peak_rss_mib: f64,
    exposition_bytes: usize,
    series: usize,
    exporter: Throughput,
    nginx: Throughput,
    gzip_bytes: usize,
    exporter_gzip: Throughput,
    nginx_gzip: Throughput,
}

struct Throughput {
    per_second: f64,
    p99_ms: f64,
}

/// The exporter's user + system CPU so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the exporter is running");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok()).unwrap_or(100.0)
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// Bytes written to the files of a directory: every file's growth, a new file (a new
/// inode: an atomic replace) from zero. Sampled every few milliseconds.
struct WriteWatch {
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl WriteWatch {
    fn start(dir: PathBuf) -> Self {
        use std::os::unix::fs::MetadataExt;
        let (written, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (w, s) = (written.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sizes: HashMap<u64, u64> = HashMap::new();
            while !s.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if let Ok(meta) = entry.metadata() {
                        let before = sizes.insert(meta.ino(), meta.size()).unwrap_or(0);
                        w.fetch_add(meta.size().saturating_sub(before), Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        WriteWatch { written, stop }
    }
    fn bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

impl Drop for WriteWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exporter_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SCALE_EXPORTER_BINARY") {
        return path.into();
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Run through cargo: build the binary of the same source first.
    if let Some(cargo) = std::env::var_os("CARGO") {
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--bin", "chat_exporter"])
            .current_dir(manifest)
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build --release --bin chat_exporter failed");
    }
    let path = manifest.join("target/release/chat_exporter");
    assert!(path.is_file(), "{} is missing: run cargo build --release --bin chat_exporter", path.display());
    path
}

/// Starts the exporter and returns it with its metrics URL.
fn start_exporter(binary: &Path, config: &Path) -> (Guard, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary)
        .args(["--config.file", config.to_str().unwrap(), "--web.listen-address", "127.0.0.1:0", "--log.level", "warn"])
        // Only the configuration file configures it (CHAT_EXPORTER_* would override it).
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chat_exporter");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.split("chat_exporter listening on ").nth(1) {
                    break url.trim().to_string();
                }
            }
            _ => panic!("chat_exporter exited before listening"),
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (Guard(child), url)
}

/// Polls that have started so far: each opens one incremental window (its first page).
fn polls_started(sim: &RunningSimulator) -> usize {
    sim.state
        .requests()
        .iter()
        .filter(|r| r.endpoint == "tickets" && r.query.contains("lastUpdate ge") && !r.query.contains("id gt"))
        .count()
}

async fn wait_for_polls(sim: &RunningSimulator, target: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while polls_started(sim) < target {
        assert!(Instant::now() < deadline, "the exporter stopped polling");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes `url` from `CONNECTIONS` connections for `SCRAPE_SECONDS`; with `gzip`, asks
/// for it as Prometheus does, and takes the compressed bytes as they come.
async fn scrape_load(url: &str, gzip: bool) -> Throughput {
    let mut headers = reqwest::header::HeaderMap::new();
    if gzip {
        headers.insert(reqwest::header::ACCEPT_ENCODING, reqwest::header::HeaderValue::from_static("gzip"));
    }
    let client = reqwest::Client::builder()
        .no_gzip()
        .default_headers(headers)
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(SCRAPE_SECONDS);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let body = client.get(&url).send().await.unwrap().bytes().await.unwrap();
                    assert!(!body.is_empty());
                    latencies.push(t.elapsed().as_secs_f64());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Throughput {
        per_second: all.len() as f64 / elapsed,
        p99_ms: all[(all.len() * 99 / 100).min(all.len() - 1)] * 1000.0,
    }
}

/// nginx serving `body` as a static file at `/metrics`, and `gzip` as its precompressed
/// copy to clients that accept gzip (`gzip_static`).
fn start_nginx(dir: &Path, body: &[u8], gzip: &[u8]) -> (Guard, String) {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("metrics"), body).unwrap();
    std::fs::write(root.join("metrics.gz"), gzip).unwrap();
    // Its workers run as nobody when started as root.
    for p in [dir, &root, &root.join("metrics"), &root.join("metrics.gz")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n default_type text/plain;\n keepalive_requests 100000;\n \
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; \
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n \
             server {{ listen 127.0.0.1:{port}; root {r}; location / {{ gzip_static on; }} }}\n}}\n",
            d = dir.display(),
            r = root.display()
        ),
    )
    .unwrap();
    let nginx = which("nginx").expect("nginx is not installed: scripts/scale.sh installs it (apt-get install nginx)");
    let child = Command::new(nginx)
        .args(["-e", dir.join("error.log").to_str().unwrap(), "-c", conf.to_str().unwrap(), "-g", "daemon off;"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start: {}", dir.join("error.log").display());
        std::thread::sleep(Duration::from_millis(20));
    }
    (Guard(child), format!("http://127.0.0.1:{port}/metrics"))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).map(|d| d.join(name)).find(|p| p.is_file())
}

async fn measure(binary: &Path, size: Size) -> Row {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = SimOptions {
        rate_limit: None,
        speed: None,
        ..SimOptions::new(&chat_exporter::platforms::movidesk::facade::MovideskFacade)
    };
    let mut sim = simulator::serve(listener, options).await.unwrap();
    sim.state.with_world(|w| w.populate(size.agents, size.open, size.waiting));
    sim.start_clock(1.0);

    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let section = sim.section();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[movidesk]\nbase_url = {}\ntoken = {}\npoll_interval = \"2s\"\nrequests_per_minute = 1000000\n\n\
             [state]\npath = \"{}\"\n",
            section["base_url"],
            section["token"],
            state_dir.join("state.json").display()
        ),
    )
    .unwrap();
    let (exporter, metrics_url) = start_exporter(binary, &config);
    let pid = exporter.0.id();
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    // Started: the queue is what the world says.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = client.get(&metrics_url).send().await {
            let text = r.text().await.unwrap_or_default();
            if sample(&text, "chat_conversations_waiting") == size.waiting as f64
                && sample(&text, "chat_conversations_active") == (size.open - size.waiting) as f64
            {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the exporter never showed the world's queue");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let watch = WriteWatch::start(state_dir.clone());

    // Idle: nothing changes on the platform.
    let first = polls_started(&sim) + 1;
    wait_for_polls(&sim, first).await;
    let (cpu0, bytes0) = (cpu_seconds(pid), watch.bytes());
    wait_for_polls(&sim, first + IDLE_POLLS).await;
    let (idle_cpu, idle_bytes) = (cpu_seconds(pid) - cpu0, watch.bytes() - bytes0);

    // A burst: a third of the attendance finished, then half the queue answered, just
    // after a poll; measured until the poll after the one that reads it starts.
    let next = polls_started(&sim) + 1;
    wait_for_polls(&sim, next).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (cpu0, bytes0) = (cpu_seconds(pid), watch.bytes());
    let transitions = sim.state.with_world(|w| {
        w.now += chrono::Duration::seconds(1);
        w.finish_attending((size.open - size.waiting) / 3) + w.answer_waiting(size.waiting / 2)
    });
    wait_for_polls(&sim, next + 2).await;
    let (burst_cpu, burst_bytes) = (cpu_seconds(pid) - cpu0, watch.bytes() - bytes0);
    let (rss, peak_rss) = rss_mib(pid);

    let body = client.get(&metrics_url).send().await.unwrap().bytes().await.unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    let answered = sample(text, "chat_conversations_answered_total");
    let finished = sample(text, "chat_conversations_finished_total");
    assert_eq!((answered + finished) as usize, transitions, "every transition counted once");
    let series = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();

    let gzip = client.get(&metrics_url).header("Accept-Encoding", "gzip").send().await.unwrap();
    assert_eq!(gzip.headers().get("content-encoding").map(|v| v.as_bytes()), Some(&b"gzip"[..]));
    let gzip = gzip.bytes().await.unwrap();
    let (nginx, nginx_url) = start_nginx(&dir.path().join("nginx"), &body, &gzip);
    let exporter_load = scrape_load(&metrics_url, false).await;
    let nginx_load = scrape_load(&nginx_url, false).await;
    let exporter_gzip = scrape_load(&metrics_url, true).await;
    let nginx_gzip = scrape_load(&nginx_url, true).await;
    drop(nginx);
    drop(exporter);
    Row {
        size,
        idle_cpu_ms: idle_cpu * 1000.0 / IDLE_POLLS as f64,
        idle_bytes: idle_bytes as f64 / IDLE_POLLS as f64,
        transitions,
        burst_cpu_s: burst_cpu,
        burst_bytes,
        rss_mib: rss,
        peak_rss_mib: peak_rss,
        exposition_bytes: body.len(),
        series,
        exporter: exporter_load,
        nginx: nginx_load,
        gzip_bytes: gzip.len(),
        exporter_gzip,
        nginx_gzip,
    }
}

fn main() {
    let sizes: Vec<Size> = {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.is_empty() {
            ["100/20/25", "1000/100/250", "4000/400/1000"].iter().map(|s| s.parse().unwrap()).collect()
        } else {
            args.iter().map(|s| s.parse().unwrap_or_else(|e| panic!("{e}"))).collect()
        }
    };
    let binary = exporter_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "\nMovidesk simulator, a poll every 2 s, state file on; {IDLE_POLLS} idle polls; scrapes from {CONNECTIONS} \
         connections for {SCRAPE_SECONDS} s each:\n"
    );
    println!(
        "| open chats / agents (waiting) | CPU per idle poll | state bytes per idle poll | poll with transitions: CPU | \
         its state bytes | RSS (peak) | exposition | scrapes/s: exporter / nginx | p99: exporter / nginx | \
         gzipped (as Prometheus asks): size, scrapes/s exporter / nginx, p99 exporter / nginx |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for size in sizes {
        let r = runtime.block_on(measure(&binary, size));
        println!(
            "| {} / {} ({}) | {:.1} ms ({:.2}% of a core) | {:.0} | {} transitions: {:.3} s | {} | {:.1} MiB ({:.1}) | \
             {:.0} KiB, {} series | {:.0} / {:.0} ({:.2}) | {:.1} ms / {:.1} ms | \
             {:.0} KiB, {:.0} / {:.0} ({:.2}), {:.1} ms / {:.1} ms |",
            r.size.open,
            r.size.agents,
            r.size.waiting,
            r.idle_cpu_ms,
            r.idle_cpu_ms / 2000.0 * 100.0,
            r.idle_bytes,
            r.transitions,
            r.burst_cpu_s,
            r.burst_bytes,
            r.rss_mib,
            r.peak_rss_mib,
            r.exposition_bytes as f64 / 1024.0,
            r.series,
            r.exporter.per_second,
            r.nginx.per_second,
            r.exporter.per_second / r.nginx.per_second,
            r.exporter.p99_ms,
            r.nginx.p99_ms,
            r.gzip_bytes as f64 / 1024.0,
            r.exporter_gzip.per_second,
            r.nginx_gzip.per_second,
            r.exporter_gzip.per_second / r.nginx_gzip.per_second,
            r.exporter_gzip.p99_ms,
            r.nginx_gzip.p99_ms
        );
    }
}
