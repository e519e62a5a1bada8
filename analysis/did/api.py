"""`att_gt`: the public entry point; validation and orchestration only (maths lives in the modules)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .bootstrap import bootstrap_se, draw, uniform_critical_value
from .cells import cell_grid, cohort_stats, control_membership, estimate_cells
from .drdid import EST_METHODS
from .inference import Influence
from .panel import Panel, load_panel
from .results import AttGtResult, Settings
from .units import Design, draw_units, estimate_units

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
    covariates: Iterable[str] = (),
    est_method: str = "dr",
    weights: str | None = None,
    cluster: str | Iterable[str] | None = None,
    allow_unbalanced_panel: bool = False,
) -> AttGtResult:
    """Callaway & Sant'Anna group-time ATTs on a long panel (balanced unless allow_unbalanced_panel).

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
    covariates: per-unit columns X for conditional parallel trends (one value per unit).
    est_method: with covariates, "dr" (doubly robust, Sant'Anna & Zhao 2020), "ipw" (normalised
        inverse probability weighting) or "reg" (outcome regression), as R `did`. Without
        covariates all three are the plain DiD of (weighted) means.
    weights: a per-unit column of sampling weights (normalised to mean 1, as R).
    cluster: a per-unit column (or [unit, column], as R's clustervars) whose clusters share a
        bootstrap weight and whose influence functions are summed in the analytic SE.
    allow_unbalanced_panel: R's rule for units missing some times. If the panel is unbalanced,
        every cell is estimated from the observed rows at t and at its base period as repeated
        cross sections (R `did` with panel=False), and each unit's influence function sums over
        its rows; a balanced panel is unaffected. Off by default: a missing row is an error.
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
    if est_method not in EST_METHODS:
        raise ValueError(f"est_method must be one of {EST_METHODS}, got {est_method!r}")
    covariates = tuple([covariates] if isinstance(covariates, str) else covariates)
    cluster = _cluster_column(cluster, unit)

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
        covariates=covariates,
        weights=weights,
        cluster=cluster,
        allow_unbalanced=allow_unbalanced_panel,
    )
    grid = cell_grid(panel, base_period, int(anticipation))
    members = control_membership(panel, grid, control_group, int(anticipation))
    mask = _band_mask(cband_cells, panel.cohorts[grid.group], panel.times[grid.t], grid.post)
    design = _design(panel, est_method)
    settings = Settings(
        control_group, base_period, int(anticipation), alpha, bootstrap, seed, first_epoch,
        est_method=est_method if covariates else "means", covariates=covariates, weights=weights,
        cluster=cluster, balanced=panel.balanced,
    )  # fmt: skip

    draws, se_boot, crit = None, None, np.nan
    if design is None:  # cells are differences of cohort means: the sufficient-statistics engine
        stats = cohort_stats(panel)
        cells = estimate_cells(panel, stats, grid, members)
        influence = Influence.of(cells, stats, panel.n)
        if bootstrap:
            draws = draw(influence, stats.centred, panel.group_starts, bootstrap, seed)
    else:
        cells, influence = estimate_units(panel, grid, members, design)
        if bootstrap:
            draws = draw_units(influence, panel.n_groups, bootstrap, seed)
    if draws is not None:
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
        shares=_cohort_shares(panel),
        se_boot=se_boot,
        crit_value=crit,
    )


def _cluster_column(cluster: str | Iterable[str] | None, unit: str) -> str | None:
    """R's clustervars: the unit id plus at most one other per-unit column."""
    if cluster is None or isinstance(cluster, str):
        return None if cluster == unit else cluster
    others = [c for c in cluster if c != unit]
    if len(others) > 1:
        raise ValueError(
            f"cluster takes the unit column and at most one other column, got {list(cluster)} "
            "(as R `did`: the multiplier bootstrap draws one weight per cluster of one variable)"
        )
    return others[0] if others else None


def _design(panel: Panel, est_method: str) -> Design | None:
    """The unit-level design, or None when the cohort-means engine gives the same answer."""
    if panel.x is None and panel.w is None and panel.cluster is None and panel.balanced:
        return None
    ones = np.ones((panel.n, 1))
    x = ones if panel.x is None else np.hstack([ones, panel.x])
    w = np.ones(panel.n) if panel.w is None else panel.w / panel.w.mean()
    return Design(x=x, w=w, cluster=panel.cluster, method=est_method)


def _cohort_shares(panel: Panel) -> np.ndarray:
    """Each row group's (weighted) share of the units: the aggregations' cohort weights."""
    w = np.ones(panel.n) if panel.w is None else panel.w / panel.w.mean()
    return np.add.reduceat(w, panel.group_starts[:-1]) / panel.n


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
