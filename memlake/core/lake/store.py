"""The lake store: provenance, partition paths, the atomic writer and the strict reader.

Layout: `lake/<table>/<k1>=<v1>/<k2>=<v2>/part-0.parquet` plus `_manifest.json` in the same
directory (Hive style: partition columns live in the path, not in the file). A partition is
complete iff its manifest exists; writers build the whole directory under `lake/_tmp/` and
rename it into place, so readers never see half a partition.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memlake.core.errors import MemlakeError
from memlake.core.lake.contract import TableSpec, spec
from memlake.core.paths import REPO_ROOT, Warehouse

MANIFEST = "_manifest.json"
DATA_FILE = "part-0.parquet"
_TRACKED_PACKAGES = ("torch", "transformers", "tokenizers", "duckdb", "pyarrow", "polars")

# --------------------------------------------------------------------------- provenance


@cache
def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from memlake import __version__

    return __version__


@cache
def package_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --------------------------------------------------------------------------- paths


_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._+-]+$")


def partition_dir(wh: Warehouse, table: str, partition: Mapping[str, Any]) -> Path:
    s = spec(table)
    if set(partition) != set(s.partition_by):
        raise MemlakeError(
            f"table {table!r} is partitioned by {list(s.partition_by)}, got {sorted(partition)}"
        )
    path = wh.table(table)
    for key in s.partition_by:
        value = str(partition[key])
        if not _SAFE_VALUE.match(value):
            raise MemlakeError(f"table {table!r}: partition value {key}={value!r} is not path-safe")
        path = path / f"{key}={value}"
    return path


def is_complete(wh: Warehouse, table: str, partition: Mapping[str, Any]) -> bool:
    return (partition_dir(wh, table, partition) / MANIFEST).exists()


# --------------------------------------------------------------------------- validation


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, dict):
        return pa.table(data)
    if hasattr(data, "to_arrow"):  # polars
        return data.to_arrow()
    raise MemlakeError(f"cannot write object of type {type(data).__name__} to the lake")


def validate(table: str, data: Any, partition: Mapping[str, Any] | None = None) -> pa.Table:
    """Cast `data` to the table's file schema or raise a one-line error naming the problem."""
    s = spec(table)
    t = _as_table(data)
    partition = dict(partition or {})
    # Partition columns may be present in the data; they must agree with the path.
    for key in s.partition_by:
        if key in t.column_names:
            values = pc.unique(t[key]).to_pylist()
            if values and [str(v) for v in values] != [str(partition.get(key))]:
                raise MemlakeError(
                    f"table {table!r}: column {key!r} has {values[:3]} but partition "
                    f"says {partition.get(key)!r}"
                )
            t = t.drop_columns([key])
    want = s.file_schema
    for name in s.optional:
        if name in want.names and name not in t.column_names:
            t = t.append_column(name, pa.nulls(t.num_rows, want.field(name).type))
    missing = [f.name for f in want if f.name not in t.column_names]
    if missing:
        raise MemlakeError(f"table {table!r}: missing required column(s) {missing}")
    extra = [c for c in t.column_names if c not in want.names]
    if extra:
        raise MemlakeError(f"table {table!r}: unknown column(s) {extra} (not in the contract)")
    columns = []
    for f in want:
        col = t[f.name]
        if not col.type.equals(f.type):
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise MemlakeError(
                    f"table {table!r}: column {f.name!r} has type {col.type}, expected "
                    f"{f.type} ({str(e).splitlines()[0]})"
                ) from None
        columns.append(col)
    t = pa.Table.from_arrays(columns, schema=want)
    for key in s.keys:
        if key in t.column_names and t[key].null_count:
            raise MemlakeError(f"table {table!r}: key column {key!r} has null values")
    file_keys = [k for k in s.keys if k in t.column_names]
    if file_keys and t.num_rows:
        n_unique = t.group_by(file_keys).aggregate([]).num_rows
        if n_unique != t.num_rows:
            dup = _first_duplicate(t, file_keys)
            raise MemlakeError(f"table {table!r}: duplicated key {dict(zip(file_keys, dup))}")
    for check in s.checks:
        problem = check(t)
        if problem:
            raise MemlakeError(f"table {table!r}: {problem}")
    return t


