#!/usr/bin/env python3
"""xdpcost-pairs.py OUTDIR A B: what xdpcost-ab measured, build B against A.

For every program, table and order: the median extra ns of each build over
the rounds, the median of the per-round differences B - A, and in how many
rounds B came out lower.
"""
import collections
import glob
import json
import os
import re
import statistics
import sys


def load(out, label):
    cells = collections.defaultdict(dict)
    for path in glob.glob(os.path.join(out, f"{glob.escape(label)}.*.json")):
        m = re.match(re.escape(label) + r"\.(\d+)\.", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            for row in json.load(f)["rows"]:
                if row["extra_ns"] is not None:
                    key = (row["program"], row["sessions"], row["macs"], row["order"])
                    cells[key][int(m.group(1))] = row["extra_ns"]
    return cells


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    out, a, b = sys.argv[1:]
    ca, cb = load(out, a), load(out, b)
    for key in sorted(ca):
        rounds = sorted(set(ca[key]) & set(cb.get(key, {})))
        if not rounds:
            continue
        diffs = [cb[key][r] - ca[key][r] for r in rounds]
        print(
            f"{key[0]:<13} {f'{key[1]}x{key[2]}':<13} {key[3]:<12} "
            f"{a} {statistics.median(ca[key].values()):+.0f}  "
            f"{b} {statistics.median(cb[key].values()):+.0f}  "
            f"{b}-{a} {statistics.median(diffs):+.1f}  "
            f"{b} lower in {sum(d < 0 for d in diffs)} of {len(diffs)}"
        )


if __name__ == "__main__":
    main()
