"""Analytic inference from influence functions, without ever forming the (n x cells) IF matrix.

Each cell's IF is, within a row group h (a cohort or the never-treated), an affine function of the
unit's centred outcome path: IF_k(i) = yc_i . load[h, :, k] + const[h, k]. A linear combination
of cells (weights W, plus an IF term `wif` that is constant within a group, as for estimated
cohort shares) has the same form, and since yc sums to zero within each group,

    sum_i IF_a(i) IF_b(i) = sum_h  load_a[h]' S_h load_b[h] + n_h const_a[h] const_b[h]

with S_h the group's scatter matrix. Cov(estimates) = that / n^2, as R's V = IF'IF / n then / n.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy import linalg, sparse, stats

from .cells import SE_FLOOR, CellEstimates, CohortStats, single_threaded_blas


def z_value(alpha: float) -> float:
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


@dataclass(frozen=True)
class Influence:
    load: sparse.csc_matrix  # (H' * T, C)
    const: sparse.csc_matrix  # (H', C)
    sizes: np.ndarray  # (H',)
    scatter: np.ndarray  # (H', T, T)
    n: int

    @classmethod
    def of(cls, cells: CellEstimates, stats: CohortStats, n: int) -> Influence:
        return cls(cells.load, cells.const, stats.sizes, stats.scatter, n)

    def combine(self, weights: np.ndarray, wif: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Slope (H', T, K) and intercept (H', K) of the IF of `att @ weights` (+ wif per group)."""
        n_groups, n_t = self.scatter.shape[:2]
        slope = np.asarray(self.load @ weights).reshape(n_groups, n_t, -1)
        intercept = np.asarray(self.const @ weights)
        return slope, intercept if wif is None else intercept + wif

    def covariance(self, weights: np.ndarray, wif: np.ndarray | None = None) -> np.ndarray:
        """Covariance (K, K) of the linear combinations `att @ weights` (+ wif), weights (C, K)."""
        slope, intercept = self.combine(weights, wif)
        k = slope.shape[-1]
        flat = slope.reshape(-1, k)
        gram = flat.T @ np.matmul(self.scatter, slope).reshape(-1, k)
        gram += intercept.T @ (self.sizes[:, None] * intercept)
        return gram / self.n**2

    def cell_covariance(self, cells: np.ndarray) -> np.ndarray:
        """Covariance of a set of cells; per group only the cells whose IF touches it (sparse)."""
        n_groups, n_t = self.scatter.shape[:2]
        load = self.load[:, cells].tocsr()
        gram = np.zeros((len(cells), len(cells)))
        with single_threaded_blas():
            for h in range(n_groups):
                block = load[h * n_t : (h + 1) * n_t]
                touched = np.unique(block.indices)
                if len(touched) == len(cells):  # e.g. the never-treated group: a plain product
                    dense = block.toarray()
                    gram += dense.T @ (self.scatter[h] @ dense)
                elif len(touched):
                    dense = block[:, touched].toarray()
                    gram[np.ix_(touched, touched)] += dense.T @ (self.scatter[h] @ dense)
        const = self.const[:, cells].toarray()
        gram += const.T @ (self.sizes[:, None] * const)
        return gram / self.n**2


def standard_errors(cov_diag: np.ndarray) -> np.ndarray:
    se = np.sqrt(np.clip(cov_diag, 0.0, None))
    se[~(se > SE_FLOOR)] = np.nan
    return se


@dataclass(frozen=True)
class PretrendTest:
    """Joint test that the pre-treatment ATT(g, t) are zero (parallel-trends placebo).

    method "wald": W = att' Cov^-1 att ~ chi2(cells) (R `did`'s pre-test). Its chi2 reference
    ignores that Cov is estimated: each cohort's block is estimated from that cohort's units
    alone, so with many pre-cells per cohort relative to its size it over-rejects badly (a
    Pythia profile has dozens of pre-cells per cohort; bench/pretrend_size.py measures the size
    of each test under exact parallel trends). Restrict the cells (min_e) or use:
    method "wald_event": the Wald test over the pre-treatment keys of the event-time
    aggregation (the event-study pre-test). Each key pools cohorts, so its covariance is estimated
    from all units and its size stays near nominal; it tests that the pre-trend is zero on
    average over cohorts at every event time.
    method "sup_t": max_k |att_k / se_k| against its multiplier-bootstrap distribution (same
    draws as the uniform bands; it too over-rejects when cohorts are small).
    """

    method: str
    statistic: float
    p_value: float
    cells: int  # number of cells tested (the chi2 df for "wald")

    @property
    def df(self) -> int:
        return self.cells

    def __str__(self) -> str:
        if self.method == "wald":
            return f"Wald pre-test: chi2({self.cells}) = {self.statistic:.4f}, p = {self.p_value:.5f}"
        if self.method == "wald_event":
            return (
                f"Event-time Wald pre-test over {self.cells} keys: chi2({self.cells}) = "
                f"{self.statistic:.4f}, p = {self.p_value:.5f}"
            )
        return (
            f"sup-t pre-test over {self.cells} cells: max|t| = {self.statistic:.4f}, p = {self.p_value:.5f}"
        )


def wald_test(att: np.ndarray, cov: np.ndarray) -> PretrendTest:
    """W = att' cov^-1 att ~ chi2(len(att)); NaN with a warning if cov is singular (as R)."""
    if len(att) == 0:
        return PretrendTest("wald", np.nan, np.nan, 0)
    try:
        factor = linalg.cho_factor(cov, lower=True, check_finite=True)
    except linalg.LinAlgError:
        factor = None
    diag = np.diag(factor[0]) if factor is not None else np.zeros(1)
    # Cholesky pivots give a cheap reciprocal-condition estimate; R refuses rcond <= eps
    if factor is None or (diag.min() / diag.max()) ** 2 <= np.finfo(float).eps:
        warnings.warn("pre-test covariance is singular; no Wald statistic", stacklevel=3)
        return PretrendTest("wald", np.nan, np.nan, len(att))
    stat = float(att @ linalg.cho_solve(factor, att))
    return PretrendTest("wald", stat, float(stats.chi2.sf(stat, len(att))), len(att))
