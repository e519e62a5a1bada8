"""Group-time cells ATT(g, t): which cells exist, their base periods, controls, estimates and SEs.

Set-wise: every cell is a difference of per-cohort mean changes, so we reduce the panel once to
per-cohort sufficient statistics (size, mean path, within-cohort scatter matrix of the outcome
path) and compute all cells from those with vectorised gathers. Nothing loops over cells.

Definitions (R `did` 2.x, panel data, no covariates, where dr = reg = plain DiD of means):

  base period b(g, t), with delta = anticipation and "previous" = previous observed time:
    varying:   t >= g: the last time with time + delta < g;   t < g: the previous time of t.
               Cells exist for every time but the first.
    universal: always the last time with time + delta < g. Cells exist for every time; the cell
               t == b is the reference, reported as ATT 0 with no SE.
  post-treatment:  t >= g (cells in g - delta <= t < g stay "pre", as in R).
  ATT(g, t) = mean_{i in g}(Y_it - Y_ib) - mean_{i in C(g,t)}(Y_it - Y_ib)
  controls C(g, t):
    never_treated:   units with a null cohort.
    not_yet_treated: never-treated units plus units of any other cohort g' with
                     g' > max(t, b) + delta (R: gname > tlist[max(t, pret)] + anticipation).
  influence function of unit i (scale of R's `inffunc`, so SE = sqrt(mean(IF^2) / n)):
    (n / n_g)(dY_i - m_1) for i in g,  -(n / n_C)(dY_i - m_0) for i in C,  0 otherwise,
  i.e. SE^2 = v_1 / n_g + v_0 / n_C with population (1/n) variances of dY in each group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .panel import Panel

# R `did` reports a standard error this small as NA (a cell whose IF is identically zero).
SE_FLOOR = np.sqrt(np.finfo(float).eps) * 10


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Loops of small per-cohort products: BLAS threads cost more than they give (and thrash on a
    busy machine), so run them single-threaded when threadpoolctl (a scikit-learn dependency) is there."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class CohortStats:
    """Per row group h (treated cohorts, then never-treated): size, mean path, scatter matrix."""

    sizes: np.ndarray  # (H',)
    means: np.ndarray  # (H', T)
    scatter: np.ndarray  # (H', T, T): sum over units of (y - mean)(y - mean)'
    centred: np.ndarray  # (n, T): outcome minus its cohort's mean path (rows as in the panel)


def cohort_stats(panel: Panel) -> CohortStats:
    y = panel.y - panel.y.mean(axis=0)  # shift-invariant estimator; global centring helps precision
    n_groups, n_t = panel.n_groups, len(panel.times)
    means = np.zeros((n_groups, n_t))
    scatter = np.zeros((n_groups, n_t, n_t))
    centred = np.empty_like(y)
    with single_threaded_blas():
        for h in range(n_groups):
            rows = panel.rows(h)
            if rows.stop > rows.start:
                means[h] = y[rows].mean(axis=0)
                centred[rows] = y[rows] - means[h]
                scatter[h] = centred[rows].T @ centred[rows]
    return CohortStats(sizes=panel.group_sizes.astype(float), means=means, scatter=scatter, centred=centred)


@dataclass(frozen=True)
class CellGrid:
    """The (g, t) cells, as parallel arrays of cohort index, time index and base-time index."""

    group: np.ndarray  # (C,) cohort index into panel.cohorts
    t: np.ndarray  # (C,) time index
    b: np.ndarray  # (C,) base-time index
    post: np.ndarray  # (C,) bool: t >= g
    reference: np.ndarray  # (C,) bool: universal-base reference cell (t == b)

    def __len__(self) -> int:
        return len(self.group)


def cell_grid(panel: Panel, base_period: str, anticipation: int) -> CellGrid:
    times, cohorts = panel.times, panel.cohorts
    # last time index with time + delta < g; >= 0 because load_panel dropped earlier cohorts
    base_of_g = np.searchsorted(times, cohorts - anticipation, side="left") - 1
    t_range = np.arange(1 if base_period == "varying" else 0, len(times))
    group = np.repeat(np.arange(len(cohorts)), len(t_range))
    t = np.tile(t_range, len(cohorts))
    post = times[t] >= cohorts[group]
    b = np.where(post, base_of_g[group], t - 1) if base_period == "varying" else base_of_g[group]
    return CellGrid(group=group, t=t, b=b, post=post, reference=t == b)


def control_membership(panel: Panel, grid: CellGrid, control_group: str, anticipation: int) -> tuple:
    """(cell, group) index pairs: row group h is in the control set of cell k."""
    n_cells, n_cohorts = len(grid), len(panel.cohorts)
    never = (np.arange(n_cells), np.full(n_cells, n_cohorts))
    if control_group == "never_treated":
        return never
    threshold = panel.times[np.maximum(grid.t, grid.b)] + anticipation
    first = np.searchsorted(panel.cohorts, threshold, side="right")  # cohorts from here on are > threshold
    count = n_cohorts - first
    cell = np.repeat(np.arange(n_cells), count)
    within = np.arange(len(cell)) - np.repeat(np.cumsum(count) - count, count)
    group = first[cell] + within
    keep = group != grid.group[cell]  # a cohort never controls for itself
    return np.concatenate([cell[keep], never[0]]), np.concatenate([group[keep], never[1]])


@dataclass(frozen=True)
class CellEstimates:
    att: np.ndarray  # (C,)
    se: np.ndarray  # (C,) analytic IF standard error, NaN where R reports NA
    n_treated: np.ndarray  # (C,)
    n_control: np.ndarray  # (C,)
    # the sufficient-statistics engine's IF maps (None from the unit-level engine, `units`)
    load: sparse.csc_matrix | None  # (H' * T, C): IF slope on the centred outcome path, per row group
    const: sparse.csc_matrix | None  # (H', C): IF intercept per row group


def estimate_cells(panel: Panel, stats: CohortStats, grid: CellGrid, members: tuple) -> CellEstimates:
    """ATT(g, t), analytic SEs and the influence-function maps for every cell at once."""
    n, n_t, n_cells = panel.n, len(panel.times), len(grid)
    mu, sc, sizes = stats.means, stats.scatter, stats.sizes

    def change(h: np.ndarray, t: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean of Y_t - Y_b in group h, and its within-group sum of squared deviations."""
        return mu[h, t] - mu[h, b], sc[h, t, t] + sc[h, b, b] - 2.0 * sc[h, t, b]

    g, t, b = grid.group, grid.t, grid.b
    m1, ss1 = change(g, t, b)
    n1 = sizes[g]

    cell, h = members
    dm, ss = change(h, t[cell], b[cell])
    nh = sizes[h]
    n0 = np.bincount(cell, weights=nh, minlength=n_cells)
    m0 = np.bincount(cell, weights=nh * dm, minlength=n_cells) / n0
    dev = dm - m0[cell]  # a control cohort's mean change minus the pooled control mean
    ss0 = np.bincount(cell, weights=ss + nh * dev**2, minlength=n_cells)

    att = m1 - m0
    se = np.sqrt(ss1 / n1**2 + ss0 / n0**2)
    se[~(se > SE_FLOOR)] = np.nan

    # IF of unit i in group h for cell k: coef * ((yc_it - yc_ib) + (mean change of h - m)), with
    # coef = n/n_1, m = m_1 for the treated cohort (intercept 0) and coef = -n/n_0, m = m_0 for controls.
    live = ~grid.reference
    c1 = np.where(live, n / n1, 0.0)
    c0 = np.where(live, -n / n0, 0.0)[cell]
    ent_cell = np.concatenate([np.arange(n_cells), cell])
    ent_group = np.concatenate([g, h])
    ent_coef = np.concatenate([c1, c0])
    rows = np.concatenate([ent_group * n_t + t[ent_cell], ent_group * n_t + b[ent_cell]])
    load = sparse.csc_matrix(
        (np.concatenate([ent_coef, -ent_coef]), (rows, np.concatenate([ent_cell, ent_cell]))),
        shape=(panel.n_groups * n_t, n_cells),
    )
    const = sparse.csc_matrix((c0 * dev, (h, cell)), shape=(panel.n_groups, n_cells))
    load.eliminate_zeros()
    const.eliminate_zeros()
    return CellEstimates(att=att, se=se, n_treated=n1, n_control=n0, load=load, const=const)