def _first_duplicate(t: pa.Table, keys: list[str]) -> tuple:
    counts = t.group_by(keys).aggregate([([], "count_all")])
    dup = counts.filter(pc.greater(counts["count_all"], 1)).slice(0, 1).to_pylist()[0]
    return tuple(dup[k] for k in keys)


# --------------------------------------------------------------------------- writer


def list_column(matrix: np.ndarray, type_: pa.DataType | None = None) -> pa.ListArray:
    """A 2-D array as a list column (one list per row) without a Python loop; `type_` of the
    values (default: inferred)."""
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type_))


def write_partition(
    wh: Warehouse,
    table: str,
    data: Any,
    partition: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    _before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Validate and atomically write one partition; skip it if it is already complete.

    The data file and manifest are written into a fresh directory under `lake/_tmp/` and the
    directory is renamed into place, which is atomic on one filesystem.
    """
    return write_partition_stream(
        wh, table, [data], partition, config=config, overwrite=overwrite, _before_rename=_before_rename
    )


_FLUSH_BYTES = 64 << 20  # buffered before a write: bounds the writer's memory
# Row groups of about this many (uncompressed) bytes: a reader that wants one row (the explorer's
# instance view, a point lookup by instance_id) decodes one group, not the whole flush; a scan
# loses nothing, and the footer stays small (tens of groups for a Pythia checkpoint's stats).
_ROW_GROUP_BYTES = 8 << 20


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Leaf columns worth dictionary encoding: all but floats (per-token surprisal and entropy are
    nearly all distinct, and a dictionary per small row group only adds bytes)."""
    out = []
    for f in schema:
        leaf, path = f.type, f.name
        while pa.types.is_list(leaf) or pa.types.is_large_list(leaf):
            leaf, path = leaf.value_type, f"{path}.list.element"
        if not pa.types.is_floating(leaf):
            out.append(path)
    return out


def _write(writer: pq.ParquetWriter, t: pa.Table) -> None:
    rows = max(1, int(t.num_rows * _ROW_GROUP_BYTES / max(t.nbytes, 1)))
    writer.write_table(t, row_group_size=rows)


def write_partition_stream(
    wh: Warehouse,
    table: str,
    pieces: Iterable[Any],
    partition: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    _before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """`write_partition` for data that need not fit in memory: `pieces` (each anything `validate`
    takes) are validated and appended one at a time, keys are checked unique across all of them
    (checks must be row-wise), and the partition appears only once the last piece is written
    (nothing on an error)."""
    partition = dict(partition or {})
    final = partition_dir(wh, table, partition)
    if (final / MANIFEST).exists() and not overwrite:
        return final
    s = spec(table)
    file_keys = [k for k in s.keys if k not in s.partition_by]
    tmp = wh.staging / f"{table}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        data_path = tmp / DATA_FILE
        rows, keys, buffer, buffered = 0, [], [], 0
        with pq.ParquetWriter(
            data_path, s.file_schema, compression="zstd", use_dictionary=_dictionary_columns(s.file_schema)
        ) as writer:
            for piece in pieces:
                t = validate(table, piece, partition)
                rows += t.num_rows
                keys.append(t.select(file_keys))
                buffer.append(t)
                buffered += t.nbytes
                if buffered >= _FLUSH_BYTES:
                    _write(writer, pa.concat_tables(buffer))
                    buffer, buffered = [], 0
            if buffer or not rows:
                _write(writer, pa.concat_tables(buffer) if buffer else s.file_schema.empty_table())
        if len(keys) > 1 and file_keys and rows:
            all_keys = pa.concat_tables(keys)
            if all_keys.group_by(file_keys).aggregate([]).num_rows != rows:
                dup = _first_duplicate(all_keys, file_keys)
                raise MemlakeError(f"table {table!r}: duplicated key {dict(zip(file_keys, dup))}")
        del keys
        manifest = {
            "table": table,
            "grain": s.grain,
            "partition": partition,
            "rows": rows,
            "files": {DATA_FILE: sha256(data_path)},
            "schema": [f"{f.name}: {f.type}" for f in s.file_schema],
            "config": dict(config or {}),
            "code_version": code_version(),
            "packages": package_versions(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if _before_rename is not None:  # test hook: simulate a crash mid-write
            _before_rename(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an incomplete leftover or an overwrite: move it aside first
            trash = wh.staging / f"trash-{uuid.uuid4().hex}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- reader


def partitions(wh: Warehouse, table: str) -> list[Path]:
    """Every complete partition directory of `table`; raises on an incomplete one."""
    s = spec(table)
    root = wh.table(table)
    if not root.exists():
        return []
    depth = len(s.partition_by)
    dirs = [root] if depth == 0 else sorted(p for p in root.glob("/".join(["*"] * depth)))
    out = []
    for d in dirs:
        if not d.is_dir():
            continue
        if not (d / MANIFEST).exists():
            if any(d.glob("*.parquet")):
                raise MemlakeError(
                    f"{d}: partition has data but no {MANIFEST} (an interrupted or foreign "
                    "write); delete it and re-run the job that writes it"
                )
            continue
        out.append(d)
    return out


def data_files(wh: Warehouse, table: str) -> list[Path]:
    return [d / DATA_FILE for d in partitions(wh, table)]


def manifest(partition: Path) -> dict[str, Any]:
    return json.loads((partition / MANIFEST).read_text())


def read_table(wh: Warehouse, table: str, columns: list[str] | None = None, verify: bool = False) -> pa.Table:
    """Read every complete partition of `table` as one Arrow table (partition keys included)."""
    s = spec(table)
    parts = partitions(wh, table)
    if not parts:
        raise MemlakeError(f"lake table {table!r} is empty: no complete partitions under {wh.table(table)}")
    pieces = []
    for d in parts:
        path = d / DATA_FILE
        if verify:
            expected = manifest(d)["files"][DATA_FILE]
            if sha256(path) != expected:
                raise MemlakeError(f"{path}: content hash does not match its manifest")
        try:
            file_schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise MemlakeError(f"{path}: unreadable Parquet ({str(e).splitlines()[0]})") from None
        wanted = [c for c in columns or s.file_schema.names if c not in s.partition_by]
        absent = [c for c in wanted if c not in file_schema.names and c in s.optional]
        wanted = [c for c in wanted if c not in absent]
        missing = [c for c in wanted if c not in file_schema.names]
        if missing:
            raise MemlakeError(
                f"{path}: schema does not match the {table!r} contract (missing column(s) {missing})"
            )
        for name in wanted:
            if not file_schema.field(name).type.equals(s.schema.field(name).type):
                raise MemlakeError(
                    f"{path}: schema does not match the {table!r} contract "
                    f"(column {name!r} is {file_schema.field(name).type})"
                )
        piece = pq.read_table(path, columns=wanted)
        for name in absent:  # an optional column this older partition predates
            field_ = s.schema.field(name)
            piece = piece.append_column(field_, pa.nulls(piece.num_rows, field_.type))
        values = _partition_values(d, s)
        for key in s.partition_by:
            if columns is None or key in columns:
                arr = pa.array([values[key]] * piece.num_rows, s.schema.field(key).type)
                piece = piece.append_column(s.schema.field(key), arr)
        pieces.append(piece)
    out = pa.concat_tables(pieces)
    order = [c for c in (columns or s.schema.names) if c in out.column_names]
    return out.select(order)


def _partition_values(d: Path, s: TableSpec) -> dict[str, Any]:
    values = {}
    for part in d.parts[-len(s.partition_by) :] if s.partition_by else []:
        k, v = part.split("=", 1)
        typ = s.schema.field(k).type
        values[k] = int(v) if pa.types.is_integer(typ) else v
    return values
