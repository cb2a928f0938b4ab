#!/usr/bin/env bash
# Engine benchmarks: references (examples/mllp_acker in modes none, fsync and
# group), durable inbound ACKs of `switchboard run`, end-to-end pass-through
# (mllp_in -> router -> mllp_out -> acker), memory with a backlog, start to
# ready and binary size. Prints markdown tables; raw outputs stay in $OUT.
#
#   bash benches/engine/run.sh
#
# Settings (environment):
#   REPEAT=3          runs of every throughput case; the median is reported
#   SCALE=1           multiplies the message count of every throughput case
#   BACKLOG=1000000   messages loaded into a disabled operation's queue
#   PORT_BASE=27310   first of four 127.0.0.1 ports used (keep them out of the
#                     ephemeral range, or a reconnecting client can take one)
#   PROFILE=release   cargo profile of the engine and references: release,
#                     or dist (the shipped build: fat LTO, SQLite at -O3;
#                     a cold build takes minutes longer)
#   SKIP_BUILD=1      use the binaries already built with that profile
#   OUT=DIR           where to keep raw outputs (default: a fresh temp dir)
# Everything listens on and sends to 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
REPEAT=${REPEAT:-3}
SCALE=${SCALE:-1}
BACKLOG=${BACKLOG:-1000000}
PORT_BASE=${PORT_BASE:-27310}
PROFILE=${PROFILE:-release}
OUT=${OUT:-$(mktemp -d /tmp/switchboard-bench.XXXXXX)}
MSG="$ROOT/benches/engine/adt_a01.hl7"
SEND_TIMEOUT=900 # seconds; a bound on every load run

ACK_PORT=$PORT_BASE
IN_PORT=$((PORT_BASE + 1))
DEMO_IN_PORT=$((PORT_BASE + 2))
DEMO_LAB_PORT=$((PORT_BASE + 3))

mkdir -p "$OUT"

if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --bins --example mllp_acker) >&2
fi
# Private copies: a rebuild during the run cannot swap the binaries.
mkdir -p "$OUT/bin"
cp "$ROOT/target/$PROFILE/switchboard" "$ROOT/target/$PROFILE/examples/mllp_acker" "$OUT/bin/"
SB="$OUT/bin/switchboard"
ACKER="$OUT/bin/mllp_acker"

start_acker() { # mode log [extra args...]
    local mode=$1 logf=$2
    shift 2
    rm -f "$OUT/acker.dat"
    "$ACKER" --port "$ACK_PORT" --mode "$mode" --file "$OUT/acker.dat" "$@" >"$logf" 2>&1 &
    ACKER_PID=$!
    PIDS+=("$ACKER_PID")
    wait_port "$ACK_PORT"
}

stop_acker() {
    stop "$ACKER_PID"
    rm -f "$OUT/acker.dat"
    wait_port_free "$ACK_PORT"
}

# Starts the engine; sets ENGINE_PID and READY_MS (the `ready elapsed_ms=` figure).
start_engine() { # config data-dir log
    "$SB" run --config "$1" --data-dir "$2" --log-level info >"$3" 2>&1 &
    ENGINE_PID=$!
    PIDS+=("$ENGINE_PID")
    READY_MS=""
    for _ in $(seq 600); do
        READY_MS=$(grep -o 'ready elapsed_ms=[0-9]*' "$3" | head -1 | cut -d= -f2 || true)
        [[ -n $READY_MS ]] && return 0
        kill -0 "$ENGINE_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "the engine did not get ready; see $3" >&2
    cat "$3" >&2
    return 1
}

stop_engine() {
    stop "$ENGINE_PID"
}

