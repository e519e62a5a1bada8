"""Fit memorisation profiles: ATT(g, t) per (model, metric, options) from the `sequence_panel` view.

Reads the panel through SQL (`memlake.core.query.connect`), runs `analysis.did.att_gt` and writes
four marts keyed by the options, one file per fit:

  profiles_attgt       every cell, with the uniform band and the signed `memorisation`
  profiles_aggregates  event / cohort / time / simple aggregations (+ their overall rows)
  profiles_pretrend    placebo tests: R's Wald over the pre-treatment cells, the event-time Wald
                       over the pre-treatment event times (valid with small cohorts) and the
                       bootstrap sup-t
  profiles_regression  the pyfixest event study beside the DiD cells (never-treated fits)
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import duckdb
import polars as pl

from analysis.did import att_gt
from analysis.profiles.metrics import SIGN, check_metric
from memlake.core import marts, query

MARTS = marts.declare("profiles_attgt", "profiles_aggregates", "profiles_pretrend", "profiles_regression")

# Which treated instances enter a fit; never-treated (validation) instances are always the controls.
# `single` (the default) is the paper's setting: natural rows trained once. The planted sets are
# separate fits, never pooled with it: their rows are seen again after their cohort (copies) or
# share content with other rows (a trigger, a template), so their paths measure re-exposure and
# spillover, not the persistence of one exposure.
UNIT_SETS: dict[str, str] = {
    # (copies is null for a Hub import such as Pythia's deduplicated panel: the paper's setting)
    "single": "instances.artifact = 'none' and coalesce(instances.copies, 1) = 1",
    # exact planted duplicates (a unit is the first occurrence; later copies re-expose it)
    "duplicated": "instances.artifact = 'duplicate' and instances.copies > 1",
    # natural rows rewritten to carry the shared trigger and payload
    "backdoor": "instances.artifact = 'backdoor'",
    # TinyMem-style noised rows (trained `copies` times)
    "noise": "instances.artifact = 'noise'",
    # incrementing / repeating templates (the pattern is shared across rows)
    "templated": "instances.artifact in ('incrementing', 'repeating')",
    # every training row of the panel, planted or not
    "all": "true",
}
DEFAULT_UNITS = "single"
AGG_KINDS = {"dynamic": "event", "group": "cohort", "calendar": "time", "simple": "simple"}
KEY_COLUMNS = ("model", "metric", "units", "control_group", "base_period", "first_epoch")


@dataclass(frozen=True)
class ProfileSpec:
    model: str
    metric: str = "sup_seq"
    units: str = DEFAULT_UNITS
    control_group: str = "never_treated"
    base_period: str = "varying"
    first_epoch: bool = True  # restrict to first-epoch checkpoints and cohorts (the paper's default)

    def __post_init__(self):
        check_metric(self.metric)
        if self.units not in UNIT_SETS:
            raise ValueError(f"unknown units {self.units!r}: choose from {', '.join(UNIT_SETS)}")

    @property
    def key(self) -> str:
        return marts.file_key(*(getattr(self, c) for c in KEY_COLUMNS))


@dataclass
class ProfileFit:
    spec: ProfileSpec
    attgt: pl.DataFrame
    aggregates: pl.DataFrame
    pretrend: pl.DataFrame
    regression: pl.DataFrame | None
    notes: tuple[str, ...]


def panel_frame(con: duckdb.DuckDBPyConnection, model: str, units: str = DEFAULT_UNITS) -> pl.DataFrame:
    """The model's panel: instance_id, step, cohort (null = never treated) and every metric."""
    if units not in UNIT_SETS:
        raise ValueError(f"unknown units {units!r}: choose from {', '.join(UNIT_SETS)}")
    sql = f"""
        select panel.instance_id, panel.step, panel.cohort, panel.never_treated, {", ".join(SIGN)}
        from sequence_panel as panel
        join instances on panel.instance_id = instances.instance_id
        where panel.model = $model and (panel.never_treated or {UNIT_SETS[units]})
        order by panel.instance_id, panel.step
    """
    frame = query.frame(con, sql, {"model": model})
    if frame.is_empty():
        raise ValueError(f"sequence_panel has no rows for model {model!r} (run `memlake build` after ingest)")
    return frame


