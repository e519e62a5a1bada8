"""Writing what an import converted: whole partitions, and one shard per source file of a
(model, step)-partitioned table, less the rows an earlier import or file already wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.hub_import.reading import first_occurrence
from ingest.hub_import.sources import SourceFile
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse


def write_pieces(
    wh: Warehouse, table: str, pieces: list[pa.Table], partition: dict, config: dict, where: Path
) -> int:
    data = pa.concat_tables(pieces) if pieces else lake.spec(table).file_schema.empty_table()
    try:
        lake.write_partition(wh, table, data, partition, config=config)
    except MemlakeError as e:  # the contract names the column; add the file it came from
        raise MemlakeError(f"{where}: {e}") from None
    return data.num_rows


def write_stream(
    wh: Warehouse, table: str, pieces: Iterator[pa.Table], partition: dict, config: dict, *, overwrite=False
) -> int:
    rows = 0

    def counted() -> Iterator[pa.Table]:
        nonlocal rows
        for t in pieces:
            rows += t.num_rows
            yield t

    lake.write_partition_stream(wh, table, counted(), partition, config=config, overwrite=overwrite)
    return rows


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


def _imported(wh: Warehouse, table: str, fixed: dict[str, Any], kind: str, rel: str) -> bool:
    """Whether a complete partition under `fixed` holds the rows of `kind`'s file `rel`."""
    for d, _ in partition_dirs(wh, table, fixed):
        if (d / lake.MANIFEST).exists():
            config = lake.manifest(d).get("config", {})
            if config.get("import") == kind and config.get("file") == rel:
                return True
    return False


def _next_shard(wh: Warehouse, table: str, fixed: dict[str, Any]) -> int:
    shards = [int(v["shard"]) for _, v in partition_dirs(wh, table, fixed)]
    return max(shards, default=-1) + 1


def existing_ids(wh: Warehouse, table: str, fixed: dict[str, Any]) -> np.ndarray:
    ids = [
        pq.read_table(d / lake.DATA_FILE, columns=["instance_id"])["instance_id"].to_numpy()
        for d, _ in partition_dirs(wh, table, fixed)
        if (d / lake.MANIFEST).exists()
    ]
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


@dataclass
class PerFile:
    """One source file's rows of a (model, step)-partitioned table, less rows already there."""

    table: str
    src: SourceFile
    fixed: dict[str, Any]  # partition keys but the shard
    keep: np.ndarray  # per source row, in file order


def plan_per_file(
    wh: Warehouse, table: str, kind: str, scanned: list[tuple[SourceFile, np.ndarray]], fixed_of: Callable
) -> tuple[list[PerFile], int]:
    """Which rows of each file to write: a (model, step, instance) already in the table, or in an
    earlier file of this import, is kept as it is. Returns the plans and the files already done."""
    plans, done = [], 0
    seen: dict[tuple, np.ndarray] = {}
    for src, ids in scanned:
        fixed = fixed_of(src)
        key = tuple(sorted(fixed.items()))
        if _imported(wh, table, fixed, kind, src.rel):
            done += 1
            continue
        if key not in seen:
            seen[key] = existing_ids(wh, table, fixed)
        keep = first_occurrence(ids) & ~np.isin(ids, seen[key])
        seen[key] = np.concatenate([seen[key], ids[keep]])
        plans.append(PerFile(table, src, fixed, keep))
    return plans, done


def write_per_file(wh: Warehouse, plan: PerFile, pieces: Iterator[pa.Table], config: dict[str, Any]) -> int:
    partition = {**plan.fixed, "shard": _next_shard(wh, plan.table, plan.fixed)}
    return write_stream(wh, plan.table, masked(pieces, plan.keep), partition, config)


def masked(pieces: Iterator[pa.Table], keep: np.ndarray) -> Iterator[pa.Table]:
    """The rows of `pieces` whose position (counted over all pieces) is kept."""
    at = 0
    for t in pieces:
        mask = keep[at : at + t.num_rows]
        at += t.num_rows
        yield t if mask.all() else t.filter(pa.array(mask))


def table_batches(path: Path) -> Iterator[pa.Table]:
    for b in pq.ParquetFile(path).iter_batches(batch_size=8192):
        yield pa.Table.from_batches([b])