# CPU time (user + system) in clock ticks of a process, or of one of its
# threads found by name.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
thread_ticks() { # pid thread-name
    local t
    for t in /proc/"$1"/task/*; do
        if [[ $(cat "$t/comm") == "$2" ]]; then
            awk '{sub(/.*\) /, ""); print $12 + $13}' "$t/stat"
            return
        fi
    done
    echo 0
}
per_msg_us() { awk -v t="$1" -v u="$TICK_US" -v n="$2" 'BEGIN {printf "%.1f", t * u / n}'; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# Runs one load; prints "throughput p50 p99" and keeps the full output.
send_load() { # port count concurrency outfile
    timeout "$SEND_TIMEOUT" "$SB" send --port "$1" --count "$2" --concurrency "$3" --timeout 30s "$MSG" >"$4" 2>&1 || {
        echo "load run failed: $(cat "$4")" >&2
        return 1
    }
    awk '/^throughput/ {t=$2} /^latency ms/ {p50=$4; p99=$8} END {print t, p50, p99}' "$4"
}

# Count of messages per case, for runs of a few seconds each on a small machine.
count_for() { # kind concurrency
    local base
    case "$1:$2" in
        none:*) base=60000 ;;
        fsync:*) base=4000 ;;
        group:1 | engine:1) base=4000 ;;
        group:8 | engine:8) base=15000 ;;
        # A few seconds each: long enough for the engine's checkpoints and
        # its writer's steady state to count.
        group:* | engine:*) base=120000 ;;
        e2e:*) base=40000 ;;
    esac
    awk -v b="$base" -v s="$SCALE" 'BEGIN {printf "%d", b * s}'
}

inbound_yaml() { # port durability
    cat <<EOF
store:
  durability: $2
  retention_days: 0
productions:
  bench:
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: $1
        max_connections: 200
        max_connections_per_peer: 200 # every load connection comes from 127.0.0.1
        targets: [Hold]
      # Disabled: messages are only committed and wait in its queue.
      - name: Hold
        kind: file_out
        enabled: false
        path: hold
EOF
}

e2e_yaml() { # in-port out-port pipeline-depth
    cat <<EOF
store:
  durability: full
  retention_days: 0
productions:
  bench:
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: $1
        max_connections: 200
        max_connections_per_peer: 200 # every load connection comes from 127.0.0.1
        targets: [Router]
      - name: Router
        kind: router
        rules:
          - when: MSH-9.1 = "ADT" and MSH-9.2 in ["A01", "A04", "A08"]
            send: [Out]
        no_match: error
      - name: Out
        kind: mllp_out
        host: 127.0.0.1
        port: $2
        stay_connected: true
        response_timeout: 30s
        retry_interval: 100ms
        pipeline_depth: $3
EOF
}

inbound_yaml "$IN_PORT" full >"$OUT/inbound.yaml"
inbound_yaml "$IN_PORT" normal >"$OUT/inbound-normal.yaml"
e2e_yaml "$IN_PORT" "$ACK_PORT" 1 >"$OUT/e2e.yaml"
e2e_yaml "$IN_PORT" "$ACK_PORT" 32 >"$OUT/e2e-pipelined.yaml"

declare -A RES # "case|C|run" -> "throughput p50 p99"

reference() { # mode C run
    local n
    n=$(count_for "$1" "$2")
    local c0
    start_acker "$1" "$OUT/acker-$1-c$2-r$3.log"
    c0=$(cpu_ticks "$ACKER_PID")
    RES["$1|$2|$3"]=$(send_load "$ACK_PORT" "$n" "$2" "$OUT/send-$1-c$2-r$3.txt")
    RES["$1|$2|$3"]+=" $(per_msg_us $(($(cpu_ticks "$ACKER_PID") - c0)) "$n")"
    stop_acker
    log "reference $1 C=$2 run $3 ($n msgs): ${RES["$1|$2|$3"]}"
}

inbound() { # case(engine|normal) C run
    local n dir=$OUT/data-inbound config=$OUT/inbound.yaml
    [[ $1 == normal ]] && config=$OUT/inbound-normal.yaml
    n=$(count_for engine "$2")
    rm -rf "$dir"
    start_engine "$config" "$dir" "$OUT/engine-$1-c$2-r$3.log"
    wait_port "$IN_PORT"
    local c0 w0
    c0=$(cpu_ticks "$ENGINE_PID")
    w0=$(thread_ticks "$ENGINE_PID" store-writer)
    RES["$1|$2|$3"]=$(send_load "$IN_PORT" "$n" "$2" "$OUT/send-$1-c$2-r$3.txt")
    RES["$1|$2|$3"]+=" $(per_msg_us $(($(cpu_ticks "$ENGINE_PID") - c0)) "$n")"
    RES["$1|$2|$3"]+=" $(per_msg_us $(($(thread_ticks "$ENGINE_PID" store-writer) - w0)) "$n")"
    stop_engine
    wait_port_free "$IN_PORT"
    log "inbound ($1) C=$2 run $3 ($n msgs): ${RES["$1|$2|$3"]}"
}

declare -A E2E # "case|C|run" -> "sender-throughput downstream-throughput downstream-seconds order"

e2e() { # case(e2e|e2e-pipelined) C run
    local n dir=$OUT/data-e2e start_ms line first last secs order stored
    local k=$1
    shift
    n=$(count_for e2e "$1")
    rm -rf "$dir"
    start_acker none "$OUT/acker-$k-c$1-r$2.log" --expect "$n" --ids "$OUT/ids-e2e.txt"
    start_engine "$OUT/$k.yaml" "$dir" "$OUT/engine-$k-c$1-r$2.log"
    wait_port "$IN_PORT"
    start_ms=$(date +%s%3N)
    RES["$k|$1|$2"]=$(send_load "$IN_PORT" "$n" "$1" "$OUT/send-$k-c$1-r$2.txt")
    line=""
    for _ in $(seq 1200); do # at most 120 s after the sender is done
        line=$(grep '^received' "$OUT/acker-$k-c$1-r$2.log" || true)
        [[ -n $line ]] && break
        sleep 0.1
    done
    stop_engine
    wait_port_free "$IN_PORT"
    if [[ -z $line ]]; then
        echo "downstream did not receive $n messages; see $OUT" >&2
        E2E["$k|$1|$2"]="${RES["$k|$1|$2"]%% *} 0 nan incomplete"
    else
        last=$(sed 's/.*last_ms=\([0-9]*\).*/\1/' <<<"$line")
        secs=$(awk -v a="$start_ms" -v b="$last" 'BEGIN {printf "%.3f", (b - a) / 1000}')
        # Order: the receiver must see exactly the order the operation's
        # queue was committed in.
        sqlite3 "$dir/switchboard.db" "SELECT control_id FROM header WHERE target = 'Out' ORDER BY id" \
            >"$OUT/ids-store.txt"
        stored=$(wc -l <"$OUT/ids-store.txt")
        if [[ $stored -eq $n ]] && cmp -s "$OUT/ids-store.txt" "$OUT/ids-e2e.txt"; then
            order=kept
        else
            order=BROKEN
        fi
        E2E["$k|$1|$2"]="${RES["$k|$1|$2"]%% *} $(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%.0f", n / s}') $secs $order"
    fi
    stop_acker
    log "$k C=$1 run $2 ($n msgs): sender ${RES["$k|$1|$2"]}; downstream ${E2E["$k|$1|$2"]}"
}

