//! Packaging checks of the container image, with no container engine: the Dockerfile's COPY
//! sources exist and pass .dockerignore, every exception .dockerignore makes names a file that
//! exists, its final stage runs as a non-root USER with a HEALTHCHECK that uses the binary's
//! `healthcheck` subcommand, which is run here against a live and a dead endpoint; and a plain
//! `cargo build` stamps the build info (build.rs) the image's binary reports.

#[path = "support/packaging.rs"]
mod packaging_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::Command;

use packaging_support::{
    assert_flags_known, exporter, flag_value, image_is_pinned, read, root, BINARY_IN_IMAGE, DEFAULT_PORT, NONROOT_UID,
};

struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // comment inside a continued instruction
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
        out.push(Instruction { keyword: keyword.to_uppercase(), args: args.trim().to_string() });
        current.clear();
    }
    out
}

/// Words of an instruction, flags (`--from=x`) included; exec form (JSON array) as is.
fn words(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        return serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form {args}: {e}"));
    }
    args.split_whitespace().map(str::to_string).collect()
}

/// Whether .dockerignore lets `path` into the build context. Supports the patterns this
/// repository uses (`*`, exact paths, directories), and fails on others.
fn docker_context_includes(path: &str) -> bool {
    let mut included = true;
    for line in read(".dockerignore").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_end_matches('/');
        assert!(
            pattern == "*" || !pattern.contains(['*', '?', '[']),
            ".dockerignore pattern {line:?} is not supported by tests/packaging_dockerfile.rs"
        );
        if pattern == "*" || path == pattern || path.starts_with(&format!("{pattern}/")) {
            included = negated;
        }
    }
    included
}

#[test]
fn dockerfile_builds_from_repository_files_and_runs_unprivileged() {
    let text = read("Dockerfile");
    assert!(
        text.starts_with("# syntax=docker/dockerfile:1"),
        "Dockerfile: first line must be # syntax=docker/dockerfile:1"
    );
    let instructions = dockerfile();
    let from_indexes: Vec<usize> =
        instructions.iter().enumerate().filter(|(_, i)| i.keyword == "FROM").map(|(n, _)| n).collect();
    assert!(from_indexes.len() >= 2, "Dockerfile: multi-stage build expected");
    let mut stage_names = BTreeSet::new();
    for &i in &from_indexes {
        let w = words(&instructions[i].args);
        if let Some(pos) = w.iter().position(|x| x.eq_ignore_ascii_case("as")) {
            stage_names.insert(w[pos + 1].clone());
        }
    }
    let final_start = *from_indexes.last().unwrap();
    let final_image = words(&instructions[final_start].args)[0].clone();
    assert!(image_is_pinned(&final_image), "Dockerfile: final image {final_image} must be pinned");

    let mut copied_into_final = Vec::new();
    let mut copies_build_rs = false;
    for (n, ins) in instructions.iter().enumerate() {
        if ins.keyword != "COPY" && ins.keyword != "ADD" {
            continue;
        }
        assert_eq!(ins.keyword, "COPY", "Dockerfile: use COPY, not ADD");
        let w = words(&ins.args);
        let from = w.iter().find_map(|x| x.strip_prefix("--from=")).map(str::to_string);
        let rest: Vec<&String> = w.iter().filter(|x| !x.starts_with("--")).collect();
        let (sources, dest) = rest.split_at(rest.len() - 1);
        match from {
            Some(stage) => {
                assert!(stage_names.contains(&stage), "Dockerfile: COPY --from={stage}: no such stage");
                if n > final_start {
                    copied_into_final.push(dest[0].clone());
                }
            }
            None => {
                for src in sources {
                    let src = src.trim_end_matches('/');
                    assert!(root().join(src).exists(), "Dockerfile: COPY source {src} does not exist");
                    assert!(docker_context_includes(src), "Dockerfile: COPY source {src} is excluded by .dockerignore");
                    copies_build_rs |= src == "build.rs";
                }
            }
        }
    }
    if root().join("build.rs").exists() {
        assert!(copies_build_rs, "Dockerfile: the crate has a build.rs: COPY it into the build stage");
    }
    assert!(text.contains("cargo build --release --locked --bin chat_exporter"), "Dockerfile: locked release build");

    let final_stage = &instructions[final_start..];
    let user = final_stage.iter().rev().find(|i| i.keyword == "USER").expect("Dockerfile: final stage needs USER");
    let uid = user.args.split(':').next().unwrap();
    assert!(
        uid != "root" && uid.parse::<u32>().is_ok_and(|u| u != 0),
        "Dockerfile: USER {} must be a numeric non-root uid (Kubernetes runAsNonRoot checks numeric uids)",
        user.args
    );
    assert_eq!(
        uid.parse::<u32>().unwrap(),
        NONROOT_UID,
        "Dockerfile: USER (the Kubernetes manifests use {NONROOT_UID})"
    );

    let entrypoint = final_stage.iter().find(|i| i.keyword == "ENTRYPOINT").expect("Dockerfile: ENTRYPOINT");
    assert_eq!(words(&entrypoint.args), [BINARY_IN_IMAGE], "Dockerfile: ENTRYPOINT (exec form)");
    assert!(
        copied_into_final.iter().any(|d| d == BINARY_IN_IMAGE),
        "Dockerfile: the binary is copied to {BINARY_IN_IMAGE}"
    );

    let expose = final_stage.iter().find(|i| i.keyword == "EXPOSE").expect("Dockerfile: EXPOSE");
    assert_eq!(expose.args, DEFAULT_PORT.to_string());

    let healthcheck =
        final_stage.iter().find(|i| i.keyword == "HEALTHCHECK").expect("Dockerfile: final stage needs HEALTHCHECK");
    let cmd = healthcheck.args.split_once("CMD").expect("HEALTHCHECK ... CMD [...]").1.trim();
    let cmd = words(cmd);
    assert_eq!(
        &cmd[..2],
        [BINARY_IN_IMAGE, "healthcheck"],
        "HEALTHCHECK runs `chat_exporter healthcheck` (no curl in the image)"
    );
    assert_flags_known(&["healthcheck"], &cmd[2..], "HEALTHCHECK");
    assert_eq!(
        flag_value(&cmd, "--url").as_deref(),
        Some(format!("http://127.0.0.1:{DEFAULT_PORT}/-/healthy").as_str()),
        "HEALTHCHECK url"
    );
}

