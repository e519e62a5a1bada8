"""Sequence-panel build throughput at Pythia shape, beside a bare DuckDB list_avg scan (the limit).

A synthetic `token_stats` lake of Pythia's panel shape (16,300 instances: 100 per cohort plus
2,000 never-treated; N checkpoints; 2,048 scored positions of float32/int32 lists) is written
in the lake layout with `lake.write_partition`. Then, interleaved, `--repeats` times:
  - bare:   one DuckDB connection, the same settings, `list_avg` of the three lists per row of
            the same files into a table (decode + one pass per list: the limit);
  - memlake: `dbt run --select +sequence_panel` (staging/intermediate views, the external mart:
            aggregation, joins, Parquet file); timed as the mart node's execution time from
            run_results.json, and end to end (dbt start-up and parsing included).
Throughput is token values aggregated per second (rows x positions x 3 lists / seconds); the
ratio memlake/bare is the share of the limit the panel build keeps. Peak RSS per process.

    python bench/panel_build.py [--checkpoints 8] [--instances 16300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from memlake.core import lake
from memlake.core.paths import REPO_ROOT, Warehouse

VALIDATION = 2000  # never-treated rows, as the profiles paper's panel
STEP = 1000


def write_lake(wh: Warehouse, n_instances: int, n_checkpoints: int, positions: int, shards: int) -> int:
    """instances, checkpoints and token_stats of one synthetic model; returns token_stats rows."""
    rng = np.random.default_rng(0)
    n_train = n_instances - VALIDATION
    steps = [STEP * i for i in range(n_checkpoints)]
    cohorts = np.array(steps[1:] or [STEP])[np.arange(n_train) % max(1, len(steps) - 1)]
    ids = np.arange(n_instances)
    lake.write_partition(
        wh,
        "instances",
        {
            "instance_id": ids,
            "split": ["train"] * n_train + ["validation"] * VALIDATION,
            "tokens": lake.list_column(rng.integers(2, 50_000, (n_instances, positions + 1), dtype=np.int32)),
            "batch_idx": pa.array(list(range(n_train)) + [None] * VALIDATION, pa.int64()),
            "cohort": pa.array(cohorts.tolist() + [None] * VALIDATION, pa.int64()),
            "source": ["prose"] * n_instances,
            "artifact": ["none"] * n_instances,
            "copies": np.ones(n_instances, np.int32),
            "clean_tokens": pa.nulls(n_instances, lake.TOKENS),
        },
    )
    lake.write_partition(
        wh,
        "checkpoints",
        {
            "step": steps,
            "path": [f"synthetic/step{s}" for s in steps],
            "lr": [1e-3] * len(steps),
            "tokens_seen": [s * 2_097_152 for s in steps],
            "epoch": [s / 95_300 for s in steps],
            "train_loss": [3.0] * len(steps),
        },
        {"model": "pythia-synthetic"},
    )
    for step in steps:
        for shard, sel in enumerate(np.array_split(ids, shards)):
            n = len(sel)
            # surprisal/entropy in nats, ranks mostly small with ~40 % top-1 (a trained model)
            sup = rng.gamma(1.2, 2.5, (n, positions)).astype(np.float32)
            rank = np.where(rng.random((n, positions)) < 0.4, 0, rng.geometric(0.05, (n, positions)))
            ent = rng.gamma(2.0, 1.2, (n, positions)).astype(np.float32)
            lake.write_partition(
                wh,
                "token_stats",
                pa.table(
                    {
                        "instance_id": sel,
                        "surprisal": lake.list_column(sup),
                        "rank": lake.list_column(rank.astype(np.int32)),
                        "entropy": lake.list_column(ent),
                    }
                ),
                {"model": "pythia-synthetic", "step": step, "shard": shard},
            )
    return n_instances * len(steps)


def _wait(proc: subprocess.Popen) -> tuple[int, float]:
    """Exit code and peak RSS (GiB) of one child process."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 2**20