declare -A DRAIN # "case|run" -> "msgs/s seconds order"

# The operation alone: the queue is filled while the receiver is down, then
# the receiver starts and the drain is timed at the receiver.
drain() { # case(e2e|e2e-pipelined) run
    local n dir=$OUT/data-drain line first last secs order
    local k=$1
    shift
    n=$(count_for e2e 64)
    rm -rf "$dir"
    start_engine "$OUT/$k.yaml" "$dir" "$OUT/engine-drain-$k-r$1.log"
    wait_port "$IN_PORT"
    send_load "$IN_PORT" "$n" 64 "$OUT/send-drain-$k-r$1.txt" >/dev/null
    start_acker none "$OUT/acker-drain-$k-r$1.log" --expect "$n" --ids "$OUT/ids-e2e.txt"
    line=""
    for _ in $(seq 1200); do
        line=$(grep '^received' "$OUT/acker-drain-$k-r$1.log" || true)
        [[ -n $line ]] && break
        sleep 0.1
    done
    stop_engine
    wait_port_free "$IN_PORT"
    if [[ -z $line ]]; then
        DRAIN[$k|$1]="0 nan incomplete"
    else
        first=$(sed 's/.*first_ms=\([0-9]*\).*/\1/' <<<"$line")
        last=$(sed 's/.*last_ms=\([0-9]*\).*/\1/' <<<"$line")
        secs=$(awk -v a="$first" -v b="$last" 'BEGIN {printf "%.3f", (b - a) / 1000}')
        sqlite3 "$dir/switchboard.db" "SELECT control_id FROM header WHERE target = 'Out' ORDER BY id" \
            >"$OUT/ids-store.txt"
        if cmp -s "$OUT/ids-store.txt" "$OUT/ids-e2e.txt"; then order=kept; else order=BROKEN; fi
        DRAIN[$k|$1]="$(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%.0f", n / s}') $secs $order"
    fi
    stop_acker
    log "drain $k run $1 ($n msgs): ${DRAIN[$k|$1]}"
}

