#!/usr/bin/env python3
"""Compare crm-core's all-pairs campaign matching with rapidfuzz.

Runs rapidfuzz's ``process.cdist(scorer=fuzz.ratio, score_cutoff=85,
workers=-1)`` on the files written by the crm-core ``matching`` bench
(``cargo bench -p crm-core --bench matching``) and compares the pair set with
the bench's ``pairs_rust.csv``.

What is compared: both sides score the *normalised* names
(``*_normalized.csv``: crm_core::matching::normalize applied to the raw
names: NFKD, accents removed, lower case, punctuation to spaces, spaces
collapsed). rapidfuzz is given them with ``processor=None``, so it scores
exactly the same strings with ``fuzz.ratio`` = 100 * 2 * LCS / (len1 + len2),
which is crm-core's default metric. Threshold: score >= 85 (0.85).

Memory: a full 100,000 x 100,000 score matrix would be 10 GB even as uint8,
so the queries are processed in chunks of ``--chunk`` rows (default 1,000:
one 1,000 x 100,000 uint8 matrix, 100 MB, at a time); each chunk's non-zero
cells (cdist writes 0 below the cut-off) are turned into pairs and the matrix
is dropped. Only cdist and the non-zero scan are timed, not file reading.

Pairs found by only one side are re-checked with integer arithmetic
(rapidfuzz's ``Indel.distance`` is an integer: LCS = (len1 + len2 - dist) / 2),
to say which side is right about each.
"""

import argparse
import csv
import json
import os
import platform
import sys
import time

import numpy as np
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Indel


def read_names(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:]], [r[1] for r in rows[1:]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="target/bench-matching")
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--cutoff", type=int, default=85)
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N bookings (0: all)")
    args = ap.parse_args()

    b_ids, bookings = read_names(os.path.join(args.dir, "bookings_normalized.csv"))
    c_ids, campaigns = read_names(os.path.join(args.dir, "campaigns_normalized.csv"))
    if args.limit:
        b_ids, bookings = b_ids[: args.limit], bookings[: args.limit]

    load_start = os.getloadavg()
    pairs = set()
    t0 = time.perf_counter()
    for start in range(0, len(bookings), args.chunk):
        block = bookings[start : start + args.chunk]
        m = process.cdist(
            block,
            campaigns,
            scorer=fuzz.ratio,
            processor=None,
            score_cutoff=args.cutoff,
            dtype=np.uint8,
            workers=args.workers,
        )
        rows, cols = np.nonzero(m)
        pairs.update(zip((rows + start).tolist(), cols.tolist()))
        del m
    elapsed = time.perf_counter() - t0
    load_end = os.getloadavg()

    rust = set()
    rust_path = os.path.join(args.dir, "pairs_rust.csv")
    b_index = {b: i for i, b in enumerate(b_ids)}
    c_index = {c: i for i, c in enumerate(c_ids)}
    with open(rust_path, newline="") as f:
        for row in list(csv.reader(f))[1:]:
            if row[0] in b_index:
                rust.add((b_index[row[0]], c_index[row[1]]))

    def exact(pair):
        a, b = bookings[pair[0]], campaigns[pair[1]]
        total = len(a) + len(b)
        lcs2 = total - Indel.distance(a, b)  # 2 * LCS
        return lcs2 * 100 >= args.cutoff * total

    only_rf = pairs - rust
    only_rust = rust - pairs
    report = {
        "bookings": len(bookings),
        "campaigns": len(campaigns),
        "rapidfuzz_version": __import__("rapidfuzz").__version__,
        "rapidfuzz_cdist_s": round(elapsed, 3),
        "rapidfuzz_pairs": len(pairs),
        "rust_pairs": len(rust),
        "equal": pairs == rust,
        "only_rapidfuzz": len(only_rf),
        "only_rapidfuzz_exactly_passing": sum(map(exact, only_rf)),
        "only_rust": len(only_rust),
        "only_rust_exactly_passing": sum(map(exact, only_rust)),
        "chunk": args.chunk,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "python": platform.python_version(),
    }
    rust_json = os.path.join(args.dir, "rust.json")
    if os.path.exists(rust_json):
        with open(rust_json) as f:
            r = json.load(f)
        report["rust_total_s"] = r["total_s"]
        if r["total_s"] > 0:
            report["speedup"] = round(elapsed / r["total_s"], 1)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0 if pairs == rust else 1


if __name__ == "__main__":
    sys.exit(main())
