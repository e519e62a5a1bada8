"""Memorisation profiles split by taxonomy category: when are recited, reconstructed and
recollected rows memorised, and for how long?

Each treated row of the panel takes its category from the `taxonomy` mart at the model's last
checkpoint (the categories are properties of the row: its duplicates, templating; every row has
one, memorised or not, so the split does not select on the outcome). Every training row of the
panel enters (the profiles' `all` units), planted ones included: recitation is memorisation of
duplicated text, so its rows are the ones seen again after their cohort, and their profile is
that of repeated exposure by construction. For each category the DiD is fitted on that
category's treated rows against all never-trained rows, with the profiles' defaults
(never-treated controls, varying base period, first epoch), and aggregated by event time in
checkpoint periods. Beside it, the share of the category's treated rows that are k-extractable
at that event time (`taxonomy.memorised`).
"""

from __future__ import annotations

import warnings

import duckdb
import numpy as np
import polars as pl

from analysis.did import att_gt
from analysis.did.inference import z_value
from analysis.profiles.fitting import first_epoch_end, panel_frame
from analysis.profiles.metrics import SIGN
from memlake.core import query

CATEGORIES = ("recitation", "reconstruction", "recollection")
SCHEMA = {
    "model": pl.String, "metric": pl.String, "category": pl.String, "event_time": pl.Int64,
    "att": pl.Float64, "se": pl.Float64, "ci_lower": pl.Float64, "ci_upper": pl.Float64,
    "memorisation": pl.Float64, "n_treated": pl.Int64, "memorised_share": pl.Float64,
}  # fmt: skip


def categories(con: duckdb.DuckDBPyConnection, model: str) -> pl.DataFrame:
    """instance_id, category, memorised (per step) of `model`'s taxonomy rows; the category of a
    row is the one at the model's last taxonomy step."""
    sql = "select instance_id, step, memorised, category from taxonomy where model = $m"
    frame = query.frame(con, sql, {"m": model})
    if frame.is_empty():
        raise ValueError(f"taxonomy has no rows for model {model!r}: run `memlake build` after extraction")
    last = frame.filter(pl.col("step") == pl.col("step").max()).select("instance_id", "category")
    return frame.drop("category").join(last, on="instance_id", how="inner")


def profiles_by_category(
    con: duckdb.DuckDBPyConnection, model: str, metrics: list[str], alpha: float = 0.05
) -> tuple[pl.DataFrame, list[str]]:
    """(the mart's rows of `model`, notes on categories too small to fit)."""
    panel = panel_frame(con, model, units="all")
    epoch_end = first_epoch_end(con, model)
    taxonomy = categories(con, model)
    of_row = taxonomy.select("instance_id", "category").unique()
    treated = panel.filter(~pl.col("never_treated")).select("instance_id", "cohort").unique()
    treated = treated.join(of_row, on="instance_id", how="inner")
    steps = np.sort(panel["step"].unique().to_numpy())
    period = {int(s): i for i, s in enumerate(steps)}
    shares = (
        taxonomy.join(treated, on=["instance_id", "category"], how="inner")
        .with_columns(
            event_time=pl.col("step").replace_strict(period, default=None)
            - pl.col("cohort").replace_strict(period, default=None)
        )
        .group_by("category", "event_time")
        .agg(pl.col("memorised").mean().alias("memorised_share"))
    )
    rows, notes = [], []
    z = z_value(alpha)
    for category in CATEGORIES:
        ids = treated.filter(pl.col("category") == category)["instance_id"]
        sub = panel.filter(pl.col("never_treated") | pl.col("instance_id").is_in(ids.implode()))
        for metric in metrics:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the profiles report the sample-rule notes
                    res = att_gt(sub, unit="instance_id", time="step", cohort="cohort", outcome=metric,
                                 bootstrap=0, first_epoch=epoch_end)  # fmt: skip
            except ValueError as e:
                notes.append(f"{model}/{metric}/{category}: {len(ids)} treated rows, no fit ({e})")
                continue
            agg = (
                res.aggregate("dynamic", event_time="period").to_polars().filter(pl.col("key").is_not_null())
            )
            rows.append(
                agg.select(
                    pl.lit(model).alias("model"),
                    pl.lit(metric).alias("metric"),
                    pl.lit(category).alias("category"),
                    pl.col("key").alias("event_time"),
                    "att",
                    "se",
                    (pl.col("att") - z * pl.col("se")).alias("ci_lower"),
                    (pl.col("att") + z * pl.col("se")).alias("ci_upper"),
                    (pl.col("att") * SIGN[metric]).alias("memorisation"),
                    pl.lit(len(ids)).alias("n_treated"),
                ).join(
                    shares.filter(pl.col("category") == category).drop("category"),
                    on="event_time",
                    how="left",
                )
            )
    out = pl.concat(rows) if rows else pl.DataFrame(schema=SCHEMA)
    return out.select(list(SCHEMA)).cast(SCHEMA), notes
