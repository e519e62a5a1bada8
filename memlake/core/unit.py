"""One unit of work: it fills one lake partition, and `run_unit` runs every kind the same way.

A unit knows its lake table, its partition, how to compute the partition's rows and what to
record about how it did. `run_unit` checks the unit's inputs, skips it if its partition is
complete, computes, and writes the partition atomically with the provenance in its manifest.
So any executor can run any plan in any order, and a killed run resumes by running the same
plan again. Units must pickle: executors ship them to other processes and machines.

Most units write one lake partition. A unit whose one pass yields several tables (a stream
shard's counts and token counts) lists them in `outputs`, and its `compute` returns one entry
per table it computed (`pending` says which are missing). An output may instead be one file of
a Python mart (`Output(..., mart=True)`: an analysis shard, keyed by its partition's values),
which has no manifest, so its provenance is not kept.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from memlake.core import lake, marts
from memlake.core.paths import Warehouse

Log = Callable[[str], None]


Data = pa.Table | Iterable[pa.RecordBatch]


@dataclass(frozen=True)
class Output:
    """One partition a unit writes: of a lake table, or (`mart`) one file of a Python mart."""

    table: str
    partition: dict[str, Any]
    mart: bool = False

    def is_complete(self, wh: Warehouse) -> bool:
        if self.mart:
            return (wh.marts / self.table / f"{self.key}.parquet").exists()
        return lake.is_complete(wh, self.table, self.partition)

    @property
    def key(self) -> str:
        return marts.file_key(*self.partition.values())

    def write(self, wh: Warehouse, data: Data, provenance: dict[str, Any], overwrite: bool) -> int:
        """Write atomically; the rows written."""
        if self.mart:
            table = data if isinstance(data, pa.Table) else pa.Table.from_batches(list(data))
            marts.write(wh, self.table, self.key, pl.from_arrow(table))
            return table.num_rows
        pieces = [data] if isinstance(data, pa.Table) else data
        path = lake.write_partition_stream(
            wh, self.table, pieces, self.partition, config=provenance, overwrite=overwrite
        )
        return int(lake.manifest(path)["rows"])


@dataclass
class Computed:
    """What a unit's `compute` returns: the partition's rows (a table, or record batches to stream
    for a partition larger than memory; for a unit of several outputs, a mapping from table to
    rows of the outputs it computed), what to record in the manifest, and figures for the
    caller's summary (e.g. tokens scored)."""

    data: Data | dict[str, Data]
    provenance: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class Unit(ABC):
    """One resumable piece of work that writes one partition of one lake table."""

    table: str

    @property
    @abstractmethod
    def warehouse(self) -> Warehouse: ...

    @property
    @abstractmethod
    def partition(self) -> dict[str, Any]:
        """The partition this unit writes (its key values)."""

    @abstractmethod
    def compute(self, log: Log) -> Computed:
        """The partition's rows, computed from the unit's inputs."""

    def outputs(self) -> list[Output]:
        """Every partition this unit writes (by default its one lake partition)."""
        return [Output(self.table, self.partition)]

    def pending(self) -> list[Output]:
        """The outputs not yet complete, which a unit of several outputs computes."""
        return [o for o in self.outputs() if not o.is_complete(self.warehouse)]

    def check(self) -> None:  # noqa: B027 (optional hook: most units have nothing to check)
        """Refuse bad options before anything else, so that a re-run of finished work fails too."""

    @property
    def label(self) -> str:
        keys = " ".join(f"{k}={v}" for k, v in self.partition.items())
        return f"{self.table} {keys}".strip()

    def run(self, log: Log = print) -> dict[str, Any]:
        return run_unit(self, log)


def run_unit(unit: Unit, log: Log = print, *, force: bool = False) -> dict[str, Any]:
    """Check, skip if complete (unless `force`), compute, write atomically; a small summary."""
    unit.check()
    todo = unit.outputs() if force else unit.pending()
    if not todo:
        return {"unit": unit, "skipped": True, "rows": None}
    t0 = time.perf_counter()
    out = unit.compute(log)
    seconds = time.perf_counter() - t0
    provenance = {"seconds": round(seconds, 3), **out.provenance}
    data = out.data if isinstance(out.data, dict) else {todo[0].table: out.data}
    rows = {}
    for o in todo:
        if o.table not in data:
            raise RuntimeError(f"{unit.label}: compute returned no rows for {o.table}")
        rows[o.table] = o.write(unit.warehouse, data[o.table], provenance, overwrite=force)
    total = rows[todo[0].table] if len(rows) == 1 else rows
    return {"unit": unit, "skipped": False, "rows": total, "seconds": seconds, **out.summary}


class WarehouseUnit(Unit):
    """A unit that names its warehouse by the root folder (a string, so that it pickles to other
    machines); subclasses declare the `root` field."""

    root: str

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.at(self.root)
