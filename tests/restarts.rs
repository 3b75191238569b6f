//! Specification: restarts lose nothing and count nothing twice. The real binary is killed
//! with SIGKILL at random moments of a simulated day (seeded, so every run kills at the
//! same points) and started again from its state file; after each restart every chat
//! metric equals the simulator's ground truth.

mod support;

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use chat_exporter::simulator::{RunningSimulator, SimOptions};
use support::process::ExporterProcess;
use support::*;

fn config(sim: &RunningSimulator, state_path: &std::path::Path) -> String {
    config_file(
        sim,
        &format!(
            "poll_interval = \"100ms\"\nrequests_per_minute = 1000000\nroster_interval = \"0s\"\nrequest_timeout = \"5s\"\n\n\
             [state]\npath = \"{}\"\n",
            state_path.display()
        ),
    )
}

/// Waits for the first successful poll, which is where counting starts.
async fn ready(proc: &ExporterProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(proc.base_url() + "/-/ready").await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "never ready: {}", proc.stderr.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scrape(proc: &ExporterProcess) -> Option<Samples> {
    let r = reqwest::get(&proc.metrics_url).await.ok()?;
    Some(parse_exposition(&r.text().await.ok()?))
}

/// Waits until the exporter reports exactly the truth; a lost or doubled chat never
/// converges, and the final assertion shows the difference.
async fn converges(proc: &ExporterProcess, sim: &RunningSimulator, context: &str) {
    let truth = truth_samples(&sim.state.truth());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(samples) = scrape(proc).await {
            let chats = chat_samples(&samples);
            if chats == truth {
                return;
            }
            if Instant::now() > deadline {
                assert_samples_eq(&chats, &truth, context);
            }
        }
        assert!(Instant::now() < deadline, "{context}: exporter not answering");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movidesk_kill_9_at_random_points_of_a_day_loses_and_doubles_nothing() {
    kill_9_at_random_points_of_a_day("movidesk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatwoot_kill_9_at_random_points_of_a_day_loses_and_doubles_nothing() {
    kill_9_at_random_points_of_a_day("chatwoot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocketchat_kill_9_at_random_points_of_a_day_loses_and_doubles_nothing() {
    kill_9_at_random_points_of_a_day("rocketchat").await;
}

async fn kill_9_at_random_points_of_a_day(platform: &str) {
    // The platform goes on while the exporter is down, up to an hour.
    let options = SimOptions { features: Some(without_blind_spots(platform)), ..manual_sim_of(platform, 31) };
    let sim = start_simulator(options).await;
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the exporter creates it.
    let state_path = dir.path().join(format!("state/{platform}/state.json"));
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config(&sim, &state_path)).unwrap();
    let args = ["--config.file", config_path.to_str().unwrap(), "--web.listen-address", "127.0.0.1:0"];
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let mut proc = ExporterProcess::start(&args, &[]);
    converges(&proc, &sim, "at the start").await;
    let mut kills = 0;
    for step in 1..=24 * 12 {
        sim.state.advance(300);
        if rng.random_bool(0.1) {
            // Any moment: before the poll, during it, while the state file is written.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..120))).await;
            proc.child.kill().unwrap();
            proc.child.wait().unwrap();
            kills += 1;
            if rng.random_bool(0.5) {
                // The platform goes on while the exporter is down.
                sim.state.advance(rng.random_range(60..3600));
            }
            proc = ExporterProcess::start(&args, &[]);
        }
        converges(&proc, &sim, &format!("step {step} ({kills} kills so far)")).await;
    }
    assert!(kills >= 15, "the seeded schedule kills often: {kills}");
    eprintln!("restarts ({platform}): {kills} SIGKILLs over a simulated day, 288 checkpoints, every one exact");
    assert!(state_path.is_file());
    let leftovers: Vec<_> =
        std::fs::read_dir(state_path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(
        leftovers.iter().all(|n| !n.to_string_lossy().contains("corrupt")),
        "no state was ever corrupt: {leftovers:?}"
    );
}

/// A state file that cannot be read is reported in one clear log line and set aside
/// (renamed, never overwritten); the exporter starts fresh and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_state_files_are_set_aside() {
    let sim = start_simulator(manual_sim(32)).await;
    sim.state.advance(10 * 3600);
    // (content, what the log line says, what the file set aside is named)
    let cases = [
        ("{\"version\": 1, \"source\": \"movid", "unreadable", "corrupt"),
        ("{\"version\": 999, \"something\": \"else\"}", "version 999", "incompatible"),
        ("not json at all", "unreadable", "corrupt"),
    ];
    for (content, says, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let state_path = dir.path().join("state.json");
        std::fs::write(&state_path, content).unwrap();
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config(&sim, &state_path)).unwrap();
        let args = ["--config.file", config_path.to_str().unwrap(), "--web.listen-address", "127.0.0.1:0"];
        let proc = ExporterProcess::start(&args, &[]);
        ready(&proc).await;
        sim.state.reset_counts();
        sim.state.advance(600);
        converges(&proc, &sim, says).await;
        let stderr = proc.stderr.lock().unwrap().clone();
        let line = stderr.lines().find(|l| l.contains("set aside")).unwrap_or_else(|| panic!("no report in: {stderr}"));
        assert!(line.contains(says), "{line}");
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("state.json.") && !n.ends_with(".tmp"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].starts_with(&format!("state.json.{named}-")), "{says}: set aside as {aside:?}");
        assert!(line.contains(&aside[0]), "the log names the file set aside: {line}");
        assert_eq!(std::fs::read_to_string(dir.path().join(&aside[0])).unwrap(), content, "set aside untouched");
        // JSON lines: the snapshot first, then what each poll changed.
        let saved = std::fs::read_to_string(&state_path).unwrap();
        let fresh: serde_json::Value = serde_json::from_str(saved.lines().next().unwrap()).unwrap();
        assert_eq!(fresh["version"], chat_exporter::state::STATE_VERSION);
        assert!(!std::fs::read_to_string(&state_path).unwrap().contains(TOKEN), "no secret in the state file");
    }
}

/// A state file written for another account is not applied to this one: another URL, or
/// the same URL with another token (every Movidesk customer shares one URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_from_another_account_is_not_used() {
    let sim_a = start_simulator(manual_sim(33)).await;
    let sim_b = start_simulator(manual_sim(34)).await;
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config(&sim_a, &state_path)).unwrap();
    let args = ["--config.file", config_path.to_str().unwrap(), "--web.listen-address", "127.0.0.1:0"];
    let mut proc = ExporterProcess::start(&args, &[]);
    ready(&proc).await;
    sim_a.state.advance(10 * 3600);
    converges(&proc, &sim_a, "account A").await;
    proc.terminate();

    // Same URL, another token.
    std::fs::write(&config_path, config(&sim_a, &state_path).replace(TOKEN, "another-accounts-token")).unwrap();
    let mut proc = ExporterProcess::start(&args, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stderr = proc.stderr.lock().unwrap().clone();
    assert!(stderr.contains("belongs to movidesk at") && stderr.contains("set aside"), "{stderr}");
    assert!(!stderr.contains("another-accounts-token") && !stderr.contains(TOKEN), "no token in the report: {stderr}");
    proc.terminate();

    // Another URL.
    std::fs::write(&config_path, config(&sim_a, &state_path)).unwrap();
    let mut proc = ExporterProcess::start(&args, &[]);
    ready(&proc).await;
    proc.terminate();
    std::fs::write(&config_path, config(&sim_b, &state_path)).unwrap();
    let proc = ExporterProcess::start(&args, &[]);
    ready(&proc).await;
    sim_b.state.advance(10 * 3600);
    converges(&proc, &sim_b, "account B, fresh").await;
    assert!(proc.stderr.lock().unwrap().contains("belongs to movidesk at"), "{}", proc.stderr.lock().unwrap());
}

