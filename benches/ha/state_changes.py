#!/usr/bin/env python3
"""How many `state_changed` events the Switchboard demo causes in a real
Home Assistant, per second and per entity, and what HA makes of the
published attributes and of a graceful stop.

On 127.0.0.1 only, in a fresh temporary folder, it starts Mosquitto, a
fresh Home Assistant core (owner created through the onboarding API, the
MQTT integration added through the config-flow API) and
`switchboard run` on a copy of examples/demo.yaml. Then it sends HL7 over
MLLP to the demo's inbound port at --rate messages a second (adt_a01.hl7
and oru_r01_escapes.hl7 in turn, each with a fresh MSH-10), and counts,
on HA's websocket, the `state_changed` events of Switchboard's entities
(platform `mqtt`) during --duration seconds after a --warmup. It prints:

  - events/s of all of Switchboard's entities together, and per entity
    split into state changes and attribute-only changes (with the
    attributes that changed most often), next to the MQTT messages
    Switchboard published in the same window;
  - for each entity with a `json_attributes_topic`, the published keys
    HA does not show (MQTT drops some names, e.g. `state`);
  - after SIGTERM to Switchboard, the retained messages a restarting HA
    would read: production switches still ON, production statuses not
    `stopped`, item attributes whose `item_state` is not stopped/disabled, and
    the availability (`offline` expected). A PASS/FAIL line per check.

Requirements: /usr/sbin/mosquitto, and Home Assistant core in a venv, e.g.

    ~/.pyenv/versions/3.11.7/bin/python -m venv /work/ha-venv-2024.3
    /work/ha-venv-2024.3/bin/pip install homeassistant==2024.3.3 'josepy<2'

(`josepy<2`: the acme package HA 2024.3's cloud code imports fails with
josepy 2 -- "module 'josepy' has no attribute 'ComparableX509'" -- and
every HTTP request then answers 500. 2025.4.4 on Python 3.13 runs as it
is.) HA itself installs paho-mqtt into the venv from PyPI the first time
the MQTT integration is added (a few seconds; later runs find it). Run with the venv's Python (the script
restarts itself with it when aiohttp is missing):

    /work/ha-venv-2024.3/bin/python benches/ha/state_changes.py \\
        --switchboard target/release/switchboard

or through benches/ha/run.sh, which builds first. Every process it starts
is stopped, and its folder removed (unless --out), when it ends.
"""

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTANCE = "switchboard"  # Switchboard's default instance id: topics and ids start with it


def parse_args():
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    a.add_argument("--switchboard", default=env("SWITCHBOARD", str(ROOT / "target/release/switchboard")))
    a.add_argument("--ha-venv", default=env("HA_VENV", "/work/ha-venv-2024.3"))
    a.add_argument("--mosquitto", default=env("MOSQUITTO", "/usr/sbin/mosquitto"))
    a.add_argument("--duration", type=float, default=float(env("DURATION", 120)), help="seconds measured")
    a.add_argument("--warmup", type=float, default=float(env("WARMUP", 30)), help="seconds sent before measuring")
    a.add_argument("--rate", type=float, default=float(env("RATE", 5)), help="HL7 messages a second")
    a.add_argument("--in-port", type=int, default=int(env("IN_PORT", 2575)), help="the demo's inbound MLLP port")
    a.add_argument("--lab-port", type=int, default=int(env("LAB_PORT", 6661)), help="the demo lab's MLLP port")
    a.add_argument("--mqtt-port", type=int, default=int(env("MQTT_PORT", 18830)))
    a.add_argument("--ha-port", type=int, default=int(env("HA_PORT", 18123)))
    a.add_argument("--top", type=int, default=int(env("TOP", 40)), help="rows of the per-entity table")
    a.add_argument("--out", default=env("OUT"), help="keep logs and data here (default: a temp dir, removed)")
    return a.parse_args()


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------


