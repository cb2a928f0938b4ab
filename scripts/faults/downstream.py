#!/usr/bin/env python3
"""Downstream MLLP receiver for the fault suite.

Acknowledges every readable message with AA and appends its control id
(MSH-10) to --ids, one a line, flushed before the ACK goes out: the file is
every delivery the engine made, in arrival order, repeats included. One
receiver stands for one outbound operation; give each operation its own
port and file so its order can be checked on its own.

    downstream.py --port 31202 --ids /tmp/x/delivered.txt [--delay-ms 2]

Standard library only. Runs until SIGTERM or SIGINT, or --max-seconds.
"""

import argparse
import asyncio
import signal
import sys
import time

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def parse_args():
    p = argparse.ArgumentParser(description="MLLP receiver recording every control id it receives")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ids", required=True, help="file the received control ids are appended to")
    p.add_argument("--delay-ms", type=float, default=0, help="wait this long before each ACK (a slow receiver)")
    p.add_argument("--max-seconds", type=float, default=3600, help="stop after this long (default 3600)")
    p.add_argument("--idle-seconds", type=float, default=300, help="close a connection idle this long")
    return p.parse_args()


def ack_for(payload):
    """The control id of a message and the AA that answers it."""
    segments = payload.replace(b"\n", b"\r").split(b"\r")
    msh = segments[0]
    if not msh.startswith(b"MSH") or len(msh) < 8:
        return None, None
    sep = msh[3:4]
    f = msh.split(sep)
    get = lambda i: f[i] if i < len(f) else b""  # noqa: E731
    control_id = get(9)
    ts = time.strftime("%Y%m%d%H%M%S").encode()
    ack_msh = sep.join([b"MSH", get(1), get(4), get(5), get(2), get(3), ts, b"", b"ACK", b"R" + control_id, get(10), get(11)])
    ack = ack_msh + b"\r" + sep.join([b"MSA", b"AA", control_id]) + b"\r"
    return control_id.decode(errors="replace"), VT + ack + FS + CR


class Recorder:
    def __init__(self, args):
        self.args = args
        self.out = open(args.ids, "a", encoding="utf-8")
        self.received = 0

    def record(self, control_id):
        self.out.write(control_id + "\n")
        self.out.flush()
        self.received += 1

    async def serve(self, reader, writer):
        buf = b""
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), self.args.idle_seconds)
                if not chunk:
                    break
                buf += chunk
                while True:
                    end = buf.find(FS + CR)
                    if end < 0:
                        break
                    start = buf.find(VT)
                    payload = buf[start + 1 : end] if 0 <= start < end else buf[:end]
                    buf = buf[end + 2 :]
                    control_id, ack = ack_for(payload)
                    if ack is None:
                        print("unreadable message; no reply", file=sys.stderr)
                        continue
                    self.record(control_id)
                    if self.args.delay_ms > 0:
                        await asyncio.sleep(self.args.delay_ms / 1000)
                    writer.write(ack)
                    await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()


async def main():
    args = parse_args()
    rec = Recorder(args)
    server = await asyncio.start_server(rec.serve, args.host, args.port, reuse_address=True)
    print(f"downstream: recording on {args.host}:{args.port} into {args.ids}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()
    rec.out.close()
    print(f"downstream: {rec.received} received on port {args.port}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