/// While the state file cannot be written, the exporter serves the chat values last
/// saved (a restart would take newer ones back, and Prometheus would read the drop as a
/// counter reset), counts the failures, and catches up exactly once it can write again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsaved_values_are_not_served() {
    use chat_exporter::state::StateStore;
    let sim = start_simulator(manual_sim(35)).await;
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let mut exp = TestExporter::start_with_state(fast_setup(&sim), Some(StateStore::new(&state_path))).await;
    exp.poller.poll_once().await.unwrap();
    sim.state.advance(10 * 3600);
    exp.poller.poll_once().await.unwrap();
    let saved = chat_samples(&exp.scrape().await);
    assert_samples_eq(&saved, &truth_samples(&sim.state.truth()), "before");
    // A directory where the file should be: every save fails.
    std::fs::remove_file(&state_path).unwrap();
    std::fs::create_dir(&state_path).unwrap();
    exp.follow(&sim.state, 5, 600).await;
    let now = exp.scrape().await;
    assert_samples_eq(&chat_samples(&now), &saved, "the last saved values");
    assert_eq!(value(&now, "chat_exporter_state_save_failures_total", &[]), Some(5.0));
    std::fs::remove_dir(&state_path).unwrap();
    sim.state.advance(60);
    exp.poller.poll_once().await.unwrap();
    assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "after saving again");
}

