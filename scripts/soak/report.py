#!/usr/bin/env python3
"""Prints a soak's summary as a Markdown table.

    report.py --samples samples.csv --events events.jsonl --check check.txt --store store.json \
              --sender sender.log --rate 100

Memory, descriptors and threads at the first sample once the load ran (a
minute in, after the caches have filled), at the end and at their
highest; the store's size on disk; the purges with what they removed;
the downstream's stops; and the accounting, read from what
scripts/faults/load.py and scripts/faults/check.py print.
"""

import argparse
import csv
import json
import re


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--check", required=True, help="check.py's standard error")
    p.add_argument("--store", required=True, help="the store's headers by status, as JSON")
    p.add_argument("--sender", required=True, help="load.py's standard error")
    p.add_argument("--rate", required=True)
    a = p.parse_args()
    with open(a.samples) as f:
        rows = list(csv.DictReader(f))
    with open(a.events) as f:
        events = [json.loads(line) for line in f if line.strip()]
    with open(a.check) as f:
        m = re.search(
            r"(\d+) deliveries, (\d+) distinct, (\d+) acknowledged but lost, (\d+) repeats, "
            r"(\d+) out of order, (\d+) delivered but never acknowledged",
            f.read(),
        )
    if m is None:
        raise SystemExit(f"{a.check}: no summary line from check.py")
    delivered, distinct, lost, repeats, out_of_order, unacked = map(int, m.groups())
    with open(a.store) as f:
        store = json.load(f)
    with open(a.sender) as f:
        m = re.search(r"load: (\d+) acknowledged in ([\d.]+) s \((\d+)/s\).*?(\d+) retries", f.read())
    if m is None:
        raise SystemExit(f"{a.sender}: no summary line from load.py")
    acked, seconds, rate, retries = int(m[1]), float(m[2]), int(m[3]), int(m[4])
    t0 = float(rows[0]["unix_s"])
    warm = next((r for r in rows if float(r["unix_s"]) - t0 >= 60), rows[0])

    def series(name: str) -> list:
        return [float(r[name]) for r in rows if r.get(name) not in (None, "")]

    def trio(name: str, scale: float = 1.0, digits: int = 0) -> str:
        s = series(name)
        first = float(warm[name]) if warm.get(name) else s[0]
        at = lambda v: f"{v * scale:.{digits}f}"  # noqa: E731
        return f"{at(s[0])} / {at(first)} / {at(s[-1])} / {at(max(s))}"

    purges = [e for e in events if e["kind"] == "purge"]
    flaps = [e for e in events if e["kind"] == "flap_down"]
    drained = next((e for e in events if e["kind"] == "drained"), None)
    send_end = next((e for e in events if e["kind"] == "send_end"), None)
    mib = 1 / 2**20
    lines = [
        "| what | value |",
        "| --- | --- |",
        f"| sending | {seconds / 60:.1f} min at {a.rate} msgs/s (achieved {rate}/s), one connection |",
        f"| messages acknowledged | {acked} ({retries} sent again after no ACK) |",
        f"| delivered downstream | {distinct} distinct ids, {delivered} deliveries |",
        f"| lost (acknowledged, never delivered) | {lost} |",
        f"| repeats | {repeats} over {len(flaps)} downstream stops |",
        f"| out of order; delivered, never acknowledged | {out_of_order}; {unacked} |",
        f"| store at the end (headers) | {', '.join(f'{k} {v}' for k, v in sorted(store.items())) or 'empty'} |",
        "| RSS MB: start / 1 min / end / max | " + trio("rss_kb", 1 / 1024, 1) + " |",
        "| open fds: start / 1 min / end / max | " + trio("fds") + " |",
        "| threads: start / 1 min / end / max | " + trio("threads") + " |",
        "| queue depth max | " + f"{max(series('queue_depth') or [0]):.0f}" + " |",
        "| data folder MB: start / 1 min / end / max | " + trio("data_dir_bytes", mib, 1) + " |",
        "| database MB: start / 1 min / end / max | " + trio("db_bytes", mib, 1) + " |",
        "| WAL + logs MB at the end (max) | "
        + f"{series('wal_bytes')[-1] * mib:.1f} + {series('logs_bytes')[-1] * mib:.1f} "
        + f"({max(series('wal_bytes')) * mib:.1f} + {max(series('logs_bytes')) * mib:.1f}) |",
        f"| purges: messages (headers) removed, seconds taken | {len(purges)}: "
        + ", ".join(f"{e.get('bodies', 0)} ({e.get('headers', 0)}) in {e.get('purge_ms', 0) / 1000:.0f} s" for e in purges)
        + " |",
        f"| purges not finished (caller timed out or failed); skipped (the last still ran) | "
        + f"{sum(e['kind'] in ('purge_timeout', 'purge_failed') for e in events)}; "
        + f"{sum(e['kind'] == 'purge_skipped' for e in events)} |",
        f"| downstream stops | {len(flaps)}, "
        + (f"{flaps[0].get('down_s', '?')} s each" if flaps else "none")
        + " |",
    ]
    if drained and send_end:
        lines.append(f"| queue drained after sending ended | {drained['unix_s'] - send_end['unix_s']:.0f} s |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
