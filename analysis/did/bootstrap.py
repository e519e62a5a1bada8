"""Multiplier bootstrap (R `did::mboot`): Rademacher weights per unit, shared by all cells.

A draw of estimate k is d_bk = (1/n) sum_i V_bi IF_k(i). With IF_k affine in the unit's centred
outcome path within each row group h, the draw only needs, per group, the weighted path sums
P_bh = sum_{i in h} V_bi yc_i (a T-vector) and N_bh = sum_{i in h} V_bi:

    d_bk = (1/n) sum_h  P_bh . load[h, :, k] + N_bh const[h, k]

so the cost is one (B x n) @ (n x T) product per chunk of draws plus a sparse product with the
cell maps (two or a few nonzeros per cell and group); each cell's draw is O(1) in n.
Draws are processed in chunks so memory stays bounded; the weights come from one seeded bit
matrix (B x n bits), so results do not depend on the chunk size, and the aggregations reuse the
very same draws (through P and N) for their bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .cells import SE_FLOOR, single_threaded_blas
from .inference import Influence

_IQR_TO_SIGMA = NormalDist().inv_cdf(0.75) - NormalDist().inv_cdf(0.25)


@dataclass(frozen=True)
class Draws:
    """Bootstrap deviations of every cell estimate, plus per-group weight sums for aggregates.

    Stored estimates x draws, so per-estimate quantiles read contiguous rows.
    """

    cells: np.ndarray  # (C, B): d_bk
    group_sums: np.ndarray  # (H', B): N_bh
    n: int

    def combine(self, weights: np.ndarray, wif: np.ndarray | None = None) -> np.ndarray:
        """Draws (K, B) of `att @ weights` with an IF term `wif` (H', K) constant within groups."""
        out = weights.T @ self.cells
        if wif is not None:
            out += wif.T @ self.group_sums / self.n
        return out


def rademacher_bits(n_units: int, n_draws: int, seed: int | None) -> np.ndarray:
    """(n, ceil(B/8)) packed bits: bit b of row i set <=> V_bi = +1 (one seeded Generator call)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n_units, (n_draws + 7) // 8), dtype=np.uint8)


def draw(
    influence: Influence,
    centred: np.ndarray,
    group_starts: np.ndarray,
    n_draws: int,
    seed: int | None,
    chunk_mb: float = 64.0,
) -> Draws:
    n, n_t = centred.shape
    n_groups = len(group_starts) - 1
    n_cells = influence.load.shape[1]
    bits = rademacher_bits(n, n_draws, seed)
    # per draw: weights (n), path sums (H' T), cell draws (C), all float64; chunks of 8 draws
    per_draw = 8 * (n + n_groups * n_t + 2 * n_cells)
    chunk = 8 * max(1, min((n_draws + 7) // 8, int(chunk_mb * 2**20 / per_draw) // 8))
    cells = np.empty((n_cells, n_draws))
    group_sums = np.empty((n_groups, n_draws))
    load_t, const_t = influence.load.T.tocsr(), influence.const.T.tocsr()
    for start in range(0, n_draws, chunk):
        stop = min(start + chunk, n_draws)
        v = np.unpackbits(bits[:, start // 8 : (stop + 7) // 8], axis=1, count=stop - start)
        v = 2.0 * v - 1.0  # (n, chunk) of +-1
        paths = np.empty((n_groups * n_t, stop - start))
        with single_threaded_blas():
            for h in range(n_groups):
                rows = slice(int(group_starts[h]), int(group_starts[h + 1]))
                np.matmul(centred[rows].T, v[rows], out=paths[h * n_t : (h + 1) * n_t])
                group_sums[h, start:stop] = v[rows].sum(axis=0)
        cells[:, start:stop] = (load_t @ paths + const_t @ group_sums[:, start:stop]) / n
    return Draws(cells=cells, group_sums=group_sums, n=n)


def bootstrap_se(draws: np.ndarray, n: int) -> np.ndarray:
    """IQR-based sigma per row (estimate) (robust to heavy tails), R's type-1 quantiles.

    NaN where R's sqrt(n)-scaled sigma is <= its floor (a cell whose IF is identically zero).
    """
    q25, q75 = np.quantile(draws, [0.25, 0.75], axis=1, method="inverted_cdf")
    se = (q75 - q25) / _IQR_TO_SIGMA
    se[~(se * np.sqrt(n) > SE_FLOOR)] = np.nan
    return se


def uniform_critical_value(draws: np.ndarray, se: np.ndarray, alpha: float) -> float:
    """(1 - alpha) quantile over draws of max_k |d_kb / se_k| for the rows given (sup-t band)."""
    ok = np.isfinite(se)
    if not ok.any():
        return np.nan
    sup_t = np.max(np.abs(draws[ok] / se[ok, None]), axis=0)
    return float(np.quantile(sup_t, 1.0 - alpha, method="inverted_cdf"))


def sup_t_test(att: np.ndarray, draws: np.ndarray, se: np.ndarray) -> tuple[float, float]:
    """max_k |att_k / se_k| and its bootstrap p-value P*(max_k |d_kb / se_k| >= observed)."""
    ok = np.isfinite(se)
    if not ok.any():
        return np.nan, np.nan
    stat = float(np.max(np.abs(att[ok] / se[ok])))
    sup = np.max(np.abs(draws[ok] / se[ok, None]), axis=0)
    return stat, float(np.mean(sup >= stat))
