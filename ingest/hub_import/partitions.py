"""The partitions of a (model, step)-partitioned table that an import writes one shard per source
file into: which partition holds a file imported before, which shard a new file gets, and which
of its rows are new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.hub_import.reading import first_occurrence
from ingest.hub_import.sources import Origin, SourceFile
from ingest.hub_import.units import FileUnit
from memlake.core import lake
from memlake.core.paths import Warehouse


def partition_dirs(wh: Warehouse, table: str, fixed: dict[str, Any]) -> list[tuple[Path, dict[str, str]]]:
    """Partition directories of `table` whose keys equal `fixed` (complete or not), with their values."""
    s = lake.spec(table)
    if not s.partition_by:
        return [(wh.table(table), {})] if wh.table(table).is_dir() else []
    pattern = "/".join(f"{k}={fixed[k]}" if k in fixed else f"{k}=*" for k in s.partition_by)
    out = []
    for d in sorted(wh.table(table).glob(pattern)):
        if d.is_dir():
            out.append((d, dict(p.split("=", 1) for p in d.relative_to(wh.table(table)).parts)))
    return out


def existing_ids(wh: Warehouse, table: str, fixed: dict[str, Any]) -> np.ndarray:
    ids = [
        pq.read_table(d / lake.DATA_FILE, columns=["instance_id"])["instance_id"].to_numpy()
        for d, _ in partition_dirs(wh, table, fixed)
        if (d / lake.MANIFEST).exists()
    ]
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


def _holding(dirs: list[tuple[Path, dict[str, str]]], kind: str, rel: str) -> dict[str, str] | None:
    """The complete partition among `dirs` that holds the rows of `kind`'s file `rel`, if any."""
    for d, values in dirs:
        if (d / lake.MANIFEST).exists():
            config = lake.manifest(d).get("config", {})
            if config.get("import") == kind and config.get("file") == rel:
                return values
    return None


def plan_per_file(
    wh: Warehouse,
    table: str,
    origin: Origin,
    scanned: list[tuple[SourceFile, np.ndarray]],
    fixed_of: Callable[[SourceFile], dict[str, Any]],
    rows: Callable[[SourceFile], Iterator[pa.Table]],
) -> list[FileUnit]:
    """One unit per scanned file (with its row ids): a file imported before is the partition that
    holds it (complete, so it is skipped); a new one is the next shard of its (model, step), and
    leaves out the rows of an (model, step, instance) already in the table or in an earlier file
    of this import."""
    units = []
    seen: dict[tuple, np.ndarray] = {}
    shards: dict[tuple, int] = {}
    for src, ids in scanned:
        fixed = fixed_of(src)
        key = tuple(sorted(fixed.items()))
        dirs = partition_dirs(wh, table, fixed)
        record = origin.record(file=src.rel)
        held = _holding(dirs, origin.kind, src.rel)
        if held is not None:
            units.append(FileUnit(table, held, str(wh.root), partial(rows, src), record))
            continue
        if key not in seen:
            seen[key] = existing_ids(wh, table, fixed)
            shards[key] = max((int(v["shard"]) for _, v in dirs), default=-1) + 1
        keep = first_occurrence(ids) & ~np.isin(ids, seen[key])
        seen[key] = np.concatenate([seen[key], ids[keep]])
        part = {**fixed, "shard": shards[key]}
        shards[key] += 1
        units.append(FileUnit(table, part, str(wh.root), partial(rows, src), record, keep))
    return units
