#!/usr/bin/env python3
"""Median table of several load benchmark runs.

Usage: bench/load/median.py RUN1/results.jsonl RUN2/results.jsonl ...

Each file is the `results.jsonl` of one `bench/load/run.sh` run; every
(case, target) row is the median of its runs, field by field.
"""
import json
import statistics
import sys

# The rate field of each case and the unit it is shown in.
RATE_KEYS = {
    "conns_per_s": "conn/s",
    "refusals_per_s": "refusal/s",
    "requests_per_s": "req/s",
    "mb_per_s": "MB/s",
    "exchanges_per_s": "exch/s",
    "queries_per_s": "query/s",
    "tunnels_alive": "open",
}


def median(rows, key):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return ""
    return f"{v:.{digits}f}" if digits else f"{round(v)}"


def main(paths):
    rows = {}
    order = []
    for path in paths:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                key = (r["case"], r["target"])
                if key not in rows:
                    rows[key] = []
                    order.append(key)
                rows[key].append(r)
    print(f"medians of {len(paths)} runs")
    print()
    print("| case | target | rate | rate vs direct | p50 µs | p99 µs | p99 vs direct | proxy peak RSS MiB | more |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for key in order:
        rs = rows[key]
        rate_key = next((k for k in RATE_KEYS if any(k in r for r in rs)), None)
        rate = median(rs, rate_key) if rate_key else None
        unit = RATE_KEYS.get(rate_key, "")
        vs = median(rs, "rate_vs_direct")
        rss = median(rs, "proxy_peak_rss_kb")
        more = []
        for extra, label in [
            ("rate_vs_null_audit", "vs null audit"),
            ("p99_vs_no_flood", "p99 vs no flood"),
            ("flood_refusals_per_s", "flood refusals/s"),
            ("lost_bytes", "lost bytes"),
            ("rss_per_tunnel_kb", "KiB/tunnel"),
        ]:
            m = median(rs, extra)
            if m is not None:
                more.append(f"{label} {m:g}")
        print(
            f"| {key[0]} | {key[1]} | {fmt(rate)} {unit} | {fmt(vs, 2) + '×' if vs is not None else ''} "
            f"| {fmt(median(rs, 'p50_us'))} | {fmt(median(rs, 'p99_us'))} "
            f"| {fmt(median(rs, 'p99_vs_direct'), 2) + '×' if median(rs, 'p99_vs_direct') is not None else ''} "
            f"| {fmt(rss / 1024, 1) if rss else ''} | {'; '.join(more)} |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
