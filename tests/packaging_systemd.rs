//! Packaging checks of the systemd unit: it has its hardening, runs the installed binary with
//! flags it knows, hands it the token as a credential, names no platform, and passes
//! `systemd-analyze verify`; and each platform's drop-in (deploy/systemd/PLATFORM.conf)
//! points that platform's token_file at the credential, loads with the platform's
//! configuration file (deploy/config/PLATFORM.toml), and verifies with the unit.
//!
//! `systemd-analyze` (Debian package systemd) must be on PATH: a missing tool fails the test,
//! naming the package.

#[path = "support/packaging.rs"]
mod packaging_support;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::process::Command;

use packaging_support::{assert_flags_known, load_exporter_config, platform_names, read, root, BINARY_IN_IMAGE};

const SYSTEMD_UNIT: &str = "deploy/systemd/chat_exporter.service";
const UNIT_NAME: &str = "chat_exporter.service";

fn drop_in(platform: &str) -> String {
    format!("deploy/systemd/{platform}.conf")
}

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

    // The token arrives as a credential; the unit names no platform (its drop-in does).
    let env = get("Environment");
    let credential = get("LoadCredential");
    let (credential_id, credential_source) =
        credential.split_once(':').unwrap_or_else(|| panic!("{SYSTEMD_UNIT}: LoadCredential=ID:PATH"));
    assert_eq!(credential_source, "/etc/chat_exporter/token", "{SYSTEMD_UNIT}: the token file, whatever the platform");
    for platform in platform_names() {
        assert!(!text.to_lowercase().contains(&format!("{platform}__")), "{SYSTEMD_UNIT} names {platform}'s keys");
    }
    assert!(
        env.contains(&format!("CHAT_EXPORTER_STATE__PATH=%S/{}/", get("StateDirectory"))),
        "{SYSTEMD_UNIT}: the state file goes in the StateDirectory"
    );
    // Every CHAT_EXPORTER_* variable is read as a configuration key: the unit's own
    // variables must not look like one.
    for assignment in env.split_whitespace() {
        let name = assignment.split('=').next().unwrap();
        assert!(
            !name.starts_with("CHAT_EXPORTER_") || name.contains("__"),
            "{SYSTEMD_UNIT}: {name} would be read as the configuration section {:?}",
            name.trim_start_matches("CHAT_EXPORTER_").to_lowercase()
        );
    }

    let analyze = tools::require_tool(&["systemd-analyze"], "systemd");
    let dir = tempfile::tempdir().unwrap();
    for platform in platform_names() {
        // The drop-in: the platform's token_file is the credential, and with the platform's
        // configuration file the exporter loads that platform with the credential's token.
        let conf = read(&drop_in(platform));
        let conf_env: Vec<String> = unit_directives(&conf).remove("Service.Environment").unwrap_or_default();
        let variable = format!("CHAT_EXPORTER_{}__TOKEN_FILE", platform.to_uppercase());
        assert_eq!(
            conf_env,
            [format!("{variable}=%d/{credential_id}")],
            "{}: sets only {variable}, to the unit's credential",
            drop_in(platform)
        );
        let credentials = dir.path().join(format!("credentials-{platform}"));
        std::fs::create_dir_all(&credentials).unwrap();
        std::fs::write(credentials.join(credential_id), format!("token-of-{platform}\n")).unwrap();
        let mut unit_env: Vec<(String, String)> = env
            .split_whitespace()
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%S", &dir.path().display().to_string())))
            .collect();
        unit_env.push((variable.clone(), credentials.join(credential_id).display().to_string()));
        let (config, account) =
            load_exporter_config(&root().join(format!("deploy/config/{platform}.toml")), unit_env.clone());
        assert_eq!(account.platform, platform, "deploy/config/{platform}.toml with {}", drop_in(platform));
        assert_eq!(account.token, format!("token-of-{platform}"), "{}: the token is the credential", drop_in(platform));
        assert!(config.state.path.starts_with(dir.path()), "the unit's CHAT_EXPORTER_STATE__PATH wins");
        // The drop-in with another platform's file fails, in one line naming both sections.
        let other = platform_names().into_iter().find(|p| *p != platform).unwrap();
        let mismatch =
            chat_exporter::platforms::load_from(Some(&root().join(format!("deploy/config/{other}.toml"))), unit_env)
                .expect_err("a drop-in and a configuration file of two platforms");
        assert!(mismatch.to_string().contains(&variable), "{mismatch}");

        // systemd's own check of the unit with this drop-in, ExecStart pointed at the binary
        // built for this test.
        let units = dir.path().join(format!("units-{platform}"));
        std::fs::create_dir_all(units.join(format!("{UNIT_NAME}.d"))).unwrap();
        let unit = units.join(UNIT_NAME);
        std::fs::write(
            &unit,
            text.replace(
                &format!("ExecStart={BINARY_IN_IMAGE}"),
                &format!("ExecStart={}", env!("CARGO_BIN_EXE_chat_exporter")),
            ),
        )
        .unwrap();
        std::fs::write(units.join(format!("{UNIT_NAME}.d/platform.conf")), &conf).unwrap();
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
            .arg(&unit)
            .output()
            .expect("run systemd-analyze");
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let complaints: Vec<&str> = report.lines().filter(|l| l.contains("chat_exporter.service")).collect();
        assert!(
            out.status.success() && complaints.is_empty(),
            "systemd-analyze verify {SYSTEMD_UNIT} with {}:\n{report}",
            drop_in(platform)
        );
    }
}