/// Every file or directory .dockerignore lets in (`!name`) exists: an exception for a
/// file the crate does not have (issue 10: a `build.rs` that did not exist) is drift.
#[test]
fn dockerignore_exceptions_name_files_that_exist() {
    for line in read(".dockerignore").lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('!') {
            let path = root().join(name.trim_end_matches('/'));
            assert!(path.exists(), ".dockerignore lets in {name}, which does not exist");
        }
    }
}

/// `chat_exporter healthcheck`, as the image's HEALTHCHECK runs it: 0 on 200, not 0 when
/// the endpoint fails or nothing listens.
#[test]
fn healthcheck_subcommand_exit_status() {
    fn serve_once(status_line: &'static str) -> (u16, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Gives up after 30 s, so a healthcheck that never connects fails the test, not hangs it.
        listener.set_nonblocking(true).unwrap();
        let handle = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let mut conn = loop {
                match listener.accept() {
                    Ok((conn, _)) => break conn,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    Err(e) => panic!("the healthcheck never connected: {e}"),
                }
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf);
            let body = "x\n";
            let _ = write!(conn, "{status_line}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        });
        (port, handle)
    }
    let run = |url: String| exporter().args(["healthcheck", "--url", &url]).output().expect("run healthcheck");

    let (port, server) = serve_once("HTTP/1.1 200 OK");
    let out = run(format!("http://127.0.0.1:{port}/-/healthy"));
    server.join().unwrap();
    assert!(out.status.success(), "healthcheck against a 200 must exit 0: {out:?}");

    let (port, server) = serve_once("HTTP/1.1 503 Service Unavailable");
    let out = run(format!("http://127.0.0.1:{port}/-/healthy"));
    server.join().unwrap();
    assert!(!out.status.success(), "healthcheck against a 503 must fail: {out:?}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed now
    let out = run(format!("http://127.0.0.1:{port}/-/healthy"));
    assert!(!out.status.success(), "healthcheck with nothing listening must fail: {out:?}");
}

/// A plain `cargo build` stamps `chat_exporter_build_info` with the compiler's version and
/// the git revision (build.rs), not "unknown" (issue 10).
#[test]
fn build_info_names_the_compiler_and_the_revision() {
    let metrics = chat_exporter::self_metrics::SelfMetrics::new();
    let families = metrics.registry.gather();
    let info = families.iter().find(|f| f.name() == "chat_exporter_build_info").expect("build_info");
    let labels: BTreeMap<String, String> =
        info.get_metric()[0].get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())).arg("--version").output();
    let rustc = String::from_utf8(rustc.expect("rustc --version").stdout).unwrap();
    assert_eq!(labels["rustversion"], rustc.split_whitespace().nth(1).unwrap(), "{labels:?}");
    let git = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(root()).output().expect("git");
    if git.status.success() && std::env::var("CHAT_EXPORTER_REVISION").is_err() {
        let head = String::from_utf8(git.stdout).unwrap();
        assert!(
            labels["revision"] != "unknown" && head.starts_with(&labels["revision"]),
            "revision {:?} is not a prefix of HEAD {head}",
            labels["revision"]
        );
    }
}
