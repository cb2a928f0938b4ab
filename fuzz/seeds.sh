#!/usr/bin/env bash
# Writes the seed corpora under fuzz/corpus/<target>/ (files named seed-*,
# the ones under version control) from the repository's own inputs: the
# HL7 fixtures, the example productions files, the options of the add-on's
# tests, the conditions and settings of the unit tests, and the log files
# of a short engine run that is killed mid-flight, as a crash would.
#
#   bash fuzz/seeds.sh            # everything but the logs
#   bash fuzz/seeds.sh --logs     # the logs too: builds and runs the binary
#                                 # (or SWITCHBOARD_BIN=path/to/switchboard)
#
# Needs bash and python3. The seeds are small on purpose (a few dozen files
# and well under 200 KB per target): libFuzzer grows its own corpus from
# them, and what it finds stays out of git (see fuzz/.gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."

corpus=fuzz/corpus
fixtures=tests/fixtures

seed_dir() {
  rm -f "$corpus/$1"/seed-*
  mkdir -p "$corpus/$1"
  echo "$corpus/$1"
}

# One seed a line of standard input, seed-1<suffix>, seed-2<suffix>...;
# leaves n at the number written, for seeds numbered after them.
seed_lines() { # dir [suffix]
  n=0
  local line
  while IFS= read -r line; do
    n=$((n + 1))
    printf '%s' "$line" > "$1/seed-$n${2:-}"
  done
}

