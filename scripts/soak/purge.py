#!/usr/bin/env python3
"""Runs a store purge through the API, optionally ageing messages first.

    purge.py --url http://127.0.0.1:31402 --token T [--age-db DIR/switchboard.db] [--events FILE]

The purge removes finished messages older than `store.retention_days`,
which is at least a day, so in a soak of an hour it would find nothing.
With `--age-db`, the messages and events older than `--older-than`
seconds are first made a day older in the store (one UPDATE each, over a
second SQLite connection; the engine's own connections wait on the lock
like for any other writer), so the purge that follows removes the real
rows of all but the last minute. Prints one line as JSON, and appends it
to `--events` with `"kind": "purge"`: when it started, what was aged, what
the purge removed and how long it took. The store's writer runs the purge
in batches between other writes, at the background priority, so on a busy
machine it takes minutes: `--timeout` is generous, and an answer that does
not come in time is recorded as `purge_timeout` (the engine stops a purge
whose caller has gone, keeping the batches done).
"""

import argparse
import json
import socket
import sqlite3
import time
import urllib.request

DAY_MS = 86_400_000


def age(db: str, older_than_s: float) -> dict:
    now = int(time.time() * 1000)
    newest = now - int(older_than_s * 1000)
    # Rows already aged (more than half a day old) are left alone.
    oldest = now - DAY_MS // 2
    conn = sqlite3.connect(db, timeout=60)
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
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the purge's answer")
    p.add_argument("--events", default="", help="a file to append the result to")
    a = p.parse_args()
    out = {"unix_s": round(time.time(), 1)}
    if a.age_db:
        started = time.monotonic()
        try:
            out.update(age(a.age_db, a.older_than))
        except sqlite3.Error as e:
            out.update(kind="purge_failed", error=f"ageing: {e}")
            return finish(out, a.events)
        out["age_ms"] = round((time.monotonic() - started) * 1000)
    request = urllib.request.Request(
        f"{a.url}/api/v1/store/purge", method="POST", data=b"",
        headers={"Authorization": f"Bearer {a.token}"},
    )
    started = time.monotonic()
    out["kind"] = "purge"
    try:
        with urllib.request.urlopen(request, timeout=a.timeout) as r:
            body = json.loads(r.read())
        out.update({k: body.get(k) for k in ("headers", "bodies", "events")})
    except (OSError, socket.timeout, ValueError) as e:
        out.update(kind="purge_timeout" if isinstance(e, (socket.timeout, TimeoutError)) else "purge_failed",
                   error=str(e))
    out["purge_ms"] = round((time.monotonic() - started) * 1000)
    return finish(out, a.events)


def finish(out: dict, events: str) -> int:
    line = json.dumps(out)
    print(line, flush=True)
    if events:
        with open(events, "a") as f:
            f.write(line + "\n")
    return 0 if out["kind"] == "purge" else 1


if __name__ == "__main__":
    raise SystemExit(main())