BARE = """
import duckdb, json, sys, time
glob, memory_limit, temp_directory = sys.argv[1:4]
con = duckdb.connect()
con.execute(f"set memory_limit = '{memory_limit}'")
con.execute(f"set temp_directory = '{temp_directory}'")
con.execute("set preserve_insertion_order = false")
t0 = time.perf_counter()
con.execute(
    "create table limit_scan as select instance_id, list_avg(surprisal) as s, list_avg(rank) as r, "
    f"list_avg(entropy) as e from read_parquet('{glob}', hive_partitioning = true)"
)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def bare_scan(wh: Warehouse, memory_limit: str) -> dict:
    glob = str(wh.table("token_stats") / "*" / "*" / "*" / "*.parquet")
    tmp = str(wh.root / "duckdb_tmp")
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE, glob, memory_limit, tmp], stdout=subprocess.PIPE, text=True
    )
    out = proc.stdout.read()
    code, rss = _wait(proc)
    if code:
        raise SystemExit(f"bare scan failed (exit {code})")
    return {"seconds": json.loads(out.splitlines()[-1])["seconds"], "rss_gib": rss}


def dbt_panel(wh: Warehouse, target: Path, memory_limit: str) -> dict:
    exe = Path(sys.executable).parent / "dbt"
    cmd = [
        str(exe),
        "run",
        "--quiet",
        "--select",
        "+sequence_panel",
        "--project-dir",
        str(REPO_ROOT),
        "--profiles-dir",
        str(REPO_ROOT),
        "--target-path",
        str(target),
        "--log-path",
        str(target / "logs"),
    ]
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root), "MEMLAKE_DUCKDB_MEMORY_LIMIT": memory_limit}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)
    code, rss = _wait(proc)
    wall = time.perf_counter() - t0
    if code:
        raise SystemExit(f"dbt run failed (exit {code}); logs in {target / 'logs'}")
    results = json.loads((target / "run_results.json").read_text())["results"]
    node = next(r for r in results if r["unique_id"] == "model.memlake.sequence_panel")
    return {"seconds": node["execution_time"], "wall_seconds": wall, "rss_gib": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=16_300)
    ap.add_argument("--checkpoints", type=int, default=8)
    ap.add_argument("--positions", type=int, default=2048)
    ap.add_argument("--shards", type=int, default=2, help="token_stats partitions per checkpoint")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-limit", default="8GB", help="DuckDB memory_limit for both sides")
    ap.add_argument("--root", type=Path, default=None, help="where to write the synthetic lake (temp)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic lake")
    args = ap.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="bench-panel-"))
    wh = Warehouse.at(root)
    target = root / "dbt-target"
    try:
        t0 = time.perf_counter()
        rows = write_lake(wh, args.instances, args.checkpoints, args.positions, args.shards)
        size = sum(p.stat().st_size for p in wh.table("token_stats").rglob("*.parquet"))
        print(
            f"lake: {rows:,} token_stats rows, {size / 2**30:.2f} GiB, written in "
            f"{time.perf_counter() - t0:.0f}s -> {root}",
            flush=True,
        )
        values = rows * args.positions * 3
        bare_scan(wh, args.memory_limit)  # warm the page cache
        runs = {"bare": [], "memlake": []}
        for i in range(args.repeats):
            runs["bare"].append(bare_scan(wh, args.memory_limit))
            runs["memlake"].append(dbt_panel(wh, target, args.memory_limit))
            b, m = runs["bare"][-1], runs["memlake"][-1]
            print(
                f"repeat {i + 1}: bare {b['seconds']:.2f}s  sequence_panel {m['seconds']:.2f}s "
                f"(dbt run end to end {m['wall_seconds']:.2f}s)",
                flush=True,
            )
        best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
        median = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        result = {
            "instances": args.instances,
            "checkpoints": args.checkpoints,
            "positions": args.positions,
            "shards": args.shards,
            "rows": rows,
            "token_values": values,
            "lake_gib": size / 2**30,
            "memory_limit": args.memory_limit,
            "threads": os.cpu_count(),
            "bare_values_per_s": values / best["bare"],
            "memlake_values_per_s": values / best["memlake"],
            "ratio": best["bare"] / best["memlake"],
            "ratio_median": median["bare"] / median["memlake"],
            "end_to_end_values_per_s": values / min(r["wall_seconds"] for r in runs["memlake"]),
            "peak_rss_gib": {k: max(r["rss_gib"] for r in v) for k, v in runs.items()},
            "runs": runs,
        }
        out = Path(__file__).parent / "results"
        out.mkdir(exist_ok=True)
        (out / "panel_build.json").write_text(json.dumps(result, indent=2))
        r = result
        print(
            "\n| instances × checkpoints × positions | token values | bare list_avg scan | "
            "sequence_panel (dbt node) | ratio | dbt run end to end | peak RSS bare / dbt |"
        )
        print("|---|---|---|---|---|---|---|")
        print(
            f"| {r['instances']:,} × {r['checkpoints']} × {r['positions']} | {values / 1e9:.2f} B | "
            f"{r['bare_values_per_s'] / 1e6:.0f} M/s | {r['memlake_values_per_s'] / 1e6:.0f} M/s | "
            f"{r['ratio']:.2f} (median {r['ratio_median']:.2f}) | "
            f"{r['end_to_end_values_per_s'] / 1e6:.0f} M/s | "
            f"{r['peak_rss_gib']['bare']:.1f} / {r['peak_rss_gib']['memlake']:.1f} GiB |"
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
