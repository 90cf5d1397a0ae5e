#!/usr/bin/env bash
# A real Prometheus for the embedded local stack (`make demo` / `crossvisor up`): scrapes the
# worker's metrics (127.0.0.1:9464) and SDK metrics (:9465) with deploy/prometheus/rules.yml,
# on http://127.0.0.1:19090. Idempotent; `run-local.sh stop` stops it. Needs Debian `prometheus`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${CROSSVISOR_HOME:-$here/../../.state}/prometheus"
port="${CROSSVISOR_PROMETHEUS_PORT:-19090}"
mkdir -p "$state"
pidfile="$state/prometheus.pid"
if [[ "${1:-}" == stop ]]; then
  [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
  exit 0
fi
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "http://127.0.0.1:$port"
  exit 0
fi
# same jobs and relabelling as the deployed config (rules and the dashboard select on them),
# targets pointed at the local worker
sed -e "s/worker-1:9464/127.0.0.1:${CROSSVISOR_METRICS_PORT:-9464}/" -e "/worker-2:9464/d" \
    -e "s/worker-1:9465/127.0.0.1:${CROSSVISOR_SDK_METRICS_PORT:-9465}/" -e "/worker-2:9465/d" \
    -e "s/temporal:8000/127.0.0.1:17234/" -e "s/localhost:9090/127.0.0.1:$port/" \
    -e "s/scrape_interval: 15s/scrape_interval: 5s/" \
    "$here/prometheus.yml" > "$state/prometheus.yml"
cp "$here/rules.yml" "$state/rules.yml"
promtool check config "$state/prometheus.yml" >/dev/null
prometheus --config.file="$state/prometheus.yml" --storage.tsdb.path="$state/data" \
  --web.listen-address="127.0.0.1:$port" > "$state/prometheus.log" 2>&1 &
echo $! > "$pidfile"
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && { echo "http://127.0.0.1:$port"; exit 0; }
  sleep 0.2
done
echo "prometheus did not become ready; see $state/prometheus.log" >&2
exit 1