class Procs:
    """Processes started here; stop() ends them by pid: TERM, then KILL."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, logfile, **kw):
        log(f"starting {name}")
        with open(logfile, "wb") as f:  # the child keeps its own copy
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p, timeout=30.0):
        """Seconds the process took to exit after TERM (None if killed)."""
        if p.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        p.terminate()
        try:
            p.wait(timeout)
            return time.monotonic() - t0
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


async def wait_for(what, check, timeout, interval=0.5, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} while waiting for {what}")
        if result := await check():
            return result
        await asyncio.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- MQTT (just enough of 3.1.1 to read topics) --------------------------------


class Mqtt:
    """A QoS 0 subscriber: the last payload of every topic, and how many
    messages arrived on each while `counting`."""

    def __init__(self):
        self.last, self.retained = {}, {}
        self.counts = collections.Counter()
        self.counting = False
        self.received_at = time.monotonic()

    async def connect(self, port, filters):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        cid = f"sb-bench-{os.getpid()}-{id(self) % 10000}".encode()
        var = b"\x00\x04MQTT\x04\x02\x00\x00"  # clean session, no keep-alive
        self.writer.write(self.packet(0x10, var + len(cid).to_bytes(2, "big") + cid))
        body = b"\x00\x01" + b"".join(len(f).to_bytes(2, "big") + f.encode() + b"\x00" for f in filters)
        self.writer.write(self.packet(0x82, body))
        await self.writer.drain()
        self.task = asyncio.create_task(self.read())

    @staticmethod
    def packet(kind, body):
        n, length = len(body), b""
        while True:
            n, byte = divmod(n, 128)
            length += bytes([byte | (0x80 if n else 0)])
            if not n:
                return bytes([kind]) + length + body

    async def read(self):
        try:
            await self._read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def _read(self):
        while True:
            head = (await self.reader.readexactly(1))[0]
            n, shift = 0, 0
            while True:
                b = (await self.reader.readexactly(1))[0]
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            body = await self.reader.readexactly(n)
            if head >> 4 != 3:  # CONNACK, SUBACK
                continue
            tlen = int.from_bytes(body[:2], "big")
            topic, payload = body[2 : 2 + tlen].decode(), body[2 + tlen :].decode(errors="replace")
            self.received_at = time.monotonic()
            self.last[topic] = payload
            if head & 1:
                self.retained[topic] = payload
            if self.counting:
                self.counts[topic] += 1

    async def quiet(self, seconds=1.0, timeout=15.0):
        """Waits until nothing arrived for `seconds` (retained messages read)."""
        await wait_for("MQTT to go quiet", lambda: self._quiet(seconds), timeout, 0.2)

    async def _quiet(self, seconds):
        return time.monotonic() - self.received_at >= seconds

    def close(self):
        self.task.cancel()
        self.writer.close()


# --- Home Assistant -----------------------------------------------------------


HA_CONFIG = """\
homeassistant:
  name: Switchboard bench
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
http:
  server_host: 127.0.0.1
  server_port: {port}
logger:
  default: warning
api:
config:
websocket_api:
onboarding:
"""


async def ha_setup(http, base, mqtt_port):
    """Onboards the owner, adds the MQTT integration; returns an access token."""
    client_id = f"{base}/"
    user = {"client_id": client_id, "name": "Bench", "username": "bench", "password": "bench-bench", "language": "en"}
    async with http.post(f"{base}/api/onboarding/users", json=user) as r:
        code = (await r.json())["auth_code"]
    form = {"grant_type": "authorization_code", "code": code, "client_id": client_id}
    async with http.post(f"{base}/auth/token", data=form) as r:
        token = (await r.json())["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    t0 = time.monotonic()
    async with http.post(f"{base}/api/config/config_entries/flow", json={"handler": "mqtt"}, headers=auth) as r:
        flow = await r.json()
    broker = {"broker": "127.0.0.1", "port": mqtt_port}
    async with http.post(f"{base}/api/config/config_entries/flow/{flow['flow_id']}", json=broker, headers=auth) as r:
        result = await r.json()
    if result.get("type") != "create_entry":
        raise RuntimeError(f"adding the MQTT integration failed: {result}")
    log(f"MQTT integration added in {time.monotonic() - t0:.1f} s")
    return token


class HaSocket:
    """HA's websocket API: commands, and the state_changed events received."""

    def __init__(self, ws):
        self.ws, self.next_id, self.waiting = ws, 1, {}
        self.events = []  # (monotonic time, event data)

    @classmethod
    async def open(cls, http, base, token):
        ws = await http.ws_connect(base.replace("http", "ws", 1) + "/api/websocket", max_msg_size=0)
        await ws.receive_json()  # auth_required
        await ws.send_json({"type": "auth", "access_token": token})
        if (msg := await ws.receive_json())["type"] != "auth_ok":
            raise RuntimeError(f"websocket authentication failed: {msg}")
        self = cls(ws)
        self.task = asyncio.create_task(self.read())
        await self.call({"type": "subscribe_events", "event_type": "state_changed"})
        return self

    async def read(self):
        async for m in self.ws:
            msg = json.loads(m.data)
            if msg["type"] == "event":
                self.events.append((time.monotonic(), msg["event"]["data"]))
            elif fut := self.waiting.pop(msg["id"], None):
                fut.set_result(msg)

    async def call(self, command):
        command["id"], self.next_id = self.next_id, self.next_id + 1
        fut = self.waiting[command["id"]] = asyncio.get_running_loop().create_future()
        await self.ws.send_json(command)
        msg = await asyncio.wait_for(fut, 30)
        if not msg.get("success"):
            raise RuntimeError(f"{command['type']} failed: {msg}")
        return msg["result"]

    async def entities(self):
        """entity_id -> registry entry of Switchboard's entities."""
        reg = await self.call({"type": "config/entity_registry/list"})
        return {
            e["entity_id"]: e
            for e in reg
            if e["platform"] == "mqtt" and (e.get("unique_id") or "").startswith(INSTANCE + "_")
        }

    async def states(self):
        return {s["entity_id"]: s for s in await self.call({"type": "get_states"})}


