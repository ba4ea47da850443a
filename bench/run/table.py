#!/usr/bin/env python3
"""Median table of one bench/run/run.sh run.

Usage: bench/run/table.py results.jsonl

Each line of results.jsonl is one figure of one round:
{"round": R, "target": "direct"|"old"|"new", "metric": M, "value": V}.
A cell is the median over the rounds and, in brackets, the median of the
per-round ratios to direct (the direct path measured seconds before, in
the same round); new/old is the median of the per-round ratios. The second
table gives each target's spread: min–max over the rounds.
"""
import json
import statistics
import sys

METRICS = [
    ("bulk_http_mb_per_s", "(a) bulk download, HTTP (guard's HTTP relay), MB/s", "{:.0f}"),
    ("bulk_tls_mb_per_s", "(a) bulk download, HTTPS (tunnel), MB/s", "{:.0f}"),
    ("reqs_per_s", "(b) sequential requests, fresh connection each, req/s", "{:.0f}"),
    ("p50_ms", "(b) request latency p50, ms", "{:.3f}"),
    ("p99_ms", "(b) request latency p99, ms", "{:.3f}"),
    ("syscall_ns", "(e) one read/write syscall (dd bs=1), ns", "{:.0f}"),
    ("spawn_per_s", "(f) fork+exec of /bin/true, /s", "{:.0f}"),
    ("start_ms", "(d) `run -- true` wall time, ms", "{:.1f}"),
]
TARGETS = ["direct", "old", "new"]


def main(path):
    data = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            data.setdefault(r["metric"], {}).setdefault(r["target"], {})[r["round"]] = r["value"]
    rounds = sorted({rd for m in data.values() for t in m.values() for rd in t})
    print(f"medians of {len(rounds)} rounds")
    busy = data.get("busy_pct", {}).get("machine", {})
    if busy:
        print(f"(CPU busy in the second before each round, %: {', '.join(str(busy[rd]) for rd in sorted(busy))})")
    tw = data.get("timewait", {}).get("machine", {})
    if tw:
        print(f"(TIME_WAIT sockets on the host at each round's start: {', '.join(str(tw[rd]) for rd in sorted(tw))})")
    print()
    print("| case | direct | old run | new run | new/old |")
    print("|---|---:|---:|---:|---:|")
    for key, label, fmt in METRICS:
        m = data.get(key)
        if not m:
            continue
        cells = []
        for t in TARGETS:
            vals = m.get(t, {})
            if not vals:
                cells.append("")
                continue
            cell = fmt.format(statistics.median(vals.values()))
            if t != "direct" and m.get("direct"):
                ratios = [vals[rd] / m["direct"][rd] for rd in vals if m["direct"].get(rd)]
                if ratios:
                    cell += f" ({statistics.median(ratios):.2f}×)"
            cells.append(cell)
        old, new = m.get("old", {}), m.get("new", {})
        ratios = [new[rd] / old[rd] for rd in new if old.get(rd)]
        cells.append(f"{statistics.median(ratios):.2f}" if ratios else "")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print("spread over the rounds (min–max; new/old: min–max of the per-round ratios):")
    print()
    print("| case | direct | old run | new run | new/old |")
    print("|---|---:|---:|---:|---:|")
    for key, label, fmt in METRICS:
        m = data.get(key)
        if not m:
            continue
        cells = []
        for t in TARGETS:
            vals = list(m.get(t, {}).values())
            cells.append(f"{fmt.format(min(vals))}–{fmt.format(max(vals))}" if vals else "")
        old, new = m.get("old", {}), m.get("new", {})
        ratios = [new[rd] / old[rd] for rd in new if old.get(rd)]
        cells.append(f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
