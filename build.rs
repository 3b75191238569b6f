//! Stamps the binary with the compiler's version and the git revision, the `rustversion`
//! and `revision` labels of `chat_exporter_build_info`. `CHAT_EXPORTER_RUSTC_VERSION` and
//! `CHAT_EXPORTER_REVISION` in the build's environment win (the Dockerfile passes the
//! revision, its context having no `.git`); otherwise `$RUSTC --version` and
//! `git rev-parse --short HEAD`, and "unknown" where neither answers (a source tarball).

use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn given(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).ok().filter(|v| !v.is_empty() && v != "unknown")
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let rust_version = given("CHAT_EXPORTER_RUSTC_VERSION")
        .or_else(|| output(&rustc, &["--version"]).and_then(|v| v.split_whitespace().nth(1).map(str::to_string)))
        .unwrap_or_else(|| "unknown".to_string());
    let revision = given("CHAT_EXPORTER_REVISION").or_else(|| {
        // Rebuild when HEAD moves (a commit, a checkout), wherever the git directory is.
        let branch = output("git", &["symbolic-ref", "-q", "HEAD"]);
        for path in ["HEAD"].into_iter().chain(branch.as_deref()) {
            if let Some(p) = output("git", &["rev-parse", "--git-path", path]) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
        output("git", &["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=CHAT_EXPORTER_RUSTC_VERSION={rust_version}");
    println!("cargo:rustc-env=CHAT_EXPORTER_REVISION={}", revision.unwrap_or_else(|| "unknown".to_string()));
}
