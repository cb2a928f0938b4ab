#!/usr/bin/env bash
# Flood benchmark: the latency of a well-behaved sender
# (`switchboard send --count N --concurrency 1`) against `switchboard run`
# while connections that deliver nothing hold the listener: none; 1,000
# idle connections; 200 half-open TLS handshakes; 50 byte-at-a-time
# senders; all three at once. The attackers (benches/flood/attack.py) come
# from several 127.0.0.x addresses and reconnect as soon as they are
# closed. Prints a markdown table of medians; raw outputs stay in $OUT.
#
#   bash benches/flood/run.sh
#
# Settings (environment):
#   REPEAT=3          runs of every case; the cases take turns, the median is
#                     reported
#   COUNT=3000        messages the good sender sends per run
#   SETTLE=3          seconds the flood runs before the good sender starts
#   PAUSE=0.05        seconds an attacker waits between a close and its
#                     next connect
#   PIN=1             run the engine and the good sender on CPU 0 and the
#                     attackers on CPU 1 (in every case, the one without a
#                     flood too), as if the attack came from elsewhere: the
#                     table then shows what handling the flood costs the
#                     engine, not what the attackers' own CPU time takes from
#                     it on a small machine; PIN=0 lets everything share all
#                     CPUs
#   NICE=             a nice value for the engine, the sender and the
#                     attackers (e.g. -10, as root), so that other work on a
#                     shared machine disturbs the figures less
#   DURABILITY=full   store.durability of the engine: full (the default,
#                     one sync per commit) or normal, which takes the disk's
#                     latency, and the other work on it, out of the figures
#   PORT_BASE=27410   first of two 127.0.0.1 ports used (plain, TLS)
#   PROFILE=release   cargo profile of the engine
#   SKIP_BUILD=1      use the binary already built with that profile
#   OUT=DIR           where to keep raw outputs (default: a fresh temp dir)
# CARGO_TARGET_DIR is honoured. Everything listens on and connects to
# loopback addresses only, and every process is bounded in time.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
REPEAT=${REPEAT:-3}
COUNT=${COUNT:-3000}
SETTLE=${SETTLE:-3}
PAUSE=${PAUSE:-0.05}
PIN=${PIN:-1}
NICE=${NICE:-}
DURABILITY=${DURABILITY:-full}
PORT_BASE=${PORT_BASE:-27410}
PROFILE=${PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/switchboard-flood.XXXXXX)}
MSG="$ROOT/benches/engine/adt_a01.hl7"
ATTACK="$ROOT/benches/flood/attack.py"
SEND_TIMEOUT=600    # seconds; a bound on every good-sender run
ATTACK_SECONDS=600  # a bound on every attacker process

IN_PORT=$PORT_BASE
TLS_PORT=$((PORT_BASE + 1))

ON_ENGINE_CPU=()
ON_ATTACK_CPU=()
if [[ -n $NICE ]]; then
    ON_ENGINE_CPU=(nice -n "$NICE")
    ON_ATTACK_CPU=(nice -n "$NICE")
fi
if [[ $PIN == 1 ]]; then
    if (($(nproc) < 2)); then
        echo "PIN=1 needs two CPUs; run with PIN=0" >&2
        exit 1
    fi
    ON_ENGINE_CPU+=(taskset -c 0)
    ON_ATTACK_CPU+=(taskset -c 1)
    # The engine keeps the two runtime workers it has on two CPUs, rather
    # than one for the one CPU it is given.
    export TOKIO_WORKER_THREADS=2
fi

mkdir -p "$OUT"

if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building ($PROFILE)"
    (cd "$ROOT" && cargo build --locked --profile "$PROFILE" --bin switchboard) >&2
fi
# A private copy: a rebuild during the run cannot swap the binary.
mkdir -p "$OUT/bin"
cp "$TARGET_DIR/$PROFILE/switchboard" "$OUT/bin/"
SB="$OUT/bin/switchboard"

# The engine's defaults for every limit: what an operator gets.
cat >"$OUT/flood.yaml" <<EOF
store:
  durability: $DURABILITY
  retention_days: 0
tls:
  server:
    role: server
    ca_file: $OUT/pki/ca.crt
    cert_file: $OUT/pki/server.crt
    key_file: $OUT/pki/server.key
    create_if_missing: true
productions:
  flood:
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: $IN_PORT
        targets: [Hold]
      - name: Secure in
        kind: mllp_in
        host: 127.0.0.1
        port: $TLS_PORT
        tls: server
        targets: [Hold]
      # Disabled: messages are only committed and wait in its queue.
      - name: Hold
        kind: file_out
        enabled: false
        path: hold
EOF

start_engine() { # data-dir log
    "${ON_ENGINE_CPU[@]}" "$SB" run --config "$OUT/flood.yaml" --data-dir "$1" --log-level info >"$2" 2>&1 &
    ENGINE_PID=$!
    PIDS+=("$ENGINE_PID")
    for _ in $(seq 600); do
        grep -qs 'ready elapsed_ms=' "$2" && return 0
        kill -0 "$ENGINE_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "the engine did not get ready; see $2" >&2
    cat "$2" >&2
    return 1
}