# --- machine -----------------------------------------------------------------
{
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "filesystem: $(df -T "$OUT" | awk 'NR == 2 {print $2 " on " $1}')"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
log "results in $OUT"

# --- throughput: every case once per round, rounds repeated ------------------
# Interleaving the cases spreads the drift of a shared machine over all of
# them, so ratios within the run stay meaningful.
for r in $(seq "$REPEAT"); do
    for c in 1 8 64; do
        reference none "$c" "$r"
        reference fsync "$c" "$r"
        reference group "$c" "$r"
        inbound engine "$c" "$r"
        inbound normal "$c" "$r"
    done
    for c in 8 64; do
        e2e e2e "$c" "$r"
    done
    e2e e2e-pipelined 64 "$r"
    drain e2e "$r"
    drain e2e-pipelined "$r"
done

# --- memory, start to ready ------------------------------------------------------
# The demo, on its own ports in a scratch folder (it creates its test
# certificates and output folders next to its productions file).
mkdir -p "$OUT/demo"
sed -e "s/port: 2575/port: $DEMO_IN_PORT/" -e "s/port: 6661/port: $DEMO_LAB_PORT/" \
    "$ROOT/examples/demo.yaml" >"$OUT/demo/demo.yaml"
declare -a DEMO_RSS DEMO_READY
for r in $(seq "$REPEAT"); do
    rm -rf "$OUT/demo/data"
    start_engine "$OUT/demo/demo.yaml" "$OUT/demo/data" "$OUT/engine-demo-r$r.log"
    sleep 2
    DEMO_RSS+=("$(rss_kb "$ENGINE_PID")")
    DEMO_READY+=("$READY_MS")
    stop_engine
    wait_port_free "$DEMO_IN_PORT"
    log "demo run $r: ready ${READY_MS} ms, RSS ${DEMO_RSS[-1]} kB"
done

# The backlog: every message waits in the disabled operation's queue.
BL=$OUT/data-backlog
rm -rf "$BL"
declare -a EMPTY_READY FULL_READY FULL_RSS
for r in $(seq "$REPEAT"); do
    rm -rf "$BL"
    start_engine "$OUT/inbound.yaml" "$BL" "$OUT/engine-empty-r$r.log"
    EMPTY_READY+=("$READY_MS")
    if [[ $r -lt $REPEAT ]]; then stop_engine; wait_port_free "$IN_PORT"; fi
done
wait_port "$IN_PORT"
sleep 2
RSS_BEFORE=$(rss_kb "$ENGINE_PID")
log "loading a backlog of $BACKLOG messages (RSS before: $RSS_BEFORE kB)"
LOAD_START=$(date +%s)
# RSS sampled every 5 s while loading.
(
    while kill -0 "$ENGINE_PID" 2>/dev/null; do
        echo "$(($(date +%s) - LOAD_START)) $(rss_kb "$ENGINE_PID" 2>/dev/null || echo 0)"
        sleep 5
    done
) >"$OUT/backlog-rss.txt" 2>/dev/null &
SAMPLER=$!
PIDS+=("$SAMPLER")
BACKLOG_RESULT=$(send_load "$IN_PORT" "$BACKLOG" 64 "$OUT/send-backlog.txt")
LOAD_SECS=$(($(date +%s) - LOAD_START))
sleep 2
RSS_AFTER=$(rss_kb "$ENGINE_PID")
HWM=$(hwm_kb "$ENGINE_PID")
kill "$SAMPLER" 2>/dev/null || true
stop_engine
wait_port_free "$IN_PORT"
QUEUED=$(sqlite3 "$BL/switchboard.db" "SELECT COUNT(*) FROM header WHERE target = 'Hold' AND status = 'queued'")
DB_MB=$(du -sm "$BL" | cut -f1)
log "backlog loaded in $LOAD_SECS s (${BACKLOG_RESULT%% *} msgs/s); RSS after $RSS_AFTER kB, peak $HWM kB; $QUEUED queued"
for r in $(seq "$REPEAT"); do
    start_engine "$OUT/inbound.yaml" "$BL" "$OUT/engine-full-r$r.log"
    FULL_READY+=("$READY_MS")
    sleep 2
    FULL_RSS+=("$(rss_kb "$ENGINE_PID")")
    stop_engine
    wait_port_free "$IN_PORT"
    log "restart with backlog run $r: ready $READY_MS ms, RSS ${FULL_RSS[-1]} kB"
done

BIN_BYTES=$(stat -c %s "$SB")
strip -o "$OUT/bin/switchboard.stripped" "$SB"
STRIPPED_BYTES=$(stat -c %s "$OUT/bin/switchboard.stripped")
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

# --- report ----------------------------------------------------------------------
med() { # case C field(1=throughput 2=p50 3=p99 4=CPU us/msg 5=writer CPU us/msg)
    for r in $(seq "$REPEAT"); do
        awk -v f="$3" '{print $f}' <<<"${RES["$1|$2|$r"]}"
    done | median
}
med_e2e() { # case C field(1=sender 2=downstream 3=seconds)
    for r in $(seq "$REPEAT"); do awk -v f="$3" '{print $f}' <<<"${E2E["$1|$2|$r"]}"; done | median
}
orders() { for r in $(seq "$REPEAT"); do awk '{print $4}' <<<"${E2E["$1|$2|$r"]}"; done | sort -u | paste -sd/; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f %%", 100 * a / b}'; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f MB", k / 1024}'; }
list() { paste -sd' ' | sed 's/ /, /g'; }

echo
cat "$OUT/machine.txt"
echo "message: $(wc -c <"$MSG") bytes ($(basename "$MSG")); $REPEAT runs per case, medians; SCALE=$SCALE; profile $PROFILE"
echo
echo "### References (examples/mllp_acker)"
echo
echo "| mode | C | msgs | throughput msgs/s | p50 ms | p99 ms | receiver CPU µs/msg |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for mode in none fsync group; do
    for c in 1 8 64; do
        echo "| $mode | $c | $(count_for "$mode" "$c") | $(med "$mode" "$c" 1) | $(med "$mode" "$c" 2) | $(med "$mode" "$c" 3) | $(med "$mode" "$c" 4) |"
    done
done
echo
echo "### Durable inbound ACKs (mllp_in, durability full, target operation disabled)"
echo
echo "| C | msgs | throughput msgs/s | p50 ms | p99 ms | engine CPU µs/msg (store writer) | vs group reference | target |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for c in 1 8 64; do
    t=$(med engine "$c" 1)
    g=$(med group "$c" 1)
    case $c in 1) goal=">= 80 %" ;; 64) goal=">= 90 %" ;; *) goal="-" ;; esac
    echo "| $c | $(count_for engine "$c") | $t | $(med engine "$c" 2) | $(med engine "$c" 3) | $(med engine "$c" 4) ($(med engine "$c" 5)) | $(pct "$t" "$g") | $goal |"
