#!/usr/bin/env bash
# The scale benchmark (examples/scale.rs): installs nginx from Debian's packages when
# missing (it serves the same bytes as the exporter, for comparison), builds the exporter
# and the benchmark in release mode, and prints the table of the README's Performance
# section. Arguments are sizes, OPEN/AGENTS/WAITING (default: 100/20/25 1000/100/250
# 4000/400/1000).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "scripts/scale.sh: installing nginx"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "scripts/scale.sh: need root or sudo to install nginx" >&2; exit 1; }
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq nginx >/dev/null
    # The package starts a system nginx on port 80; the benchmark starts its own.
    "${sudo_cmd[@]}" service nginx stop >/dev/null 2>&1 || true
fi
cargo build --release --quiet --bin chat_exporter --example scale
SCALE_EXPORTER_BINARY=target/release/chat_exporter exec target/release/examples/scale "$@"