# Starts one attacker process: mode count sources first-source port log.
start_attack() {
    "${ON_ATTACK_CPU[@]}" python3 "$ATTACK" --mode "$1" --count "$2" --sources "$3" --first-source "$4" --port "$5" \
        --duration "$ATTACK_SECONDS" --pause "$PAUSE" >"$6" 2>&1 &
    ATTACK_PIDS+=("$!")
    PIDS+=("$!")
}

# The attacks of a case, against the listener the good sender uses.
start_flood() { # case run
    ATTACK_PIDS=()
    local base="$OUT/attack-$1-r$2"
    case $1 in
        idle) start_attack idle 1000 10 10 "$IN_PORT" "$base-idle.log" ;;
        slow) start_attack slow 50 5 50 "$IN_PORT" "$base-slow.log" ;;
        half-open) start_attack tls 200 10 30 "$TLS_PORT" "$base-tls.log" ;;
        all | all-tls)
            start_attack idle 1000 10 10 "$IN_PORT" "$base-idle.log"
            start_attack slow 50 5 50 "$IN_PORT" "$base-slow.log"
            start_attack tls 200 10 30 "$TLS_PORT" "$base-tls.log"
            ;;
    esac
}

stop_flood() {
    for pid in "${ATTACK_PIDS[@]}"; do stop "$pid"; done
    ATTACK_PIDS=()
}

# Which listener a case's good sender uses.
listener_of() {
    case $1 in
        none-tls | half-open | all-tls) echo tls ;;
        *) echo plain ;;
    esac
}

declare -A RES # "case|run" -> "p50 p99 throughput errors warnings attacker-connects/s"

run_case() { # case run
    local c=$1 r=$2 dir=$OUT/data-$1-r$2 elog=$OUT/engine-$1-r$2.log sout=$OUT/send-$1-r$2.txt
    rm -rf "$dir"
    start_engine "$dir" "$elog"
    wait_port "$IN_PORT"
    wait_port "$TLS_PORT"
    start_flood "$c" "$r"
    sleep "$SETTLE"
    local tls_args=()
    local port=$IN_PORT
    if [[ $(listener_of "$c") == tls ]]; then
        port=$TLS_PORT
        tls_args=(--ca "$OUT/pki/ca.crt" --server-name localhost)
    fi
    "${ON_ENGINE_CPU[@]}" timeout "$SEND_TIMEOUT" "$SB" send --port "$port" "${tls_args[@]}" --count "$COUNT" --concurrency 1 \
        --timeout 10s "$MSG" >"$sout" 2>&1 || true
    stop_flood
    stop "$ENGINE_PID"
    # Every warning of the run: the flood's, from its start.
    local warnings
    warnings=$(grep -c ' WARN ' "$elog" || true)
    local made=0 secs=0 logs
    logs=$(compgen -G "$OUT/attack-$c-r$r-*.log" || true)
    if [[ -n $logs ]]; then
        # shellcheck disable=SC2086 # one file name per word
        read -r made secs < <(awk '/^summary/ {m += $7; s = $11} END {print m + 0, s + 0}' $logs)
    fi
    RES["$c|$r"]=$(awk -v w="$warnings" -v m="$made" -v s="$secs" '
        /^sent/ {e = $(NF - 1)}
        /^throughput/ {t = $2}
        /^latency ms/ {p50 = $4; p99 = $8}
        END {printf "%s %s %s %s %d %.0f", p50, p99, t, e, w, (s > 0 ? m / s : 0)}' "$sout")
    log "$c run $r: p50 p99 msgs/s errors warnings connects/s = ${RES["$c|$r"]}"
    if ! grep -q ' 0 errors' "$sout"; then
        log "$c run $r: the good sender had errors: $(cat "$sout")"
    fi
}

CASES=(none idle slow all none-tls half-open all-tls)
for r in $(seq "$REPEAT"); do
    for c in "${CASES[@]}"; do run_case "$c" "$r"; done
done

label() {
    case $1 in
        none) echo "no flood" ;;
        idle) echo "1,000 idle connections" ;;
        slow) echo "50 byte-at-a-time senders" ;;
        all) echo "all three at once" ;;
        none-tls) echo "no flood" ;;
        half-open) echo "200 half-open TLS handshakes" ;;
        all-tls) echo "all three at once" ;;
    esac
}

col() { # case field-index
    for r in $(seq "$REPEAT"); do echo "${RES["$1|$r"]}" | cut -d' ' -f"$2"; done | median
}

echo
echo "| sender | flood | p50 ms | p99 ms | p99 vs no flood | msgs/s | errors (all runs) | warning lines per run | attacker connects/s |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for c in "${CASES[@]}"; do
    base=none
    [[ $(listener_of "$c") == tls ]] && base=none-tls
    p99=$(col "$c" 2)
    ratio=$(awk -v a="$p99" -v b="$(col "$base" 2)" 'BEGIN {printf "%.2f×", a / b}')
    errors=0
    for r in $(seq "$REPEAT"); do errors=$((errors + $(echo "${RES["$c|$r"]}" | cut -d' ' -f4))); done
    echo "| $(listener_of "$c") | $(label "$c") | $(col "$c" 1) | $p99 | $ratio | $(col "$c" 3) | $errors | $(col "$c" 5) | $(col "$c" 6) |"
done
echo
echo "raw outputs: $OUT"
