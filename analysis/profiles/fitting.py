"""Fit memorisation profiles: ATT(g, t) per (model, metric, options) from the `sequence_panel` view.

Reads the panel through SQL (`memlake.core.query.connect`), runs `analysis.did.att_gt` and writes
four marts keyed by the options, one file per fit:

  profiles_attgt       every cell, with the uniform band and the signed `memorisation`
  profiles_aggregates  event / cohort / time / simple aggregations (+ their overall rows)
  profiles_pretrend    placebo tests: R's Wald over the pre-treatment cells, the event-time Wald
                       over the pre-treatment event times (valid with small cohorts) and the
                       bootstrap sup-t
  profiles_regression  the pyfixest event study beside the DiD cells (never-treated fits)
  profiles_honest      HonestDiD robust sets and breakdown values (fits asked for it)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from analysis.did import att_gt
from analysis.profiles.metrics import SIGN, check_metric
from memlake.core import marts, query

MARTS = marts.declare(
    "profiles_attgt", "profiles_aggregates", "profiles_pretrend", "profiles_regression",
    defaults={"design": "'none'"},  # fits from before covariates and clusters
) + marts.declare(
    "profiles_honest",
    # and HonestDiD from before the hybrid test: relative magnitudes were the conditional test
    defaults={"design": "'none'", "test": "case when method = 'smoothness' then 'FLCI' else 'C' end"},
)  # fmt: skip

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
KEY_COLUMNS = ("model", "metric", "units", "control_group", "base_period", "first_epoch", "design")
# Per-instance columns a fit can adjust for or cluster on: the instance's own, and its model-free
# taxonomy features (lake table instance_features, after `memlake taxonomy features`).
DESIGN_SOURCES = ("instances", "instance_features")


@dataclass(frozen=True)
class ProfileSpec:
    model: str
    metric: str = "sup_seq"
    units: str = DEFAULT_UNITS
    control_group: str = "never_treated"
    base_period: str = "varying"
    first_epoch: bool = True  # restrict to first-epoch checkpoints and cohorts (the paper's default)
    covariates: tuple[str, ...] = ()  # per-instance columns for conditional parallel trends
    est_method: str = "dr"  # with covariates: dr, ipw or reg
    cluster: str | None = None  # a per-instance column whose clusters share a bootstrap weight

    def __post_init__(self):
        check_metric(self.metric)
        if self.units not in UNIT_SETS:
            raise ValueError(f"unknown units {self.units!r}: choose from {', '.join(UNIT_SETS)}")

    @property
    def design(self) -> str:
        """The mart key of the covariates and clusters: 'none' for the paper's plain DiD."""
        parts = [f"{self.est_method}({'+'.join(self.covariates)})"] * bool(self.covariates)
        parts += [f"cluster={self.cluster}"] * bool(self.cluster)
        return ";".join(parts) or "none"

    @property
    def key(self) -> str:
        parts = [getattr(self, c) for c in KEY_COLUMNS[:-1]]
        return marts.file_key(*parts, *([self.design] if self.design != "none" else []))


@dataclass
class ProfileFit:
    spec: ProfileSpec
    attgt: pl.DataFrame
    aggregates: pl.DataFrame
    pretrend: pl.DataFrame
    regression: pl.DataFrame | None
    notes: tuple[str, ...]
    honest: pl.DataFrame | None = None


