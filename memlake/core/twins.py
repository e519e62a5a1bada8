"""Counterfactual twins: a suite model's twin is the same run with part of the panel held out.

The lake says which model is which: `checkpoints.twin_of` names the model a twin belongs to
(null for every other model). Stages that read a model's own treatment timing (profiles, the
taxonomy, extraction defaults) skip twins unless asked for one by name: a twin's `cohort` for
a held-out row is a step at which it never saw that row.
"""

from __future__ import annotations

import duckdb

from memlake.core import lake
from memlake.core.paths import Warehouse

SUFFIX = "-twin"


def twin_name(model: str) -> str:
    return model + SUFFIX


def twins_of(wh: Warehouse) -> dict[str, str]:
    """Twin -> its model, from the `checkpoints` table (empty when it has no partitions)."""
    if not lake.partitions(wh, "checkpoints"):
        return {}
    t = lake.read_table(wh, "checkpoints", columns=["model", "twin_of"])
    return {m: of for m, of in zip(t["model"].to_pylist(), t["twin_of"].to_pylist()) if of is not None}


def twin_models(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The twins among the models of a query connection's `checkpoints` view (none when the view
    or, in partitions written before twins, its `twin_of` column is missing)."""
    columns = con.execute(
        "select column_name from information_schema.columns where table_name = 'checkpoints'"
    ).fetchall()
    if ("twin_of",) not in columns:
        return set()
    return {
        m
        for (m,) in con.execute("select distinct model from checkpoints where twin_of is not null").fetchall()
    }
