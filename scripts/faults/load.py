#!/usr/bin/env python3
"""MLLP sender for the fault suite.

C connections send copies of an HL7 message (benches/engine/adt_a01.hl7 by
default) whose control ids (MSH-10) are `<prefix><conn>-<n>`, n counting
from 1 on every connection. Every id the engine acknowledges positively (AA
or CA naming it in MSA-2) is appended to --acked, one a line, flushed at
once: that file is what the engine promised to deliver, whatever happens to
this process afterwards.

A connection sends its next message only after the previous one was
acknowledged. On a closed connection, a timeout or a negative ACK it
reconnects after a bounded backoff and sends the same message again, so
the order of the ids per connection is the order the engine accepted them
in. Everything is bounded: --count, --duration or SIGTERM (which lets
every connection finish the message in hand) ends the sending, a
message that cannot be acknowledged within --give-up seconds ends its
connection, and the exit status says whether every connection finished.

    load.py --port 31201 --concurrency 8 --rate 400 --duration 60 \
            --acked /tmp/x/acked.txt

Standard library only; a summary goes to standard error and a one-line
result (`acknowledged N`) to standard output.
"""

import argparse
import os
import signal
import socket
import sys
import threading
import time

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
DEFAULT_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benches", "engine", "adt_a01.hl7")


def parse_args():
    p = argparse.ArgumentParser(description="MLLP sender recording every positively acknowledged control id")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", "-c", type=int, default=1, help="connections (default 1)")
    p.add_argument("--count", type=int, default=0, help="messages in all (split over the connections); 0: until --duration")
    p.add_argument("--duration", type=float, default=0, help="seconds to start new messages for; 0: until --count")
    p.add_argument("--rate", type=float, default=0, help="messages per second over all connections; 0: as fast as acknowledged")
    p.add_argument("--timeout", type=float, default=10, help="seconds to wait for one ACK (default 10)")
    p.add_argument("--give-up", type=float, default=120, help="seconds one message may take, retries included (default 120)")
    p.add_argument("--prefix", default="F", help="control id prefix (default F)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="the HL7 message sent, with MSH-10 replaced")
    p.add_argument("--acked", required=True, help="file the acknowledged control ids are appended to")
    a = p.parse_args()
    if a.count <= 0 and a.duration <= 0:
        p.error("give --count, --duration or both")
    if a.concurrency < 1:
        p.error("--concurrency must be at least 1")
    return a


class Template:
    """The message as segments, with its MSH-10 replaced per copy."""

    def __init__(self, path):
        with open(path, "rb") as f:
            text = f.read().replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r")
        if not text.startswith(b"MSH"):
            raise SystemExit(f"{path}: not an HL7 message (no MSH segment first)")
        self.sep = text[3:4]
        segments = text.split(b"\r")
        self.msh = segments[0].split(self.sep)
        self.rest = b"\r".join(segments[1:])

    def frame(self, control_id):
        msh = list(self.msh)
        # MSH-1 is the separator itself, so MSH-n is at index n - 1.
        msh[9] = control_id.encode()
        body = self.sep.join(msh) + b"\r" + self.rest + b"\r"
        return VT + body + FS + CR


def ack_of(payload):
    """(MSA-1, MSA-2) of a reply, or (None, None)."""
    for seg in payload.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"MSA") and len(seg) > 3:
            fields = seg.split(seg[3:4])
            code = fields[1].decode(errors="replace") if len(fields) > 1 else ""
            ref = fields[2].decode(errors="replace") if len(fields) > 2 else ""
            return code, ref
    return None, None


class Connection:
    """One sender connection; reconnects lazily."""

    def __init__(self, args):
        self.args = args
        self.sock = None
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def exchange(self, frame):
        """Sends a frame and returns the payload of the reply; raises OSError."""
        if self.sock is None:
            self.sock = socket.create_connection((self.args.host, self.args.port), timeout=self.args.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.args.timeout)
        self.sock.sendall(frame)
        deadline = time.monotonic() + self.args.timeout
        while True:
            end = self.buf.find(FS + CR)
            if end >= 0:
                start = self.buf.find(VT)
                payload = self.buf[start + 1 : end] if 0 <= start < end else self.buf[:end]
                self.buf = self.buf[end + 2 :]
                return payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no reply")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the peer")
            self.buf += chunk


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = 0
        self.retries = 0
        self.nacks = 0
        self.failed_connections = 0
        self.errors = {}

    def error(self, kind):
        with self.lock:
            self.retries += 1
            self.errors[kind] = self.errors.get(kind, 0) + 1


STOP = threading.Event()


def run_connection(conn_no, args, template, quota, out, out_lock, stats, start, stop_at):
    conn = Connection(args)
    interval = args.concurrency / args.rate if args.rate > 0 else 0
    next_send = start + interval * conn_no / args.concurrency  # spread the connections
    n = 0
    try:
        while quota == 0 or n < quota:
            now = time.monotonic()
            if (stop_at and now >= stop_at) or STOP.is_set():
                break
            if interval:
                if next_send > now and STOP.wait(next_send - now):
                    break
                # No catching up after a stall: steady load, not a burst.
                next_send = max(next_send + interval, time.monotonic())
            n += 1
            control_id = f"{args.prefix}{conn_no}-{n}"
            frame = template.frame(control_id)
            give_up = time.monotonic() + args.give_up
            backoff = 0.05
            while True:
                try:
                    code, ref = ack_of(conn.exchange(frame))
                    if code in ("AA", "CA") and ref == control_id:
                        with out_lock:
                            out.write(control_id + "\n")
                            out.flush()
                        with stats.lock:
                            stats.acked += 1
                        break
                    with stats.lock:
                        stats.nacks += 1
                    stats.error(f"reply {code}")
                except (OSError, ValueError) as e:
                    stats.error(type(e).__name__)
                conn.close()
                if time.monotonic() + backoff > give_up:
                    print(f"connection {conn_no}: {control_id} not acknowledged within {args.give_up} s; giving up", file=sys.stderr)
                    with stats.lock:
                        stats.failed_connections += 1
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
    finally:
        conn.close()


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    template = Template(args.template)
    os.makedirs(os.path.dirname(os.path.abspath(args.acked)), exist_ok=True)
    out = open(args.acked, "a", encoding="ascii")
    out_lock = threading.Lock()
    stats = Stats()
    start = time.monotonic()
    stop_at = start + args.duration if args.duration > 0 else 0
    threads = []
    for c in range(args.concurrency):
        quota = 0
        if args.count > 0:
            quota = args.count // args.concurrency + (1 if c < args.count % args.concurrency else 0)
            if quota == 0:
                continue
        t = threading.Thread(
            target=run_connection,
            args=(c, args, template, quota, out, out_lock, stats, start, stop_at),
            daemon=True,
        )
        t.start()
        threads.append(t)
    for t in threads:
        # Joined in slices, so that SIGTERM is handled meanwhile.
        while t.is_alive():
            t.join(0.2)
    out.close()
    secs = time.monotonic() - start
    errors = ", ".join(f"{k} {v}" for k, v in sorted(stats.errors.items())) or "none"
    print(
        f"load: {stats.acked} acknowledged in {secs:.1f} s ({stats.acked / max(secs, 1e-9):.0f}/s) "
        f"over {len(threads)} connections; {stats.retries} retries ({errors})",
        file=sys.stderr,
    )
    print(f"acknowledged {stats.acked}")
    sys.exit(1 if stats.failed_connections else 0)


if __name__ == "__main__":
    main()
