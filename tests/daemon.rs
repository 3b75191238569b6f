//! Specification of the daemon as users run it: the binary, its flags, its config, its
//! HTTP endpoints, its logs.

mod support;

use std::io::Read;
use std::time::Duration;

use chat_exporter::simulator::{Fault, SimOptions};
use support::process::{run_to_end, run_to_end_within, ExporterProcess};
use support::*;

const SECRET: &str = "9b1c3e7a-SECRET-TOKEN-do-not-print";

fn write_config(dir: &tempfile::TempDir, body: &str) -> String {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

/// Every configuration mistake stops the start with one line naming the key.
#[test]
fn config_errors_name_the_key_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let token_line = "token = \"abc\"\n";
    // (file, environment, the key the error must name)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (String::new(), vec![], "movidesk"),
        (format!("[movidesk]\n{token_line}poll_interval = \"soon\"\n"), vec![], "movidesk.poll_interval"),
        (format!("[movidesk]\n{token_line}requests_per_minute = \"ten\"\n"), vec![], "movidesk.requests_per_minute"),
        (format!("[movidesk]\n{token_line}requests_per_minute = 0\n"), vec![], "movidesk.requests_per_minute"),
        (format!("[movidesk]\n{token_line}pol_interval = \"30s\"\n"), vec![], "pol_interval"),
        (format!("[movidesk]\n{token_line}base_url = \"ftp://example.com\"\n"), vec![], "movidesk.base_url"),
        (format!("[movidesk]\n{token_line}page_size = 500\n"), vec![], "movidesk.page_size"),
        (format!("[movidesk]\n{token_line}overlap = \"1s\"\n"), vec![], "movidesk.overlap"),
        (
            format!("[movidesk]\n{token_line}base_url = \"https://api.example.com/v1?token=abc\"\n"),
            vec![],
            "movidesk.base_url",
        ),
        (format!("[movidesk]\n{token_line}[state]\npath = \"\"\n"), vec![], "state.path"),
        ("[movidesk]\ntoken_file = \"/nonexistent/token\"\n".to_string(), vec![], "movidesk.token_file"),
        ("[movidesk]\ntoken_file = \"/dev/zero\"\n".to_string(), vec![], "movidesk.token_file"),
        ("[movidesk]\npoll_interval = \"30s\"\n".to_string(), vec![], "movidesk.token"),
        (
            format!("[movidesk]\n{token_line}"),
            vec![("CHAT_EXPORTER_MOVIDESK__REQUESTS_PER_MINUTE", "lots")],
            "movidesk.requests_per_minute",
        ),
        ("[movidesk\ntoken = 1\n".to_string(), vec![], "config.toml"),
    ];
    for (body, env, key) in cases {
        let path = write_config(&dir, &body);
        let (code, _out, err) = run_to_end(&["--config.file", &path, "--web.listen-address", "127.0.0.1:0"], &env);
        assert_ne!(code, 0, "config {body:?} must be refused");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for {body:?}, got: {err}");
        assert!(lines[0].contains(key), "error for {body:?} must name {key}: {}", lines[0]);
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, err) = run_to_end(&["--config.file", "/nonexistent/chat_exporter.toml"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--config.file"), "{err}");
}

/// A demo flag without `--demo` is refused in one line naming the flag and the fix, with
/// `--config.file` (which would otherwise start and ignore it) as without.
#[test]
fn a_demo_flag_without_the_demo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, "[movidesk]\ntoken = \"abc\"\n[state]\nenabled = false\n");
    let with_config = ["--demo.speed", "60", "--config.file", &config, "--web.listen-address", "127.0.0.1:0"];
    let cases: [(&[&str], &str, &str); 3] = [
        (&with_config, "--demo.speed", "run --demo without --config.file"),
        (&["--demo.platform", "chatwoot", "--web.listen-address", "127.0.0.1:0"], "--demo.platform", "add --demo"),
        (&["--demo.seed", "7", "healthcheck"], "--demo.seed", "add --demo"),
    ];
    for (args, flag, fix) in cases {
        let (code, _out, err) = run_to_end_within(args, &[], Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{args:?} started, and ignores {flag}"));
        assert_ne!(code, 0, "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for {args:?}, got: {err}");
        assert!(lines[0].starts_with(&format!("chat_exporter: {flag}: ")), "{}", lines[0]);
        assert!(lines[0].contains(fix) && lines[0].contains(&format!("drop {flag}")), "{}", lines[0]);
    }
}

