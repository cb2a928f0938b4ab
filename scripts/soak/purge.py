#!/usr/bin/env python3
"""Runs a store purge through the API, optionally ageing messages first.

    purge.py --url http://127.0.0.1:31402 --token T [--age-db DIR/switchboard.db]

The purge removes finished messages older than `store.retention_days`,
which is at least a day, so in a soak of an hour it would find nothing.
With `--age-db`, the messages and events older than `--older-than`
seconds are first made a day older in the store (one UPDATE each, over a
second SQLite connection; the engine's own connections wait on the lock
like for any other writer), so the purge that follows removes the real
rows of all but the last minute. Prints one line as JSON: what was aged
and what the purge removed.
"""

import argparse
import json
import sqlite3
import time
import urllib.request

DAY_MS = 86_400_000


def age(db: str, older_than_s: float) -> dict:
    now = int(time.time() * 1000)
    newest = now - int(older_than_s * 1000)
    # Rows already aged (more than half a day old) are left alone.
    oldest = now - DAY_MS // 2
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            headers = conn.execute(
                "UPDATE header SET created_at = created_at - ?1 WHERE created_at BETWEEN ?2 AND ?3",
                (2 * DAY_MS, oldest, newest),
            ).rowcount
            events = conn.execute(
                "UPDATE event SET at = at - ?1 WHERE at BETWEEN ?2 AND ?3", (2 * DAY_MS, oldest, newest)
            ).rowcount
    finally:
        conn.close()
    return {"aged_headers": headers, "aged_events": events}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the web server, without /api/v1")
    p.add_argument("--token", required=True)
    p.add_argument("--age-db", default="")
    p.add_argument("--older-than", type=float, default=60.0)
    a = p.parse_args()
    out = {"unix_s": round(time.time(), 1)}
    if a.age_db:
        started = time.monotonic()
        out.update(age(a.age_db, a.older_than))
        out["age_ms"] = round((time.monotonic() - started) * 1000)
    request = urllib.request.Request(
        f"{a.url}/api/v1/store/purge", method="POST", data=b"",
        headers={"Authorization": f"Bearer {a.token}"},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=120) as r:
        body = json.loads(r.read())
    out.update({k: body.get(k) for k in ("headers", "bodies", "events")})
    out["purge_ms"] = round((time.monotonic() - started) * 1000)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
