"""`att_gt`: the public entry point; validation and orchestration only (maths lives in the modules)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .bootstrap import bootstrap_se, draw, uniform_critical_value
from .cells import cell_grid, cohort_stats, control_membership, estimate_cells
from .inference import Influence
from .panel import load_panel
from .results import AttGtResult, Settings

CONTROL_GROUPS = ("never_treated", "not_yet_treated")
BASE_PERIODS = ("varying", "universal")


def att_gt(
    data: Any,
    *,
    unit: str,
    time: str,
    cohort: str,
    outcome: str,
    never_treated: str | None = None,
    control_group: str = "never_treated",
    base_period: str = "varying",
    anticipation: int = 0,
    alpha: float = 0.05,
    bootstrap: int = 1000,
    seed: int | None = 0,
    cband_cells: str | Iterable[tuple[int, int]] = "post",
    first_epoch: int | None = None,
) -> AttGtResult:
    """Callaway & Sant'Anna group-time ATTs on a balanced long panel (no covariates).

    data: polars/pandas DataFrame or pyarrow Table, one row per (unit, time).
    unit, time, cohort, outcome: column names. `time` and `cohort` are sortable integers in the
        same units (years, training steps, ...); `cohort` is the first time a unit is treated and
        null for never-treated units (or pass `never_treated`, a boolean column). "Previous
        period" always means the previous observed time, not t - 1.
    control_group: "never_treated" or "not_yet_treated" (never-treated plus cohorts g' with
        g' > max(t, base) + anticipation), as R `did`.
    base_period: "varying" (pre-periods are one-step placebo changes) or "universal" (every
        cell against the last period before g - anticipation).
    anticipation: in time units, added to time values as R does (1000 = one Pythia checkpoint
        interval): the base period is the last time before cohort - anticipation.
    bootstrap: multiplier-bootstrap draws B (0: analytic SEs and pointwise intervals only).
    seed: seeds the Rademacher weights (numpy Generator); same seed, same draws.
    cband_cells: cells the uniform (sup-t) band covers: "post" (default), "pre", "all", or an
        iterable of (cohort, time) pairs.
    first_epoch: keep times <= first_epoch and drop units with cohort > first_epoch.
    """
    if control_group not in CONTROL_GROUPS:
        raise ValueError(f"control_group must be one of {CONTROL_GROUPS}, got {control_group!r}")
    if base_period not in BASE_PERIODS:
        raise ValueError(f"base_period must be one of {BASE_PERIODS}, got {base_period!r}")
    if anticipation < 0 or int(anticipation) != anticipation:
        raise ValueError(f"anticipation must be a non-negative integer, got {anticipation!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap!r}")

    panel = load_panel(
        data,
        unit=unit,
        time=time,
        cohort=cohort,
        outcome=outcome,
        never_treated=never_treated,
        control_group=control_group,
        anticipation=int(anticipation),
        first_epoch=first_epoch,
    )
    stats = cohort_stats(panel)
    grid = cell_grid(panel, base_period, int(anticipation))
    members = control_membership(panel, grid, control_group, int(anticipation))
    cells = estimate_cells(panel, stats, grid, members)
    influence = Influence.of(cells, stats, panel.n)
    mask = _band_mask(cband_cells, panel.cohorts[grid.group], panel.times[grid.t], grid.post)
    settings = Settings(control_group, base_period, int(anticipation), alpha, bootstrap, seed, first_epoch)

    draws, se_boot, crit = None, None, np.nan
    if bootstrap:
        draws = draw(influence, stats.centred, panel.group_starts, bootstrap, seed)
        se_boot = bootstrap_se(draws.cells, panel.n)
        crit = uniform_critical_value(draws.cells[mask], se_boot[mask], alpha)
    return AttGtResult(
        times=panel.times,
        cohorts=panel.cohorts,
        group_sizes=panel.group_sizes,
        grid=grid,
        cells=cells,
        influence=influence,
        draws=draws,
        settings=settings,
        cband_mask=mask,
        notes=panel.notes,
        se_boot=se_boot,
        crit_value=crit,
    )


def _band_mask(spec: str | Iterable[tuple[int, int]], cohort: np.ndarray, time: np.ndarray, post: np.ndarray):
    if isinstance(spec, str):
        masks = {"post": post, "pre": ~post, "all": np.ones_like(post)}
        if spec not in masks:
            raise ValueError(
                f"cband_cells must be 'post', 'pre', 'all' or (cohort, time) pairs, got {spec!r}"
            )
        return masks[spec].copy()
    wanted = {(int(g), int(t)) for g, t in spec}
    mask = np.array([(int(g), int(t)) in wanted for g, t in zip(cohort, time)], dtype=bool)
    if len(wanted) != mask.sum():
        raise ValueError(
            f"{len(wanted) - int(mask.sum())} cband_cells pairs are not cells of this estimation"
        )
    return mask
