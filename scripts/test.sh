#!/usr/bin/env bash
# The project's test command: installs what the tests need (Prometheus, promtool,
# Alertmanager, amtool from Debian's packages) when missing, then runs every test.
# kubectl (tests/packaging_kubernetes.rs renders the overlays with its kustomize) comes with
# this project's machine image as the package kubectl; Debian's own kubernetes-client is
# too old for the overlays' kustomization.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package that provides it
declare -A package=(
    [prometheus]=prometheus [promtool]=prometheus
    [prometheus-alertmanager]=prometheus-alertmanager [amtool]=prometheus-alertmanager
    [systemd-analyze]=systemd
    [kubectl]=kubectl
)
need=()
for tool in "${!package[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || need+=("${package[$tool]}")
done
if ((${#need[@]})); then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    echo "scripts/test.sh: installing ${need[*]}"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "scripts/test.sh: need root or sudo to install ${need[*]}" >&2; exit 1; }
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
    # The packages start system services on the default ports; the tests start their own
    # instances on free ports and need none of them.
    for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
        "${sudo_cmd[@]}" service "$svc" stop >/dev/null 2>&1 || true
    done
fi
for tool in "${!package[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "scripts/test.sh: $tool still missing after install" >&2; exit 1; }
done

cargo test --locked --workspace --all-targets "$@"
