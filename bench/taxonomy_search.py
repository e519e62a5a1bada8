"""The greedy taxonomic search (analysis.taxonomy.search) on synthetic mart rows: wall time of
all 810 candidates (10 features x 3 quantiles, ordered pairs) in one process, and optionally the
same range cut into shards run by parallel worker processes, checking the shards concatenate
to exactly the unsharded frame.

    python bench/taxonomy_search.py [--rows 5000] [--workers 2] [--subsets 100] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import polars as pl

from analysis.taxonomy import best, search, synthetic


def _shard(args):
    rows, lo, hi, subsets = args
    return search(rows, lo, hi, n_subsets=subsets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--subsets", type=int, default=100)
    ap.add_argument("--workers", type=int, default=0, help="also run sharded over N processes (0: skip)")
    ap.add_argument("--protocol", default="published")
    ap.add_argument("--out", type=Path, default=None, help="write the timings as JSON here")
    args = ap.parse_args()

    rows = synthetic.rows(args.rows, seed=0)
    t0 = time.perf_counter()
    results = search(rows, protocol=args.protocol, n_subsets=args.subsets)
    serial = time.perf_counter() - t0
    evaluated = int((~results["skipped"]).sum())
    top = best(results)
    report = {
        "rows": args.rows,
        "memorised": int(rows["memorised"].sum()),
        "candidates": results.height,
        "evaluated": evaluated,
        "skipped": results.height - evaluated,
        "subsets": args.subsets,
        "protocol": args.protocol,
        "cpus": os.cpu_count(),
        "serial_s": round(serial, 2),
        "ms_per_evaluated_candidate": round(1000 * serial / max(evaluated, 1), 1),
        "best": f"{top['first_feature']}>=q{top['first_quantile']} then "
        f"{top['second_feature']}>=q{top['second_quantile']} (F1 {top['f1']:.4f})",
    }
    if args.workers:
        step = -(-results.height // (4 * args.workers))
        jobs = [
            (rows, lo, min(lo + step, results.height), args.subsets) for lo in range(0, results.height, step)
        ]
        t0 = time.perf_counter()
        # spawn, not fork: a forked child inherits polars' thread pool locks and can hang
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            sharded = pl.concat(list(pool.map(_shard, jobs)))
        report["sharded_workers"] = args.workers
        report["sharded_s"] = round(time.perf_counter() - t0, 2)
        report["sharded_equals_serial"] = sharded.equals(results)
    print("| " + " | ".join(report) + " |")
    print("|" + "---|" * len(report))
    print("| " + " | ".join(str(v) for v in report.values()) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
