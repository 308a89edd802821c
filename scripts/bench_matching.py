#!/usr/bin/env python3
"""Compare `crm-sync match --all-pairs` and crm-core's all-pairs matching with rapidfuzz.

In one run, on the files written by the crm-core ``matching`` bench
(``cargo bench -p crm-core --bench matching``; ``--generate`` runs it):

1. times the release binary ``crm-sync match --all-pairs`` (a child process:
   CSV reading, ``FuzzyIndex::new``, ``FuzzyIndex::all_pairs`` and CSV
   writing; wall clock and peak RSS) on ``*_normalized.csv``;
2. times rapidfuzz's ``process.cdist(scorer=fuzz.ratio, score_cutoff=85,
   workers=-1)`` on the same files;
3. compares rapidfuzz's pair set with crm-sync's, and with the bench's
   ``pairs_rust.csv`` (crm-core in-process) when it is there.

``--skip-crm-sync`` leaves step 1 out (the comparison is then with
``pairs_rust.csv`` alone).

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
import subprocess
import sys
import time

import numpy as np
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Indel


def read_names(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:]], [r[1] for r in rows[1:]]


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def read_pairs(path, b_index, c_index):
    """(booking index, campaign index) pairs of a ``booking_id,campaign_id,...`` CSV."""
    out = set()
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows, None)
        for row in rows:
            if row[0] in b_index:
                out.add((b_index[row[0]], c_index[row[1]]))
    return out


def run_crm_sync(binary, args, bookings_path, campaigns_path):
    """Runs `crm-sync match --all-pairs` once; returns its timing and output path."""
    out_path = os.path.join(args.dir, "pairs_crm_sync.csv")
    if args.limit:
        # The same first N bookings as rapidfuzz gets.
        limited = os.path.join(args.dir, f"bookings_normalized_first_{args.limit}.csv")
        with open(bookings_path, newline="", encoding="utf-8") as src, open(
            limited, "w", newline="", encoding="utf-8"
        ) as dst:
            for i, line in enumerate(src):
                if i > args.limit:
                    break
                dst.write(line)
        bookings_path = limited
    cmd = [
        binary,
        "match",
        "--bookings",
        bookings_path,
        "--campaigns",
        campaigns_path,
        "--all-pairs",
        "--threshold",
        f"{args.cutoff / 100:.2f}",
        "--out",
        out_path,
    ]
    load_start = loadavg()
    samples = [load_start[0]]
    err_path = os.path.join(args.dir, "crm_sync_stderr.txt")
    with open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        # os.wait4 gives this child's own resource usage (peak RSS).
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            time.sleep(0.05)
            if time.perf_counter() - t0 >= len(samples):
                samples.append(loadavg()[0])
        elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    load_end = loadavg()
    samples.append(load_end[0])
    if proc.returncode != 0:
        with open(err_path) as f:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {f.read().strip()}")
    peak_kib = usage.ru_maxrss  # KiB on Linux
    return {
        "command": " ".join(cmd),
        "wall_s": round(elapsed, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "load_1min_min_max": [min(samples), max(samples)],
        "out": out_path,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="target/bench-matching")
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--cutoff", type=int, default=85)
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N bookings (0: all)")
    ap.add_argument(
        "--crm-sync",
        default="target/release/crm-sync",
        help="the crm-sync binary (build it with `cargo build --release -p crm-sync`)",
    )
    ap.add_argument("--skip-crm-sync", action="store_true", help="do not run crm-sync")
    ap.add_argument(
        "--generate",
        action="store_true",
        help="first write the files with `cargo bench -p crm-core --bench matching`",
    )
    args = ap.parse_args()

    if args.generate:
        subprocess.run(
            [
                "cargo",
                "bench",
                "-p",
                "crm-core",
                "--bench",
                "matching",
                "--",
                "--dir",
                os.path.abspath(args.dir),
            ],
            check=True,
        )
    bookings_path = os.path.join(args.dir, "bookings_normalized.csv")
    campaigns_path = os.path.join(args.dir, "campaigns_normalized.csv")
    for p in (bookings_path, campaigns_path):
        if not os.path.exists(p):
            sys.exit(
                f"{p} is missing: run `cargo bench -p crm-core --bench matching -- --dir "
                f"\"$PWD/{args.dir}\"` first, or pass --generate"
            )
    b_ids, bookings = read_names(bookings_path)
    c_ids, campaigns = read_names(campaigns_path)
    if args.limit:
        b_ids, bookings = b_ids[: args.limit], bookings[: args.limit]

    crm_sync = None
    if not args.skip_crm_sync:
        if not os.access(args.crm_sync, os.X_OK):
            sys.exit(
                f"{args.crm_sync} is not an executable: build it with "
                "`cargo build --release -p crm-sync`, pass --crm-sync PATH or --skip-crm-sync"
            )
        crm_sync = run_crm_sync(args.crm_sync, args, bookings_path, campaigns_path)

    load_start = os.getloadavg()
    rf_samples = [load_start[0]]
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
        rf_samples.append(os.getloadavg()[0])
    elapsed = time.perf_counter() - t0
    load_end = os.getloadavg()

    b_index = {b: i for i, b in enumerate(b_ids)}
    c_index = {c: i for i, c in enumerate(c_ids)}
    rust_path = os.path.join(args.dir, "pairs_rust.csv")
    rust = read_pairs(rust_path, b_index, c_index) if os.path.exists(rust_path) else None
    cli = read_pairs(crm_sync["out"], b_index, c_index) if crm_sync else None

    def exact(pair):
        a, b = bookings[pair[0]], campaigns[pair[1]]
        total = len(a) + len(b)
        lcs2 = total - Indel.distance(a, b)  # 2 * LCS
        return lcs2 * 100 >= args.cutoff * total

    def compare(other):
        only_rf = pairs - other
        only_other = other - pairs
        return {
            "pairs": len(other),
            "equal": pairs == other,
            "only_rapidfuzz": len(only_rf),
            "only_rapidfuzz_exactly_passing": sum(map(exact, only_rf)),
            "only_this_side": len(only_other),
            "only_this_side_exactly_passing": sum(map(exact, only_other)),
        }

    report = {
        "bookings": len(bookings),
        "campaigns": len(campaigns),
        "bookings_with_a_pair": len({b for b, _ in pairs}),
        "rapidfuzz_version": __import__("rapidfuzz").__version__,
        "rapidfuzz_cdist_s": round(elapsed, 3),
        "rapidfuzz_pairs": len(pairs),
        "rapidfuzz_load_average_start": [round(x, 2) for x in load_start],
        "rapidfuzz_load_average_end": [round(x, 2) for x in load_end],
        "rapidfuzz_load_1min_min_max": [round(min(rf_samples), 2), round(max(rf_samples), 2)],
        "chunk": args.chunk,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    equal = True
    if crm_sync is not None:
        c = compare(cli)
        equal &= c["equal"]
        crm_sync.update(c)
        if crm_sync["wall_s"] > 0:
            crm_sync["rapidfuzz_over_crm_sync"] = round(elapsed / crm_sync["wall_s"], 1)
        report["crm_sync"] = crm_sync
    if rust is not None:
        r = compare(rust)
        equal &= r["equal"]
        rust_json = os.path.join(args.dir, "rust.json")
        if os.path.exists(rust_json):
            with open(rust_json) as f:
                r["bench"] = json.load(f)
            total = r["bench"].get("total_s", 0)
            if total > 0:
                r["rapidfuzz_over_crm_core"] = round(elapsed / total, 1)
                r["note"] = (
                    "crm-core's time is the bench's, measured when it wrote the files "
                    "(see its load_average_*), not in this run"
                )
        report["crm_core_bench"] = r
    if crm_sync is None and rust is None:
        sys.exit("nothing to compare with: no crm-sync run and no pairs_rust.csv")
    report["all_equal"] = equal
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