done
echo
echo "For comparison, the same with \`durability: normal\` (no fsync before the ACK):"
echo
echo "| C | throughput msgs/s | p50 ms | p99 ms | engine CPU µs/msg (store writer) | vs none reference |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
for c in 1 8 64; do
    t=$(med normal "$c" 1)
    echo "| $c | $t | $(med normal "$c" 2) | $(med normal "$c" 3) | $(med normal "$c" 4) ($(med normal "$c" 5)) | $(pct "$t" "$(med none "$c" 1)") |"
done
echo
echo "### End to end (mllp_in -> router -> mllp_out -> acker none)"
echo
# One operation delivers over one connection; with pipeline_depth 1, one
# message per round trip: the none reference at C=1 is its ceiling.
echo "| C | pipeline_depth | msgs | sender msgs/s | sender p50 ms | sender p99 ms | all received after s | downstream msgs/s | downstream vs group reference | vs none reference C=1 | order per operation |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for kc in e2e:8:1 e2e:64:1 e2e-pipelined:64:32; do
    IFS=: read -r k c depth <<<"$kc"
    d=$(med_e2e "$k" "$c" 2)
    echo "| $c | $depth | $(count_for e2e "$c") | $(med "$k" "$c" 1) | $(med "$k" "$c" 2) | $(med "$k" "$c" 3) | $(med_e2e "$k" "$c" 3) | $d | $(pct "$d" "$(med group "$c" 1)") | $(pct "$d" "$(med none 1 1)") | $(orders "$k" "$c") |"
