"""Synthetic staggered-adoption panels with a known effect (tests, benchmarks, examples)."""

from __future__ import annotations

import numpy as np
import polars as pl


def staggered_panel(
    *,
    n_cohorts: int = 5,
    units_per_cohort: int = 50,
    n_never: int = 200,
    n_times: int = 8,
    step: int = 1,
    first_time: int = 0,
    effect: float | np.ndarray = 0.5,
    effect_cohorts: list[int] | None = None,
    noise: float = 1.0,
    seed: int = 0,
    covariates: int = 0,
    confounding: float = 0.0,
    documents: int | None = None,
    document_shock: float = 0.0,
) -> pl.DataFrame:
    """Long panel (unit, time, cohort, y): cohorts are times[1..n_cohorts], never-treated null.

    y_it = unit effect + time trend + effect * 1{t >= g} (for `effect_cohorts`, default all) + noise.
    Parallel trends hold by construction, so ATT(g, t) = effect for t >= g and 0 otherwise.
    Pythia-shaped: n_cohorts=95, units_per_cohort=100, n_never=2000, n_times=96, step=1000.

    covariates=k adds per-unit columns x1..xk, N(0, 1) for never-treated units and N(0.5, 1) for
    treated ones; with confounding=c each adds c * x * (period / n_times) to the outcome, so
    trends are parallel only conditional on X: the unconditional DiD is biased, a covariate-
    adjusted one is not. documents=m adds a `document` column: consecutive units (so mostly of
    one cohort) are cut from m documents of unequal sizes (like rows cut from one text), and
    document_shock=s adds a document-level random walk of scale s, so units of a document are
    correlated. Without these options the
    panel is the same as before they existed (the extra draws come after the others).
    """
    rng = np.random.default_rng(seed)
    times = first_time + step * np.arange(n_times)
    cohorts = times[1 : n_cohorts + 1]
    if len(cohorts) < n_cohorts:
        raise ValueError("need n_times > n_cohorts")
    unit_cohort = np.r_[np.repeat(cohorts, units_per_cohort), np.full(n_never, -1)]
    n = len(unit_cohort)
    treated_cohorts = cohorts if effect_cohorts is None else np.asarray(effect_cohorts)
    y = (
        rng.normal(0, 1, (n, 1))
        + np.sin(np.arange(n_times) / 3.0)[None, :]
        + rng.normal(0, noise, (n, n_times))
    )
    treated = (unit_cohort[:, None] >= 0) & (times[None, :] >= unit_cohort[:, None])
    treated &= np.isin(unit_cohort, treated_cohorts)[:, None]
    y = y + np.asarray(effect) * treated
    extra = {}
    if covariates:
        x = rng.normal(0, 1, (n, covariates)) + 0.5 * (unit_cohort >= 0)[:, None]
        y = y + confounding * x.sum(axis=1, keepdims=True) * (np.arange(n_times) / n_times)[None, :]
        extra |= {f"x{j + 1}": np.repeat(x[:, j], n_times) for j in range(covariates)}
    if documents is not None:
        # consecutive units (so mostly one cohort) from documents of exponential share
        share = rng.exponential(1, documents)
        doc = np.minimum(
            np.searchsorted(np.cumsum(share) / share.sum() * n, np.arange(n), side="right"), documents - 1
        )
        walk = np.cumsum(rng.normal(0, document_shock, (documents, n_times)), axis=1)
        y = y + walk[doc]
        extra["document"] = np.repeat(doc, n_times)
    return pl.DataFrame(
        {
            "unit": np.repeat(np.arange(n), n_times),
            "time": np.tile(times, n),
            "cohort": np.repeat(unit_cohort, n_times),
            "y": y.ravel(),
            **extra,
        }
    ).with_columns(pl.when(pl.col("cohort") >= 0).then(pl.col("cohort")).alias("cohort"))
