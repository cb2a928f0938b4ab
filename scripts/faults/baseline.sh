#!/usr/bin/env bash
# The control case: no fault. mllp_in -> mllp_out -> a recording receiver,
# 4 connections sending 4000 messages. Every other case is read against it:
# nothing lost, no repeats, order kept.
#
#   bash scripts/faults.sh baseline
set -euo pipefail
# shellcheck source=scripts/faults/lib.sh
source "$(dirname "$0")/lib.sh"
PORT_BASE=${PORT_BASE:-31210}
IN_PORT=$PORT_BASE
OUT_PORT=$((PORT_BASE + 1))
COUNT=${COUNT:-4000}

faults_binaries
{
    printf 'store:\n  durability: full\n'
    passthrough_yaml baseline "$IN_PORT" "$OUT_PORT" 100ms
} >"$OUT/baseline.yaml"
rm -rf "$OUT/data" "$OUT"/acked.txt "$OUT"/delivered.txt
downstream_start "$OUT_PORT" "$OUT/delivered.txt"
engine_start "$OUT/baseline.yaml" "$OUT/data" "$OUT/engine.log"
log "engine ready in $READY_MS ms; sending $COUNT messages at C=4"
load_run "$IN_PORT" "$OUT/acked.txt" --count "$COUNT" --concurrency 4 --give-up 60 >&2
faults_check --acked "$OUT/acked.txt" --delivered "$OUT/delivered.txt" --wait 60 --max-repeats 0 \
    --case "baseline (no fault)" --recovery "-"
engine_stop
