#!/usr/bin/env bash
# The fault suite: runs every case under scripts/faults/ (or the ones named)
# and prints one markdown table of what each case's senders were
# acknowledged, what its receivers got, the repeats, whether order was kept
# and how long the engine took to recover.
#
#   bash scripts/faults.sh              # every scripts/faults/*.sh case
#   bash scripts/faults.sh kills        # just scripts/faults/kills.sh
#
# Settings (environment):
#   CASE_TIMEOUT=1200  seconds a case may run before it is stopped
#   SKIP_BUILD=1       use the release binaries already built
#   OUT=DIR            where to keep every case's files (default: a fresh
#                      temp dir); a case's log is $OUT/<case>.log
# A case script prints its rows to standard output and logs to standard
# error; it gets OUT=$OUT/<case> and the binaries built once here.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CASES_DIR=$ROOT/scripts/faults
CASE_TIMEOUT=${CASE_TIMEOUT:-1200}
BASE=${OUT:-$(mktemp -d /tmp/switchboard-faults.XXXXXX)}
export OUT=$BASE
# shellcheck source=scripts/faults/lib.sh
source "$CASES_DIR/lib.sh"

cases=()
if [[ $# -gt 0 ]]; then
    for name in "$@"; do
        name=${name%.sh}
        name=${name##*/}
        [[ -f $CASES_DIR/$name.sh && $name != lib ]] || { echo "no case scripts/faults/$name.sh" >&2; exit 2; }
        cases+=("$name")
    done
else
    for f in "$CASES_DIR"/*.sh; do
        name=$(basename "$f" .sh)
        [[ $name == lib ]] || cases+=("$name")
    done
fi

faults_binaries
log "cases: ${cases[*]}; files in $BASE"

rows=()
failed=0
for name in "${cases[@]}"; do
    log "case $name (at most $CASE_TIMEOUT s)"
    rc=0
    OUT=$BASE/$name timeout -k 20 "$CASE_TIMEOUT" bash "$CASES_DIR/$name.sh" \
        >"$BASE/$name.rows" 2> >(tee "$BASE/$name.log" >&2) || rc=$?
    got=0
    while IFS= read -r line; do
        if [[ $line == \|* ]]; then
            rows+=("$line")
            got=1
        fi
    done <"$BASE/$name.rows"
    if [[ $rc -ne 0 ]]; then
        failed=1
        why="exit $rc"
        [[ $rc -eq 124 ]] && why="timed out after $CASE_TIMEOUT s"
        [[ $got -eq 1 ]] || rows+=("$(faults_row_failed "$name" "$why; see $BASE/$name.log")")
        log "case $name: $why"
    fi
done

echo "| case | acknowledged | delivered | duplicates | order kept | recovery s |"
echo "| --- | ---: | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit "$failed"