# --- HL7 ----------------------------------------------------------------
dir=$(seed_dir hl7_parse)
for f in "$fixtures"/valid/* "$fixtures"/invalid/*; do
  cp "$f" "$dir/seed-$(basename "$f")"
done

dir=$(seed_dir hl7_edit)
for f in "$fixtures"/valid/*; do
  n=$(basename "$f" .hl7)
  # set PID-5.2, set_raw MSH-10, clear PID-3[1].1.1, set MSH-18
  { printf '\000\001\004\000\002\000\005A^B|C'; cat "$f"; } > "$dir/seed-$n.set"
  { printf '\002\000\011\000\000\000\003NEW'; cat "$f"; } > "$dir/seed-$n.raw"
  { printf '\003\001\002\001\001\001\000'; cat "$f"; } > "$dir/seed-$n.clear"
  { printf '\001\014\021\000\000\000\000'; cat "$f"; } > "$dir/seed-$n.msh18"
done

dir=$(seed_dir mllp_codec)
for f in "$fixtures"/valid/*; do
  n=$(basename "$f" .hl7)
  # two framed copies with junk between, four ways of splitting
  for split in 0 1 2 3; do
    { printf "\\00$split\\020\\013"; cat "$f"; printf '\034\015junk\013'; cat "$f"; printf '\034'; } \
      > "$dir/seed-$n.$split"
  done
done

# --- rules ----------------------------------------------------------------
# A condition, then after a NUL byte a message to evaluate it on.
dir=$(seed_dir rule_condition)
seed_lines "$dir" <<'EOF'
MSH-9.1 = "ADT" and MSH-9.2 in ["A01", "A04"]
PID-7 = ""
not exists PID-7
(MSH-9.1 = "ADT" or MSH-9.1 = "ORU") and not PID-8 = "U"
OBX[3]-5 contains "hemolysed"
MSH-4 starts_with "GOOD"
MSH-4 ends_with "HOSPITAL"
true
FALSE
PID-3[2].4.2 = "USSSA"
MSH-9.1="ADT"and(MSH-9.2!="A04")
NOT-1 = "x" and AND-1 = "y"
not NOT[1]-1 = "y"
NTE-3 = "He said \"hi\" \\path"
MSH-9.2 in ["A01","A04",]
((((not (MSH-9.1 = "ADT")))))
MSH-9.1 = ADT
MSH-9.1 = "AD\x"
PID-3[0] = "x"
MSH-9.1 = "ADT" or
EOF
for f in "$fixtures"/valid/adt_a01.hl7 "$fixtures"/valid/oru_r01_escapes.hl7 "$fixtures"/valid/custom_delimiters.hl7; do
  n=$((n + 1))
  { printf 'MSH-9.1 = "ADT" and PID-5.1 starts_with "D" or OBX[2]-5 contains "^"\000'; cat "$f"; } > "$dir/seed-$n"
done

# A setting, then after a NUL byte a reply to decide on.
dir=$(seed_dir reply_actions)
seed_lines "$dir" <<'EOF'
:?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C
E*must not be empty=C,:?R=RF,:?E=S,:~=S,:?A=C,:*=S
:?A=C,:?E=S,:*=S
:?A=SW,:?E=RF,X=RS
E#101=C,E=RD,:_=F,:AE=W
E*PID-7=empty=C
 :?A = C , :?E=S ,
:?A=C,,:?E=S
:*=W
:?A=RRCC
:ae=C
:?A=Q
:?A=
E#=C
EOF
for f in "$fixtures"/valid/ack_ae_with_err.hl7 "$fixtures"/valid/minimal_ack_aa.hl7; do
  n=$((n + 1))
  { printf ':?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C,E#101=C\000'; cat "$f"; } > "$dir/seed-$n"
done

# --- configuration ------------------------------------------------------
dir=$(seed_dir config_load)
for f in examples/*.yaml "$fixtures"/config/*.yaml; do
  cp "$f" "$dir/seed-$(basename "$f")"
done
# YAML also ends a line at a lone CR, and so do the positions of problems.
tr '\n' '\r' < "$fixtures"/config/several_problems.yaml > "$dir/seed-several_problems-cr.yaml"

dir=$(seed_dir addon_options)
seed_lines "$dir" .json <<'EOF'
{"log_level":"warning","productions_file":"feeds.yaml","certificate_warning_days":14,"retention_days":7,"web_allow":["172.30.32.1","10.0.0.0/8","::1",""],"api_port":8088,"api_tokens":["0123456789abcdef0123"],"mqtt":{"host":"broker","port":1884},"discovery_prefix":"ha","instance_id":"lab"}
{"log_level":"","colour":"blue","mqtt":{"hots":"x","host":""},"api_port":""}
{"mqtt":{"host":"core-mosquitto","port":"8883","username":"u","password":"p","tls":true,"ca_file":"mqtt-ca.pem","cert_file":"c.pem","key_file":"k.pem","key_password_env":"KEY_PW","skip_host_check":true,"client_id":"sb","keep_alive":60}}
{"log_level":"switchboard=debug,warn","web_allow":["any"],"ui_url":"http://h:8099/"}
{"mqtt":{"port":"abc"}}
{"retention_days":"soon"}
{}
not json
EOF

# --- MQTT commands: topic, NUL, payload -----------------------------------
dir=$(seed_dir mqtt_command)
n=0
while IFS= read -r command; do
  n=$((n + 1))
  printf '%s' "$command" | tr '|' '\000' > "$dir/seed-$n"
done <<'EOF'
switchboard/production/adt/set|ON
switchboard/production/adt/set| OFF
switchboard/production/adt/item/lab_out/restart|PRESS
switchboard/production/adt/item/lab_out/enabled/set|OFF
switchboard/engine/republish|PRESS
switchboard/production/nope/set|ON
homeassistant/status|online
homeassistant/sensor/switchboard/x/config|{}
switchboard/production/adt/set|on
EOF

# --- store logs -----------------------------------------------------------
if [ "${1:-}" != "--logs" ]; then
  exit 0
fi
# SWITCHBOARD_BIN: a binary already built, instead of building one.
bin=${SWITCHBOARD_BIN:-}
if [ -z "$bin" ]; then
  cargo build --locked --bin switchboard
  bin="${CARGO_TARGET_DIR:-target}/debug/switchboard"
fi
work=$(mktemp -d /tmp/switchboard-seeds-XXXXXX)
trap 'kill -9 "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
read -r in_port lab_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
cat > "$work/productions.yaml" <<EOF
productions:
  adt:
    items:
      - name: ADT in
        kind: mllp_in
        host: 127.0.0.1
        port: $in_port
        targets: [Router, Archive]
      - name: Router
        kind: router
        rules:
          - when: MSH-9.1 = "ADT" and not exists PID-8
            transform:
              - set: PID-8
                value: U
            send: [Lab out]
          - when: MSH-9.1 in ["ORU", "ACK"]
            send: [Lab out]
          - discard: true
      - name: Lab out
        kind: mllp_out
        host: 127.0.0.1
        port: $lab_port
      - name: Archive
        kind: file_out
        path: archive
  lab:
    items:
      - name: Lab in
        kind: mllp_in
        host: 127.0.0.1
        port: $lab_port
EOF
"$bin" run --config "$work/productions.yaml" --data-dir "$work/data" > "$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  grep -q ' ready ' "$work/run.log" && break
  sleep 0.1
done
"$bin" send --port "$in_port" "$fixtures"/valid/*.hl7 > /dev/null
sleep 2
# Killed, not stopped: the logs hold what a crash leaves.
kill -9 "$pid"
wait "$pid" 2>/dev/null || true

seed_dir inbound_log > /dev/null
seed_dir delivery_log > /dev/null
python3 - "$work/data/switchboard.db" "$corpus" <<'EOF'
import struct, sys
db, corpus = sys.argv[1], sys.argv[2]

def records(data, head, length):
    """Splits a log into its records; stops at the first that is not one."""
    out, at = [], 0
    while at + head <= len(data) and data[at] in (0xA7, 0xD1):
        end = at + length(data[at:]) + 4
        if end > len(data):
            break
        out.append(data[at:end])
        at = end
    return out

def write(target, name, data):
    with open(f"{corpus}/{target}/seed-{name}", "wb") as f:
        f.write(data)

# inbound: applied (1 byte), bytes for inbound-0 (u16), then both files.
inbound = records(open(db + "-inbound-0", "rb").read(), 13, lambda r: 13 + struct.unpack_from("<I", r, 9)[0])
whole = b"".join(inbound)
half = len(inbound) // 2
first, second = b"".join(inbound[:half]), b"".join(inbound[half:])
def inbound_seed(name, applied, a, b):
    write("inbound_log", name, bytes([applied]) + struct.pack("<H", len(a)) + a + b)
inbound_seed("whole", 0, whole, b"")
inbound_seed("zero-tail", 0, whole + bytes(64), b"")
inbound_seed("applied", 5, whole, b"")
inbound_seed("two-files", 0, first, second)
# A second round: new records over the start of a file, the rest of the
# earlier round behind them.
inbound_seed("second-round", 3, second + first[len(second):], first)
inbound_seed("torn", 0, whole[: len(whole) - 7], b"")
flipped = bytearray(whole)
flipped[len(whole) // 3] ^= 0x10
inbound_seed("flipped", 0, bytes(flipped), b"")
inbound_seed("one", 0, inbound[0], b"")

deliveries = records(open(db + "-deliveries", "rb").read(), 22,
                     lambda r: 22 + sum(n for n in struct.unpack_from("<II", r, 14) if n != 0xFFFFFFFF))
whole = b"".join(deliveries)
write("delivery_log", "whole", whole)
write("delivery_log", "zero-tail", whole + bytes(32))
write("delivery_log", "torn", whole[: len(whole) - 5])
flipped = bytearray(whole)
flipped[len(whole) // 2] ^= 0x01
write("delivery_log", "flipped", bytes(flipped))
write("delivery_log", "one", deliveries[0])
print(f"{len(inbound)} inbound records, {len(deliveries)} delivery results")
EOF
