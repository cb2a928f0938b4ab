# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables set here are for the cases
# Shell functions the fault cases share (scripts/faults/*.sh); sourced, not
# run. On top of benches/lib.sh (log, wait_port, stop, median, and PIDS:
# processes appended to it are stopped when the case exits).
#
# A case script prints its table rows to standard output (check.py --case
# makes one) and logs to standard error; scripts/faults.sh runs the cases and
# prints one table. Settings (environment):
#   OUT=DIR          where the case keeps its files (default: a fresh temp dir)
#   SKIP_BUILD=1     use the release binaries already built
#   FAULTS_BIN=DIR   use the binaries copied there (faults.sh builds once)
#   READY_TIMEOUT=60 seconds the engine may take from start to `ready`
# Everything listens on and sends to 127.0.0.1 only.

FAULTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$FAULTS_DIR/../.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
# A case stopped by faults.sh's timeout still runs the EXIT trap (which
# stops its engine and receivers).
trap 'exit 143' TERM INT

OUT=${OUT:-$(mktemp -d /tmp/switchboard-faults.XXXXXX)}
mkdir -p "$OUT"
MSG=$ROOT/benches/engine/adt_a01.hl7
PY=${PYTHON:-python3}
READY_TIMEOUT=${READY_TIMEOUT:-60}

# Builds the release binaries once (unless SKIP_BUILD or FAULTS_BIN is set)
# and copies them to $FAULTS_BIN, so a rebuild during the run cannot swap
# them. Sets SB (switchboard) and ACKER (examples/mllp_acker).
faults_binaries() {
    if [[ -z ${FAULTS_BIN:-} || ! -x ${FAULTS_BIN:-}/switchboard ]]; then
        local target=${CARGO_TARGET_DIR:-$ROOT/target}
        [[ $target == /* ]] || target=$ROOT/$target
        if [[ -z ${SKIP_BUILD:-} ]]; then
            log "building (release)"
            (cd "$ROOT" && cargo build --release --locked --bins --example mllp_acker) >&2
        fi
        FAULTS_BIN=${FAULTS_BIN:-$OUT/bin}
        mkdir -p "$FAULTS_BIN"
        cp "$target/release/switchboard" "$target/release/examples/mllp_acker" "$FAULTS_BIN/"
        export FAULTS_BIN
    fi
    SB=$FAULTS_BIN/switchboard
    ACKER=$FAULTS_BIN/mllp_acker
}

# Starts the engine without waiting for it; sets ENGINE_PID. The log is
# appended to, so one file can hold every restart. ENGINE_ENV (an array of
# NAME=value) is the engine's extra environment.
engine_spawn() { # config data-dir log [more run arguments...]
    local config=$1 data=$2 logf=$3
    shift 3
    env ${ENGINE_ENV[@]+"${ENGINE_ENV[@]}"} "$SB" run --config "$config" --data-dir "$data" \
        --log-level "${ENGINE_LOG_LEVEL:-info}" "$@" >>"$logf" 2>&1 &
    ENGINE_PID=$!
    PIDS+=("$ENGINE_PID")
}

# Starts the engine and waits for its `ready` line (at most READY_TIMEOUT
# s). Sets ENGINE_PID, READY_MS (the engine's own start-to-ready figure)
# and RECOVERY_MS (wall clock from the start of the process to its `ready`
# line, as seen from here).
engine_start() { # config data-dir log [more run arguments...]
    local logf=$3 offset t0 line
    touch "$logf"
    offset=$(stat -c %s "$logf")
    t0=$(date +%s%3N)
    engine_spawn "$@"
    READY_MS=""
    RECOVERY_MS=""
    local tries=$((READY_TIMEOUT * 50))
    for _ in $(seq "$tries"); do
        line=$(tail -c +"$((offset + 1))" "$logf" | grep -a -o 'ready elapsed_ms=[0-9]*' | head -1 || true)
        if [[ -n $line ]]; then
            READY_MS=${line##*=}
            RECOVERY_MS=$(($(date +%s%3N) - t0))
            return 0
        fi
        kill -0 "$ENGINE_PID" 2>/dev/null || break
        sleep 0.02
    done
    if kill -0 "$ENGINE_PID" 2>/dev/null; then
        echo "the engine did not get ready within ${READY_TIMEOUT} s; its log since the start:" >&2
    else
        echo "the engine exited before it was ready; its log since the start:" >&2
    fi
    tail -c +"$((offset + 1))" "$logf" | tail -n 40 >&2
    return 1
}

# SIGKILL: no chance to flush, sync or say goodbye.
engine_kill() {
    kill -9 "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
}

# SIGTERM, up to 30 s for a graceful stop, then SIGKILL.
engine_stop() {
    stop "$ENGINE_PID"
}

# Starts a downstream receiver (downstream.py) recording every control id it
# receives into a file; sets DOWNSTREAM_PID.
downstream_start() { # port ids-file [downstream.py options...]
    local port=$1 ids=$2
    shift 2
    "$PY" "$FAULTS_DIR/downstream.py" --port "$port" --ids "$ids" "$@" 2>>"$OUT/downstream-$port.log" &
    DOWNSTREAM_PID=$!
    PIDS+=("$DOWNSTREAM_PID")
    wait_port "$port"
}

# Starts the sender (load.py) in the background; sets LOAD_PID. Its summary
# goes to $OUT/load-<port>.log.
load_start() { # port acked-file [load.py options...]
    local port=$1 acked=$2
    shift 2
    "$PY" "$FAULTS_DIR/load.py" --port "$port" --acked "$acked" "$@" >>"$OUT/load-$port.log" 2>&1 &
    LOAD_PID=$!
    PIDS+=("$LOAD_PID")
}

# Runs the sender to its end (bounded by its own --count/--duration and
# --give-up).
load_run() { # port acked-file [load.py options...]
    local port=$1 acked=$2
    shift 2
    "$PY" "$FAULTS_DIR/load.py" --port "$port" --acked "$acked" "$@"
}

# Waits for the sender started with load_start; its exit status.
load_wait() {
    local rc=0
    wait "$LOAD_PID" || rc=$?
    tail -n 3 "$OUT/load-"*.log >&2 || true
    return "$rc"
}

# Checks acknowledged against delivered ids and prints the case's row (see
# check.py --help): e.g. faults_check --acked A --delivered D --wait 60
# --case "name" --recovery "0.4 / 0.9".
faults_check() {
    "$PY" "$FAULTS_DIR/check.py" "$@"
}

# Prints a row for a case that could not be checked.
faults_row_failed() { # case why
    echo "| $1 | FAILED: $2 | - | - | - | - |"
}

# Seconds, with three decimals, from milliseconds.
# The smallest pass-through production, mllp_in -> mllp_out, as YAML on
# standard output: what the cases that need no router share.
passthrough_yaml() { # production in-port out-port retry-interval
    cat <<YAML
productions:
  $1:
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: $2
        targets: [Out]
      - name: Out
        kind: mllp_out
        host: 127.0.0.1
        port: $3
        stay_connected: true
        retry_interval: $4
YAML
}

ms_to_s() { awk -v m="$1" 'BEGIN {printf "%.2f", m / 1000}'; }