/// A demo flag out of its range is refused in one line naming it.
#[test]
fn a_demo_flag_out_of_range_is_refused() {
    for (args, flag) in [
        (["--demo.start-hour", "24"], "--demo.start-hour: must be an hour from 0 to 23"),
        (["--demo.rate-limit", "0"], "--demo.rate-limit: must be at least 1"),
        (["--demo.speed", "0"], "--demo.speed: must be a number above 0"),
    ] {
        let mut all = vec!["--demo", "--web.listen-address", "127.0.0.1:0"];
        all.extend(args);
        let (code, _out, err) =
            run_to_end_within(&all, &[], Duration::from_secs(20)).unwrap_or_else(|| panic!("{args:?} started"));
        assert_ne!(code, 0, "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for {args:?}, got: {err}");
        assert!(lines[0].contains(flag), "{}", lines[0]);
    }
}

/// `--version` tells the revision and the Rust version too, as `chat_exporter_build_info`
/// labels them.
#[test]
fn version_tells_the_revision_and_the_rust_version() {
    let families = chat_exporter::self_metrics::SelfMetrics::new().registry.gather();
    let build_info = families.iter().find(|f| f.name() == "chat_exporter_build_info").expect("build_info");
    let labels: std::collections::BTreeMap<&str, &str> =
        build_info.get_metric()[0].get_label().iter().map(|l| (l.name(), l.value())).collect();
    let (code, out, err) = run_to_end(&["--version"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim_end(),
        format!(
            "chat_exporter {} (revision {}, rustc {})",
            labels["version"], labels["revision"], labels["rustversion"]
        )
    );
    assert!(!labels["revision"].is_empty() && !labels["rustversion"].is_empty(), "{labels:?}");
}

/// A relative `state.path` in a working directory the exporter cannot write (a service
/// started from `/` as nobody) names the directory and both ways out, in one line.
#[test]
fn an_unwritable_state_directory_names_the_working_directory_and_the_fix() {
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, "[movidesk]\ntoken = \"abc\"\n[state]\npath = \"chat_exporter_state.json\"\n");
    let as_root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap();
    let mut command = ExporterProcess::command(&["--config.file", &config, "--web.listen-address", "127.0.0.1:0"], &[]);
    command.current_dir("/");
    if as_root {
        for path in [dir.path(), std::path::Path::new(&config)] {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        command.uid(NOBODY).gid(NOBODY);
    }
    let out = command.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for said in ["state.path", "relative to the working directory /", "Permission denied", "enabled = false"] {
        assert!(lines[0].contains(said), "must say {said:?}: {}", lines[0]);
    }
}

/// What the README documents reads as documented: a list key from the environment is
/// comma-separated (one value is a list of one), and an unknown key is named once, with
/// every key its section takes, the shared polling keys included.
#[test]
fn environment_lists_and_unknown_keys_read_as_documented() {
    use chat_exporter::platforms::{find, load_from};
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    for (origins, expected) in [("5,6,18,20,22,23,25", "[5, 6, 18, 20, 22, 23, 25]"), ("5", "[5]")] {
        let config = load_from(
            None,
            env(&[("CHAT_EXPORTER_MOVIDESK__TOKEN", "abc"), ("CHAT_EXPORTER_MOVIDESK__CHAT_ORIGINS", origins)]),
        )
        .unwrap_or_else(|e| panic!("CHAT_ORIGINS={origins}: {}: {}", e.key, e.message));
        let described = format!("{:?}", config.source);
        assert!(described.contains(&format!("chat_origins: {expected}")), "{origins}: {described}");
    }
    let bad = load_from(
        None,
        env(&[("CHAT_EXPORTER_MOVIDESK__TOKEN", "abc"), ("CHAT_EXPORTER_MOVIDESK__CHAT_ORIGINS", "5,chat")]),
    )
    .unwrap_err();
    assert_eq!(bad.key, "movidesk.chat_origins", "{}", bad.message);
    assert!(bad.message.contains("\"chat\" is not a number"), "{}", bad.message);

    let dir = tempfile::tempdir().unwrap();
    // A value from the environment is told with its variable.
    let file = write_config(&dir, "[movidesk]\ntoken = \"abc\"\n");
    let file = Some(std::path::Path::new(&file));
    let e = load_from(file, env(&[("CHAT_EXPORTER_MOVIDESK__POLL_INTERVAL", "30")])).unwrap_err();
    assert_eq!(e.key, "movidesk.poll_interval");
    assert!(e.message.ends_with("(set by CHAT_EXPORTER_MOVIDESK__POLL_INTERVAL)"), "{}", e.message);
    let e = load_from(file, env(&[("CHAT_EXPORTER_CHATWOOT__TOKEN", "abc")])).unwrap_err();
    assert!(
        e.message.contains("[chatwoot] (set by CHAT_EXPORTER_CHATWOOT__TOKEN) and [movidesk] are set"),
        "{}",
        e.message
    );
    // A token from the environment replaces the file's token_file, as a secret mounted
    // by Kubernetes would.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "from-the-file\n").unwrap();
    let with_file = write_config(&dir, &format!("[movidesk]\ntoken_file = {:?}\n", token_file.display().to_string()));
    let with_file = Some(std::path::Path::new(&with_file));
    let from_env = env(&[("CHAT_EXPORTER_MOVIDESK__TOKEN", "from-env")]);
    load_from(with_file, from_env.clone()).unwrap_or_else(|e| panic!("{}: {}", e.key, e.message));
    let section =
        chat_exporter::platforms::read_section(with_file, from_env).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(section.keys, serde_json::json!({"token": "from-env"}), "the environment's token wins");

    for platform in ["movidesk", "chatwoot", "rocketchat"] {
        let path = write_config(&dir, &format!("[{platform}]\npoll_intervall = \"30s\"\n"));
        let e = load_from(Some(std::path::Path::new(&path)), vec![]).unwrap_err();
        assert_eq!(e.key, format!("{platform}.poll_intervall"), "named once: {}", e.message);
        let listed: Vec<&str> = e.message.strip_prefix("unknown key: expected one of ").unwrap().split(", ").collect();
        let keys = find(platform).unwrap().section_keys().iter().chain(chat_exporter::config::polling_keys());
        for key in keys {
            assert!(listed.contains(key), "{platform}: {key} missing from {}", e.message);
        }
    }
}

/// The token, from the file or the environment, never shows in logs (even at debug and
/// when requests fail), on /metrics, on the landing page or in readiness answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears() {
    let sim = start_simulator(SimOptions { token: SECRET.to_string(), rate_limit: None, ..manual_sim(1) }).await;
    sim.state.advance(10 * 3600);
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{SECRET}\n")).unwrap();
    let fast = "poll_interval = \"200ms\"\nrequests_per_minute = 6000\n";
    let state = format!("[state]\npath = \"{}\"\n", dir.path().join("state.json").display());
    let cases = [
        // Right token, answers that fail in every way.
        (
            format!(
                "{state}[movidesk]\nbase_url = \"{}\"\ntoken_file = \"{}\"\n{fast}",
                sim.api_url(),
                token_file.display()
            ),
            vec![],
        ),
        // Nobody listening.
        (
            format!("{state}[movidesk]\nbase_url = \"http://127.0.0.1:{closed_port}/public/v1\"\n{fast}"),
            vec![("CHAT_EXPORTER_MOVIDESK__TOKEN", SECRET)],
        ),
    ];
    for (i, (body, env)) in cases.into_iter().enumerate() {
        if i == 0 {
            sim.state.push_faults([
                Fault::Status { code: 500 },
                Fault::MalformedJson,
                Fault::GarbageRecord,
                Fault::Status { code: 401 },
                Fault::Html,
            ]);
        }
        let path = write_config(&dir, &body);
        let proc = ExporterProcess::start(
            &["--config.file", &path, "--web.listen-address", "127.0.0.1:0", "--log.level", "debug"],
            &env,
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let base = proc.base_url();
        let mut pages = String::new();
        for path in ["/metrics", "/", "/-/ready", "/-/healthy"] {
            pages.push_str(&reqwest::get(format!("{base}{path}")).await.unwrap().text().await.unwrap());
        }
        let output = proc.all_output();
        assert!(output.contains("poll failed"), "case {i}: failures must be logged: {output}");
        assert!(!output.contains(SECRET), "case {i}: token in the logs:\n{output}");
        assert!(!pages.contains(SECRET), "case {i}: token in a page");
        assert!(pages.contains("chat_exporter_api_request_failures_total"));
    }
    // The simulator did see the token: the test is not vacuous.
    assert!(sim.state.requests().iter().any(|r| r.status == 200));
}

/// The start is told in one info line of what was configured (the platform and its
/// address, the poll interval, the budget, the state file; never the token), and, at
/// debug only, each poll in one line with its requests and what it brought.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_is_summarised_and_each_poll_told_at_debug() {
    let sim = start_simulator(SimOptions { token: SECRET.to_string(), rate_limit: None, ..manual_sim(1) }).await;
    sim.state.advance(10 * 3600);
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHAT_EXPORTER_MOVIDESK__TOKEN", SECRET)];
    let polled = regex::Regex::new(r"DEBUG .*polled.* requests=(\d+) chats_changed=\d+").unwrap();
    for level in ["info", "debug"] {
        let state = dir.path().join(format!("state-{level}.json"));
        let body = format!(
            "[state]\npath = \"{}\"\n[movidesk]\nbase_url = \"{}\"\npoll_interval = \"200ms\"\nrequests_per_minute = 6000\n",
            state.display(),
            sim.api_url()
        );
        let path = write_config(&dir, &body);
        let args = ["--config.file", &path, "--web.listen-address", "127.0.0.1:0", "--log.level", level];
        let proc = ExporterProcess::start(&args, &env);
        // Three polls at least: the first, and two more of a request each or more.
        let requests_before = sim.state.requests().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sim.state.requests().len() < requests_before + 5
            || (level == "debug" && polled.find_iter(&proc.stderr.lock().unwrap()).count() < 2)
        {
            assert!(std::time::Instant::now() < deadline, "{level}: no polls: {}", proc.all_output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = proc.stderr.lock().unwrap().clone();
        assert!(!log.contains(SECRET), "{level}: the token in the log:\n{log}");
        let configured: Vec<&str> = log.lines().filter(|l| l.contains("INFO") && l.contains("configured")).collect();
        assert_eq!(configured.len(), 1, "{level}: one summary line:\n{log}");
        for said in [
            "movidesk",
            &sim.api_url(),
            "poll_interval=200ms",
            "requests_per_minute=6000",
            &state.display().to_string(),
        ] {
            assert!(configured[0].contains(said), "{level}: the summary must say {said:?}: {}", configured[0]);
        }
        let polls: Vec<u64> = polled.captures_iter(&log).map(|c| c[1].parse().unwrap()).collect();
        if level == "debug" {
            assert!(polls.iter().any(|requests| *requests > 0), "each poll tells its requests:\n{log}");
        } else {
            assert!(polls.is_empty() && !log.contains("DEBUG"), "no poll lines at info:\n{log}");
        }
    }
}

/// What promtool, the reference linter, says of a full exposition: nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    let promtool = support::tools::require_tool(&["promtool"], "prometheus");
    let sim =
        start_simulator(SimOptions { scenario: chat_exporter::simulator::Scenario::Peak, ..manual_sim(12) }).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    // Into the peak: queue, agents away, every family present.
    exp.follow(&sim.state, 30, 120).await;
    let text = exp.scrape_text().await;
    for family in [
        "chat_conversations_waiting",
        "chat_conversations_active",
        "chat_conversation_wait_seconds_bucket",
        "chat_agents",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics complained:\n{said}");
}

/// Scrapes get the bytes encoded at the last poll, gzipped when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_gzipped_when_asked() {
    let sim = start_simulator(manual_sim(8)).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    sim.state.advance(12 * 3600);
    exp.poller.poll_once().await.unwrap();
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let url = format!("http://{}/metrics", exp.addr);
    let plain = client.get(&url).send().await.unwrap();
    assert_eq!(plain.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    let zipped = client.get(&url).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let zipped = zipped.bytes().await.unwrap();
    assert!(zipped.len() * 3 < plain.len(), "gzip should shrink the text a lot");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..]).read_to_end(&mut unzipped).unwrap();
    assert_eq!(unzipped, plain.to_vec());
    // A scrape does not call the platform.
    let before = sim.state.requests().len();
    for _ in 0..20 {
        client.get(&url).send().await.unwrap().bytes().await.unwrap();
    }
    assert_eq!(sim.state.requests().len(), before);
}

