#!/usr/bin/env python3
"""Accounts for every message of a soak: acknowledged against delivered.

    check.py --acked acked.txt --unacked unacked.txt --received received.txt [--db DIR/switchboard.db]

- lost: acknowledged to the sender, never received downstream. Must be 0.
- duplicates: receptions beyond the first of an id. A receiver stopped
  after recording a message but before its ACK left gets it again when it
  is back (at-least-once delivery), so a few are expected at each stop.
- out of order: receptions of an id lower than one already received,
  other than the id received just before it (a repeat of the message in
  hand is a redelivery, not a reordering).
- unacked: messages the sender got no AA for; received or not, they are
  listed, never counted as lost.
- with `--db` (engine stopped): the headers of the store by status;
  anything still queued, or failed, is listed.

Prints a JSON object; exits 1 when a message was lost, reordered or
failed, or one is still queued.
"""

import argparse
import json
import re
import sqlite3
from collections import Counter


def read_ids(path: str) -> list:
    with open(path) as f:
        return [line.split("\t", 1)[0].strip() for line in f if line.strip()]


def number(cid: str) -> int:
    m = re.search(r"(\d+)$", cid)
    return int(m.group(1)) if m else -1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--acked", required=True)
    p.add_argument("--unacked", required=True)
    p.add_argument("--received", required=True)
    p.add_argument("--db", default="")
    a = p.parse_args()
    acked, unacked, received = read_ids(a.acked), read_ids(a.unacked), read_ids(a.received)
    seen = Counter(received)
    lost = [c for c in acked if c not in seen]
    out_of_order, highest, previous = 0, -1, None
    for cid in received:
        n = number(cid)
        if n < highest and cid != previous:
            out_of_order += 1
        highest, previous = max(highest, n), cid
    result = {
        "acked": len(acked),
        "acked_distinct": len(set(acked)),
        "unacked": len(unacked),
        "unacked_received": sum(1 for c in unacked if c in seen),
        "received": len(received),
        "received_distinct": len(seen),
        "lost": len(lost),
        "lost_first": lost[:10],
        "duplicates": len(received) - len(seen),
        "duplicated_ids": sum(1 for n in seen.values() if n > 1),
        "out_of_order": out_of_order,
        "not_sent_but_received": len(set(seen) - set(acked) - set(unacked)),
    }
    if a.db:
        conn = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
        try:
            result["store_status"] = dict(conn.execute("SELECT status, COUNT(*) FROM header GROUP BY status"))
        finally:
            conn.close()
    status = result.get("store_status", {})
    pending = status.get("queued", 0) + status.get("delivering", 0)
    result["ok"] = not lost and out_of_order == 0 and pending == 0 and status.get("failed", 0) == 0
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
