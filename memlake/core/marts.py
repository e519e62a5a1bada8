"""Marts written by Python analyses (beside dbt's): one Parquet file per option set, atomically.

A mart is a folder `marts/<name>/` of files `<key>.parquet`, each holding every row of one
fit (its key columns included), so re-running a fit replaces exactly its own rows and the
query layer reads the folder as one table (`memlake.core.query.mart_paths`).
"""

from __future__ import annotations

import os
import re
import uuid

import polars as pl

from memlake.core.paths import Warehouse

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_key(*parts: object) -> str:
    """A filesystem-safe key from option values, e.g. suite-s__sup_seq__all__never_treated."""
    return "__".join(_SAFE.sub("-", str(p)) for p in parts)


def write(wh: Warehouse, name: str, key: str, frame: pl.DataFrame) -> None:
    """Replace `marts/<name>/<key>.parquet` with `frame` (staged, then renamed: never half-written)."""
    target = wh.marts / name / f"{key}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    wh.staging.mkdir(parents=True, exist_ok=True)
    tmp = wh.staging / f"{name}-{uuid.uuid4().hex}.parquet"
    try:
        frame.write_parquet(tmp, compression="zstd")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
