#!/usr/bin/env bash
# Message viewer searches on a large store: builds examples/search_bench
# (release), which fills a store of MESSAGES received messages through the
# public Store API the first time (kept in $OUT/store for the next run), then
# times every query ROUNDS times and prints a markdown table of medians and
# maxima. Nothing goes over the network.
#
#   bash benches/search/run.sh
#
# Settings (environment):
#   MESSAGES=1000000  received messages in the store (about 3.3 headers each)
#   ROUNDS=7          runs of every query; median and max are reported
#   PROFILE=release   cargo profile: release, or dist (the shipped build)
#   SKIP_BUILD=1      use the example already built with that profile
#   OUT=DIR           where the store and raw outputs are kept
#                     (default /tmp/switchboard-search-bench; about 1.5 GB
#                     for a million messages, built in a few minutes)
#   TIMEOUT=3600      seconds the whole run may take (building included)
#   NICE=             a nice value for the run (e.g. -10, as root), so that
#                     other work on the machine disturbs the timings less
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
MESSAGES=${MESSAGES:-1000000}
ROUNDS=${ROUNDS:-7}
PROFILE=${PROFILE:-release}
OUT=${OUT:-/tmp/switchboard-search-bench}
TIMEOUT=${TIMEOUT:-3600}
NICE=${NICE:-}
RUN=()
if [[ -n $NICE ]]; then
    RUN=(nice -n "$NICE")
fi

mkdir -p "$OUT"

if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --example search_bench) >&2
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# A private copy: a rebuild during the run cannot swap the binary.
cp "$TARGET/$PROFILE/examples/search_bench" "$OUT/search_bench"

log "store of $MESSAGES messages in $OUT/store (built once), $ROUNDS rounds per query"
timeout "$TIMEOUT" "${RUN[@]}" "$OUT/search_bench" --dir "$OUT/store" --messages "$MESSAGES" --rounds "$ROUNDS" \
    2> >(tee "$OUT/search.log" >&2) | tee "$OUT/search.md"
log "table in $OUT/search.md"
