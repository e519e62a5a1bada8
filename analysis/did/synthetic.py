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
) -> pl.DataFrame:
    """Long panel (unit, time, cohort, y): cohorts are times[1..n_cohorts], never-treated null.

    y_it = unit effect + time trend + effect * 1{t >= g} (for `effect_cohorts`, default all) + noise.
    Parallel trends hold by construction, so ATT(g, t) = effect for t >= g and 0 otherwise.
    Pythia-shaped: n_cohorts=95, units_per_cohort=100, n_never=2000, n_times=96, step=1000.
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
    return pl.DataFrame(
        {
            "unit": np.repeat(np.arange(n), n_times),
            "time": np.tile(times, n),
            "cohort": np.repeat(unit_cohort, n_times),
            "y": y.ravel(),
        }
    ).with_columns(pl.when(pl.col("cohort") >= 0).then(pl.col("cohort")).alias("cohort"))
