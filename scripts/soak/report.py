#!/usr/bin/env python3
"""Prints a soak's summary as a Markdown table.

    report.py --samples samples.csv --events events.jsonl --check check.json --sender sender.json

Memory, descriptors and threads at the first sample once the load ran (a
minute in, after the caches have filled), at the end and at their
highest; the store's size on disk; the purges with what they removed;
the downstream's stops; and the accounting.
"""

import argparse
import csv
import json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--check", required=True)
    p.add_argument("--sender", required=True)
    p.add_argument("--rate", required=True)
    a = p.parse_args()
    with open(a.samples) as f:
        rows = list(csv.DictReader(f))
    with open(a.events) as f:
        events = [json.loads(line) for line in f if line.strip()]
    with open(a.check) as f:
        check = json.load(f)
    with open(a.sender) as f:
        sender = json.load(f)
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
        f"| sending | {sender['seconds'] / 60:.1f} min at {a.rate} msgs/s (achieved {sender['rate']}), one connection |",
        f"| messages | {sender['sent']} sent, {check['acked']} acknowledged, {check['unacked']} not |",
        f"| delivered downstream | {check['received_distinct']} distinct ids, {check['received']} receptions |",
        f"| lost (acknowledged, never delivered) | {check['lost']} |",
        f"| duplicates | {check['duplicates']} ({check['duplicated_ids']} ids) over {len(flaps)} downstream stops |",
        f"| out of order | {check['out_of_order']} |",
        f"| store at the end | {', '.join(f'{k} {v}' for k, v in sorted(check.get('store_status', {}).items())) or 'empty'} |",
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