# --- HL7 sender -----------------------------------------------------------------


def fixtures():
    out = []
    for name in ("adt_a01.hl7", "oru_r01_escapes.hl7"):
        text = (ROOT / "tests/fixtures/valid" / name).read_text()
        out.append([s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s])
    return out


def with_control_id(segments, control_id):
    msh = segments[0].split("|")
    msh[9] = control_id  # MSH-10: MSH-1 is the separator itself
    return ("\r".join(["|".join(msh)] + segments[1:]) + "\r").encode()


async def send(port, rate, seconds, stats):
    """Sends at `rate` a second for `seconds`, one message at a time."""
    messages, reader, writer = fixtures(), None, None
    t0 = time.monotonic()
    n = 0
    while (now := time.monotonic()) < t0 + seconds:
        await asyncio.sleep(max(0.0, t0 + n / rate - now))
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            msg = with_control_id(messages[n % 2], f"SBHA{os.getpid()}N{n}")
            writer.write(b"\x0b" + msg + b"\x1c\x0d")
            await writer.drain()
            ack = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 10)
            # AA, or CA: adt_a01.hl7 asks for enhanced mode (MSH-15 AL).
            stats["acked" if re.search(rb"MSA\|[AC]A\|", ack) else "not acked"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            stats[f"error: {type(e).__name__}"] += 1
            if writer:
                writer.close()
            reader = writer = None
            await asyncio.sleep(1)
        n += 1
    if writer:
        writer.close()


# --- report ---------------------------------------------------------------------


def kind_of(data):
    old, new = data.get("old_state"), data.get("new_state")
    if old is None or new is None:
        return "added/removed", []
    if old["state"] != new["state"]:
        return "state", []
    oa, na = old["attributes"], new["attributes"]
    changed = sorted(k for k in oa.keys() | na.keys() if oa.get(k) != na.get(k))
    return ("attributes" if changed else "other"), changed


def report_events(events, ids, seconds, mqtt_counts, top):
    per = collections.defaultdict(collections.Counter)
    keys = collections.defaultdict(collections.Counter)
    for data in events:
        if data["entity_id"] in ids:
            kind, changed = kind_of(data)
            per[data["entity_id"]][kind] += 1
            keys[data["entity_id"]].update(changed)
    total = sum(sum(c.values()) for c in per.values())
    kinds = collections.Counter()
    for c in per.values():
        kinds.update(c)
    published = sum(n for t, n in mqtt_counts.items() if t.startswith(INSTANCE + "/"))
    print(f"\n## state_changed events of Switchboard's {len(ids)} entities in {seconds:.0f} s\n")
    print(f"total events:       {total}")
    print(f"events/s:           {total / seconds:.2f}")
    print(f"  state changes/s:  {kinds['state'] / seconds:.2f} ({kinds['state']})")
    print(f"  attribute-only/s: {kinds['attributes'] / seconds:.2f} ({kinds['attributes']})")
    for k in ("other", "added/removed"):
        if kinds[k]:
            print(f"  {k}: {kinds[k]}")
    print(f"MQTT messages Switchboard published under {INSTANCE}/: {published} ({published / seconds:.2f}/s)")
    print("\n| entity | events | /s | state | attribute-only | attributes changed (attribute-only events) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    rows = sorted(per.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    for eid, c in rows[:top]:
        n = sum(c.values())
        changed = ", ".join(f"{k} {v}" for k, v in keys[eid].most_common(4))
        print(f"| {eid} | {n} | {n / seconds:.2f} | {c['state']} | {c['attributes']} | {changed} |")
    quiet = sorted(set(ids) - set(per))
    print(f"\nentities without events ({len(quiet)}): {', '.join(quiet) or '-'}")


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}: {name}{': ' + detail if detail else ''}")
    return ok


def report_attributes(configs, retained, registry, states):
    """Keys published on each json_attributes_topic that HA does not show."""
    print("\n## attributes: published keys Home Assistant does not show\n")
    by_unique = {e["unique_id"]: eid for eid, e in registry.items()}
    ok = True
    for cfg in configs:
        topic, eid = cfg.get("json_attributes_topic"), by_unique.get(cfg.get("unique_id"))
        if not topic or not eid:
            continue
        try:
            published = set(json.loads(retained.get(topic, "{}")))
        except ValueError:
            published = set()
        shown = set(states.get(eid, {}).get("attributes", {}))
        dropped = sorted(published - shown)
        ok &= check(eid, not dropped, f"dropped {', '.join(dropped)}" if dropped else f"{len(published)} keys shown")
    return ok


def report_stop(retained):
    print("\n## after SIGTERM: retained messages under switchboard/#\n")
    ok = True
    base = re.escape(INSTANCE)
    for topic, payload in sorted(retained.items()):
        if re.fullmatch(base + r"/production/[^/]+/state", topic):
            ok &= check(f"{topic} not ON", payload != "ON", payload)
        elif re.fullmatch(base + r"/production/[^/]+/status", topic):
            ok &= check(f"{topic} is stopped", payload == "stopped", payload)
        elif re.fullmatch(base + r"/production/[^/]+/item/[^/]+/attributes", topic):
            try:
                attributes = json.loads(payload)
                # `item_state`; `state` before Home Assistant's reserved
                # names were avoided.
                state = attributes.get("item_state", attributes.get("state"))
            except ValueError:
                state = f"unreadable: {payload!r}"
            ok &= check(f"{topic} state stopped/disabled", state in ("stopped", "disabled"), str(state))
    availability = retained.get(f"{INSTANCE}/availability")
    ok &= check(f"{INSTANCE}/availability is offline", availability == "offline", str(availability))
    return ok


# --- main -----------------------------------------------------------------------


async def run(args, out, procs):
    import aiohttp

    ports = (args.in_port, args.lab_port, args.mqtt_port, args.ha_port)
    if taken := [p for p in ports if await port_open(p)]:
        raise RuntimeError(f"something already listens on 127.0.0.1 port {taken}; choose others")

    # Broker.
    conf = f"listener {args.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    (out / "mosquitto.conf").write_text(conf)
    broker = procs.start("mosquitto", [args.mosquitto, "-c", out / "mosquitto.conf"], out / "mosquitto.log")
    await wait_for("the broker", lambda: port_open(args.mqtt_port), 10, 0.1, broker)

    # Home Assistant, fresh.
    (out / "ha").mkdir()
    (out / "ha/configuration.yaml").write_text(HA_CONFIG.format(port=args.ha_port))
    hass_bin = Path(args.ha_venv) / "bin/hass"
    t0 = time.monotonic()
    hass = procs.start("Home Assistant", [hass_bin, "-c", out / "ha"], out / "ha.log")
    base = f"http://127.0.0.1:{args.ha_port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:

        async def ha_up():
            try:
                async with http.get(f"{base}/api/onboarding") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for("Home Assistant's HTTP API (see ha.log)", ha_up, 300, proc=hass)
        log(f"Home Assistant answers after {time.monotonic() - t0:.1f} s")
        token = await ha_setup(http, base, args.mqtt_port)
        ha = await HaSocket.open(http, base, token)
        version = (await ha.call({"type": "get_config"}))["version"]
        print(f"# Home Assistant {version}, {args.sb_version}: {args.rate:g} msg/s, {args.duration:g} s measured")

        # A live subscriber counts what Switchboard publishes.
        live = Mqtt()
        await live.connect(args.mqtt_port, [f"{INSTANCE}/#", f"homeassistant/+/{INSTANCE}/+/config"])

        # Switchboard on a copy of the demo: its relative paths land in `out`.
        demo = (ROOT / "examples/demo.yaml").read_text()
        demo = demo.replace("port: 2575", f"port: {args.in_port}").replace("port: 6661", f"port: {args.lab_port}")
        (out / "demo.yaml").write_text(demo)
        sb_bin = out / "switchboard"
        shutil.copy(args.switchboard, sb_bin)  # a rebuild during the run cannot swap it
        argv = [sb_bin, "run", "--config", out / "demo.yaml", "--data-dir", out / "data"]
        argv += ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(args.mqtt_port)]
        sb = procs.start("switchboard", argv, out / "switchboard.log")
        await wait_for("the demo's inbound port (see switchboard.log)", lambda: port_open(args.in_port), 30, 0.1, sb)

        # Entities: registered, and the count steady for 5 s.
        seen = {"n": -1, "since": time.monotonic()}

        async def entities_steady():
            n = len(await ha.entities())
            if n != seen["n"]:
                seen.update(n=n, since=time.monotonic())
            return n > 0 and time.monotonic() - seen["since"] >= 5

        await wait_for("Switchboard's entities in Home Assistant", entities_steady, 120)
        log(f"{seen['n']} Switchboard entities in Home Assistant")

        # Send; measure after the warm-up.
        stats = collections.Counter()
        sender = asyncio.create_task(send(args.in_port, args.rate, args.warmup + args.duration, stats))
        log(f"sending {args.rate:g} msg/s; warm-up {args.warmup:g} s, then measuring {args.duration:g} s")
        await asyncio.sleep(args.warmup)
        live.counting, start = True, time.monotonic()
        await asyncio.sleep(args.duration)
        live.counting, end = False, time.monotonic()
        await sender
        log(f"sent: {dict(stats)}")
        registry = await ha.entities()
        window = [d for t, d in ha.events if start <= t < end]
        report_events(window, set(registry), end - start, live.counts, args.top)

        # Attributes, once the last publications are in.
        await asyncio.sleep(3)
        configs = [json.loads(p) for t, p in live.last.items() if t.endswith("/config") and p]
        attributes_ok = report_attributes(configs, live.last, registry, await ha.states())

        # Graceful stop.
        live.close()
        took = procs.stop(sb, 60)
        how = f"{took * 1000:.0f} ms after SIGTERM" if took is not None else "only when killed"
        print(f"\nswitchboard exited with status {sb.returncode} {how}")
        after = Mqtt()
        await after.connect(args.mqtt_port, [f"{INSTANCE}/#"])
        await after.quiet()
        after.close()
        stop_ok = report_stop(after.retained)
        await asyncio.sleep(2)
        states = await ha.states()
        unavailable = sum(1 for e in registry if states.get(e, {}).get("state") == "unavailable")
        print(f"Home Assistant shows {unavailable} of {len(registry)} Switchboard entities unavailable")
        ha.task.cancel()
        await ha.ws.close()

    errors = sum(n for k, n in stats.items() if k != "acked")
    print()
    check("every message acknowledged (AA or CA)", errors == 0, str(dict(stats)))
    check("attributes all shown", attributes_ok)
    check("graceful stop", stop_ok)


async def port_open(port):
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.close()
        return True
    except OSError:
        return False


def main():
    args = parse_args()
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        python = Path(args.ha_venv) / "bin/python"
        os.execv(python, [python, __file__] + sys.argv[1:])
    version = subprocess.run([args.switchboard, "--version"], check=True, capture_output=True, text=True)
    args.sb_version = version.stdout.strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out or tempfile.mkdtemp(prefix="switchboard-ha."))
    out.mkdir(parents=True, exist_ok=True)
    procs, done = Procs(), False
    try:
        asyncio.run(run(args, out, procs))
        done = True
    finally:
        procs.stop_all()
        if args.out or not done:
            log(f"logs and data: {out}")
        else:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
