#!/usr/bin/env bash
# 20 SIGKILLs under mixed load: mllp_in (8 connections from load.py, a
# steady rate) -> router -> two mllp_out, one waiting for each reply
# (pipeline_depth 1) and one sending ahead (8), each to a recording
# receiver. The engine is killed with SIGKILL at random moments (a seeded
# schedule of bounded sleeps) and started again at once, while:
#   - checkpoints run by themselves (the traffic keeps the write-ahead log
#     growing past its restart size);
#   - purges run: with libfaketime, every start runs a day further on, so
#     its start-up purge (retention_days: 1) removes what the runs before
#     it completed, under load; and the API's POST /api/v1/store/purge is
#     called every few seconds on top.
# Every fifth restart is killed once more a few milliseconds in, while it
# recovers. At the end the sender stops, the queues drain (bounded) and check.py
# compares: nothing acknowledged lost, order per operation kept, repeats
# within what a crash may repeat (pipeline_depth per operation, plus one
# resend per sender connection whose ACK the kill swallowed).
#
#   bash scripts/faults.sh kills
#
# Settings (environment): KILLS=20, RATE=200 (messages/s in all), SEED=7,
# UP_MIN_MS=300 and UP_SPREAD_MS=2700 (time up before each kill: at least
# the first, plus a random part below the second), PORT_BASE=31220.
set -euo pipefail
# shellcheck source=scripts/faults/lib.sh
source "$(dirname "$0")/lib.sh"
KILLS=${KILLS:-20}
RATE=${RATE:-200}
SEED=${SEED:-7}
UP_MIN_MS=${UP_MIN_MS:-300}
UP_SPREAD_MS=${UP_SPREAD_MS:-2700}
CONNS=8
PORT_BASE=${PORT_BASE:-31220}
IN_PORT=$PORT_BASE
ONE_PORT=$((PORT_BASE + 1))
EIGHT_PORT=$((PORT_BASE + 2))
API_PORT=$((PORT_BASE + 3))
WEB_PORT=$((PORT_BASE + 4))
TOKEN=faults-kills-$(date +%s%N)
FAKETIME_LIB=${FAKETIME_LIB:-/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1}
DATA=$OUT/data
ELOG=$OUT/engine.log

faults_binaries
cat >"$OUT/kills.yaml" <<YAML
store:
  durability: full
  retention_days: 1
productions:
  kills:
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: $IN_PORT
        targets: [Router]
      - name: Router
        kind: router
        rules:
          - when: MSH-9.1 = "ADT"
            send: [One, Eight]
        no_match: error
      - name: One
        kind: mllp_out
        host: 127.0.0.1
        port: $ONE_PORT
        stay_connected: true
        retry_interval: 100ms
        failure_timeout: 1d
        pipeline_depth: 1
      - name: Eight
        kind: mllp_out
        host: 127.0.0.1
        port: $EIGHT_PORT
        stay_connected: true
        retry_interval: 100ms
        failure_timeout: 1d
        pipeline_depth: 8
YAML
rm -rf "$DATA" "$OUT"/*.txt "$ELOG" "$OUT"/load-*.log
RANDOM=$SEED

# Each start runs two days after the one before (relative to the real
# clock, which keeps ticking), so its purge finds the earlier runs'
# completed messages older than the retention.
run_no=0
environment() {
    ENGINE_ENV=("SWITCHBOARD_API_TOKENS=$TOKEN")
    if [[ -r $FAKETIME_LIB ]]; then
        ENGINE_ENV+=("LD_PRELOAD=$FAKETIME_LIB" "FAKETIME=+$((2 * run_no))d" "FAKETIME_DONT_FAKE_MONOTONIC=1")
    fi
    run_no=$((run_no + 1))
}
start() {
    environment
    engine_start "$OUT/kills.yaml" "$DATA" "$ELOG" --web-port "$WEB_PORT" --api-port "$API_PORT"
}
# Killed while starting, recovering what the kill before left (not
# counted as one of the KILLS).
kill_while_starting() { # ms
    environment
    engine_spawn "$OUT/kills.yaml" "$DATA" "$ELOG" --web-port "$WEB_PORT" --api-port "$API_PORT"
    sleep "$(awk -v m="$1" 'BEGIN {printf "%.3f", m / 1000}')"
    engine_kill
}
[[ -r $FAKETIME_LIB ]] || log "no libfaketime ($FAKETIME_LIB): purges find nothing older than a day"

downstream_start "$ONE_PORT" "$OUT/delivered-one.txt"
downstream_start "$EIGHT_PORT" "$OUT/delivered-eight.txt"
start
log "engine ready in $READY_MS ms; load: $CONNS connections, $RATE msgs/s"
load_start "$IN_PORT" "$OUT/acked.txt" --concurrency "$CONNS" --rate "$RATE" --duration 3600 --give-up 120

# Purges through the API every 2 to 5 s until told to stop (bounded anyway).
(
    for _ in $(seq 1000); do
        [[ -e $OUT/purges.stop ]] && break
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 -X POST \
            -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$API_PORT/api/v1/store/purge" || echo down
        sleep $((2 + RANDOM % 4))
    done
) >"$OUT/purges.txt" 2>/dev/null &
PURGER=$!
PIDS+=("$PURGER")

recovery=()
for k in $(seq "$KILLS"); do
    up_ms=$((UP_MIN_MS + RANDOM % UP_SPREAD_MS))
    sleep "$(awk -v m="$up_ms" 'BEGIN {printf "%.3f", m / 1000}')"
    wal=$(stat -c %s "$DATA/switchboard.db-wal" 2>/dev/null || echo 0)
    engine_kill
    log "kill $k after $up_ms ms up (write-ahead log $((wal / 1024)) KiB, $(wc -l <"$OUT/acked.txt") acknowledged)"
    if ((k % 5 == 0)); then
        early=$((RANDOM % 60))
        kill_while_starting "$early"
        log "and again $early ms into its start"
    fi
    start
    recovery+=("$RECOVERY_MS")
    log "restart $k: ready after $RECOVERY_MS ms (engine: $READY_MS ms)"
done

# Traffic on the last run for a while, then the sender stops and the
# queues drain.
sleep 3
touch "$OUT/purges.stop"
kill -TERM "$LOAD_PID" 2>/dev/null || true
load_wait || log "the sender did not finish cleanly"
one_bound=$((KILLS * (1 + CONNS)))
eight_bound=$((KILLS * (8 + CONNS)))
rec_med=$(printf '%s\n' "${recovery[@]}" | median)
rec_max=$(printf '%s\n' "${recovery[@]}" | sort -g | tail -1)
rc=0
faults_check --acked "$OUT/acked.txt" --delivered "$OUT/delivered-one.txt" --delivered "$OUT/delivered-eight.txt" \
    --max-repeats "$one_bound" --max-repeats "$eight_bound" --wait 300 \
    --case "$KILLS SIGKILLs under mixed load (depth 1 / 8)" \
    --recovery "median $(ms_to_s "$rec_med"), max $(ms_to_s "$rec_max")" || rc=$?
engine_stop
wait "$PURGER" 2>/dev/null || true
log "purges: $(grep -c 'purged old messages' "$ELOG" || true) start-up purges removed messages; API purges answered: $(sort "$OUT/purges.txt" | uniq -c | tr '\n' ' ')"
log "headers by target and status: $(sqlite3 "$DATA/switchboard.db" \
    "SELECT target || ' ' || status || ' ' || COUNT(*) FROM header GROUP BY target, status" | paste -sd, -)"
exit "$rc"
