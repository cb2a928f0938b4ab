#!/usr/bin/env bash
# Disk full, repeatedly, under load: the engine's data folder is a small
# tmpfs that a filler file fills up and that is freed again, CYCLES times,
# while 8 connections send (load.py, recording every acknowledged id) and
# the operation delivers to a recording receiver (downstream.py). One row
# per cycle (check.py), for the messages acknowledged in that cycle:
#
#   | disk full cycle N | acknowledged | delivered | duplicates | order kept | recovery s |
#
# recovery s: from freeing the disk until every message acknowledged before
# then was delivered, with the load going on. Also logged: the store's
# error as the engine logged it, and how often "cannot rollback" appears
# (it must not).
#
#   sudo bash scripts/faults.sh disk_full
#
# Settings (environment), besides those of lib.sh:
#   CYCLES=3          fill and free cycles
#   FULL_SECS=20      how long the disk stays full in each cycle
#   SIZE_MB=64        size of the tmpfs (the inbound log takes a fixed
#                     16 MiB of it, the write-ahead log up to 16 MiB more)
#   RATE=400          messages a second offered, at most (the store keeps
#                     every message, so a faster sender fills the tmpfs
#                     with messages instead of the filler)
#   PORT_BASE=31000   first of two 127.0.0.1 ports (engine, receiver)
# Needs root (it mounts a tmpfs); skips with a message otherwise.
set -euo pipefail
# shellcheck source=scripts/faults/lib.sh
source "$(dirname "$0")/lib.sh"
CYCLES=${CYCLES:-3}
FULL_SECS=${FULL_SECS:-20}
SIZE_MB=${SIZE_MB:-64}
RATE=${RATE:-400}
PORT_BASE=${PORT_BASE:-31000}
IN_PORT=$PORT_BASE
OUT_PORT=$((PORT_BASE + 1))
MNT=$OUT/data

if [[ $(id -u) -ne 0 ]]; then
    log "skipped: disk_full mounts a tmpfs and needs root"
    exit 0
fi
faults_binaries

mkdir -p "$MNT"
mount -t tmpfs -o "size=${SIZE_MB}m,mode=0700" tmpfs "$MNT"
# shellcheck disable=SC2317 # run by the trap
unmount() {
    cleanup
    umount -l "$MNT" 2>/dev/null || true
}
trap unmount EXIT

passthrough_yaml disk "$IN_PORT" "$OUT_PORT" 200ms >"$OUT/disk_full.yaml"
rm -f "$OUT"/acked-*.txt "$OUT"/delivered*.txt
touch "$OUT/delivered.txt"
downstream_start "$OUT_PORT" "$OUT/delivered.txt"
engine_start "$OUT/disk_full.yaml" "$MNT" "$OUT/engine.log"

# How many lines of file $1 are not in file $2 (1 if they cannot be read).
missing() {
    local n
    n=$(grep -Fxvc -f "$2" "$1" 2>/dev/null || true)
    echo "${n:-1}"
}

failed=0
for cycle in $(seq "$CYCLES"); do
    acked=$OUT/acked-$cycle.txt
    touch "$acked"
    # Sends through the fill and the free: an ACK may wait for the whole
    # time the disk is full (acknowledgments stop once 4 MiB wait), so the
    # timeout is longer than that and no message is sent twice.
    load_start "$IN_PORT" "$acked" --concurrency 8 --rate "$RATE" --duration $((FULL_SECS + 15)) \
        --timeout $((FULL_SECS + 40)) --give-up $((FULL_SECS + 100)) --prefix "C${cycle}x"
    sleep 5 # traffic before the disk fills
    log "cycle $cycle: filling the disk ($(wc -l <"$acked") acknowledged so far)"
    fallocate -l "$(df -B1 --output=avail "$MNT" | tail -1)" "$MNT/filler" 2>/dev/null || true
    dd if=/dev/zero of="$MNT/filler" bs=64k oflag=append conv=notrunc count=16384 2>/dev/null || true
    sleep "$FULL_SECS"
    log "cycle $cycle: $(df -h --output=avail "$MNT" | tail -1 | tr -d ' ') free, $(wc -l <"$acked") acknowledged; freeing"
    rm -f "$MNT/filler"
    freed=$(date +%s%3N)
    cp "$acked" "$OUT/before-$cycle.txt"
    recovery="not within 120 s"
    for _ in $(seq 1200); do
        if [[ $(missing "$OUT/before-$cycle.txt" "$OUT/delivered.txt") -eq 0 ]]; then
            recovery=$(ms_to_s $(($(date +%s%3N) - freed)))
            break
        fi
        sleep 0.1
    done
    load_wait || log "cycle $cycle: the sender did not finish every connection"
    for _ in $(seq 600); do # until the cycle's messages are delivered, at most 60 s
        [[ $(missing "$acked" "$OUT/delivered.txt") -eq 0 ]] && break
        sleep 0.1
    done
    grep "^C${cycle}x" "$OUT/delivered.txt" >"$OUT/delivered-$cycle.txt" || true
    faults_check --acked "$acked" --delivered "$OUT/delivered-$cycle.txt" --max-repeats 0 \
        --case "disk full cycle $cycle" --recovery "$recovery" || failed=1
done
log "'cannot rollback' in the engine's log: $(grep -c 'cannot rollback' "$OUT/engine.log" || true) lines; the store's errors:"
grep -a -m3 'commit failed\|item in error' "$OUT/engine.log" | cut -c1-300 >&2 || true
engine_stop
exit "$failed"
