#!/usr/bin/env bash
# Web server costs: the RSS it adds to an idle engine on the demo, and the
# time to serve the overview page, the status API and /metrics (curl from
# loopback, after warm-up). Prints a markdown table.
#
#   bash benches/web/run.sh
#
# Settings (environment):
#   REQUESTS=300      requests per page timed
#   PROFILE=release   cargo profile of the binary
#   SKIP_BUILD=1      use the binary already built with that profile
#   PORT_BASE=27410   first of two 127.0.0.1 ports used for the web server
# The demo's own ports (2575, 6661) must be free. Everything listens on and
# sends to 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
REQUESTS=${REQUESTS:-300}
PROFILE=${PROFILE:-release}
PORT_BASE=${PORT_BASE:-27410}
OUT=$(mktemp -d /tmp/switchboard-web-bench.XXXXXX)

if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building ($PROFILE)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --bin switchboard) >&2
fi
cp "$ROOT/target/$PROFILE/switchboard" "$OUT/switchboard"
SB="$OUT/switchboard"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Starts the demo (with the given extra flags) and waits for it to settle;
# sets ENGINE_PID and RSS (kB).
idle_rss() {
    rm -rf "$OUT/data"
    (cd "$ROOT" && "$SB" run --config examples/demo.yaml --data-dir "$OUT/data" --log-level warn "$@") >"$OUT/engine.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port 2575
    sleep 3
    RSS=$(rss_kb "$pid")
    ENGINE_PID=$pid
}

# Median and 99th percentile of $REQUESTS fetches of a URL, in ms.
timed() { # url
    for _ in $(seq 20); do curl -s -o /dev/null "$1"; done
    for _ in $(seq "$REQUESTS"); do curl -s -o /dev/null -w '%{time_total}\n' "$1"; done |
        awk '{print $1 * 1000}' | sort -n |
        awk '{v[NR] = $1} END {printf "%.2f | %.2f", v[int(NR * 0.5)], v[int(NR * 0.99)]}'
}

idle_rss
without=$RSS
stop "$ENGINE_PID"
wait_port_free 2575
idle_rss --web-port "$PORT_BASE"
with=$RSS
wait_port "$PORT_BASE"
base="http://127.0.0.1:$PORT_BASE"
overview=$(timed "$base/")
status=$(timed "$base/api/v1/status")
metrics=$(timed "$base/metrics")
rss_after=$(rss_kb "$ENGINE_PID")
stop "$ENGINE_PID"

echo "| measure | value |"
echo "| --- | --- |"
echo "| idle RSS, demo without the web server | $((without / 1024)).$(((without % 1024) * 10 / 1024)) MB |"
echo "| idle RSS, demo with the web server | $((with / 1024)).$(((with % 1024) * 10 / 1024)) MB |"
echo "| RSS added by the web server, idle | $(((with - without) / 1024)).$((((with - without) % 1024) * 10 / 1024)) MB |"
echo "| RSS after the timed requests | $((rss_after / 1024)).$(((rss_after % 1024) * 10 / 1024)) MB |"
echo
echo "| page ($REQUESTS requests, curl, loopback) | p50 ms | p99 ms |"
echo "| --- | ---: | ---: |"
echo "| overview \`/\` | $overview |"
echo "| \`/api/v1/status\` | $status |"
echo "| \`/metrics\` | $metrics |"
