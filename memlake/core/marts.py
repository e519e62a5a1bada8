"""Marts written by Python analyses (beside dbt's): one Parquet file per option set, atomically.

A mart is a folder `marts/<name>/` of files `<key>.parquet`, each holding every row of one
fit (its key columns included), so re-running a fit replaces exactly its own rows and the
query layer reads the folder as one table (`memlake.core.query.mart_paths`).

Every such mart is declared by the module that writes it (`declare`) and as a source of dbt's
(`python_marts` in models/marts/__python_marts.yml), so that dbt docs show it; `write` refuses an
undeclared name, and tests/integration/test_warehouse.py checks that the two lists agree.
"""

from __future__ import annotations

import os
import re
import uuid

import polars as pl

from memlake.core.paths import Warehouse
from memlake.core.registry import Registry

PYTHON_MARTS: Registry[str] = Registry("Python mart")
# Columns a mart gained after files were written: {mart: {column: SQL literal}}. The query layer
# reads an older file's missing column as that value, so the views may name it.
COLUMN_DEFAULTS: dict[str, dict[str, str]] = {}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_key(*parts: object) -> str:
    """A filesystem-safe key from option values, e.g. suite-s__sup_seq__all__never_treated."""
    return "__".join(_SAFE.sub("-", str(p)) for p in parts)


def declare(*names: str, defaults: dict[str, str] | None = None) -> tuple[str, ...]:
    """Declare the marts a module writes; each must also be a `python_marts` source. `defaults`:
    columns added later, as {column: SQL literal} for files written before them."""
    for name in names:
        PYTHON_MARTS.add(name, name)
        if defaults:
            COLUMN_DEFAULTS[name] = dict(defaults)
    return names


def write(wh: Warehouse, name: str, key: str, frame: pl.DataFrame) -> None:
    """Replace `marts/<name>/<key>.parquet` with `frame` (staged, then renamed: never half-written)."""
    if name not in PYTHON_MARTS:
        raise ValueError(
            f"mart {name!r} is not declared: add it to its module's marts.declare(...) and as a "
            "python_marts source in models/marts/__python_marts.yml"
        )
    target = wh.marts / name / f"{key}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    wh.staging.mkdir(parents=True, exist_ok=True)
    tmp = wh.staging / f"{name}-{uuid.uuid4().hex}.parquet"
    try:
        frame.write_parquet(tmp, compression="zstd")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