/// The one-command demo serves live metrics where it says, SIGHUP is logged and ignored,
/// and SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_metrics_ignores_sighup_and_stops_on_sigterm() {
    let mut proc = ExporterProcess::start(
        &[
            "--demo",
            "--web.listen-address",
            "127.0.0.1:0",
            "--demo.speed",
            "120",
            "--demo.rate-limit",
            "5",
            "--web.telemetry-path",
            "/custom",
        ],
        &[],
    );
    assert!(proc.metrics_url.ends_with("/custom"), "{}", proc.metrics_url);
    let out = proc.stdout.lock().unwrap().clone();
    let sim_url = out
        .lines()
        .find_map(|l| l.split("simulator listening on ").nth(1))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(&proc.metrics_url).await.unwrap().text().await.unwrap();
        let samples = parse_exposition(&text);
        if value(&samples, "chat_exporter_source_up", &[("source", "movidesk")]) == Some(1.0)
            && samples.keys().any(|(n, _)| n == "chat_conversations_answered_total")
        {
            let build_info: Vec<_> = samples.iter().filter(|((n, _), _)| n == "chat_exporter_build_info").collect();
            assert_eq!(build_info.len(), 1, "{build_info:?}");
            let ((_, labels), value) = build_info[0];
            assert_eq!(labels.get("version").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));
            assert_eq!(*value, 1.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "demo never produced chat metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let truth = reqwest::get(format!("{sim_url}/_sim/truth")).await.unwrap();
    assert_eq!(truth.status(), 200);
    let landing = reqwest::get(proc.base_url() + "/").await.unwrap().text().await.unwrap();
    assert!(landing.contains("href=\"/custom\""));
    assert_eq!(reqwest::get(proc.base_url() + "/-/healthy").await.unwrap().status(), 200);
    assert_eq!(reqwest::get(proc.base_url() + "/metrics").await.unwrap().status(), 404);
    // SIGHUP (a terminal closed, a habit of reloading) is logged and ignored.
    let pid = proc.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !proc.stderr.lock().unwrap().contains("SIGHUP ignored") {
        assert!(proc.exited().is_none(), "SIGHUP ended the exporter: {}", proc.all_output());
        assert!(std::time::Instant::now() < deadline, "SIGHUP not logged: {}", proc.all_output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reqwest::get(proc.base_url() + "/-/healthy").await.unwrap().status(), 200);
    let status = proc.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// A panic is logged in the format asked for: with `--log.format json`, one JSON object
/// with the message and where it happened, not the default hook's free text. The panic
/// provoked: writing the "listening on" line to a standard output whose reader has gone
/// (`println!` panics on a broken pipe), the one panic the binary can be driven into from
/// outside without a hook for tests in its code.
#[test]
fn panics_are_logged_in_the_log_format() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat_exporter"))
        .args(["--log.format", "json", "simulate", "--listen-address", "127.0.0.1:0"])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .output()
        .expect("run chat_exporter");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a panic on the main thread ends the process: {stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stderr}")))
        .collect();
    let panic = lines
        .iter()
        .find(|l| l["fields"]["message"] == "panic")
        .unwrap_or_else(|| panic!("no panic event in: {stderr}"));
    assert_eq!(panic["level"], "ERROR");
    let message = panic["fields"]["panic"].as_str().unwrap_or_default();
    assert!(message.contains("failed printing to stdout"), "{panic}");
    assert!(panic["fields"]["location"].as_str().is_some_and(|l| !l.is_empty()), "{panic}");
}

/// Before the first poll has finished, the landing page and `/-/ready` say the exporter
/// is starting, not that its source is down (issue 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_first_poll_runs_the_exporter_says_it_is_starting() {
    let sim = start_simulator(manual_sim(3)).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    let ready = reqwest::get(exp.url("/-/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("starting: first poll in progress"));
    let landing = reqwest::get(exp.url("/")).await.unwrap().text().await.unwrap();
    assert!(landing.contains("<td>starting: first poll in progress</td>"), "{landing}");
    exp.poller.poll_once().await.unwrap();
    assert_eq!(reqwest::get(exp.url("/-/ready")).await.unwrap().status(), 200);
    let landing = reqwest::get(exp.url("/")).await.unwrap().text().await.unwrap();
    assert!(landing.contains("<td>up</td>"), "{landing}");
}

/// `healthcheck` prints the underlying cause of a failure, and refuses an unreadable
/// `--ca-file` naming it (issue 10).
#[test]
fn healthcheck_names_the_cause_and_the_ca_file() {
    let url = format!("http://127.0.0.1:{}/-/healthy", free_port());
    let (code, _, err) = run_to_end(&["healthcheck", "--url", &url], &[]);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("refused"), "{err}");
    let (code, _, err) = run_to_end(&["healthcheck", "--url", &url, "--ca-file", "/nonexistent/ca.pem"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--ca-file: /nonexistent/ca.pem"), "{err}");
}