def _design_columns(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> dict[str, str]:
    """Where each per-instance column lives: {name: 'instances' | 'instance_features'}."""
    have = query.view_names(con)
    found: dict[str, str] = {}
    for table in DESIGN_SOURCES:
        if table in have:
            cols = {c for (c,) in con.execute(f"select column_name from (describe {table})").fetchall()}
            found |= {n: table for n in names if n in cols and n not in found}
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(
            f"no per-instance column {', '.join(map(repr, missing))} in {' or '.join(DESIGN_SOURCES)} "
            "(model-free features need `memlake taxonomy features`)"
        )
    return found


def panel_frame(
    con: duckdb.DuckDBPyConnection, model: str, units: str = DEFAULT_UNITS, design: tuple[str, ...] = ()
) -> pl.DataFrame:
    """The model's panel: instance_id, step, cohort (null = never treated), every metric and the
    per-instance `design` columns (covariates, cluster) from instances or instance_features."""
    if units not in UNIT_SETS:
        raise ValueError(f"unknown units {units!r}: choose from {', '.join(UNIT_SETS)}")
    where = _design_columns(con, design)
    extra = "".join(f", {where[c]}.{c}" for c in design)
    features = (
        "left join (select distinct on (instance_id) * from instance_features) as instance_features "
        "on panel.instance_id = instance_features.instance_id"
        if "instance_features" in where.values()
        else ""
    )
    sql = f"""
        select panel.instance_id, panel.step, panel.cohort, panel.never_treated, {", ".join(SIGN)}{extra}
        from sequence_panel as panel
        join instances on panel.instance_id = instances.instance_id
        {features}
        where panel.model = $model and (panel.never_treated or {UNIT_SETS[units]})
        order by panel.instance_id, panel.step
    """
    frame = query.frame(con, sql, {"model": model})
    if frame.is_empty():
        raise ValueError(f"sequence_panel has no rows for model {model!r} (run `memlake build` after ingest)")
    return frame


def design_frame(panel: pl.DataFrame, spec: ProfileSpec) -> tuple[pl.DataFrame, list[str]]:
    """The panel with numeric covariates: a text column becomes 0/1 indicators of all levels but
    the most common; a null cluster (a never-trained row has no batch) is a cluster of its own."""
    names: list[str] = []
    out = panel
    for c in spec.covariates:
        col = panel[c]
        if col.dtype.is_numeric() or col.dtype == pl.Boolean:
            if col.null_count():
                raise ValueError(f"covariate {c!r} is null for {col.null_count()} panel rows")
            out = out.with_columns(pl.col(c).cast(pl.Float64))
            names.append(c)
            continue
        levels = col.drop_nulls().value_counts(sort=True)[c].to_list()
        for level in levels[1:]:
            name = f"{c}={level}"
            out = out.with_columns((pl.col(c) == level).fill_null(False).cast(pl.Float64).alias(name))
            names.append(name)
    if spec.cluster:
        if panel[spec.cluster].null_count() == len(panel):
            warnings.warn(
                f"cluster column {spec.cluster!r} is null for every row (a Hub import has no document "
                "ids): every instance is its own cluster",
                stacklevel=2,
            )
        out = out.with_columns(
            pl.col(spec.cluster).cast(pl.String).fill_null(pl.format("own-{}", pl.col("instance_id")))
        )
    return out, names


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
    honest: Honest | None = None,
) -> ProfileFit:
    """One profile. `panel` comes from `panel_frame`; `epoch_end` from `first_epoch_end`."""
    kw = dict(unit="instance_id", time="step", cohort="cohort", outcome=spec.metric)
    data, covariates = design_frame(panel, spec)
    design = dict(covariates=covariates, est_method=spec.est_method, cluster=spec.cluster)
    common = dict(**kw, **design, control_group=spec.control_group, alpha=alpha,
                  first_epoch=epoch_end if spec.first_epoch else None)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = att_gt(data, **common, base_period=spec.base_period, bootstrap=bootstrap, seed=seed)
    key_cols, cells, aggregates, pretrend = _tables(spec, res, bootstrap)
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
    honest_frame = None
    if honest is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the sample-rule warnings again
            universal = (
                res
                if spec.base_period == "universal"
                else att_gt(data, **common, base_period="universal", bootstrap=0)
            )
        rows = honest.run(universal)
        honest_frame = None if rows is None else rows.select(*key_cols, pl.all())
    notes = tuple(res.notes) + tuple(str(w.message) for w in caught if str(w.message) not in res.notes)
    return ProfileFit(spec, cells, aggregates, pretrend, reg, notes, honest_frame)


