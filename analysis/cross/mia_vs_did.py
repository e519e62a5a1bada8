"""Do the membership attacks see what the causal estimate sees? For every checkpoint t and cohort
g <= t: each attack's AUC of g's member rows against all never-trained rows (from `mia_scores`),
beside the DiD's memorisation at the same cell (ATT(g, t) of the headline profile in
`profiles_attgt`: the `single` units, never-treated controls, varying base period, first epoch).
A cell with fewer than `MIN_MEMBERS` members gets no AUC.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
from scipy.stats import spearmanr

from analysis.mia.metrics import auc
from memlake.core import query

MIN_MEMBERS = 2
DID_COLUMNS = ("memorisation", "att", "ci_lower", "ci_upper")
SCHEMA = {
    "model": pl.String, "metric": pl.String, "attack": pl.String, "step": pl.Int64, "cohort": pl.Int64,
    "event_time": pl.Int64, "auc": pl.Float64, "n_members": pl.Int64, "n_nonmembers": pl.Int64,
    "memorisation": pl.Float64, "att": pl.Float64, "ci_lower": pl.Float64, "ci_upper": pl.Float64,
}  # fmt: skip

_DID = """
    select cohort, step, att, memorisation, ci_lower, ci_upper
    from profiles_attgt
    where model = $model and metric = $metric and units = 'single' and control_group = 'never_treated'
        and base_period = 'varying' and first_epoch and design = 'none' and post
"""

_SCORES = """
    select s.attack, s.step, s.score, s.member, i.cohort
    from mia_scores as s join instances as i on s.instance_id = i.instance_id
    where s.model = $model and s.member is not null
"""


def mia_vs_did(con: duckdb.DuckDBPyConnection, model: str, metric: str) -> pl.DataFrame:
    """The mart's rows of `model`: one per (attack, step, cohort) cell the DiD estimated."""
    did = query.frame(con, _DID, {"model": model, "metric": metric})
    if did.is_empty():
        raise ValueError(f"profiles_attgt has no {metric} fit of {model!r}: run `memlake profiles fit`")
    scores = query.frame(con, _SCORES, {"model": model})
    if scores.is_empty():
        raise ValueError(f"mia_scores has no labelled rows for {model!r}: run `memlake mia`")
    rows = []
    for (attack, step), part in scores.group_by("attack", "step", maintain_order=True):
        nonmembers = part.filter(~pl.col("member"))["score"].to_numpy()
        by_cohort = {g: p["score"].to_numpy() for (g,), p in part.filter(pl.col("member")).group_by("cohort")}
        for cell in did.filter(pl.col("step") == step).iter_rows(named=True):
            members = by_cohort.get(cell["cohort"], nonmembers[:0])
            if len(members) < MIN_MEMBERS or not len(nonmembers):
                continue
            both = np.r_[members, nonmembers]
            label = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
            rows.append(
                {"model": model, "metric": metric, "attack": attack, "step": step, "cohort": cell["cohort"],
                 "event_time": step - cell["cohort"], "auc": auc(both, label), "n_members": len(members),
                 "n_nonmembers": len(nonmembers), **{k: cell[k] for k in DID_COLUMNS}}
            )  # fmt: skip
    return pl.DataFrame(rows, schema=SCHEMA)


def agreement(frame: pl.DataFrame) -> pl.DataFrame:
    """Per (model, attack): the Spearman correlation of the AUC with the DiD's memorisation across
    cells, and the cells it is over."""
    out = []
    for (model, attack), part in frame.group_by("model", "attack", maintain_order=True):
        ok = part.drop_nulls(["auc", "memorisation"])
        rho = spearmanr(ok["auc"], ok["memorisation"]).statistic if len(ok) >= 3 else float("nan")
        out.append({"model": model, "attack": attack, "cells": len(ok), "spearman": float(rho)})
    return pl.DataFrame(out, schema={"model": pl.String, "attack": pl.String, "cells": pl.Int64,
                                     "spearman": pl.Float64})  # fmt: skip
