"""The DiD against the truth. A suite model's twin trained on the same data order with the
held-out set H replaced by fillers, so for a row i of H the effect of having trained on it is
known exactly: tau_i(t) = Y_i(model, t) - Y_i(twin, t). The true ATT(g, t) is the mean of tau over
H in cohort g; the DiD estimates the same cell from the model's panel alone (H rows treated, the
never-trained rows, and for not-yet-treated also later cohorts, as controls). Bias, RMSE and the
coverage of the pointwise intervals and of the uniform band then say whether the DiD is right.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from analysis.did import att_gt
from analysis.did.inference import z_value
from analysis.profiles.fitting import first_epoch_end, panel_frame
from analysis.profiles.metrics import check_metric
from analysis.views import SQL_VIEWS
from memlake.core import marts, query
from memlake.core.paths import Warehouse

MARTS = marts.declare("counterfactual_attgt", "did_validation")
ALPHA = 0.05


@dataclass(frozen=True)
class Validation:
    cells: pl.DataFrame  # counterfactual_attgt rows
    summary: pl.DataFrame  # did_validation rows


def twin_of(con: duckdb.DuckDBPyConnection, model: str) -> str:
    from memlake.core.twins import twin_models

    if not twin_models(con):
        raise ValueError(f"model {model!r} has no twin: train one with `memlake suite train --twins`")
    rows = con.execute("select distinct model from checkpoints where twin_of = $m", {"m": model}).fetchall()
    if not rows:
        raise ValueError(f"model {model!r} has no twin: train one with `memlake suite train --twins`")
    return rows[0][0]


def validate(
    wh: Warehouse,
    model: str,
    metrics: list[str],
    control_groups: list[str],
    *,
    first_epoch: bool = True,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Validation:
    """Every (metric, control group) DiD of `model` against its twin's truth; writes both marts."""
    for m in metrics:
        check_metric(m)
    con = query.connect(wh, views=SQL_VIEWS)
    try:
        twin = twin_of(con, model)
        heldout = con.execute(
            "select instance_id from twin_heldout where model = $t", {"t": twin}
        ).fetchnumpy()
        panel = panel_frame(con, model)
        panel = panel.filter(pl.col("never_treated") | pl.col("instance_id").is_in(heldout["instance_id"]))
        own = panel_frame(con, twin).select("instance_id", "step", *metrics)
        epoch_end = first_epoch_end(con, model) if first_epoch else None
    finally:
        con.close()
    paired = panel.join(own, on=["instance_id", "step"], how="left", suffix="_twin")
    truth_rows = paired.filter(~pl.col("never_treated"))
    if truth_rows.select(pl.col(f"{metrics[0]}_twin").is_null().any()).item():
        raise ValueError(
            f"twin {twin!r} lacks token statistics for some held-out row or step: score it first"
        )
    cells, summary = [], []
    for metric in metrics:
        tau = truth_rows.select(
            "instance_id", "cohort", "step", (pl.col(metric) - pl.col(f"{metric}_twin")).alias("tau")
        )
        truth = tau.group_by("cohort", "step").agg(pl.col("tau").mean().alias("att_true"))
        # interference: what training on H rather than the fillers did to rows neither trained on
        shift = (pl.col(metric) - pl.col(f"{metric}_twin")).mean().alias("control_shift")
        truth = truth.join(
            paired.filter(pl.col("never_treated")).group_by("step").agg(shift), on="step", how="left"
        )
        for control in control_groups:
            c, s = _one(panel, truth, model, metric, control, epoch_end, bootstrap, seed)
            cells.append(c)
            summary.extend(s)
    out = Validation(pl.concat(cells), pl.DataFrame(summary, schema=SUMMARY_SCHEMA))
    marts.write(wh, "counterfactual_attgt", marts.file_key(model), out.cells)
    marts.write(wh, "did_validation", marts.file_key(model), out.summary)
    return out