@dataclass(frozen=True)
class Honest:
    """HonestDiD for a profile (Rambachan & Roth 2023): robust sets for the average persistent
    memorisation over e = 0..post (and for e = 0) in a window of `pre` pre-periods, over `mbar`,
    with the breakdown value. The post-treatment cells do not depend on the base period, so the
    universal-base fit HonestDiD needs has the same profile."""

    method: str = "relative_magnitude"
    test: str = "C-LF"  # relative magnitudes: Andrews, Roth & Pakes' hybrid (R's default) or "C"
    mbar: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    pre: int = 4
    post: int = 4
    metrics: tuple[str, ...] = ("sup_seq",)  # the fits it runs on (each costs a few seconds)

    def run(self, res) -> pl.DataFrame | None:
        """The rows of `profiles_honest`; None when the event window has no pre-period change."""
        es = res.event_study(min_e=-self.pre - 1, max_e=self.post)
        if es.n_pre < 1:
            warnings.warn(
                "HonestDiD needs event time -2 and earlier: no pre-period change to bound", stacklevel=2
            )
            return None
        from analysis.did.honest import honest_did

        frames = []
        for k in (None, 0):  # the average over post event times, then e = 0; one event study
            out = honest_did(es, k=k, event_time="average" if k is None else k, method=self.method,
                             mbar=list(self.mbar), alpha=res.settings.alpha, test=self.test)  # fmt: skip
            frames.append(
                out.to_polars().with_columns(
                    test=pl.lit(self.test if self.method == "relative_magnitude" else "FLCI"),
                    estimate=pl.lit(out.estimate),
                    original_lower=pl.lit(out.original[0]),
                    original_upper=pl.lit(out.original[1]),
                    breakdown=pl.lit(None if np.isnan(out.breakdown) else out.breakdown, pl.Float64),
                )
            )
        return pl.concat(frames).rename({"m" if self.method == "smoothness" else "mbar": "bound"})


def _tables(spec: ProfileSpec, res, bootstrap: int) -> tuple[list, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The key columns and the cells, aggregations and placebo tests of a fit, as mart rows."""
    sign = SIGN[spec.metric]
    keys = {c: getattr(spec, c) for c in KEY_COLUMNS}
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

    return key_cols, cells, aggregates, pretrend


def fit_sql(spec: ProfileSpec, con: duckdb.DuckDBPyConnection, *, epoch_end: int | None, alpha: float = 0.05,
            chunks: int = 4) -> ProfileFit:  # fmt: skip
    """One profile from sufficient statistics computed by DuckDB over `sequence_panel`: the panel
    never enters Python (analytic SEs; no covariates, clusters or regression cross-check)."""
    from analysis.did.sql import att_gt_sql

    if spec.design != "none":
        raise ValueError("--sql fits the plain DiD: covariates and clusters need the unit-level engine")
    model = spec.model.replace("'", "''")
    source = f"""select panel.instance_id, panel.step, panel.cohort, panel.{spec.metric}
        from sequence_panel as panel join instances on panel.instance_id = instances.instance_id
        where panel.model = '{model}' and (panel.never_treated or {UNIT_SETS[spec.units]})"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = att_gt_sql(con, source, unit="instance_id", time="step", cohort="cohort", outcome=spec.metric,
                         control_group=spec.control_group, base_period=spec.base_period, alpha=alpha,
                         first_epoch=epoch_end if spec.first_epoch else None, chunks=chunks)  # fmt: skip
    _, cells, aggregates, pretrend = _tables(spec, res, 0)
    notes = tuple(res.notes) + tuple(str(w.message) for w in caught if str(w.message) not in res.notes)
    return ProfileFit(spec, cells, aggregates, pretrend, None, notes)


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
    if result.honest is not None:
        marts.write(wh, "profiles_honest", key, result.honest)
