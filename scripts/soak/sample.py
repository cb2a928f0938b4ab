#!/usr/bin/env python3
"""Samples a running engine every few seconds into a CSV.

    sample.py --pid PID --data-dir DIR --metrics URL --token T --out samples.csv

Per row: seconds since the first sample, the process's resident set
(VmRSS), open file descriptors and threads from /proc, the summed queue
depth and the store size from `/metrics`, and the bytes on disk of the
data folder: the database, its write-ahead log, the inbound and delivery
logs, and everything together. Stops when the process is gone, when
`--stop-file` exists, or after `--max-seconds`.
"""

import argparse
import csv
import os
import time
import urllib.request

COLUMNS = [
    "t_s", "unix_s", "rss_kb", "fds", "threads", "queue_depth", "sent_total", "store_bytes",
    "db_bytes", "wal_bytes", "logs_bytes", "data_dir_bytes",
]


def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def metrics(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as r:
        text = r.read().decode()
    out = {"queue_depth": 0, "sent_total": 0, "store_bytes": 0}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("switchboard_queue_depth{"):
            out["queue_depth"] += int(float(value))
        elif name.startswith("switchboard_messages_sent_total{") and 'item="Downstream"' in name:
            out["sent_total"] += int(float(value))
        elif name == "switchboard_store_size_bytes":
            out["store_bytes"] = int(float(value))
    return out


def disk(data_dir: str) -> dict:
    out = {"db_bytes": 0, "wal_bytes": 0, "logs_bytes": 0, "data_dir_bytes": 0}
    for root, _, files in os.walk(data_dir):
        for name in files:
            try:
                size = os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
            out["data_dir_bytes"] += size
            if name.endswith(".db"):
                out["db_bytes"] += size
            elif name.endswith(".db-wal"):
                out["wal_bytes"] += size
            elif "-inbound" in name or "-deliveries" in name:
                out["logs_bytes"] += size
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--every", type=float, default=10.0)
    p.add_argument("--stop-file", default="")
    p.add_argument("--max-seconds", type=float, default=3 * 3600)
    a = p.parse_args()
    start = time.monotonic()
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        tick = 0
        while time.monotonic() - start < a.max_seconds:
            if a.stop_file and os.path.exists(a.stop_file):
                break
            row = {"t_s": round(time.monotonic() - start, 1), "unix_s": round(time.time(), 1)}
            try:
                s = proc_status(a.pid)
            except FileNotFoundError:
                break
            row.update(rss_kb=s["VmRSS"], threads=s["Threads"], fds=s["fds"])
            try:
                row.update(metrics(a.metrics, a.token))
            except OSError:
                pass  # a missed scrape leaves the cells empty; the process figures still count
            row.update(disk(a.data_dir))
            w.writerow(row)
            f.flush()
            tick += 1
            time.sleep(max(0.0, start + tick * a.every - time.monotonic()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
