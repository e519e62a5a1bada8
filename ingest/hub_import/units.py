"""The units of work an import runs: one per lake partition it writes, each run by `run_unit`,
which skips a finished partition and writes the others atomically with their provenance. So a
re-import skips what is done, and an interrupted one resumes where it stopped.

A `FileUnit` writes one partition from one source file's rows. A `MergeUnit` rewrites a
single-partition table that every import merges into (`instances`, `instance_features`): the
rows already there, then the ones it adds; its partition is complete once the manifest lists
the unit's files. Units pickle (their rows come from methods of frozen readers), as executors
need; each is planned, every check done, before the first one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.hub_import.sources import ImportSummary, SourceFile
from memlake.core import lake
from memlake.core.paths import Warehouse
from memlake.core.unit import Computed, Data, Log, Output, Unit, run_unit


def run_all(out: ImportSummary, units: Iterable[Unit]) -> ImportSummary:
    """Run `units` in order and count what they did into `out`."""
    for unit in units:
        done = run_unit(unit)
        if done["skipped"]:
            out.skipped += 1
        else:
            out.written += 1
            out.rows += done["rows"]
    return out


@dataclass(frozen=True, eq=False)
class FileUnit(Unit):
    """One partition of `table`, written from one source file's rows (those `keep` selects)."""

    table: str
    part: dict[str, Any]
    root: str
    rows: Callable[[], Data]
    record: dict[str, Any] = field(default_factory=dict)  # the manifest's config
    keep: np.ndarray | None = None  # per source row, in file order; None: every row

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.at(self.root)

    @property
    def partition(self) -> dict[str, Any]:
        return self.part

    def compute(self, log: Log) -> Computed:
        rows = self.rows()
        return Computed(rows if self.keep is None else masked(rows, self.keep), provenance=self.record)


# --------------------------------------------------------------------------- merged tables


def imports_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The files merged into a single-partition table, from its manifest config."""
    if "imports" in config:
        return list(config["imports"])
    if config.get("import"):  # one import, its files listed together
        keep = {k: config.get(k) for k in ("import", "source", "revision")}
        return [{**keep, "file": f} for f in config.get("files", [])]
    return []


def merged_files(config: dict[str, Any]) -> set[tuple[str, str]]:
    """(import, file) of every file merged into a single-partition table."""
    return {(r.get("import"), r.get("file")) for r in imports_of(config)}


@dataclass(frozen=True)
class MergedOutput(Output):
    """A single-partition table that imports merge into: complete once its manifest lists every
    file of `files`; a write replaces the partition (the new rows include the old ones)."""

    files: tuple[tuple[str, str], ...] = ()

    def is_complete(self, wh: Warehouse) -> bool:
        if not lake.is_complete(wh, self.table, {}):
            return False
        config = lake.manifest(wh.table(self.table)).get("config", {})
        return set(self.files) <= merged_files(config)

    def write(self, wh: Warehouse, data: Data, provenance: dict[str, Any], overwrite: bool) -> int:
        return super().write(wh, data, provenance, overwrite=True)


@dataclass(frozen=True, eq=False)
class MergeUnit(Unit):
    """The rows an import merges into a single-partition table: those already there (as `existing`
    passes them on), then the rows of `srcs` that `keep` selects. `config` is the new manifest's
    (its imports list every file merged so far)."""

    table: str
    root: str
    config: dict[str, Any]
    files: tuple[tuple[str, str], ...]  # (import, file) of the files this unit merges
    srcs: tuple[SourceFile, ...]
    rows: Callable[[SourceFile], Iterator[pa.Table]]
    keep: np.ndarray  # per row of `srcs`, in file order
    exists: bool  # whether the partition held rows when the unit was planned

    @classmethod
    def planned(
        cls,
        wh: Warehouse,
        table: str,
        srcs: list[SourceFile],
        rows: Callable[[SourceFile], Iterator[pa.Table]],
        keep: np.ndarray,
        records: list[dict[str, Any]],
        config: dict[str, Any],
        **more: Any,
    ) -> MergeUnit:
        """The unit that merges the rows of `srcs` that `keep` selects into `table`; its manifest
        will hold `config` and list the files merged before, then `records`'."""
        exists = lake.is_complete(wh, table, {})
        before = imports_of(lake.manifest(wh.table(table)).get("config", {})) if exists else []
        return cls(
            table=table,
            root=str(wh.root),
            config={**config, "imports": before + records},
            files=tuple((r["import"], r["file"]) for r in records),
            srcs=tuple(srcs),
            rows=rows,
            keep=keep,
            exists=exists,
            **more,
        )

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.at(self.root)

    @property
    def partition(self) -> dict[str, Any]:
        return {}

    def outputs(self) -> list[Output]:
        return [MergedOutput(self.table, {}, files=self.files)]

    def pending(self) -> list[Output]:
        return super().pending() if self.changes() else []

    def changes(self) -> bool:
        """Whether the merge changes the partition (else there is nothing to write)."""
        return bool(self.keep.any())

    def existing(self, pieces: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """The rows already there, as the new version holds them."""
        return pieces

    def compute(self, log: Log) -> Computed:
        def pieces() -> Iterator[pa.Table]:
            if self.exists:
                yield from self.existing(table_batches(self.warehouse.table(self.table) / lake.DATA_FILE))
            yield from masked((t for src in self.srcs for t in self.rows(src)), self.keep)

        return Computed(pieces(), provenance=self.config)


def masked(pieces: Iterable[pa.Table], keep: np.ndarray) -> Iterator[pa.Table]:
    """The rows of `pieces` whose position (counted over all pieces) is kept."""
    at = 0
    for t in pieces:
        mask = keep[at : at + t.num_rows]
        at += t.num_rows
        yield t if mask.all() else t.filter(pa.array(mask))


def table_batches(path) -> Iterator[pa.Table]:
    for b in pq.ParquetFile(path).iter_batches(batch_size=8192):
        yield pa.Table.from_batches([b])