done
echo
echo "The operation alone (a queue of $(count_for e2e 64) filled while the receiver was down, then drained):"
echo
echo "| pipeline_depth | msgs/s | vs group reference C=64 | vs none reference C=1 | order |"
echo "| ---: | ---: | ---: | ---: | --- |"
for kd in e2e:1 e2e-pipelined:32; do
    IFS=: read -r k depth <<<"$kd"
    d=$(for r in $(seq "$REPEAT"); do awk '{print $1}' <<<"${DRAIN[$k|$r]}"; done | median)
    o=$(for r in $(seq "$REPEAT"); do awk '{print $3}' <<<"${DRAIN[$k|$r]}"; done | sort -u | paste -sd/)
    echo "| $depth | $d | $(pct "$d" "$(med group 64 1)") | $(pct "$d" "$(med none 1 1)") | $o |"
done
echo
echo "### Memory, start to ready, size"
echo
echo "| what | value |"
echo "| --- | --- |"
echo "| demo (examples/demo.yaml), RSS 2 s after ready | $(printf '%s\n' "${DEMO_RSS[@]}" | median | xargs -I{} awk -v k={} 'BEGIN {printf "%.1f MB", k / 1024}') (runs: $(printf '%s\n' "${DEMO_RSS[@]}" | list) kB) |"
echo "| demo, start to ready | $(printf '%s\n' "${DEMO_READY[@]}" | median) ms (runs: $(printf '%s\n' "${DEMO_READY[@]}" | list)) |"
echo "| inbound production, empty store: start to ready | $(printf '%s\n' "${EMPTY_READY[@]}" | median) ms (runs: $(printf '%s\n' "${EMPTY_READY[@]}" | list)) |"
echo "| inbound production, empty store: RSS | $(mb "$RSS_BEFORE") |"
echo "| backlog load: $BACKLOG msgs at C=64 | $LOAD_SECS s, $(awk '{printf "%.0f", $1}' <<<"$BACKLOG_RESULT") msgs/s; $QUEUED queued; store $DB_MB MB |"
echo "| RSS after loading the backlog (peak while loading) | $(mb "$RSS_AFTER") ($(mb "$HWM")) |"
echo "| restart with the backlog: start to ready | $(printf '%s\n' "${FULL_READY[@]}" | median) ms (runs: $(printf '%s\n' "${FULL_READY[@]}" | list)) |"
echo "| restart with the backlog: RSS | $(printf '%s\n' "${FULL_RSS[@]}" | median | xargs -I{} awk -v k={} 'BEGIN {printf "%.1f MB", k / 1024}') |"
echo "| $PROFILE binary (target/$PROFILE/switchboard; stripped) | $(mb $((BIN_BYTES / 1024))); $(mb $((STRIPPED_BYTES / 1024))) |"
echo
echo "RSS while loading (seconds: kB): $(awk '{printf "%s%s: %s", (NR > 1 ? ", " : ""), $1, $2}' "$OUT/backlog-rss.txt")"
echo "raw outputs: $OUT"
