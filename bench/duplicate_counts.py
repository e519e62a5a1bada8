"""Continuation 32-gram duplicate counts (tokens/s): transforms.duplicates vs a DuckDB window-hash join.

A synthetic Pythia-shaped stream (rows of 2049 tokens, ~50k vocabulary, Zipfian token draws)
with planted duplicates: some continuation windows copied to many random (row, offset)
positions (a heavy-tailed number of times) and some whole rows copied. The queries are the
first 64 tokens of a random share of the rows plus a few rows from outside the stream (count 0),
as the paper's samples. Both sides count, for every query, the stream windows equal to its
tokens 32..63, on data already in memory (numpy array / DuckDB table), and must agree exactly:

  - memlake: `transforms.duplicates.continuation_duplicate_counts` (rolling uint64 hash of every
             window, bit-table filter, exact verification), with `--threads` threads;
  - duckdb:  the straightforward SQL: a long (row_id, pos, tok) table, the 32 tokens of every
             window gathered with lead() over token positions, hash() of them joined to the
             query hashes with token-by-token equality, count per query (`--duckdb-variant
             list` gathers them with a list() window aggregate instead; slower).

The goal is memlake >= 10x DuckDB in throughput (same thread count); the ratio of process CPU
times is printed too, as it is less sensitive to other load on the machine. The peak working
memory of memlake's count (tracemalloc, outside the timed runs) shows that it does not grow with
the stream. Results go to bench/results/duplicate_counts.json.

    python bench/duplicate_counts.py [--tokens 50000000] [--query-frac 0.05] [--threads 2]
                                     [--duckdb-variant lead|list] [--duckdb-memory 8GB] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from transforms.duplicates import continuation_duplicate_counts

ROW_LEN, VOCAB, OFFSET, K = 2049, 50_304, 32, 32


def synthetic_stream(n_tokens: int, query_frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[R, 2049] uint16 rows (Zipf(1.0) token draws, planted duplicates) and the query rows' 64 tokens.

    A quarter of the query rows have their continuation window copied a Pareto number of times
    (up to 5,000) to random (row, offset) positions; 0.5% of the rows are overwritten by copies
    of other rows (half of them query rows). Queries are read after planting, so each finds
    itself; 16 random rows from outside the stream are added (count 0).
    """
    rng = np.random.default_rng(seed)
    rows = max(2, -(-n_tokens // ROW_LEN))
    cdf = np.cumsum(1.0 / np.arange(1, VOCAB + 1))
    cdf /= cdf[-1]
    ids = rng.permutation(VOCAB).astype(np.uint16)  # frequent tokens are not the low ids
    stream = np.empty((rows, ROW_LEN), dtype=np.uint16)
    for s in range(0, rows, 1024):
        block = stream[s : s + 1024]
        block[:] = ids[np.searchsorted(cdf, rng.random(block.shape))]
    query_rows = np.sort(rng.choice(rows, max(1, int(rows * query_frac)), replace=False))
    src = rng.choice(query_rows, max(1, len(query_rows) // 4), replace=False)
    windows = stream[src, OFFSET : OFFSET + K].copy()
    copies = np.minimum((rng.pareto(1.0, len(src)) * 5).astype(np.int64), 5000)
    which = np.repeat(np.arange(len(src)), copies)
    at_row = rng.integers(0, rows, len(which))
    at_off = rng.integers(0, ROW_LEN - K + 1, len(which))
    stream[at_row[:, None], at_off[:, None] + np.arange(K)] = windows[which]
    n_dup = max(2, rows // 200)
    originals = np.concatenate([rng.choice(query_rows, n_dup // 2), rng.choice(rows, n_dup - n_dup // 2)])
    stream[rng.choice(rows, n_dup, replace=False)] = stream[originals]
    outside = rng.integers(0, VOCAB, (16, 64)).astype(np.uint16)
    return stream, np.concatenate([stream[query_rows, :64], outside])


def duckdb_sql(variant: str) -> str:
    if variant == "list":
        return f"""
WITH qh AS (SELECT qid, win, hash(win) AS h FROM q),
w AS (SELECT row_id, list(tok) OVER (PARTITION BY row_id ORDER BY pos
                                     ROWS BETWEEN CURRENT ROW AND {K - 1} FOLLOWING) AS win FROM t),
wh AS (SELECT row_id, win, hash(win) AS h FROM w WHERE len(win) = {K})
SELECT q.qid, count(w.row_id) AS n FROM qh q LEFT JOIN wh w ON w.h = q.h AND w.win = q.win
GROUP BY q.qid ORDER BY q.qid"""
    leads = ", ".join(f"lead(tok, {i}) OVER w AS t{i}" for i in range(1, K))
    cols = ", ".join(["tok"] + [f"t{i}" for i in range(1, K)])
    qcols = ", ".join(f"win[{i + 1}] AS c{i}" for i in range(K))
    same = " AND ".join(["w.tok = q.c0"] + [f"w.t{i} = q.c{i}" for i in range(1, K)])
    return f"""
WITH qc AS (SELECT qid, {qcols} FROM q),
qh AS (SELECT *, hash({", ".join(f"c{i}" for i in range(K))}) AS h FROM qc),
w AS (SELECT row_id, tok, {leads} FROM t WINDOW w AS (PARTITION BY row_id ORDER BY pos)),
wh AS (SELECT *, hash({cols}) AS h FROM w WHERE t{K - 1} IS NOT NULL)
SELECT q.qid, count(w.row_id) AS n FROM qh q LEFT JOIN wh w ON w.h = q.h AND {same}
GROUP BY q.qid ORDER BY q.qid"""


def load_duckdb(stream: np.ndarray, queries: np.ndarray, threads: int, memory: str, tmp: str):
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET memory_limit = '{memory}'")
    con.execute(f"SET temp_directory = '{tmp}'")
    con.execute("SET preserve_insertion_order = false")
    rows = stream.shape[0]
    long = pa.table(
        {
            "row_id": np.repeat(np.arange(rows, dtype=np.int32), ROW_LEN),
            "pos": np.tile(np.arange(ROW_LEN, dtype=np.int16), rows),
            "tok": stream.reshape(-1),
        }
    )
    win = queries[:, OFFSET : OFFSET + K]
    q = pa.table(
        {
            "qid": np.arange(len(queries), dtype=np.int32),
            "win": pa.FixedSizeListArray.from_arrays(pa.array(win.reshape(-1)), K),
        }
    )
    con.register("t_arrow", long)
    con.register("q_arrow", q)
    con.execute("CREATE TABLE t AS SELECT * FROM t_arrow")
    con.execute("CREATE TABLE q AS SELECT qid, win::USMALLINT[] AS win FROM q_arrow")
    con.unregister("t_arrow")
    con.unregister("q_arrow")
    return con


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=50_000_000, help="stream size (rounded up to whole rows)")
    ap.add_argument("--query-frac", type=float, default=0.05, help="share of rows taken as queries")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for both sides")
    ap.add_argument("--duckdb-variant", choices=("lead", "list"), default="lead")
    ap.add_argument("--duckdb-memory", default="8GB")
    ap.add_argument("--repeats", type=int, default=3, help="memlake runs (fastest kept); DuckDB runs once")
    ap.add_argument("--skip-duckdb", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    stream, queries = synthetic_stream(args.tokens, args.query_frac)
    n_tok = stream.size
    print(f"stream {stream.shape[0]:,} x {ROW_LEN} = {n_tok:,} tokens, {len(queries):,} queries "
          f"(built in {time.perf_counter() - t0:.1f}s)", flush=True)  # fmt: skip

    continuation_duplicate_counts(queries, stream[:64], threads=args.threads)  # warm-up
    ours_s, ours_cpu = {}, {}
    for threads in sorted({1, args.threads}):
        best = best_cpu = float("inf")
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            ours = continuation_duplicate_counts(queries, stream, threads=threads)
            best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
        ours_s[threads], ours_cpu[threads] = best, best_cpu
        print(
            f"memlake  threads={threads}: {best:.2f}s (CPU {best_cpu:.2f}s) {n_tok / best / 1e6:.1f} M tok/s",
            flush=True,
        )
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the peak is the working memory
    continuation_duplicate_counts(queries, stream, threads=args.threads)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"memlake  peak working memory {peak_mib:.1f} MiB (stream itself: {stream.nbytes / 2**20:.0f} MiB)")

    row = {
        "tokens": int(n_tok),
        "rows": int(stream.shape[0]),
        "queries": len(queries),
        "threads": args.threads,
        "memlake_s": ours_s[args.threads],
        "memlake_cpu_s": ours_cpu[args.threads],
        "memlake_tok_s": n_tok / ours_s[args.threads],
        "memlake_1thread_tok_s": n_tok / ours_s[1],
        "memlake_peak_mib": peak_mib,
        "max_count": int(ours.max()),
        "zero_counts": int((ours == 0).sum()),
    }
    assert (ours[: len(queries) - 16] >= 1).all(), "a query row from the stream must find itself"
    if not args.skip_duckdb:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            con = load_duckdb(stream, queries, args.threads, args.duckdb_memory, tmp)
            load_s = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            res = con.execute(duckdb_sql(args.duckdb_variant)).fetchnumpy()
            duck_s, duck_cpu = time.perf_counter() - t0, time.process_time() - c0
            con.close()
        ref = np.zeros(len(queries), dtype=np.int64)
        ref[res["qid"]] = res["n"]
        mismatches = int((ref != ours).sum())
        print(
            f"duckdb ({args.duckdb_variant}) threads={args.threads}: {duck_s:.2f}s (CPU {duck_cpu:.2f}s) "
            f"{n_tok / duck_s / 1e6:.2f} M tok/s (load {load_s:.1f}s), mismatches {mismatches}",
            flush=True,
        )
        assert mismatches == 0, "memlake and DuckDB counts differ"
        row |= {
            "duckdb_variant": args.duckdb_variant,
            "duckdb_s": duck_s,
            "duckdb_cpu_s": duck_cpu,
            "duckdb_load_s": load_s,
            "duckdb_tok_s": n_tok / duck_s,
            "ratio": duck_s / ours_s[args.threads],
            "cpu_time_ratio": duck_cpu / ours_cpu[args.threads],
            "counts_equal": True,
        }

    path = Path(__file__).parent / "results" / "duplicate_counts.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(row, indent=2))

    duck = (
        f"{row['duckdb_tok_s'] / 1e6:,.2f} | {row['ratio']:,.0f}x ({row['cpu_time_ratio']:,.0f}x) "
        f"| {row['counts_equal']}"
        if "ratio" in row
        else "— | — | —"
    )
    print(
        "\n| tokens | rows x 2049 | queries | threads | memlake M tok/s (1 thread) | memlake peak MiB "
        "| DuckDB M tok/s | ratio wall (CPU time) | counts equal | max count |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {row['tokens'] / 1e6:,.1f}M | {row['rows']:,} | {row['queries']:,} | {row['threads']} | "
        f"{row['memlake_tok_s'] / 1e6:,.1f} ({row['memlake_1thread_tok_s'] / 1e6:,.1f}) | "
        f"{row['memlake_peak_mib']:,.0f} | {duck} | {row['max_count']:,} |"
    )


if __name__ == "__main__":
    main()
