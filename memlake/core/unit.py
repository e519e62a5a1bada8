"""One unit of work: it fills one lake partition, and `run_unit` runs every kind the same way.

A unit knows its lake table, its partition, how to compute the partition's rows and what to
record about how it did. `run_unit` checks the unit's inputs, skips it if its partition is
complete, computes, and writes the partition atomically with the provenance in its manifest.
So any executor can run any plan in any order, and a killed run resumes by running the same
plan again. Units must pickle: executors ship them to other processes and machines.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from memlake.core import lake
from memlake.core.paths import Warehouse

Log = Callable[[str], None]


@dataclass
class Computed:
    """What a unit's `compute` returns: the partition's rows (a table, or record batches to stream
    for a partition larger than memory), what to record in the manifest, and figures for the
    caller's summary (e.g. tokens scored)."""

    data: pa.Table | Iterable[pa.RecordBatch]
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
    wh, part = unit.warehouse, unit.partition
    if not force and lake.is_complete(wh, unit.table, part):
        return {"unit": unit, "skipped": True, "rows": None}
    t0 = time.perf_counter()
    out = unit.compute(log)
    seconds = time.perf_counter() - t0
    provenance = {"seconds": round(seconds, 3), **out.provenance}
    pieces = [out.data] if isinstance(out.data, pa.Table) else out.data
    path = lake.write_partition_stream(wh, unit.table, pieces, part, config=provenance, overwrite=force)
    rows = lake.manifest(path)["rows"]
    return {"unit": unit, "skipped": False, "rows": rows, "seconds": seconds, **out.summary}
