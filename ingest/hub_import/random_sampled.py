"""`pile-{deduped,duped}-pythia-random-sampled`: the random sample of a training stream with every
model's memorisation score, -> `representative_sample` and `representative_scores`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.hub_import.partitions import write_stream
from ingest.hub_import.reading import (
    INT,
    INT_LIST,
    NUM,
    concat,
    read_columns,
    sample_tokens,
    schema_of,
    train_id_column,
)
from ingest.hub_import.sources import (
    PYTHIA_FINAL_STEP,
    PYTHIA_STREAM_ROWS,
    SAMPLE_BATCH_ROWS,
    SIZE_RE,
    ImportSummary,
    model_name,
    parquet_files,
    provenance,
    resolve_source,
)
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

_SCORE_COLUMN = re.compile(rf"^(?P<size>{SIZE_RE})$", re.IGNORECASE)  # random-sampled: 70M ... 12B


def _import_random_sampled(
    scheme: str, source: str, wh: Warehouse, *, stream_rows: int, revision: str | None
) -> ImportSummary:
    """`EleutherAI/pile-<scheme>-pythia-random-sampled` -> `representative_sample` (scheme,
    instance_id, its first 64 tokens) and `representative_scores` (one row per model column
    `70M` ... `12B`: the memorisation score at step 143000), one partition per file."""
    kind = f"pile-{scheme}-pythia-random-sampled"
    out = ImportSummary(kind, ["representative_sample", "representative_scores"])
    root = resolve_source(source, ["*.parquet"], revision)
    files = parquet_files(root)
    sizes: dict[Path, dict[str, str]] = {}  # score column -> model size, per file
    for path in files:
        names = schema_of(path).names
        sizes[path] = {c: m.group("size").lower() for c in names if (m := _SCORE_COLUMN.match(c))}
        if not sizes[path]:
            raise MemlakeError(f"{path}: no memorisation-score columns (70M ... 12B) in {names}")

    def scan(path: Path, columns: Sequence[str]) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        want = {"Index": INT} | {c: INT_LIST if c == "Tokens" else NUM for c in columns}
        for b in read_columns(path, want, SAMPLE_BATCH_ROWS):
            yield b, train_id_column(path, b, "Index", stream_rows)

    every = []
    for path in files:  # every check before anything is written
        for b, ids in scan(path, ["Tokens", *sizes[path]]):
            sample_tokens(path, b, "Tokens")
            for col in sizes[path]:
                v = pc.cast(b.column(col), pa.float64()).to_numpy(zero_copy_only=False)
                bad = (v < 0) | (v > 1)
                if bad.any():
                    raise MemlakeError(
                        f"{path}: column {col!r} has value {v[bad][0]} for Index {int(ids[bad][0])} "
                        "(a score is in [0, 1])"
                    )
            every.append(ids)
    ids = np.sort(concat(every, np.int64))
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if len(dup):
        raise MemlakeError(f"{root}: duplicated key Index {int(ids[dup[0]])}")
    for shard, path in enumerate(files):
        config = provenance(kind, source, revision, file=str(path.relative_to(root)))
        partition = {"scheme": scheme, "shard": shard}
        if lake.is_complete(wh, "representative_sample", partition):
            out.skipped += 1
        else:
            sample = (
                pa.table({"instance_id": i, "tokens": sample_tokens(path, b, "Tokens")})
                for b, i in scan(path, ["Tokens"])
            )
            out.rows += write_stream(wh, "representative_sample", sample, partition, config)
            out.written += 1
        for col, size in sizes[path].items():
            partition = {"model": model_name(scheme, size), "step": PYTHIA_FINAL_STEP, "shard": shard}
            if lake.is_complete(wh, "representative_scores", partition):
                out.skipped += 1
                continue
            rows = (
                pa.table({"instance_id": i, "memorization_score": b.column(col)})
                for b, i in scan(path, [col])
            )
            out.rows += write_stream(wh, "representative_scores", rows, partition, {**config, "column": col})
            out.written += 1
    return out


def import_pile_deduped_random_sampled(
    source: str, wh: Warehouse, *, stream_rows: int = PYTHIA_STREAM_ROWS, revision: str | None = None
) -> ImportSummary:
    """`EleutherAI/pile-deduped-pythia-random-sampled`: 5 M random rows of the deduped stream."""
    return _import_random_sampled("deduped", source, wh, stream_rows=stream_rows, revision=revision)


def import_pile_duped_random_sampled(
    source: str, wh: Warehouse, *, stream_rows: int = PYTHIA_STREAM_ROWS, revision: str | None = None
) -> ImportSummary:
    """`EleutherAI/pile-duped-pythia-random-sampled`: 5 M random rows of the duped stream."""
    return _import_random_sampled("duped", source, wh, stream_rows=stream_rows, revision=revision)
