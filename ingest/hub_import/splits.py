"""Imports of split-named files of training-stream rows, each with its 64-token sample in `tokens`
(`pythia-memorized-evals`, `semantic-filters`): the files of the selected splits are read and
checked whole before anything is written; then one unit adds the samples that `instances` lacks,
one per file writes its `extraction` labels, and the importer's own units follow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from ingest.hub_import.instances import plan_samples
from ingest.hub_import.partitions import plan_per_file
from ingest.hub_import.reading import INT_LIST, concat, sample_tokens, token_digests, train_batches
from ingest.hub_import.rows import extraction_partition, extraction_table, instance_table
from ingest.hub_import.sources import ImportSummary, Origin, SourceFile, SplitNames, check_scheme, find_splits
from ingest.hub_import.units import run_all
from memlake.core.paths import Warehouse
from memlake.core.unit import Unit

Scanned = tuple[SourceFile, np.ndarray, np.ndarray]  # a file, its row ids and token digests
TypeCheck = tuple[str, Callable[[pa.DataType], bool]]


@dataclass(frozen=True)
class SampleRows:
    """How an importer reads its files: rows keyed by `id_col` (indices of the training stream,
    below `stream_rows`), every one an exact 32 -> 32 match unless `scores` says otherwise."""

    id_col: str
    stream_rows: int
    score_columns: ClassVar[dict[str, TypeCheck]] = {}  # what `scores` reads

    def batches(
        self, src: SourceFile, want: dict[str, TypeCheck]
    ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        return train_batches(src.path, self.id_col, self.stream_rows, want)

    def columns(self, src: SourceFile) -> dict[str, TypeCheck]:
        """The columns `scan` reads and checks."""
        return {"tokens": INT_LIST}

    def check(self, src: SourceFile, batch: pa.RecordBatch, ids: np.ndarray, tokens: pa.Array) -> None:
        """The importer's own checks of a batch, before anything is written."""

    def scores(self, src: SourceFile, batch: pa.RecordBatch, ids: np.ndarray) -> np.ndarray:
        return np.ones(len(ids))

    def scan(self, src: SourceFile) -> Scanned:
        ids, digests = [], []
        for b, i in self.batches(src, self.columns(src)):
            tokens = sample_tokens(src.path, b, "tokens")
            self.check(src, b, i, tokens)
            ids.append(i)
            digests.append(token_digests(tokens))
        return src, concat(ids, np.int64), concat(digests, np.uint64)

    def sample_rows(self, src: SourceFile) -> Iterator[pa.Table]:
        for b, ids in self.batches(src, {"tokens": INT_LIST}):
            yield instance_table(ids, sample_tokens(src.path, b, "tokens"), "train", sample=True)

    def extraction_rows(self, src: SourceFile) -> Iterator[pa.Table]:
        for b, ids in self.batches(src, {"tokens": INT_LIST} | self.score_columns):
            yield extraction_table(ids, sample_tokens(src.path, b, "tokens"), self.scores(src, b, ids))


def import_splits(
    origin: Origin,
    wh: Warehouse,
    names: SplitNames,
    reader: SampleRows,
    *,
    scheme: str,
    splits: str | Sequence[str] | None,
    sizes: str | Sequence[str] | None,
    tables: list[str],
    order: Callable[[SourceFile], Any] | None = None,
    more: Callable[[list[Scanned]], list[Unit]] = lambda scanned: [],
) -> ImportSummary:
    """Import the files of `scheme`'s splits that `splits` or `sizes` select (in `order`), with
    the units `more` plans for the importer's other tables."""
    scheme = check_scheme(scheme)
    srcs = find_splits(origin, names, scheme=scheme, splits=splits, sizes=sizes)
    if order is not None:
        srcs.sort(key=order)
    scanned = [reader.scan(src) for src in srcs]  # every check before anything is written
    ids = [(src, i) for src, i, _ in scanned]
    units = [
        plan_samples(wh, origin, scheme, scanned, reader.sample_rows, reader.id_col),
        *plan_per_file(wh, "extraction", origin, ids, extraction_partition, reader.extraction_rows),
        *more(scanned),
    ]
    return run_all(ImportSummary(origin.kind, tables), units)