def _one(panel, truth, model, metric, control, epoch_end, bootstrap, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sample-rule notes are the profiles' business
        res = att_gt(
            panel,
            unit="instance_id",
            time="step",
            cohort="cohort",
            outcome=metric,
            control_group=control,
            bootstrap=bootstrap,
            seed=seed,
            first_epoch=epoch_end,
        )
    z = z_value(ALPHA)
    grid = res.to_polars().rename({"time": "step"})
    grid = grid.join(truth, on=["cohort", "step"], how="left")
    cells = grid.select(
        pl.lit(model).alias("model"),
        pl.lit(metric).alias("metric"),
        pl.lit(control).alias("control_group"),
        "cohort",
        "step",
        "event_time",
        "post",
        "att_true",
        pl.col("att").alias("att_did"),
        "control_shift",
        "se",
        (pl.col("att") - z * pl.col("se")).alias("ci_lower"),
        (pl.col("att") + z * pl.col("se")).alias("ci_upper"),
        pl.when("cband").then("ci_lower").alias("band_lower"),
        pl.when("cband").then("ci_upper").alias("band_upper"),
        "n_treated",
        "n_control",
    )
    post = cells.filter(pl.col("post") & pl.col("se").is_not_null())
    rows = [_summary(model, metric, control, "attgt", post, has_band=bootstrap > 0)]
    # the event-time aggregation of the truth with the DiD's own weights over the same cells
    keys, weights = res.aggregation_weights("dynamic", event_time="period")
    true_cells = grid["att_true"].fill_null(np.nan).to_numpy()
    agg = res.aggregate("dynamic", event_time="period")
    event = pl.DataFrame(
        {
            "event": keys,
            "att_true": (true_cells @ weights)[:-1],
            "att_did": agg.att[:-1],
            "se": agg.se[:-1],
            "ci_lower": agg.att[:-1] - z * agg.se[:-1],
            "ci_upper": agg.att[:-1] + z * agg.se[:-1],
            "band_lower": agg.att[:-1] - agg.crit_value * agg.se[:-1] if agg.banded else None,
            "band_upper": agg.att[:-1] + agg.crit_value * agg.se[:-1] if agg.banded else None,
        }
    ).filter(pl.col("event") >= 0)
    rows.append(_summary(model, metric, control, "event", event, has_band=agg.banded))
    return cells, rows


def _summary(model, metric, control, level, frame: pl.DataFrame, has_band: bool) -> dict:
    err = (frame["att_did"] - frame["att_true"]).to_numpy()
    truth = frame["att_true"].to_numpy()
    inside = (frame["ci_lower"].to_numpy() <= truth) & (truth <= frame["ci_upper"].to_numpy())
    row = {
        "model": model,
        "metric": metric,
        "control_group": control,
        "level": level,
        "cells": len(frame),
        "bias": float(err.mean()) if len(err) else None,
        "rmse": float(np.sqrt((err**2).mean())) if len(err) else None,
        "mean_abs_truth": float(np.abs(truth).mean()) if len(truth) else None,
        "control_shift": float(frame["control_shift"].mean()) if "control_shift" in frame.columns else None,
        "coverage_pointwise": float(inside.mean()) if len(err) else None,
        "coverage_uniform": None,
    }
    if has_band and len(err):
        in_band = (frame["band_lower"].to_numpy() <= truth) & (truth <= frame["band_upper"].to_numpy())
        row["coverage_uniform"] = float(in_band.all())
    return row


SUMMARY_SCHEMA = {
    "model": pl.String,
    "metric": pl.String,
    "control_group": pl.String,
    "level": pl.String,
    "cells": pl.Int64,
    "bias": pl.Float64,
    "rmse": pl.Float64,
    "mean_abs_truth": pl.Float64,
    "control_shift": pl.Float64,
    "coverage_pointwise": pl.Float64,
    "coverage_uniform": pl.Float64,
}
