#!/usr/bin/env python3
"""Draws a soak's samples as an SVG: one panel per series, on one time axis.

    plot.py --samples samples.csv --events events.jsonl --out soak.svg [--title TEXT]

Panels: resident memory, open file descriptors, threads, queue depth and
bytes on disk (data folder, database, write-ahead log, logs). Grey bands
are the downstream's stops, red bands the purges (from start to end), the dotted line the
end of sending. Standard library only.
"""

import argparse
import csv
import json
import math
from html import escape

WIDTH, PANEL_H, GAP, LEFT, RIGHT, TOP, BOTTOM = 960, 120, 34, 78, 150, 46, 44
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def nice_ticks(lo: float, hi: float, count: int = 4) -> list:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    # Up to the first tick at or above `hi`, so that the top tick bounds the panel.
    return [first + i * step for i in range(int(math.ceil((hi - first) / step - 1e-9)) + 1)]


def fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="Soak")
    a = p.parse_args()
    with open(a.samples) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit("no samples")
    t0 = float(rows[0]["unix_s"])
    with open(a.events) as f:
        events = [json.loads(line) for line in f if line.strip()]

    def col(name: str, scale: float = 1.0) -> list:
        return [(float(r["unix_s"]) - t0, float(r[name]) * scale) for r in rows if r.get(name) not in (None, "")]

    mb = 1 / 1024
    panels = [
        ("RSS (MB)", [("VmRSS", col("rss_kb", mb))]),
        ("open fds", [("fds", col("fds"))]),
        ("threads", [("threads", col("threads"))]),
        ("queue depth", [("queued", col("queue_depth"))]),
        ("on disk (MB)", [
            ("data folder", col("data_dir_bytes", 1 / 2**20)),
            ("database", col("db_bytes", 1 / 2**20)),
            ("WAL", col("wal_bytes", 1 / 2**20)),
            ("logs", col("logs_bytes", 1 / 2**20)),
        ]),
    ]
    t_end = max(float(r["unix_s"]) - t0 for r in rows)
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + len(panels) * (PANEL_H + GAP) + BOTTOM
    minutes = t_end / 60
    x_step = next(s for s in (1, 2, 5, 10, 15, 30, 60) if minutes / s <= 12)

    def x(t: float) -> float:
        return LEFT + plot_w * t / t_end if t_end else LEFT

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{escape(a.title)}</text>',
        f'<text x="{LEFT}" y="38" fill="#555">grey: downstream stopped; red: purge (dashed: its start); '
        f'dotted: sending ends (then the queue drains)</text>',
    ]
    downs = [e["unix_s"] - t0 for e in events if e["kind"] == "flap_down"]
    ups = [e["unix_s"] - t0 for e in events if e["kind"] == "flap_up"]
    purges = [(e["unix_s"] - t0, e.get("purge_ms", 0) / 1000) for e in events if e["kind"] in ("purge", "purge_timeout")]
    send_end = [e["unix_s"] - t0 for e in events if e["kind"] == "send_end"]
    for i, (label, series) in enumerate(panels):
        y0 = TOP + i * (PANEL_H + GAP) + 10
        values = [v for _, pts in series for _, v in pts]
        lo, hi = 0.0, max(values) if values else 1.0
        ticks = nice_ticks(lo, hi * 1.05 if hi > 0 else 1)
        top = ticks[-1]

        def y(v: float) -> float:
            return y0 + PANEL_H - PANEL_H * (v - lo) / (top - lo)

        for d in downs:
            u = next((u for u in ups if u >= d), t_end)
            out.append(f'<rect x="{x(d):.1f}" y="{y0}" width="{max(1.0, x(u) - x(d)):.1f}" '
                       f'height="{PANEL_H}" fill="#e6e6e6"/>')
        for tick in ticks:
            out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                       f'stroke="#ddd" stroke-width="0.6"/>')
            out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="#444">{fmt(tick)}</text>')
        for t, seconds in purges:
            out.append(f'<rect x="{x(t):.1f}" y="{y0}" width="{max(0.0, x(t + seconds) - x(t)):.1f}" '
                       f'height="{PANEL_H}" fill="#d62728" fill-opacity="0.12"/>')
            out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y0}" y2="{y0 + PANEL_H}" '
                       f'stroke="#d62728" stroke-dasharray="4,3" stroke-width="1"/>')
        for t in send_end:
            out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y0}" y2="{y0 + PANEL_H}" '
                       f'stroke="#333" stroke-dasharray="1,2" stroke-width="1.2"/>')
        for j, (name, pts) in enumerate(series):
            if not pts:
                continue
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
            colour = COLOURS[j % len(COLOURS)]
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.4"/>')
            out.append(f'<text x="{LEFT + plot_w + 8}" y="{y0 + 14 + 15 * j}" fill="{colour}">'
                       f'{escape(name)}: {fmt(pts[-1][1])}</text>')
        out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#888"/>')
        out.append(f'<text x="16" y="{y0 + PANEL_H / 2:.1f}" transform="rotate(-90 16 {y0 + PANEL_H / 2:.1f})" '
                   f'text-anchor="middle" font-weight="bold">{escape(label)}</text>')
        for m in range(0, int(minutes) + 1, x_step):
            xm = x(m * 60)
            out.append(f'<line x1="{xm:.1f}" x2="{xm:.1f}" y1="{y0 + PANEL_H}" y2="{y0 + PANEL_H + 4}" stroke="#888"/>')
            if i == len(panels) - 1:
                out.append(f'<text x="{xm:.1f}" y="{y0 + PANEL_H + 18}" text-anchor="middle" fill="#444">{m}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{height - 8}" text-anchor="middle">minutes</text>')
    out.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
