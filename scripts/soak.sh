#!/usr/bin/env bash
# Soak: the engine under a steady load for an hour, its downstream stopping
# every few minutes and a purge every ten, to show that memory, descriptors,
# threads and the store stay flat and that every message is accounted for.
#
#   bash scripts/soak.sh                              # one hour at 100 msgs/s
#   bash scripts/soak.sh --duration 240 --flap-every 60 --purge-every 90
#
# mllp_in -> router -> mllp_out (retry_interval 1s, failure_timeout 1h) ->
# scripts/faults/downstream.py, which records every control id before its
# ACK. scripts/faults/load.py sends at a fixed rate on one connection and
# records every acknowledged id. Every FLAP_EVERY seconds the downstream is
# killed (SIGKILL) for FLAP_DOWN seconds. Every PURGE_EVERY seconds the
# finished messages older than a minute are aged by two days in the store
# and the purge is called through the API (retention is at least a day, so
# without ageing an hour's purges would find nothing). Purges run in the
# background (within PURGE_TIMEOUT), so they never hold the downstream's
# stops back. Every SAMPLE_EVERY seconds: VmRSS, open fds, threads, queue
# depth and the data folder's files, into a CSV.
#
# At the end: sending stops, the queue drains (DRAIN_TIMEOUT), a last
# purge, TAIL seconds more sampling, a graceful stop; then the accounting
# (scripts/faults/check.py: lost must be 0, order kept; and nothing queued
# or failed in the store), the plot and a summary table, written to
# OUT/NAME.{csv,svg,md}. The data folder is removed (KEEP=1 keeps WORK).
# Exit status: 0 only when the accounting holds.
#
# Settings (environment, or the flags below): BIN (the switchboard binary,
# default $CARGO_TARGET_DIR/release/switchboard), DURATION, RATE,
# FLAP_FIRST, FLAP_EVERY, FLAP_DOWN, PURGE_EVERY, PURGE_TIMEOUT,
# SAMPLE_EVERY, PORT_BASE (three ports from it: inbound, downstream, web),
# DRAIN_TIMEOUT, TAIL, OUT, NAME, WORK. Loopback only.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/soak" && pwd)
FAULTS=$(cd "$(dirname "$0")/faults" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# wait_port; its cleanup (with its trap) and log are replaced below.
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
DURATION=${DURATION:-3600}
RATE=${RATE:-100}
FLAP_EVERY=${FLAP_EVERY:-300}
FLAP_FIRST=${FLAP_FIRST:-}
FLAP_DOWN=${FLAP_DOWN:-30}
PURGE_EVERY=${PURGE_EVERY:-600}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
PORT_BASE=${PORT_BASE:-31400}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
PURGE_TIMEOUT=${PURGE_TIMEOUT:-1200}
TAIL=${TAIL:-60}
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/switchboard}
OUT=${OUT:-$ROOT/docs/soak}
NAME=${NAME:-soak}
WORK=${WORK:-/tmp/soak-run}
KEEP=${KEEP:-0}
PY=${PYTHON:-python3}

while (($#)); do
    case $1 in
        --duration) DURATION=$2 ;;
        --rate) RATE=$2 ;;
        --flap-every) FLAP_EVERY=$2 ;;
        --flap-first) FLAP_FIRST=$2 ;;
        --flap-down) FLAP_DOWN=$2 ;;
        --purge-every) PURGE_EVERY=$2 ;;
        --name) NAME=$2 ;;
        --out) OUT=$2 ;;
        --bin) BIN=$2 ;;
        *) echo "unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
    shift 2
done
FLAP_FIRST=${FLAP_FIRST:-$((FLAP_EVERY / 2))}
P_IN=$PORT_BASE P_DOWN=$((PORT_BASE + 1)) P_WEB=$((PORT_BASE + 2))
WEB="http://127.0.0.1:$P_WEB"
[[ -x $BIN ]] || { echo "no binary at $BIN (cargo build --release, or BIN=...)" >&2; exit 2; }

rm -rf "$WORK"
mkdir -p "$WORK/data" "$OUT"
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
EVENTS="$WORK/events.jsonl"
: >"$EVENTS"
ENGINE='' DOWNSTREAM='' SAMPLER='' SENDER='' PURGER=''

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local pid
    for pid in $SENDER $PURGER $SAMPLER $DOWNSTREAM $ENGINE; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $SENDER $PURGER $SAMPLER $DOWNSTREAM $ENGINE; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP != 1 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N | cut -c1-14; }