def first_epoch_end(con: duckdb.DuckDBPyConnection, model: str) -> int:
    """Last checkpoint step still inside the first epoch (later steps re-expose the data)."""
    [(end,)] = con.execute(
        "select max(step) from checkpoints "
        "where model = $model and coalesce(step <= first_epoch_end, epoch <= 1)",
        {"model": model},
    ).fetchall()
    if end is None:
        raise ValueError(f"checkpoints has no first-epoch step for model {model!r}")
    return int(end)


def fit(
    spec: ProfileSpec,
    panel: pl.DataFrame,
    *,
    epoch_end: int | None,
    bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    regression: bool = True,
) -> ProfileFit:
    """One profile. `panel` comes from `panel_frame`; `epoch_end` from `first_epoch_end`."""
    kw = dict(unit="instance_id", time="step", cohort="cohort", outcome=spec.metric)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = att_gt(
            panel,
            **kw,
            control_group=spec.control_group,
            base_period=spec.base_period,
            alpha=alpha,
            bootstrap=bootstrap,
            seed=seed,
            first_epoch=epoch_end if spec.first_epoch else None,
        )
    sign = SIGN[spec.metric]
    keys = {k: v for k, v in asdict(spec).items()}
    key_cols = [pl.lit(v).alias(k) for k, v in keys.items()]

    cells = (
        res.to_polars()
        .rename({"time": "step", "base_time": "base_step"})
        .with_columns(memorisation=pl.col("att") * sign)
        .select(*key_cols, pl.exclude("cband"))
    )
    aggs = []
    for kind, name in AGG_KINDS.items():
        # event time in checkpoint periods (R did's recoding): exact on an uneven checkpoint grid too
        frame = res.aggregate(kind, event_time="period").to_polars()
        if kind != "simple":  # the key-less row of a keyed aggregation is its overall average
            frame = frame.with_columns(
                kind=pl.when(pl.col("key").is_null()).then(pl.lit(f"{name}_overall")).otherwise(pl.lit(name))
            )
        else:
            frame = frame.with_columns(kind=pl.lit(name))
        aggs.append(frame)
    aggregates = (
        pl.concat(aggs).with_columns(memorisation=pl.col("att") * sign).select(*key_cols, pl.exclude("cband"))
    )
    tests = []
    for method in ("wald", "wald_event", "sup_t") if bootstrap else ("wald", "wald_event"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a singular covariance is reported as a null statistic
            t = res.pretrend_test(method)
        tests.append({"method": method, "statistic": t.statistic, "p_value": t.p_value, "cells": t.cells})
    pretrend = pl.DataFrame(
        tests, schema={"method": pl.String, "statistic": pl.Float64, "p_value": pl.Float64, "cells": pl.Int64}
    )
    pretrend = pretrend.select(*key_cols, pl.all()).with_columns(pl.col(pl.Float64).fill_nan(None))

    reg = None
    if regression and spec.control_group == "never_treated":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same sample-rule warnings as above
            es = event_study_regression_post(panel, kw, epoch_end if spec.first_epoch else None)
        reg = es.join(
            cells.select(
                "cohort", "step", pl.col("att").alias("att_did"), pl.col("se_analytic").alias("se_did")
            ),
            on=["cohort", "step"],
            how="left",
        ).select(*key_cols, pl.all())
    notes = tuple(res.notes) + tuple(str(w.message) for w in caught if str(w.message) not in res.notes)
    return ProfileFit(spec, cells, aggregates, pretrend, reg, notes)


def event_study_regression_post(panel: pl.DataFrame, kw: dict, epoch_end: int | None) -> pl.DataFrame:
    """pyfixest per-cohort event study, post-treatment cells only (an independent cross-check)."""
    from analysis.did import event_study_regression

    es = event_study_regression(panel, **kw, first_epoch=epoch_end)
    return es.filter(pl.col("post")).select(
        "cohort",
        pl.col("time").alias("step"),
        "event_time",
        pl.col("att").alias("att_regression"),
        pl.col("se").alias("se_regression"),
    )


def write_fit(wh, result: ProfileFit) -> None:
    """Replace this fit's rows in the four profile marts."""
    key = result.spec.key
    marts.write(wh, "profiles_attgt", key, result.attgt)
    marts.write(wh, "profiles_aggregates", key, result.aggregates)
    marts.write(wh, "profiles_pretrend", key, result.pretrend)
    if result.regression is not None:
        marts.write(wh, "profiles_regression", key, result.regression)
