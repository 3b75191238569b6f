//! Memory under a gzip bomb: each platform's source, in this process, polls a simulator
//! that answers every request with 1 MiB of gzip expanding to 1 GiB. Prints the failure's
//! reason and the growth of the process' peak resident memory (VmHWM) over the poll
//! (the simulator's copy of the bomb, about 2 MiB, included for the first platform).
//!
//! Run: cargo run --example gzip_bomb

use chat_exporter::simulator::{self, Fault, SimOptions};

/// The process' peak resident memory so far, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    // The bomb itself (about 1 MiB) is built before measuring.
    let bomb = simulator::gzip_bomb(1 << 30);
    println!("bomb: {} KiB of gzip, 1024 MiB expanded", bomb.len() / 1024);
    // Peaks only grow: each platform's figure is its growth over the peak before it.
    println!("| platform | reason | peak resident memory growth |");
    println!("|---|---|---|");
    for platform in chat_exporter::platforms::ALL.iter() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let options = SimOptions { rate_limit: None, ..SimOptions::new(platform.facade()) };
        let sim = simulator::serve(listener, options).await.expect("simulator serves");
        let polling = platform.polling_defaults();
        let metrics = chat_exporter::self_metrics::SelfMetrics::new();
        let mut source = platform.load(sim.section()).expect("demo section").build(&polling, metrics);
        sim.state.set_outage(Some(Fault::GzipBomb));
        let before = peak_kib();
        let reason = source.poll().await.err().map_or("none", |e| e.reason());
        let growth = peak_kib().saturating_sub(before);
        println!("| {} | {reason} | {:.1} MiB |", platform.name(), growth as f64 / 1024.0);
    }
}
