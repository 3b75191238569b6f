//! Packaging checks of the systemd unit: it has its hardening, runs the installed binary with
//! flags it knows, hands it the token as a credential, and passes `systemd-analyze verify`.
//!
//! `systemd-analyze` (Debian package systemd) must be on PATH: a missing tool fails the test,
//! naming the package.

#[path = "support/packaging.rs"]
mod packaging_support;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::process::Command;

use packaging_support::{assert_flags_known, load_exporter_config, read, root, BINARY_IN_IMAGE};

const SYSTEMD_UNIT: &str = "deploy/systemd/chat_exporter.service";

fn unit_directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{SYSTEMD_UNIT}: not KEY=VALUE: {line}"));
        out.entry(format!("{section}.{}", k.trim())).or_default().push(v.trim().to_string());
    }
    out
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let text = read(SYSTEMD_UNIT);
    let d = unit_directives(&text);
    let get = |k: &str| d.get(&format!("Service.{k}")).map(|v| v.join(" ")).unwrap_or_default();
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("StateDirectory", "chat_exporter"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
    ] {
        assert!(d.contains_key(&format!("Service.{key}")), "{SYSTEMD_UNIT}: {key}= missing");
        assert_eq!(get(key), value, "{SYSTEMD_UNIT}: {key}");
    }
    assert!(get("SystemCallFilter").contains("@system-service"), "{SYSTEMD_UNIT}: SystemCallFilter=@system-service");
    assert_eq!(d.get("Install.WantedBy").map(|v| v.join(" ")).as_deref(), Some("multi-user.target"));

    // ExecStart: the installed binary, flags it knows.
    let exec = get("ExecStart");
    let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], BINARY_IN_IMAGE, "{SYSTEMD_UNIT}: ExecStart binary");
    let flags: Vec<String> = words[1..].iter().filter(|w| !w.starts_with('$')).cloned().collect();
    assert_flags_known(&[], &flags, "systemd ExecStart");

    // The token arrives as a credential, named by an environment variable the exporter maps
    // to movidesk.token_file.
    let env = get("Environment");
    assert!(
        env.contains("CHAT_EXPORTER_MOVIDESK__TOKEN_FILE=%d/movidesk-token"),
        "{SYSTEMD_UNIT}: token file variable"
    );
    assert!(get("LoadCredential").starts_with("movidesk-token:"), "{SYSTEMD_UNIT}: LoadCredential=movidesk-token:...");
    assert!(
        env.contains(&format!("CHAT_EXPORTER_STATE__PATH=%S/{}/", get("StateDirectory"))),
        "{SYSTEMD_UNIT}: the state file goes in the StateDirectory"
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("movidesk-token");
    std::fs::write(&token, "x").unwrap();
    let (_, movidesk) = load_exporter_config(
        &root().join("deploy/compose/chat_exporter.movidesk.toml"),
        vec![("CHAT_EXPORTER_MOVIDESK__TOKEN_FILE".to_string(), token.display().to_string())],
    );
    assert_eq!(Some(movidesk.token.expose()), Some("x"));

    // systemd's own check, with ExecStart pointed at the binary built for this test.
    let analyze = tools::require_tool(&["systemd-analyze"], "systemd");
    let unit = dir.path().join("chat_exporter.service");
    std::fs::write(
        &unit,
        text.replace(
            &format!("ExecStart={BINARY_IN_IMAGE}"),
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_chat_exporter")),
        ),
    )
    .unwrap();
    let out = Command::new(analyze).args(["verify", "--man=no"]).arg(&unit).output().expect("run systemd-analyze");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains("chat_exporter.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify {SYSTEMD_UNIT}:\n{text}");
}