event() { # kind [json fields without braces]
    printf '{"unix_s": %s, "kind": "%s"%s}\n' "$(now)" "$1" "${2:+, $2}" >>"$EVENTS"
}
log() { printf '%s %s\n' "$(date +%T)" "$*"; }
span() { if (($1 % 60)); then echo "$1 s"; else echo "$(($1 / 60)) min"; fi; }

start_downstream() {
    "$PY" "$FAULTS/downstream.py" --port "$P_DOWN" --ids "$WORK/received.txt" \
        --max-seconds $((DURATION + DRAIN_TIMEOUT + TAIL + 600)) >>"$WORK/downstream.log" 2>&1 &
    DOWNSTREAM=$!
    wait_port "$P_DOWN"
}

kill_downstream() {
    kill -KILL "$DOWNSTREAM" 2>/dev/null || true
    wait "$DOWNSTREAM" 2>/dev/null || true
    DOWNSTREAM=''
}

queue_depth() {
    curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "$WEB/metrics" |
        awk '/^switchboard_queue_depth\{/ {d += $2} END {print d + 0}'
}

# Purges in the background, so that the downstream's stops keep their
# times however long a purge takes; a purge due while the last one still
# runs is skipped.
purge() {
    if [[ -n $PURGER ]] && kill -0 "$PURGER" 2>/dev/null; then
        log "purge skipped: the last one still runs"
        event purge_skipped
        return
    fi
    [[ -z $PURGER ]] || wait "$PURGER" || true
    (cd "$HERE" && exec "$PY" purge.py --url "$WEB" --token "$TOKEN" --age-db "$WORK/data/switchboard.db" \
        --events "$EVENTS" --timeout "$PURGE_TIMEOUT") >>"$WORK/purges.log" 2>&1 &
    PURGER=$!
    log "purge started"
}

cat >"$WORK/soak.yaml" <<YAML
store:
  retention_days: 1
productions:
  soak:
    name: Soak
    items:
      - name: Inbound
        kind: mllp_in
        host: 127.0.0.1
        port: $P_IN
        targets: [Router]
      - name: Router
        kind: router
        rules:
          - when: MSH-9.1 = "ADT"
            send: [Downstream]
      - name: Downstream
        kind: mllp_out
        host: 127.0.0.1
        port: $P_DOWN
        retry_interval: 1s
        failure_timeout: 1h
YAML

log "soak: ${DURATION}s at $RATE msgs/s; downstream down ${FLAP_DOWN}s every ${FLAP_EVERY}s from ${FLAP_FIRST}s; purge every ${PURGE_EVERY}s; $WORK"
start_downstream
SWITCHBOARD_API_TOKENS=$TOKEN SWITCHBOARD_LOG=info "$BIN" run --config "$WORK/soak.yaml" \
    --data-dir "$WORK/data" --web-port "$P_WEB" >"$WORK/engine.log" 2>&1 &
