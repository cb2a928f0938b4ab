#!/usr/bin/env python3
"""Attackers for benches/flood/run.sh: connections to a listener on
127.0.0.1 that never deliver a message, each one reconnecting as soon as
it is closed, until a time limit.

Modes:
  idle  connect and say nothing
  tls   send the first bytes of a TLS ClientHello, then nothing
  slow  start an MLLP frame and send it one byte per --interval, never
        finishing it

The attackers come from --sources loopback addresses starting at
127.0.0.--first-source, so that they look like several peers. Everything is
bounded: --count attackers, --duration seconds, one connection attempt at
a time each. Prints one line per second (open connections, connections
made, attempts refused) and a summary at the end.
"""

import argparse
import asyncio
import signal
import sys
import time

HALF_A_CLIENT_HELLO = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC])
FRAME = (
    b"\x0bMSH|^~\\&|SLOW|FAC|SWB|FAC|20260101120000||ADT^A01|SLOW1|P|2.5\r"
    b"EVN|A01|20260101120000\rPID|1||1^^^FAC^MR||DOE^JOHN||19800101|M\r"
)


class Stats:
    def __init__(self):
        self.open = 0
        self.made = 0
        self.failed = 0


async def closed_within(reader, seconds, stop):
    """True once the peer closed the connection, False after `seconds` or
    once the run stops."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            if not await asyncio.wait_for(reader.read(4096), min(left, 0.5)):
                return True
        except asyncio.TimeoutError:
            pass
        except OSError:
            return True
    return False


async def attacker(args, source, stats, deadline, stop):
    # The stop flag, not only cancellation, ends the loop: asyncio.wait_for
    # can swallow a cancellation that arrives as its inner call completes.
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", args.port, local_addr=(source, 0)), 1.0
            )
        except (OSError, asyncio.TimeoutError):
            stats.failed += 1
            await asyncio.sleep(args.pause)
            continue
        stats.made += 1
        stats.open += 1
        try:
            if args.mode == "tls":
                writer.write(HALF_A_CLIENT_HELLO)
            if args.mode == "slow":
                for byte in FRAME:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    if await closed_within(reader, args.interval, stop) or stop.is_set():
                        break
            await closed_within(reader, max(0.0, deadline - time.monotonic()), stop)
        except OSError:
            pass
        finally:
            stats.open -= 1
            writer.close()
        await asyncio.sleep(args.pause)


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["idle", "tls", "slow"], required=True)
    parser.add_argument("--count", type=int, required=True, help="attackers (at most 5000)")
    parser.add_argument("--sources", type=int, default=10, help="source addresses")
    parser.add_argument("--first-source", type=int, default=10, help="last byte of the first 127.0.0.x")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (at most 600)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between a close and the next connect")
    parser.add_argument("--interval", type=float, default=0.1, help="slow mode: seconds between bytes")
    args = parser.parse_args()
    if not 0 < args.count <= 5000 or not 0 < args.duration <= 600 or not 1 <= args.sources <= 200:
        sys.exit("out of bounds: --count 1..5000, --duration up to 600, --sources 1..200")
    if args.first_source < 1 or args.first_source + args.sources > 255:
        sys.exit("the source addresses must stay within 127.0.0.1-254")

    stats = Stats()
    started = time.monotonic()
    deadline = started + args.duration
    sources = [f"127.0.0.{args.first_source + i % args.sources}" for i in range(args.count)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(attacker(args, source, stats, deadline, stop)) for source in sources]
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        print(f"{time.monotonic() - started:.0f}s open {stats.open} made {stats.made} failed {stats.failed}", flush=True)
    stop.set()
    await asyncio.wait(tasks, timeout=5.0)
    for task in tasks:
        task.cancel()
    elapsed = time.monotonic() - started
    print(f"summary mode {args.mode} attackers {args.count} made {stats.made} failed {stats.failed} "
          f"seconds {elapsed:.1f} connects/s {stats.made / max(elapsed, 1e-9):.0f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
