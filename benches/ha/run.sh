#!/usr/bin/env bash
# Home Assistant benchmark: the state_changed events the demo causes in a
# real Home Assistant core, its attributes and its graceful stop, as
# measured by benches/ha/state_changes.py (whose header says what to
# install). Builds the engine, then runs the script; arguments are passed
# on to it (see --help).
#
#   bash benches/ha/run.sh [--rate 5] [--duration 120] [--warmup 30]
#
# Settings (environment):
#   HA_VENV=/work/ha-venv-2024.3  the venv Home Assistant core is installed in
#   PROFILE=release               cargo profile of the engine
#   SKIP_BUILD=1                  use the binary already built with that profile
#   RATE, DURATION, WARMUP, IN_PORT (2575), LAB_PORT (6661), MQTT_PORT (18830),
#   HA_PORT (18123), OUT: defaults of the script's flags
# CARGO_TARGET_DIR is honoured. Everything listens on and connects to
# 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
PROFILE=${PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HA_VENV=${HA_VENV:-/work/ha-venv-2024.3}

if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building ($PROFILE)"
    (cd "$ROOT" && cargo build --locked --profile "$PROFILE" --bin switchboard) >&2
fi
exec "$HA_VENV/bin/python" "$ROOT/benches/ha/state_changes.py" \
    --switchboard "$TARGET_DIR/$PROFILE/switchboard" --ha-venv "$HA_VENV" "$@"
