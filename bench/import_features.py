"""Importing the taxonomy paper's published features (`memlake ingest import semantic-filters`).

A split shaped like `usvsnsp/semantic-filters` is written to a temporary folder laid out as the
Hub repo (`data/pile_deduped_12b-00000-of-00001.parquet`: the released columns and types, row
groups of at most ~100 MB as `datasets` writes them, Pythia-size token ids, 64-token samples of
distinct stream rows). It is imported into an empty warehouse by a child process, which
writes `instances`, `instance_features`, `extraction` and `published_perplexities`; reported
are rows/s over the import's wall time and the child's peak resident memory (ru_maxrss), beside
the peak of a child that only imports the modules (the interpreter + pyarrow + numpy floor).
Results go to bench/results/import_features.json.

    python bench/import_features.py [--rows 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# the released files' schema (this process writes them; the measured child does the import)
from ingest.hub_import.semantic_filters import RELEASE_SCHEMA  # noqa: E402
from memlake.core import lake  # noqa: E402

VOCAB = 50_277  # Pythia's tokenizer
STREAM_ROWS = 146_432_000
ROW_GROUP_BYTES = 100 << 20  # `datasets`' row-group target

SCHEMA = RELEASE_SCHEMA


def chunk(ids: np.ndarray, rng: np.random.Generator, words: pa.Array, corpus_freq: np.ndarray) -> pa.Table:
    """Released-shaped rows for `ids`: consistent statistics, nested match counts."""
    n = len(ids)
    tokens = rng.integers(0, VOCAB, (n, 64))
    freqs = corpus_freq[tokens]
    ordered = np.sort(freqs, axis=1)
    text = pc.binary_join(
        lake.list_column(np.asarray(words.take(pa.array(tokens.ravel())))[None].reshape(n, 64)), " "
    )
    semantic_8 = rng.integers(1, 40, n)
    semantic_9 = rng.integers(0, semantic_8 + 1)
    textual_8 = rng.integers(0, semantic_8 + 1)
    textual_9 = np.minimum(rng.integers(0, textual_8 + 1), semantic_9)
    prompt, generation = rng.uniform(1, 40, n), rng.uniform(1, 20, n)
    score = np.where(rng.random(n) < 0.01, 1.0, rng.integers(0, 32, n) / 32)
    return pa.table(
        {
            "sequence_id": ids,
            "loss": np.full(n, 2.3, np.float32),
            "prompt_perplexity": prompt.astype(np.float32),
            "generation_perplexity": generation.astype(np.float32),
            "sequence_perplexity": (prompt * generation).astype(np.float32),
            "text": text,
            "is_incrementing": rng.random(n) < 0.02,
            "is_repeating": rng.random(n) < 0.01,
            "sequence_duplicates": rng.zipf(1.8, n),
            "max_frequency": ordered[:, -1],
            "avg_frequency": freqs.mean(axis=1),
            "min_frequency": ordered[:, 0],
            "median_frequency": np.median(ordered, axis=1),
            "p25_frequency": ordered[:, 16],
            "p75_frequency": ordered[:, 48],
            "frequencies": lake.list_column(freqs),
            "tokens": lake.list_column(tokens),
            "repeating_offset": np.zeros(n, np.int32),
            "num_repeating": np.zeros(n, np.int32),
            "smallest_repeating_chunk": pa.array([[]] * n, pa.list_(pa.int64())),
            "nl_scores": rng.random(n).astype(np.float32),
            "0_8_snowclones": semantic_8,
            "0_9_snowclones": semantic_9,
            "0_8_templates": textual_8,
            "0_9_templates": textual_9,
            "huffman_coding_length": rng.uniform(3, 5, n),
            "memorization_score": score,
        },
        schema=SCHEMA,
    )


def write_split(root: Path, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(STREAM_ROWS, rows, replace=False))
    words = pa.array([f"w{i}" for i in range(VOCAB)])
    corpus_freq = rng.zipf(1.3, VOCAB).astype(np.int64) * 1_000
    path = root / "data" / "pile_deduped_12b-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    probe = chunk(ids[:1000], rng, words, corpus_freq)
    per_group = max(1000, int(ROW_GROUP_BYTES / (probe.nbytes / probe.num_rows)))
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for lo in range(0, rows, per_group):
            writer.write_table(chunk(ids[lo : lo + per_group], rng, words, corpus_freq))
    return path


MEASURED = """
import json, resource, sys, time
t0 = time.perf_counter()
from ingest.hub_import import import_dataset
from memlake.core.paths import Warehouse
out = {}
if len(sys.argv) > 1:
    t0 = time.perf_counter()
    s = import_dataset("semantic-filters", sys.argv[1], Warehouse.at(sys.argv[2]), sizes=["12b"])
    out = {"rows_written": s.rows, "partitions": s.written}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
out |= {"seconds": time.perf_counter() - t0, "peak_mib": peak}
print(json.dumps(out))
"""


def child(*args: str) -> dict:
    """Run `args` in a fresh interpreter; its last stdout line as JSON. The fixture is written by
    a child too: a forked child's peak RSS counts the parent's pages until it execs."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # the fixture-writing child
    args = parser.parse_args()
    if args.write:
        t0 = time.perf_counter()
        path = write_split(args.write, args.rows, args.seed)
        meta = pq.ParquetFile(path).metadata
        print(
            json.dumps(
                {
                    "groups": meta.num_row_groups,
                    "mib": path.stat().st_size / 2**20,
                    "s": time.perf_counter() - t0,
                }
            )
        )
        return
    with tempfile.TemporaryDirectory(prefix="memlake-import-bench-") as tmp:
        src = Path(tmp) / "semantic-filters"
        made = child(__file__, "--write", str(src), "--rows", str(args.rows), "--seed", str(args.seed))
        print(
            f"fixture: {args.rows:,} rows, {made['groups']} row groups, {made['mib']:.0f} MiB "
            f"({made['s']:.0f} s to write)"
        )
        floor = child("-c", MEASURED)
        result = child("-c", MEASURED, str(src), str(Path(tmp) / "wh"))
    rate = args.rows / result["seconds"]
    record = {
        "rows": args.rows,
        "seconds": round(result["seconds"], 2),
        "rows_per_s": round(rate),
        "peak_rss_mib": round(result["peak_mib"]),
        "modules_rss_mib": round(floor["peak_mib"]),
        "rows_written": result["rows_written"],
        "partitions": result["partitions"],
        "parquet_mib": round(made["mib"]),
    }
    print(
        f"import: {result['seconds']:.1f} s = {rate:,.0f} rows/s; peak RSS {result['peak_mib']:,.0f} MiB "
        f"(modules alone: {floor['peak_mib']:,.0f} MiB); {result['rows_written']:,} lake rows in "
        f"{result['partitions']} partitions"
    )
    out = ROOT / "bench" / "results" / "import_features.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
