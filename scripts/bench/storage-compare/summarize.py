#!/usr/bin/env python3
"""Reads the RESULT lines of storage-compare runs (stdin or files) and prints a Markdown table:
median and min–max over the runs of each engine."""
import fileinput
import statistics
from collections import defaultdict

runs = defaultdict(list)
for line in fileinput.input():
    if not line.startswith("RESULT "):
        continue
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    runs[kv["engine"]].append(kv)

COLS = [
    ("write_rows_per_s", "write rows/s", 0),
    ("bytes_per_reading", "bytes/reading after writes", 2),
    ("bytes_per_reading_compacted", "bytes/reading after compaction", 2),
    ("q1h_ms", "1 h query ms", 3),
    ("qall_ms", "full-range query ms", 3),
    ("q1h_ms_compacted", "1 h query ms (compacted)", 3),
    ("qall_ms_compacted", "full-range query ms (compacted)", 3),
    ("compact_s", "compaction s", 1),
]

def fmt(vals, nd):
    m = statistics.median(vals)
    f = f"{{:,.{nd}f}}"
    return f"{f.format(m)} ({f.format(min(vals))}–{f.format(max(vals))})"

print("| engine | runs | " + " | ".join(c[1] for c in COLS) + " |")
print("|---|---|" + "---|" * len(COLS))
for engine, rs in runs.items():
    cells = [fmt([float(r[k]) for r in rs], nd) for k, _, nd in COLS]
    print(f"| {engine} | {len(rs)} | " + " | ".join(cells) + " |")
print()
for engine, rs in runs.items():
    r = rs[0]
    print(f"- {engine}: rows={r['rows']}, 1 h query rows={r['q1h_rows']}, full-range rows={r['qall_rows']}, "
          f"checksums {r['q1h_sum']}/{r['qall_sum']}, journal bytes after writes={r['journal_bytes']}, "
          f"after compaction={r['journal_bytes_compacted']}, allocated bytes/reading after writes="
          f"{statistics.median(float(x['alloc_bytes_per_reading']) for x in rs):.2f}, after compaction="
          f"{statistics.median(float(x['alloc_bytes_per_reading_compacted']) for x in rs):.2f}")
