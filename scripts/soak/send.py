#!/usr/bin/env python3
"""A steady-rate MLLP sender that records every acknowledged control id.

    send.py --port 31400 --rate 100 --duration 3600 --acked acked.txt

Messages go out on one connection at `--rate` a second on a fixed schedule
(a late message does not shift the ones after it, and no burst makes up
for more than a second of lateness). Each waits for its ACK: an AA appends
the control id to `--acked`; anything else (AE/AR, no reply within
`--timeout`, a refused or dropped connection) appends `id<TAB>reason` to
`--unacked`, and the next message reconnects. The ids are
`<prefix><number>` with the number counting from 1, so the receiver's order
can be checked. Stops after `--duration` seconds or on SIGTERM, and prints
one summary line as JSON.
"""

import argparse
import json
import os
import signal
import socket
import time

from mllp import FrameReader, ack_code, frame

TEMPLATE = (
    "MSH|^~\\&|SOAKSEND|SOAK|SOAKRECV|SOAK|20260101000000||ADT^A01^ADT_A01|{cid}|P|2.5.1\r"
    "EVN|A01|20260101000000\r"
    "PID|1||{n}^^^SOAK^MR||TEST^PATIENT^{n}||19800115|M\r"
    "PV1|1|I|WARD^101^A^SOAK\r"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=100.0, help="messages a second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument("--prefix", default="SK")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each ACK")
    p.add_argument("--acked", required=True)
    p.add_argument("--unacked", required=True)
    a = p.parse_args()

    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    acked = os.open(a.acked, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    unacked = os.open(a.unacked, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sock, reader = None, None
    counts = {"sent": 0, "acked": 0, "unacked": 0, "late_resets": 0}
    total = int(a.rate * a.duration)
    start = time.monotonic()
    due = start
    for n in range(1, total + 1):
        if stop:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:
            due = now  # more than a second behind: drop the backlog, keep the rate
            counts["late_resets"] += 1
        due += 1.0 / a.rate
        cid = f"{a.prefix}{n:08d}"
        message = TEMPLATE.format(cid=cid, n=n).encode("ascii")
        try:
            if sock is None:
                sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
                reader = FrameReader(sock)
            sock.sendall(frame(message))
            counts["sent"] += 1
            code = ack_code(reader.read())
            if code != "AA":
                raise ValueError(f"ACK {code or 'without MSA'}")
            os.write(acked, f"{cid}\n".encode())
            counts["acked"] += 1
        except (OSError, ValueError, ConnectionError) as e:
            os.write(unacked, f"{cid}\t{type(e).__name__}: {e}\n".encode())
            counts["unacked"] += 1
            if sock is not None:
                sock.close()
            sock, reader = None, None
    if sock is not None:
        sock.close()
    elapsed = time.monotonic() - start
    counts.update(seconds=round(elapsed, 1), rate=round(counts["sent"] / elapsed, 1) if elapsed else 0.0)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
