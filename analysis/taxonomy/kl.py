"""KL-vs-duplicates: how different memorised and non-memorised continuation perplexity are, per
exact duplicate count.

The paper picks its recitation threshold (> 5 duplicates) at the peak of this curve (max 0.2028
at 6 duplicates for 12b). Its implementation normalised the two equal-length *vectors of
perplexity values* to sum 1 and applied KL elementwise (scipy `entropy(p, q)`): that compares
values paired by sampling order, not distributions. Kept as `method="vector"` for parity; the
default `method="histogram"` compares the two distributions on shared bins of log perplexity.

Both are symmetrised (KL(P||Q) + KL(Q||P), the Jeffreys divergence) unless symmetric=False,
which is the original's one-way KL(memorised || non-memorised). Each duplicate count gets B
bootstrap replicates: both groups resampled with replacement down to the smaller group's size
(the original's balanced down-sampling), all replicates in one vectorised pass.
"""

from __future__ import annotations

import numpy as np
import polars as pl

METHODS = ("histogram", "vector")


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL(p || q) of non-negative rows, each normalised to sum 1 (0 log 0 = 0)."""
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum(axis=1)


def vector_divergence(a: np.ndarray, b: np.ndarray, symmetric: bool = True) -> np.ndarray:
    """The original's divergence of paired value vectors, row-wise over (B, n) arrays."""
    forward = _kl_rows(a, b)
    return forward + _kl_rows(b, a) if symmetric else forward


def histogram_divergence(
    a: np.ndarray, b: np.ndarray, edges: np.ndarray, symmetric: bool = True, pseudocount: float = 0.5
) -> np.ndarray:
    """KL between the histograms of each row of a and b on shared `edges`, row-wise over (B, n).

    A pseudocount per bin keeps the divergence finite when one group leaves a bin empty (the
    bins are shared, so an empty bin in one group is common at small counts).
    """
    k = len(edges) - 1

    def counts(v: np.ndarray) -> np.ndarray:
        bins = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, k - 1)
        offset = bins + k * np.arange(v.shape[0])[:, None]
        return np.bincount(offset.ravel(), minlength=k * v.shape[0]).reshape(v.shape[0], k) + pseudocount

    p, q = counts(a), counts(b)
    forward = _kl_rows(p, q)
    return forward + _kl_rows(q, p) if symmetric else forward


def _chunks(total: int, n: int, budget: int = 1_000_000) -> list[int]:
    """Replicate counts per pass so one pass holds at most ~budget values per group."""
    size = max(1, budget // max(n, 1))
    return [min(size, total - i) for i in range(0, total, size)]


def _divergence(a, b, edges, symmetric) -> np.ndarray:
    if edges is None:
        return vector_divergence(a, b, symmetric)
    return histogram_divergence(np.log(a), np.log(b), edges, symmetric)


def _replicates(mem, non, n, size, rng, edges, symmetric) -> tuple[np.ndarray, np.ndarray]:
    """Divergences of `size` balanced resamples, and of as many same-size pairs drawn from the
    pooled values (the null: what resampling noise alone gives at this n)."""
    a = mem[rng.integers(0, len(mem), (size, n))]
    b = non[rng.integers(0, len(non), (size, n))]
    pooled = np.concatenate([mem, non])
    a0, b0 = (pooled[rng.integers(0, len(pooled), (size, n))] for _ in range(2))
    return _divergence(a, b, edges, symmetric), _divergence(a0, b0, edges, symmetric)


def kl_by_duplicates(
    rows: pl.DataFrame,
    *,
    method: str = "histogram",
    value: str = "generation_perplexity",
    duplicates: str = "sequence_duplicates",
    n_bootstrap: int = 1000,
    bins: int | None = None,
    symmetric: bool = True,
    min_rows: int = 5,
    max_duplicates: int | None = 999,
    seed: int = 0,
) -> pl.DataFrame:
    """Divergence between memorised and non-memorised `value` at every exact duplicate count.

    rows: one row per instance with `memorised`, `duplicates` and `value`. Counts where either
    group has fewer than `min_rows` rows are skipped. Histogram bins: equal-width on log(value)
    spanning both groups at that count, fixed across replicates; `bins` of them, or None for
    sqrt(n) (2 to 50), so sparse counts are not judged on mostly empty bins.
    Returns duplicates, method, symmetric, n_memorised, n_non_memorised, n_sample, divergence
    (bootstrap mean), std, ci_low, ci_high (2.5 / 97.5 %), null_divergence (mean divergence of
    two same-size samples of the pooled values: plug-in divergences are biased upwards at small
    n, so compare counts by divergence - null_divergence, `excess`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_bootstrap < 1:
        raise ValueError("n_bootstrap must be >= 1")
    rng = np.random.default_rng(seed)
    data = rows.select(duplicates, "memorised", value).drop_nulls().filter(pl.col(value) > 0)
    if max_duplicates is not None:
        data = data.filter(pl.col(duplicates) <= max_duplicates)
    out = []
    for (count,), part in sorted(data.partition_by(duplicates, as_dict=True).items()):
        mem = part.filter(pl.col("memorised"))[value].to_numpy().astype(float)
        non = part.filter(~pl.col("memorised"))[value].to_numpy().astype(float)
        if min(len(mem), len(non)) < min_rows:
            continue
        n = min(len(mem), len(non))
        edges = None
        if method == "histogram":
            logs = np.log(np.concatenate([mem, non]))
            lo, hi = float(logs.min()), float(logs.max())
            k = bins or int(np.clip(np.sqrt(n), 2, 50))
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, k + 1)
        parts = [_replicates(mem, non, n, size, rng, edges, symmetric) for size in _chunks(n_bootstrap, n)]
        d, null = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        lo_ci, hi_ci = np.quantile(d, [0.025, 0.975])
        std = float(d.std(ddof=1)) if n_bootstrap > 1 else np.nan
        row = (int(count), method, symmetric, len(mem), len(non), n, float(d.mean()), std, lo_ci, hi_ci)
        out.append((*row, float(null.mean())))
    schema = {
        "duplicates": pl.Int64,
        "method": pl.String,
        "symmetric": pl.Boolean,
        "n_memorised": pl.Int64,
        "n_non_memorised": pl.Int64,
        "n_sample": pl.Int64,
        "divergence": pl.Float64,
        "std": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "null_divergence": pl.Float64,
    }
    frame = pl.DataFrame(out, schema=schema, orient="row")
    return frame.with_columns((pl.col("divergence") - pl.col("null_divergence")).alias("excess"))


def peak(kl: pl.DataFrame, by: str = "divergence") -> int | None:
    """The duplicate count with the largest divergence (the paper's threshold argument); by="excess"
    ranks by divergence above the resampling null instead."""
    return None if kl.is_empty() else int(kl.sort(by, descending=True)["duplicates"][0])
