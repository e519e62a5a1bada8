"""The unit-level engine: ATT(g, t) with covariates, sampling weights and clustered inference.

With covariates the cells are no longer differences of cohort means, so the sufficient-statistics
engine (`cells`) does not apply. Here each comparison (a treated cohort and one control set) is
estimated once for all its cells by `drdid` (the propensity score and regression design depend
only on who is compared, not on the periods), and the influence functions are kept explicitly as
dense blocks: rows = the comparison's units, columns = its cells. With never-treated controls
there is one block per cohort.

Everything downstream goes through sums over units of block products:
  analytic covariance   Cov = S' S / n^2 with S the IF summed within clusters (each unit its own
                        cluster when none is given),
  bootstrap draw        d_b = (1/n) sum_i V_b,c(i) IF(i), one Rademacher weight per cluster,
so the cost is one BLAS product per block and chunk of draws.

Clusters: the IF is summed within each cluster (the cluster-robust variance of an average of
influence functions). R `did` instead averages the IF within clusters and rescales by the
number of clusters, which equals the sum only when every cluster has the same size; with
unequal clusters (documents cut into different numbers of rows) it weights a one-row cluster
like a hundred-row one. tests/unit/analysis/test_did_covariates.py checks both against the
Monte Carlo spread of the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import drdid
from .bootstrap import Draws, rademacher_bits
from .cells import SE_FLOOR, CellEstimates, CellGrid, single_threaded_blas
from .panel import Panel


@dataclass(frozen=True)
class Design:
    """What the unit engine needs beyond outcomes: covariates, weights, clusters, method."""

    x: np.ndarray  # (n, p) covariates, intercept first, rows as in the panel
    w: np.ndarray  # (n,) sampling weights normalised to mean 1 over the units
    cluster: np.ndarray | None  # (n,) cluster codes 0..n_clusters-1, or None (each unit alone)
    method: str  # "dr", "ipw" or "reg"


@dataclass(frozen=True)
class Block:
    rows: np.ndarray  # (m,) panel rows of the comparison's units
    cells: np.ndarray  # (k,) cell indices
    values: np.ndarray  # (m, k) influence functions, R's scale (Var = sum IF^2 / n^2)


def _comparisons(panel: Panel, grid: CellGrid, members: tuple) -> dict[tuple, list[int]]:
    """Cells grouped by (treated cohort, control groups): each group is one comparison."""
    cell, group = members
    order = np.lexsort((group, cell))
    cell, group = cell[order], group[order]
    bounds = np.flatnonzero(np.diff(cell)) + 1
    controls = dict(zip(cell[np.r_[0, bounds]], np.split(group, bounds)))
    out: dict[tuple, list[int]] = {}
    for k in np.flatnonzero(~grid.reference):
        out.setdefault((int(grid.group[k]), tuple(map(int, controls[k]))), []).append(int(k))
    return out


def _overlap(err: Exception, panel: Panel, h: int, times: list[int]) -> drdid.OverlapError:
    at = f", time {times[0]}" if len(times) == 1 else ""
    return drdid.OverlapError(
        f"overlap fails for cohort {panel.cohorts[h]}{at}: {err} (R did drops such cells); "
        "drop or coarsen the covariate that separates it"
    )


def _panel_block(panel: Panel, grid: CellGrid, design: Design, h: int, rows: np.ndarray, cells: np.ndarray):
    """All cells of one comparison at once: ATT (k,) and the block of IFs (balanced panel)."""
    d = (np.arange(len(rows)) < panel.group_sizes[h]).astype(float)  # treated rows come first
    y = panel.y[rows]
    dy = y[:, grid.t[cells]] - y[:, grid.b[cells]]
    try:
        est, inf = drdid.estimate(design.method, drdid.Comparison.of(d, design.x[rows], design.w[rows]), dy)
    except drdid.OverlapError as err:
        raise _overlap(err, panel, h, list(panel.times[grid.t[cells]])) from None
    return est, Block(rows, cells, inf * (panel.n / len(rows)))


def _cross_section_block(panel: Panel, grid: CellGrid, design: Design, h: int, rows: np.ndarray, k: int):
    """One cell of an unbalanced panel as repeated cross sections (R's allow_unbalanced_panel):
    the observed (unit, time) rows at t and at the base period; IFs summed per unit."""
    y_t, y_b = panel.y[rows, grid.t[k]], panel.y[rows, grid.b[k]]
    at_t, at_b = np.isfinite(y_t), np.isfinite(y_b)
    unit = np.concatenate([np.flatnonzero(at_t), np.flatnonzero(at_b)])
    y = np.concatenate([y_t[at_t], y_b[at_b]])
    post = np.r_[np.ones(at_t.sum()), np.zeros(at_b.sum())]
    d = (unit < panel.group_sizes[h]).astype(float)
    obs = rows[unit]
    try:
        est, inf = drdid.estimate_rc(
            design.method, drdid.Comparison.of(d, design.x[obs], design.w[obs]), y, post
        )
    except drdid.OverlapError as err:
        raise _overlap(err, panel, h, [panel.times[grid.t[k]]]) from None
    seen = np.unique(unit)
    per_unit = np.bincount(unit, weights=inf * (panel.n / len(y)), minlength=len(rows))[seen]
    return est, Block(rows[seen], np.array([k]), per_unit[:, None])


def estimate_units(
    panel: Panel, grid: CellGrid, members: tuple, design: Design
) -> tuple[CellEstimates, UnitInfluence]:
    n = panel.n
    att = np.zeros(len(grid))
    n1 = panel.group_sizes[grid.group].astype(float)
    n0 = np.zeros(len(grid))
    blocks = []
    with single_threaded_blas():
        for (h, controls), cells in _comparisons(panel, grid, members).items():
            cells = np.asarray(cells)
            treated = np.arange(*panel.rows(h).indices(n))
            rows = np.concatenate([treated, *(np.arange(*panel.rows(c).indices(n)) for c in controls)])
            n0[cells] = len(rows) - len(treated)
            if panel.balanced:
                est, block = _panel_block(panel, grid, design, h, rows, cells)
                att[cells] = est
                blocks.append(block)
                continue
            for k in cells:
                att[k], block = _cross_section_block(panel, grid, design, h, rows, k)
                blocks.append(block)
    influence = UnitInfluence(
        blocks=tuple(blocks),
        n=n,
        n_cells=len(grid),
        w=design.w,
        unit_group=np.repeat(np.arange(panel.n_groups), panel.group_sizes),
        cluster=design.cluster,
        group_starts=panel.group_starts[:-1],
    )
    cells = CellEstimates(att=att, se=influence.cell_se(), n_treated=n1, n_control=n0, load=None, const=None)
    return cells, influence


@dataclass(frozen=True)
class UnitInfluence:
    """Explicit influence functions by block; the same interface as `inference.Influence`."""

    blocks: tuple[Block, ...]
    n: int
    n_cells: int
    w: np.ndarray  # (n,) weights: the estimated-share IF term of unit i is w_i wif[group(i)]
    unit_group: np.ndarray  # (n,) row group of each panel row
    cluster: np.ndarray | None
    group_starts: np.ndarray  # (H',) first row of each row group (rows sorted by group, none empty)

    @property
    def n_clusters(self) -> int:
        return self.n if self.cluster is None else int(self.cluster.max()) + 1

    def _by_cluster(self, psi: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        if self.cluster is None:
            return psi
        codes = self.cluster if rows is None else self.cluster[rows]
        out = np.zeros((self.n_clusters, psi.shape[1]))
        np.add.at(out, codes, psi)
        return out

    def cell_se(self) -> np.ndarray:
        se = np.full(self.n_cells, np.nan)
        for blk in self.blocks:
            summed = self._by_cluster(blk.values, blk.rows)
            se[blk.cells] = np.sqrt((summed**2).sum(axis=0)) / self.n
        se[~(se > SE_FLOOR)] = np.nan
        return se

    def psi(self, weights: np.ndarray, wif: np.ndarray | None = None) -> np.ndarray:
        """(n, K) influence functions of `att @ weights` (+ the estimated-weights term wif)."""
        out = np.zeros((self.n, weights.shape[1]))
        for blk in self.blocks:
            out[blk.rows] += blk.values @ weights[blk.cells]
        if wif is not None:
            out += self.w[:, None] * wif[self.unit_group]
        return out

    def covariance(self, weights: np.ndarray, wif: np.ndarray | None = None) -> np.ndarray:
        s = self._by_cluster(self.psi(weights, wif))
        return s.T @ s / self.n**2

    def cell_covariance(self, cells: np.ndarray) -> np.ndarray:
        position = np.full(self.n_cells, -1)
        position[cells] = np.arange(len(cells))
        psi = np.zeros((self.n, len(cells)))
        for blk in self.blocks:
            pos = position[blk.cells]
            keep = pos >= 0
            if keep.any():
                psi[np.ix_(blk.rows, pos[keep])] += blk.values[:, keep]
        s = self._by_cluster(psi)
        return s.T @ s / self.n**2


def draw_units(
    influence: UnitInfluence, n_groups: int, n_draws: int, seed: int | None, chunk_mb: float = 64.0
) -> Draws:
    """Multiplier bootstrap with one Rademacher weight per cluster (per unit without clusters).

    Without clusters the weights are those of `bootstrap.draw` (same bits, same rows), so both
    engines give identical draws on the same panel."""
    n = influence.n
    bits = rademacher_bits(influence.n_clusters, n_draws, seed)
    per_draw = 8 * (2 * n + influence.n_cells + n_groups)
    chunk = 8 * max(1, min((n_draws + 7) // 8, int(chunk_mb * 2**20 / per_draw) // 8))
    cells = np.zeros((influence.n_cells, n_draws))
    group_sums = np.empty((n_groups, n_draws))
    for start in range(0, n_draws, chunk):
        stop = min(start + chunk, n_draws)
        v = np.unpackbits(bits[:, start // 8 : (stop + 7) // 8], axis=1, count=stop - start)
        v = 2.0 * v - 1.0
        if influence.cluster is not None:
            v = v[influence.cluster]
        for blk in influence.blocks:
            cells[blk.cells, start:stop] = blk.values.T @ v[blk.rows] / n
        # rows are sorted by group and no group is empty: one reduction per chunk
        group_sums[:, start:stop] = np.add.reduceat(influence.w[:, None] * v, influence.group_starts, axis=0)
    return Draws(cells=cells, group_sums=group_sums, n=n)
