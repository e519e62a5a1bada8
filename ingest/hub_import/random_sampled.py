"""`pile-{deduped,duped}-pythia-random-sampled`: the random sample of a training stream with every
model's memorisation score, -> `representative_sample` and `representative_scores`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.hub_import.reading import INT_LIST, NUM, concat, sample_tokens, schema_of, train_batches
from ingest.hub_import.sources import (
    PYTHIA_FINAL_STEP,
    PYTHIA_STREAM_ROWS,
    SIZE_RE,
    ImportSummary,
    Origin,
    model_name,
    parquet_files,
    resolve_source,
)
from ingest.hub_import.units import FileUnit, run_all
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

_SCORE_COLUMN = re.compile(rf"^(?P<size>{SIZE_RE})$", re.IGNORECASE)  # random-sampled: 70M ... 12B


@dataclass(frozen=True)
class _Reader:
    """The rows a random-sampled file gives each table, streamed in batches."""

    stream_rows: int

    def scan(self, path: Path, columns: Sequence[str]) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        want = {c: INT_LIST if c == "Tokens" else NUM for c in columns}
        return train_batches(path, "Index", self.stream_rows, want)

    def sample_rows(self, path: Path) -> Iterator[pa.Table]:
        for b, ids in self.scan(path, ["Tokens"]):
            yield pa.table({"instance_id": ids, "tokens": sample_tokens(path, b, "Tokens")})

    def score_rows(self, path: Path, column: str) -> Iterator[pa.Table]:
        for b, ids in self.scan(path, [column]):
            yield pa.table({"instance_id": ids, "memorization_score": b.column(column)})


def _import_random_sampled(
    scheme: str, source: str, wh: Warehouse, *, stream_rows: int, revision: str | None
) -> ImportSummary:
    """`EleutherAI/pile-<scheme>-pythia-random-sampled` -> `representative_sample` (scheme,
    instance_id, its first 64 tokens) and `representative_scores` (one row per model column
    `70M` ... `12B`: the memorisation score at step 143000), one partition per file."""
    origin = Origin(f"pile-{scheme}-pythia-random-sampled", source, revision)
    out = ImportSummary(origin.kind, ["representative_sample", "representative_scores"])
    root = resolve_source(source, ["*.parquet"], revision)
    files = parquet_files(root)
    sizes: dict[Path, dict[str, str]] = {}  # score column -> model size, per file
    for path in files:
        names = schema_of(path).names
        sizes[path] = {c: m.group("size").lower() for c in names if (m := _SCORE_COLUMN.match(c))}
        if not sizes[path]:
            raise MemlakeError(f"{path}: no memorisation-score columns (70M ... 12B) in {names}")
    reader = _Reader(stream_rows)

    every = []
    for path in files:  # every check before anything is written
        for b, ids in reader.scan(path, ["Tokens", *sizes[path]]):
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
    units = []
    for shard, path in enumerate(files):
        record = origin.record(file=str(path.relative_to(root)))
        sample = {"scheme": scheme, "shard": shard}
        units.append(
            FileUnit("representative_sample", sample, str(wh.root), partial(reader.sample_rows, path), record)
        )
        for col, size in sizes[path].items():
            part = {"model": model_name(scheme, size), "step": PYTHIA_FINAL_STEP, "shard": shard}
            rows = partial(reader.score_rows, path, col)
            units.append(
                FileUnit("representative_scores", part, str(wh.root), rows, {**record, "column": col})
            )
    return run_all(out, units)


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
