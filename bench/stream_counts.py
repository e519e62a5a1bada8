"""Duplicate counts + token frequencies over an on-disk training stream, at two stream lengths.

Writes two Pythia-shaped Megatron streams (`document.bin/.idx`: uint16, 2,049-token rows,
approximately Zipfian ids over Pythia's 50,277-id vocabulary, with planted repeats: popular
32-token windows at random places and at the continuation offset of some rows, and copies of
popular whole rows); the short one is a prefix of the long one. The query panel is `--queries`
rows drawn from the short stream (so both hold them): their continuation windows (tokens
32..63) and whole rows. Each measurement runs in a fresh child process, whose peak RSS (VmHWM)
is reported:

  - stream:  `ingest.stream.open_stream` + `transforms.stream_tally.tally`: one pass over the
             memory-mapped file in chunks, one thread; at both lengths (its RSS must not follow the
             length) and as a floor, a child that loads the same modules and queries and counts
             nothing;
  - memory:  today's in-warehouse counter on the short stream: the whole stream in RAM as the
             int64 matrix `build_features` holds, then `continuation_duplicate_counts`,
             `sequence_duplicate_counts` and `token_counts` over its rows in data order
             (4,096-row gathers), as `build_features` does without `--stream`;
  - units:   the long stream through `ingest.stream_counts.count_stream` (shards as units, the
             local executor with `--workers` processes) on a warehouse holding the panel.

All counts must be identical. Throughput is tokens per CPU-second of the counting process (per
core); the extrapolation to the deduplicated Pile (207 B tokens; Pythia's stream is 146,432,000
rows x 2,049 = 300 B tokens) assumes the disks deliver 2 bytes per token at that rate. Results go
to bench/results/stream_counts.json; the streams are deleted unless --keep.

    nice python bench/stream_counts.py [--tokens 2e9] [--short 5e8] [--queries 16300] [--dir /tmp]
                                       [--workers 2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROW_LEN, VOCAB, P, K = 2049, 50_277, 32, 32
GEN_ROWS = 4096  # rows generated per block (seeded by block index: the short stream is a prefix)
PILE_DEDUPED, PYTHIA_STREAM = 207e9, 146_432_000 * ROW_LEN


def _blocks(rows: int, seed: int = 0):
    """[<=4096, 2049] uint16 blocks of the synthetic stream, block b a function of (seed, b) only."""
    base = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, VOCAB + 1))
    table = base.permutation(VOCAB).astype(np.uint16)[
        np.searchsorted(cdf / cdf[-1], (np.arange(1 << 20) + 0.5) / (1 << 20))
    ]
    motifs = base.integers(0, VOCAB, (256, K)).astype(np.uint16)  # popular windows
    weights = 1.0 / np.arange(1, 257) ** 1.2
    weights /= weights.sum()
    popular = table[base.integers(0, 1 << 20, (64, ROW_LEN))]  # popular whole rows
    for b, start in enumerate(range(0, rows, GEN_ROWS)):
        rng = np.random.default_rng([seed, b])
        n = min(GEN_ROWS, rows - start)
        block = table[rng.integers(0, 1 << 20, (n, ROW_LEN))]
        m = n // 8  # a popular window somewhere in one row of 8
        at_row, at_off = rng.integers(0, n, m), rng.integers(0, ROW_LEN - K + 1, m)
        block[at_row[:, None], at_off[:, None] + np.arange(K)] = motifs[rng.choice(256, m, p=weights)]
        cont = rng.integers(0, n, n // 64)  # ... and at the continuation offset of one row in 64
        block[cont, P : P + K] = motifs[rng.choice(256, len(cont), p=weights)]
        dup = rng.integers(0, n, max(1, n // 500))  # one row in 500 copies a popular row
        block[dup] = popular[rng.integers(0, 64, len(dup))]
        yield block


def _write(prefix: Path, tokens: float) -> tuple[Path, int]:
    from ingest.stream import open_stream, write_mmap_stream

    rows = int(-(-tokens // ROW_LEN))
    idx = prefix.with_suffix(".idx")
    if idx.exists() and open_stream(prefix).rows == rows:
        return idx, rows
    t0 = time.perf_counter()
    write_mmap_stream(prefix, _blocks(rows))
    print(
        f"wrote {prefix}.bin: {rows:,} rows, {rows * ROW_LEN / 1e9:.2f} B tokens "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return idx, rows


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM where there is /proc: ru_maxrss also counts the parent's
    resident memory at fork time (Linux carries it over exec), which is not this process's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------- children


def child(args) -> None:
    queries = np.load(args.queries_file)
    out: dict = {"impl": args.child, "peak_rss_after_setup_mib": _peak_rss_mib()}
    t0, c0 = time.perf_counter(), time.process_time()
    if args.child == "floor":
        from ingest.stream import open_stream  # noqa: F401
        from transforms.stream_tally import tally  # noqa: F401

        counts = None
    elif args.child == "stream":
        from ingest.stream import open_stream
        from transforms.stream_tally import tally

        s = open_stream(args.path)
        t = tally(s.chunks(chunk_rows=args.chunk_rows), windows=queries[:, P : P + K], rows=queries)
        counts = {"windows": t.windows, "rows": t.rows, "tokens": t.tokens[:VOCAB]}
        out["tokens"] = t.tokens_read
    elif args.child == "memory":
        from ingest.features import STREAM_CHUNK_ROWS
        from transforms.duplicates import continuation_duplicate_counts, sequence_duplicate_counts
        from transforms.frequencies import token_counts

        disk = np.memmap(Path(args.path).with_suffix(".bin"), dtype=np.uint16, mode="r").reshape(-1, ROW_LEN)
        train = np.empty(disk.shape, dtype=np.int64)  # the instances' tokens as build_features holds them
        for start in range(0, len(disk), GEN_ROWS):
            train[start : start + GEN_ROWS] = disk[start : start + GEN_ROWS]
        del disk
        order = np.arange(len(train))
        out["load_seconds"] = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        rows = queries.astype(np.int64)

        def rows_in_order():
            for start in range(0, len(order), STREAM_CHUNK_ROWS):
                yield train[order[start : start + STREAM_CHUNK_ROWS]]

        chunk = max(64, 65536 // ROW_LEN)
        counts = {
            "windows": continuation_duplicate_counts(
                rows[:, : P + K], rows_in_order(), offset=P, k=K, chunk_rows=chunk
            ),
            "rows": sequence_duplicate_counts(rows, rows_in_order(), chunk_rows=chunk),
            "tokens": token_counts(rows_in_order(), VOCAB),
        }
        out["tokens"] = int(train.size)
    else:  # units
        import pyarrow as pa

        from ingest.stream_counts import StreamSource, count_stream
        from memlake.core import lake
        from memlake.core.paths import Warehouse

        wh = Warehouse.at(args.warehouse)
        n = len(queries)
        lake.write_partition(
            wh,
            "instances",
            {
                "instance_id": np.load(args.queries_file.replace(".npy", "_ids.npy")),
                "split": ["train"] * n,
                "tokens": pa.ListArray.from_arrays(
                    np.arange(0, (n + 1) * ROW_LEN, ROW_LEN, dtype=np.int32),
                    pa.array(queries.reshape(-1).astype(np.int32)),
                ),
                "batch_idx": [0] * n,
                "cohort": [1] * n,
                "source": ["prose"] * n,
                "artifact": ["none"] * n,
                "copies": [1] * n,
                "clean_tokens": pa.nulls(n, pa.list_(pa.int32())),
            },
        )
        t0, c0 = time.perf_counter(), time.process_time()
        shards = args.workers * 2
        source = StreamSource(
            args.path, shards=shards, executor="local", executor_options=(("workers", args.workers),)
        )
        r = count_stream(wh, source, prompt_len=P, k=K)
        order = np.argsort(np.load(args.queries_file.replace(".npy", "_ids.npy")), kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        counts = {
            "windows": r.sequence_duplicates[back],
            "rows": r.whole_sequence_duplicates[back],
            "tokens": np.pad(r.token_counts, (0, VOCAB))[:VOCAB],
        }
        out.update(tokens=r.stream.tokens, shards=shards, workers=args.workers, unit_seconds=r.seconds)
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    out["peak_rss_mib"] = _peak_rss_mib()
    if counts is not None:
        np.savez(args.out_counts, **counts)
    print(json.dumps(out))


def run_child(impl: str, path: Path | None, queries: Path, out: Path, **extra) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        impl,
        "--queries-file",
        str(queries),
        "--out-counts",
        str(out),
    ]
    cmd += ["--path", str(path)] if path else []
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"child {impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same(a: Path, b: Path) -> bool:
    x, y = np.load(a), np.load(b)
    return all(np.array_equal(x[k], y[k]) for k in ("windows", "rows", "tokens"))


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=float, default=2e9, help="long stream (rounded up to whole rows)")
    ap.add_argument("--short", type=float, default=5e8, help="short stream (a prefix of the long one)")
    ap.add_argument("--queries", type=int, default=16_300, help="panel rows drawn from the short stream")
    ap.add_argument("--dir", default="/tmp", help="where the streams are written")
    ap.add_argument("--workers", type=int, default=2, help="local executor processes for the units run")
    ap.add_argument("--chunk-rows", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep the streams (a rerun reuses them)")
    ap.add_argument("--skip-memory", action="store_true", help="skip today's in-RAM counter")
    ap.add_argument("--child", choices=("floor", "stream", "memory", "units"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--queries-file", help=argparse.SUPPRESS)
    ap.add_argument("--out-counts", help=argparse.SUPPRESS)
    ap.add_argument("--warehouse", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    work = Path(args.dir) / "memlake-stream-bench"
    work.mkdir(parents=True, exist_ok=True)
    short_idx, short_rows = _write(work / "short" / "document", args.short)
    long_idx, long_rows = _write(work / "long" / "document", args.tokens)
    rng = np.random.default_rng(1)
    ids = np.sort(rng.choice(short_rows, args.queries, replace=False))
    from ingest.stream import open_stream

    s = open_stream(short_idx)
    queries, at = np.empty((len(ids), ROW_LEN), dtype=np.uint16), 0
    for chunk in s.chunks(chunk_rows=GEN_ROWS):  # the panel rows only: children start from a small parent
        take = ids[(ids >= at) & (ids < at + len(chunk))]
        queries[np.searchsorted(ids, take)] = chunk[take - at]
        at += len(chunk)
    qfile = work / "queries.npy"
    np.save(qfile, queries)
    np.save(work / "queries_ids.npy", ids.astype(np.int64))
    res: dict = {"queries": len(ids), "row_len": ROW_LEN, "vocab": VOCAB}

    res["floor"] = run_child("floor", None, qfile, work / "c_floor.npz")
    print(f"floor (modules + queries, no counting): peak RSS {res['floor']['peak_rss_mib']:.0f} MiB")
    for name, idx in (("short", short_idx), ("long", long_idx)):
        r = run_child("stream", idx, qfile, work / f"c_{name}.npz", chunk_rows=args.chunk_rows)
        r["tokens_per_cpu_second"] = r["tokens"] / r["cpu_seconds"]
        r["tokens_per_second"] = r["tokens"] / r["seconds"]
        res[f"stream_{name}"] = r
        print(
            f"stream {name}: {r['tokens'] / 1e9:.2f} B tokens, "
            f"{r['tokens_per_cpu_second'] / 1e6:.1f} M tok/CPU-s, "
            f"{r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    if not args.skip_memory:
        r = run_child("memory", short_idx, qfile, work / "c_memory.npz")
        r["tokens_per_cpu_second"] = r["tokens"] / r["cpu_seconds"]
        r["identical"] = same(work / "c_memory.npz", work / "c_short.npz")
        res["memory_short"] = r
        sr = res["stream_short"]
        r["ratio_stream_over_memory"] = sr["tokens_per_cpu_second"] / r["tokens_per_cpu_second"]
        print(
            f"memory short: {r['tokens_per_cpu_second'] / 1e6:.1f} M tok/CPU-s "
            f"(load {r['load_seconds']:.1f} s), "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB, identical={r['identical']}, "
            f"stream/memory throughput {r['ratio_stream_over_memory']:.2f}x"
        )
    wh = work / "wh"
    shutil.rmtree(wh, ignore_errors=True)
    r = run_child("units", long_idx, qfile, work / "c_units.npz", warehouse=wh, workers=args.workers)
    r["identical"] = same(work / "c_units.npz", work / "c_long.npz")
    r["tokens_per_second"] = r["tokens"] / r["seconds"]
    res["units_long"] = r
    print(
        f"units long: {r['shards']} shards on {r['workers']} workers, {r['seconds']:.1f} s wall, "
        f"{r['tokens_per_second'] / 1e6:.1f} M tok/s, "
        f"identical={r['identical']}"
    )

    per_core = res["stream_long"]["tokens_per_cpu_second"]
    res["extrapolation"] = {
        name: {
            "tokens": total,
            "one_node_16_cores_hours": total / (per_core * 16) / 3600,
            "read_gb_per_s_needed_per_node": per_core * 16 * 2 / 1e9,
            "slurm_tasks_hours": {n: total / (per_core * 16 * n) / 3600 for n in (8, 32, 128)},
        }
        for name, total in (("pile_deduped_207B", PILE_DEDUPED), ("pythia_stream_300B", PYTHIA_STREAM))
    }
    for name, e in res["extrapolation"].items():
        print(
            f"{name}: one 16-core node {e['one_node_16_cores_hours']:.2f} h (reading "
            f"{e['read_gb_per_s_needed_per_node']:.2f} GB/s); "
            + ", ".join(f"{n} tasks {h * 60:.1f} min" for n, h in e["slurm_tasks_hours"].items())
        )
    out = ROOT / "bench" / "results" / "stream_counts.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