ENGINE=$!
for ((i = 0; i < 300; i++)); do
    curl -fsS --max-time 2 "$WEB/readyz" >/dev/null 2>&1 && break
    kill -0 "$ENGINE" 2>/dev/null || { cat "$WORK/engine.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS --max-time 2 "$WEB/readyz" >/dev/null || { echo "the engine is not ready after 30 s" >&2; exit 1; }
(cd "$HERE" && exec "$PY" sample.py --pid "$ENGINE" --data-dir "$WORK/data" --metrics "$WEB/metrics" \
    --token "$TOKEN" --out "$WORK/samples.csv" --every "$SAMPLE_EVERY" --stop-file "$WORK/stop-sampling" \
    --max-seconds $((DURATION + DRAIN_TIMEOUT + TAIL + 300))) &
SAMPLER=$!
sleep 5 # a baseline before the load
event send_start
"$PY" "$FAULTS/load.py" --port "$P_IN" --rate "$RATE" --duration "$DURATION" --prefix S \
    --acked "$WORK/acked.txt" >/dev/null 2>"$WORK/sender.log" &
SENDER=$!

start=${EPOCHSECONDS:-$(date +%s)}
next_flap=$((start + FLAP_FIRST)) next_purge=$((start + PURGE_EVERY)) up_at=0 flaps=0
for ((i = 0; i < DURATION + 300; i++)); do
    kill -0 "$SENDER" 2>/dev/null || break
    t=$(date +%s)
    if [[ -z $DOWNSTREAM ]] && ((t >= up_at)); then
        start_downstream
        event flap_up
        log "downstream back"
    elif [[ -n $DOWNSTREAM ]] && ((t >= next_flap && t + FLAP_DOWN < start + DURATION)); then
        kill_downstream
        event flap_down "\"down_s\": $FLAP_DOWN"
        flaps=$((flaps + 1))
        log "downstream stopped ($flaps)"
        up_at=$((t + FLAP_DOWN)) next_flap=$((next_flap + FLAP_EVERY))
    fi
    if ((t >= next_purge && t < start + DURATION)); then
        purge
        next_purge=$((next_purge + PURGE_EVERY))
    fi
    sleep 1
done
if kill -0 "$SENDER" 2>/dev/null; then
    log "the sender overran its duration; stopping it"
    kill "$SENDER"
fi
wait "$SENDER" || true
SENDER=''
event send_end
log "sending done: $(tail -n 1 "$WORK/sender.log")"
[[ -n $DOWNSTREAM ]] || start_downstream

depth=''
for ((i = 0; i < DRAIN_TIMEOUT / 2; i++)); do
    depth=$(queue_depth || echo '?')
    [[ $depth == 0 ]] && break
    sleep 2
done
if [[ $depth == 0 ]]; then event drained; log "queue drained"; else log "queue not drained after ${DRAIN_TIMEOUT}s: $depth"; fi
# The last purge once the one under way (if any) is over; the engine
# stops after it, so it is waited for (within PURGE_TIMEOUT).
[[ -z $PURGER ]] || wait "$PURGER" || true
PURGER=''
purge
wait "$PURGER" || true
PURGER=''
log "purges: $(tr '\n' ' ' <"$WORK/purges.log")"
sleep "$TAIL"
touch "$WORK/stop-sampling"
wait "$SAMPLER" || true
SAMPLER=''
kill -TERM "$ENGINE"
for ((i = 0; i < 600; i++)); do kill -0 "$ENGINE" 2>/dev/null || break; sleep 0.1; done
kill -0 "$ENGINE" 2>/dev/null && { log "the engine did not stop within 60 s; killing it"; kill -KILL "$ENGINE"; }
wait "$ENGINE" || log "the engine exited with status $?"
ENGINE=''
kill -TERM "$DOWNSTREAM" 2>/dev/null || true
wait "$DOWNSTREAM" || true
DOWNSTREAM=''

status=0
"$PY" "$FAULTS/check.py" --acked "$WORK/acked.txt" --delivered "$WORK/received.txt" 2>"$WORK/check.txt" || status=1
# What the store still holds, by status: nothing may be queued or failed.
"$PY" - "$WORK/data/switchboard.db" >"$WORK/store.json" <<'PY' || status=1
import json, sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
status = dict(conn.execute("SELECT status, COUNT(*) FROM header GROUP BY status"))
print(json.dumps(status))
sys.exit(1 if status.get("queued", 0) + status.get("delivering", 0) + status.get("failed", 0) else 0)
PY
log "accounting: $(cat "$WORK/check.txt") store: $(cat "$WORK/store.json")"
cp "$WORK/samples.csv" "$OUT/$NAME.csv"
cp "$EVENTS" "$OUT/$NAME-events.jsonl"
(cd "$HERE" && "$PY" plot.py --samples "$WORK/samples.csv" --events "$EVENTS" --out "$OUT/$NAME.svg" \
    --title "Soak: ${RATE} msgs/s for $(span "$DURATION"), downstream stopped $(span "$FLAP_DOWN") every $(span "$FLAP_EVERY"), purge every $(span "$PURGE_EVERY")")
(cd "$HERE" && "$PY" report.py --samples "$WORK/samples.csv" --events "$EVENTS" --check "$WORK/check.txt" \
    --store "$WORK/store.json" --sender "$WORK/sender.log" --rate "$RATE") | tee "$OUT/$NAME.md"
grep -ciE 'warn|error' "$WORK/engine.log" | sed 's/^/engine log warnings and errors: /' || true
grep -iE 'warn|error' "$WORK/engine.log" | cut -c1-200 | sort | uniq -c | sort -rn | head -5 || true
log "written: $OUT/$NAME.csv $OUT/$NAME.svg $OUT/$NAME.md"
exit $status