/// The state file and its directory made read-only while the exporter runs (a read-only
/// directory alone still lets the journal's lines be appended, until a compaction needs
/// the directory): the chat values freeze at the last save (saved before served), and
/// that shows: `/-/ready` answers 503
/// with the reason, `chat_exporter_state_save_failures_total` rises and
/// `chat_exporter_state_last_save_timestamp_seconds` stands still. Once the directory is
/// writable again the values catch up, exactly. Run as an unprivileged user when the
/// tests run as root, whom a read-only directory does not stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_file_shows_and_values_resume_exactly() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let sim = start_simulator(manual_sim(36)).await;
    sim.state.advance(8 * 3600);
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let state_path = state_dir.join("state.json");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config(&sim, &state_path)).unwrap();
    let args = ["--config.file", config_path.to_str().unwrap(), "--web.listen-address", "127.0.0.1:0"];
    let mut command = ExporterProcess::command(&args, &[]);
    let as_root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap();
    if as_root {
        for path in [dir.path(), &state_dir, &config_path] {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        command.uid(NOBODY).gid(NOBODY);
    }
    let proc = ExporterProcess::spawn(command);
    ready(&proc).await;
    sim.state.reset_counts();
    sim.state.advance(3600);
    converges(&proc, &sim, "before").await;
    let saved = chat_samples(&scrape(&proc).await.unwrap());

    std::fs::set_permissions(&state_path, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    sim.state.advance(3600);
    let deadline = Instant::now() + Duration::from_secs(20);
    let why = loop {
        let r = reqwest::get(proc.base_url() + "/-/ready").await.unwrap();
        if r.status() == 503 {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "/-/ready never said the state file cannot be written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(why.contains("cannot be written") && why.contains("state.json"), "{why}");
    let frozen = scrape(&proc).await.unwrap();
    assert_samples_eq(&chat_samples(&frozen), &saved, "the values last saved, while the directory is read-only");
    assert_ne!(chat_samples(&frozen), truth_samples(&sim.state.truth()), "the hour brought new chats");
    assert!(value(&frozen, "chat_exporter_state_save_failures_total", &[]).unwrap() >= 1.0);
    let last_save = value(&frozen, "chat_exporter_state_last_save_timestamp_seconds", &[]).unwrap();
    assert!(last_save > 0.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = scrape(&proc).await.unwrap();
    assert_eq!(value(&later, "chat_exporter_state_last_save_timestamp_seconds", &[]), Some(last_save));
    assert!(
        value(&later, "chat_exporter_state_save_failures_total", &[])
            > value(&frozen, "chat_exporter_state_save_failures_total", &[]),
        "every poll's failed save counts"
    );
    assert_eq!(value(&later, "chat_exporter_source_up", &[("source", "movidesk")]), Some(1.0), "the source is fine");

    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&state_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    converges(&proc, &sim, "once the directory is writable again").await;
    ready(&proc).await;
    let stderr = proc.stderr.lock().unwrap().clone();
    assert_eq!(stderr.matches("cannot write the state file").count(), 1, "logged once, not every poll: {stderr}");
}

/// One state file, one exporter: a second exporter pointed at the file of a running one
/// refuses to start, in one line naming the file and the other's process id; once the
/// first is killed (SIGKILL: its lock is left, stale), the next start takes the file over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exporters_never_share_a_state_file() {
    let sim = start_simulator(manual_sim(36)).await;
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config(&sim, &state_path)).unwrap();
    let args = ["--config.file", config_path.to_str().unwrap(), "--web.listen-address", "127.0.0.1:0"];
    let mut first = ExporterProcess::start(&args, &[]);
    ready(&first).await;

    let (code, _, stderr) = support::process::run_to_end(&args, &[]);
    assert_ne!(code, 0, "the second exporter must not start: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let pid = first.child.id().to_string();
    for part in ["state.path", state_path.to_str().unwrap(), "in use by another exporter", &format!("process {pid}")] {
        assert!(lines[0].contains(part), "names {part}: {}", lines[0]);
    }
    assert!(first.exited().is_none(), "the first one goes on");
    sim.state.advance(3600);
    converges(&first, &sim, "the first exporter, undisturbed").await;

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let next = ExporterProcess::start(&args, &[]);
    ready(&next).await;
    sim.state.advance(3600);
    converges(&next, &sim, "after a SIGKILL, the next start").await;
}
