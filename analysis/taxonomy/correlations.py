"""Feature-vs-label correlations: Pearson, Spearman and Chatterjee's xi, per category x {all, NL, code}.

Per category (the taxonomy assigns one to every row, memorised or not) and over all rows
('baseline'), because the paper's point is that the same feature can push memorisation in
opposite directions in different categories (Simpson-style): a single pooled coefficient hides it.

xi (Chatterjee 2021) is implemented here (no xicorpy): it measures how much the label is a
function of the feature, monotone or not, and is 0 exactly under independence asymptotically.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from analysis.taxonomy.features import BASELINE, CATEGORIES, CODE_NL, CORRELATION_FEATURES

SUBSETS = ("all", *CODE_NL)
METHODS = ("pearson", "spearman", "xi")


@dataclass(frozen=True)
class Xi:
    statistic: float
    pvalue: float  # one-sided, H0: independence (xi > 0 under dependence)
    variance: float  # asymptotic Var(sqrt(n) xi) under H0: 2/5 without ties in y


def _tie_broken_order(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """argsort of x with ties broken uniformly at random (the definition's rule)."""
    return np.lexsort((rng.random(len(x)), x))


def _rank_counts(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r_i = #{j: y_j <= y_i} and l_i = #{j: y_j >= y_i}."""
    sorted_y = np.sort(y)
    r = np.searchsorted(sorted_y, y, side="right")
    l = len(y) - np.searchsorted(sorted_y, y, side="left")  # noqa: E741
    return r, l


def xi_correlation(x, y, *, seed: int = 0) -> Xi:
    """Chatterjee's xi_n(x -> y) with its asymptotic p-value under independence.

    xi_n = 1 - n * sum_i |r_(i+1) - r_(i)| / (2 * sum_i l_i (n - l_i)), rows ordered by x with ties
    broken at random (seeded), r and l the counts of y values <= and >= each y. The null variance
    of sqrt(n) xi_n is Chatterjee's Theorem 2.2 expression, which handles ties in y (a binary
    label is nothing but ties) and reduces to 2/5 for continuous y.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 2 or len(y) != n:
        return Xi(np.nan, np.nan, np.nan)
    r, l = _rank_counts(y)  # noqa: E741
    denominator = float(np.sum(l.astype(float) * (n - l)))
    if denominator == 0:  # y constant: xi undefined
        return Xi(np.nan, np.nan, np.nan)
    r_by_x = r[_tie_broken_order(x, np.random.default_rng(seed))].astype(float)
    xi = 1.0 - n * float(np.abs(np.diff(r_by_x)).sum()) / (2.0 * denominator)
    variance = _null_variance(r / n, l / n)
    p = float(stats.norm.sf(np.sqrt(n) * xi / np.sqrt(variance))) if variance > 0 else np.nan
    return Xi(xi, p, variance)


def _null_variance(f: np.ndarray, g: np.ndarray) -> float:
    """tau^2 of Chatterjee (2021) Thm 2.2 from F_n(Y_i) = r_i/n and G_n(Y_i) = l_i/n."""
    n = len(f)
    q = np.sort(f)
    i = np.arange(1, n + 1)
    w = 2 * n - 2 * i + 1
    a = np.mean(w * q * q) / n
    c = np.mean(w * q) / n
    m = (np.cumsum(q) + (n - i) * q) / n
    b = np.mean(m * m)
    cu = np.mean(g * (1 - g))
    return float((a - 2 * b + c * c) / (cu * cu))


def _coefficients(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, tuple[float, float]]:
    """Each method's (statistic, p-value); NaN where a column is constant or too short."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {m: (np.nan, np.nan) for m in METHODS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pearson = stats.pearsonr(x, y)
        spearman = stats.spearmanr(x, y)
    xi = xi_correlation(x, y, seed=seed)
    return {
        "pearson": (float(pearson.statistic), float(pearson.pvalue)),
        "spearman": (float(spearman.statistic), float(spearman.pvalue)),
        "xi": (xi.statistic, xi.pvalue),
    }


def correlation_table(
    rows: pl.DataFrame,
    *,
    features: tuple[str, ...] = CORRELATION_FEATURES,
    label: str = "memorised",
    seed: int = 0,
) -> pl.DataFrame:
    """Every feature vs the label, for group in {baseline, recitation, reconstruction,
    recollection} x subset in {all, code, nl} (by the `code_nl` column).

    rows: one row per instance with the features, `label`, `category` and `code_nl`.
    Returns group, subset, feature, method, statistic, p_value, n, n_positive (long, one row
    per coefficient; NaN where the feature or the label is constant within the cell).
    """
    out = []
    features = tuple(f for f in features if f in rows.columns)
    for group in (BASELINE, *CATEGORIES):
        in_group = rows if group == BASELINE else rows.filter(pl.col("category") == group)
        for subset in SUBSETS:
            cell = in_group if subset == "all" else in_group.filter(pl.col("code_nl") == subset)
            y = cell[label].cast(pl.Float64).to_numpy()
            for feature in features:
                x = cell[feature].cast(pl.Float64).fill_null(np.nan).to_numpy()
                ok = np.isfinite(x)  # rows missing the feature leave that coefficient only
                for method, (statistic, p) in _coefficients(x[ok], y[ok], seed).items():
                    out.append(
                        (group, subset, feature, method, statistic, p, int(ok.sum()), int(y[ok].sum()))
                    )
    schema = {
        "group": pl.String,
        "subset": pl.String,
        "feature": pl.String,
        "method": pl.String,
        "statistic": pl.Float64,
        "p_value": pl.Float64,
        "n": pl.Int64,
        "n_positive": pl.Int64,
    }
    return pl.DataFrame(out, schema=schema, orient="row")
