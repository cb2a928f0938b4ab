#!/usr/bin/env bash
# Fuzz smoke run for CI: builds every fuzz target and runs each for a few
# seconds from its seeds (fuzz/corpus/<target>/seed-*), so that a change
# that makes a parser panic on its seeds or on what libFuzzer finds in the
# first seconds fails the build. It is not a substitute for long runs
# (fuzz/README.md).
#
# Budget: FUZZ_SMOKE_SECONDS (default 120) shared equally by the targets,
# plus the build (about 8 minutes cold on 2 cores, seconds when warm) and,
# the first time, `cargo install cargo-fuzz` (about 4 minutes).
#
# Needs a nightly toolchain (libFuzzer's instrumentation uses unstable
# compiler flags). Without one it says so and exits 0: the smoke run is a
# check of its own, not a reason for the rest of CI to fail on a machine
# without nightly. Install it with `rustup toolchain install nightly
# --profile minimal`.
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz smoke: SKIPPED, no nightly toolchain (rustup toolchain install nightly --profile minimal)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

total=${FUZZ_SMOKE_SECONDS:-120}
mapfile -t targets < <(cargo +nightly fuzz list)
per_target=$((total / ${#targets[@]}))
if [ "$per_target" -lt 1 ]; then
  per_target=1
fi

started=$(date +%s)
cargo +nightly fuzz build
built=$(date +%s)

# New inputs go to a scratch corpus, the seeds are only read, so a smoke
# run leaves the tree as it was. TMPDIR also holds the files the
# inbound_log, delivery_log and addon_options targets write for every
# input: in memory (/dev/shm) they run some forty times faster than on
# a disk that other jobs are writing to.
base=${TMPDIR:-/tmp}
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  base=/dev/shm
fi
scratch=$(mktemp -d "$base/switchboard-fuzz-smoke-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$scratch/corpus/$target"
  flags=(-max_total_time="$per_target" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
  if [ -f "dict/$target.dict" ]; then
    flags+=(-dict="dict/$target.dict")
  fi
  if [ "$target" = mllp_codec ]; then
    flags+=(-max_len=12288)
  fi
  echo "fuzz smoke: $target for ${per_target}s"
  if ! TMPDIR="$scratch" cargo +nightly fuzz run "$target" "$scratch/corpus/$target" "corpus/$target" -- "${flags[@]}" \
    > "$scratch/$target.log" 2>&1; then
    tail -n 40 "$scratch/$target.log"
    failed+=("$target")
  else
    grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$scratch/$target.log" | tail -n 1 || true
  fi
done
ended=$(date +%s)

echo "fuzz smoke: build $((built - started))s, runs $((ended - built))s, ${#targets[@]} targets"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
  exit 1
fi
