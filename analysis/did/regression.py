"""Regression event study with pyfixest: an independent cross-check of ATT(g, t).

Per cohort g, on the units of {g} and the never-treated:

    y_it = a_i + l_t + sum_{s != b} beta_s 1{t = s} 1{i in g} + e_it,   b = base period of g

With unit and time fixed effects and one treated cohort, beta_s is exactly the DiD of means
(Y_s - Y_b in g) - (Y_s - Y_b in never-treated): it equals ATT(g, t) for post-treatment t, and
the universal-base ATT(g, t) for pre-treatment t. Standard errors are CRV1 clustered by unit,
close to but not equal to the influence-function SEs (pyfixest's small-sample factors). A full
saturated model (every cohort x time at once) is not needed and would not fit for Pythia-sized
grids, so this loops over cohorts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from .panel import load_panel


def event_study_regression(
    data: Any,
    *,
    unit: str,
    time: str,
    cohort: str,
    outcome: str,
    never_treated: str | None = None,
    anticipation: int = 0,
    cohorts: list[int] | None = None,
    first_epoch: int | None = None,
) -> pl.DataFrame:
    """Per-cohort two-way fixed-effects event study; one row per (cohort, time != base).

    Returns cohort, time, base_time, event_time, post, att (the regression coefficient) and se
    (CRV1 by unit). Same panel rules and arguments as `att_gt` (never-treated controls only).
    """
    import pyfixest as pf  # heavy import, only for this cross-check

    panel = load_panel(
        data,
        unit=unit,
        time=time,
        cohort=cohort,
        outcome=outcome,
        never_treated=never_treated,
        anticipation=anticipation,
        first_epoch=first_epoch,
    )
    n_t = len(panel.times)
    never = panel.rows(panel.n_groups - 1)
    wanted = panel.cohorts if cohorts is None else np.asarray(cohorts)
    frames = []
    for h, g in enumerate(panel.cohorts):
        if g not in wanted:
            continue
        rows = np.r_[np.arange(panel.rows(h).start, panel.rows(h).stop), np.arange(never.start, never.stop)]
        base = int(np.searchsorted(panel.times, g - anticipation, side="left") - 1)
        # time as its position in the grid, so `ref` is an integer whatever the time units are
        long = pl.DataFrame(
            {
                "uid": np.repeat(rows, n_t),
                "tt": np.tile(np.arange(n_t), len(rows)),
                "treated": np.repeat((rows < never.start).astype(np.int64), n_t),
                "y": panel.y[rows].ravel(),
            }
        )
        fit = pf.feols(
            f"y ~ i(tt, treated, ref={base}) | uid + tt", data=long.to_pandas(), vcov={"CRV1": "uid"}
        )
        tidy = fit.tidy()
        pos = np.array([int(name.split("::")[1].split(":")[0]) for name in tidy.index])
        t = panel.times[pos]
        frames.append(
            pl.DataFrame(
                {
                    "cohort": np.full(len(pos), g),
                    "time": t,
                    "base_time": np.full(len(pos), panel.times[base]),
                    "event_time": t - g,
                    "post": t >= g,
                    "att": tidy["Estimate"].to_numpy(),
                    "se": tidy["Std. Error"].to_numpy(),
                }
            )
        )
    return pl.concat(frames).sort("cohort", "time")
