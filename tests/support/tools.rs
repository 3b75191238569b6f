//! Locating the system tools some tests need (promtool, prometheus, alertmanager, ...).
//! A missing tool is a loud failure, never a skip: `scripts/test.sh` installs them.

use std::path::PathBuf;

/// The first of `names` found as a file on PATH; panics naming the Debian package.
pub fn require_tool(names: &[&str], debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "required tool `{}` is not installed: run scripts/test.sh, which installs it (apt-get install -y {debian_package})",
        names.join("` or `")
    );
}
