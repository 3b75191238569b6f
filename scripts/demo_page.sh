#!/bin/sh
# Runs the README's "See a page" recipe with the plain binary, a local Prometheus and
# Alertmanager and scripts/webhook.py, and prints how many minutes after the demo started
# the first ChatQueueSpike page reached the webhook. Needs the default ports free:
# 9877 (exporter), 9090 (Prometheus), 9093 (Alertmanager), 9095 (webhook).
#   scripts/demo_page.sh [path/to/chat_exporter]
set -eu
cd "$(dirname "$0")/.."
BIN=${1:-target/release/chat_exporter}
DIR=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM
mkdir -p "$DIR/targets"
cp deploy/prometheus/prometheus.yml "$DIR/"
ln -sfn "$PWD/alerts" "$DIR/rules"
echo '- targets: ["127.0.0.1:9877"]' > "$DIR/targets/chat_exporter.yml"
echo '- targets: ["127.0.0.1:9093"]' > "$DIR/targets/alertmanager.yml"
python3 scripts/webhook.py > "$DIR/pages.log" 2>&1 & PIDS="$PIDS $!"
prometheus-alertmanager --config.file=alerts/alertmanager.yml --storage.path="$DIR/am" \
  --cluster.listen-address= > "$DIR/am.log" 2>&1 & PIDS="$PIDS $!"
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" > "$DIR/prom.log" 2>&1 & PIDS="$PIDS $!"
START=$(date +%s)
"$BIN" --demo --demo.scenario spike --demo.rate-limit 10 > "$DIR/exporter.log" 2>&1 & PIDS="$PIDS $!"
while ! grep -q "firing ChatQueueSpike" "$DIR/pages.log"; do
  if [ $(( $(date +%s) - START )) -gt 1800 ]; then echo "no page after 30 minutes"; cat "$DIR/pages.log"; exit 1; fi
  sleep 5
done
ELAPSED=$(( $(date +%s) - START ))
grep "firing ChatQueueSpike" "$DIR/pages.log" | head -3
echo "first ChatQueueSpike page $((ELAPSED / 60)) min $((ELAPSED % 60)) s after the demo started"
