#!/usr/bin/env python3
"""Checks a fault case: what the senders were promised against what the
receivers got.

--acked files hold the control ids the engine acknowledged positively
(load.py), --delivered files what one outbound operation delivered each
(downstream.py), in arrival order. Control ids are `<conn>-<n>` with <conn>
naming the sending connection (prefix included) and n counting up from 1.

Per operation it checks the engine's promises (ARCHITECTURE.md,
invariants 1 and 2; DOCS.md, "Sending ahead"):

- lost: an acknowledged id never delivered. Must be 0.
- order: per sending connection, the first copy of every id arrives in the
  order the connection sent them; an id arriving after a higher one of the
  same connection it had not seen before is out of order.
- repeats: a copy of an id already delivered. Delivery is at-least-once, so
  a crash may repeat what was in flight (at most pipeline_depth per
  operation), and a sender that lost its ACK in the crash sends its message
  again (one per connection). --max-repeats bounds them per operation.

With --wait it first waits (bounded) until every acknowledged id was
delivered by every operation, for a case that ends with queues draining.

Prints a summary to standard error and, with --case, one markdown row
`| case | acknowledged | delivered | duplicates | order kept | recovery s |`
to standard output. Exits 1 when something was lost, out of order or
repeated beyond the bound.
"""

import argparse
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description="check a fault case's acknowledged and delivered ids")
    p.add_argument("--acked", action="append", required=True, help="file of acknowledged ids (repeatable)")
    p.add_argument("--delivered", action="append", required=True, help="file of one operation's deliveries (repeatable)")
    p.add_argument(
        "--max-repeats",
        type=int,
        action="append",
        help="repeats allowed per operation, one for all or one per --delivered in turn; default any",
    )
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the queues to drain (no id lost)")
    p.add_argument("--case", help="print a markdown row for this case")
    p.add_argument("--recovery", default="-", help="the recovery column of the row")
    return p.parse_args()


def split_id(control_id):
    conn, dash, n = control_id.rpartition("-")
    if not dash or not n.isdigit():
        return None, None
    return conn, int(n)


def read_ids(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        print(f"check: {path} does not exist; taken as empty", file=sys.stderr)
        return []


def check_operation(path, acked):
    stream = read_ids(path)
    seen = set()
    highest = {}
    repeats = out_of_order = foreign = 0
    examples = []
    for control_id in stream:
        conn, n = split_id(control_id)
        if conn is None:
            foreign += 1
            continue
        if control_id in seen:
            repeats += 1
            continue
        seen.add(control_id)
        if n < highest.get(conn, 0):
            out_of_order += 1
            if len(examples) < 5:
                examples.append(f"{control_id} after {conn}-{highest[conn]}")
        else:
            highest[conn] = n
    lost = sorted(acked - seen, key=lambda i: (split_id(i)[0] or "", split_id(i)[1] or 0))
    unacked = len(seen - acked)
    return {
        "path": path,
        "copies": len(stream),
        "unique": len(seen),
        "lost": lost,
        "repeats": repeats,
        "out_of_order": out_of_order,
        "examples": examples,
        "unacked": unacked,
        "foreign": foreign,
    }


def main():
    args = parse_args()
    acked = set()
    acked_lines = 0
    for path in args.acked:
        ids = read_ids(path)
        acked_lines += len(ids)
        acked.update(ids)
    if acked_lines != len(acked):
        print(f"check: {acked_lines - len(acked)} ids acknowledged more than once", file=sys.stderr)
    bounds = args.max_repeats or [-1]
    if len(bounds) == 1:
        bounds = bounds * len(args.delivered)
    if len(bounds) != len(args.delivered):
        print("check: give one --max-repeats, or one per --delivered", file=sys.stderr)
        sys.exit(2)
    # The queues drain while this waits: re-read until nothing is missing.
    deadline = time.monotonic() + args.wait
    while True:
        ops = [check_operation(path, acked) for path in args.delivered]
        for op, bound in zip(ops, bounds):
            op["bound"] = bound
        if all(not op["lost"] for op in ops) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    failed = False
    for op in ops:
        print(
            f"check: {op['path']}: {op['copies']} deliveries, {op['unique']} distinct, "
            f"{len(op['lost'])} acknowledged but lost, {op['repeats']} repeats, "
            f"{op['out_of_order']} out of order, {op['unacked']} delivered but never acknowledged "
            f"(a sender gave up or was stopped waiting for the ACK), {op['foreign']} foreign",
            file=sys.stderr,
        )
        if op["lost"]:
            failed = True
            print(f"check: lost, first ones: {', '.join(op['lost'][:10])}", file=sys.stderr)
        if op["out_of_order"]:
            failed = True
            print(f"check: out of order, first ones: {'; '.join(op['examples'])}", file=sys.stderr)
        if 0 <= op["bound"] < op["repeats"]:
            failed = True
            print(f"check: {op['path']}: {op['repeats']} repeats, more than the {op['bound']} allowed", file=sys.stderr)
    print(f"check: {len(acked)} acknowledged; {'FAILED' if failed else 'ok'}", file=sys.stderr)
    if args.case:
        join = lambda key: " / ".join(str(op[key]) for op in ops)  # noqa: E731
        lost = sum(len(op["lost"]) for op in ops)
        order = sum(op["out_of_order"] for op in ops)
        bound = f" (at most {join('bound')})" if any(op["bound"] >= 0 for op in ops) else ""
        order_text = "yes" if order == 0 else f"NO ({order} out of order)"
        print(
            f"| {args.case} | {len(acked)} | {join('unique')}, {lost} lost | {join('repeats')}{bound} "
            f"| {order_text} | {args.recovery} |"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
