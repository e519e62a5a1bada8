"""Classification metrics over evaluation subsets of a test set, for the taxonomic models.

Each subset is a vector of multiplicities over the test rows (0/1 for the published protocol's
KFold training-index sets, bootstrap counts for the leakage-free one), so one weighted metric
routine serves both and a bootstrap resample never materialises duplicated rows.

The published protocol scores ROC and PR AUC on hard 0/1 predictions (threshold 0.5): with a
single threshold ROC AUC collapses to (TPR + TNR) / 2 and average precision to a two-point
curve, so they measure accuracy at 0.5, not ranking. `hard_auc=False` scores probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
from sklearn.model_selection import KFold

METRICS = ("roc_auc", "pr_auc", "precision", "recall", "f1", "ece")
THRESHOLD = 0.5  # sklearn's predict(): positive iff p > 0.5


def ece(y, p, bins: int = 5, weights=None) -> float:
    """Top-label expected calibration error: confidence max(p, 1 - p) in `bins` equal-width bins
    on [0, 1] (right-closed), sum over bins of weight share x |accuracy - mean confidence|."""
    y, p = np.asarray(y, dtype=bool), np.asarray(p, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    total = w.sum()
    if total == 0:
        return np.nan
    confidence = np.maximum(p, 1 - p)
    correct = (p > THRESHOLD) == y
    b = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gap = np.bincount(b, weights=w * (correct - confidence), minlength=bins)
    return float(np.abs(gap).sum() / total)


def _curve(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted true/false positive totals at each distinct score threshold, highest first."""
    order = np.argsort(-score, kind="mergesort")
    score, y, w = score[order], y[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # last row of each tie block
    return np.cumsum(w * y)[last], np.cumsum(w * ~y)[last]


def roc_auc(y, score, weights=None) -> float:
    """Weighted ROC AUC (trapezoidal over tie blocks), equal to sklearn's roc_auc_score; NaN with
    one class. Here because sklearn's per-call validation cost dominated 100-subset evaluations."""
    y, score = np.asarray(y, dtype=bool), np.asarray(score, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    tps, fps = _curve(y, score, w)
    if tps[-1] <= 0 or fps[-1] <= 0:
        return np.nan
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(y, score, weights=None) -> float:
    """Weighted average precision sum_k (R_k - R_k-1) P_k, equal to sklearn's
    average_precision_score; NaN without positives."""
    y, score = np.asarray(y, dtype=bool), np.asarray(score, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    tps, fps = _curve(y, score, w)
    if tps[-1] <= 0:
        return np.nan
    precision = np.where(tps + fps > 0, tps / np.maximum(tps + fps, 1e-300), 1.0)
    recall = np.r_[0.0, tps / tps[-1]]
    return float(np.sum(np.diff(recall) * precision))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else np.nan


def subset_metrics(y, p, weights, *, hard_auc: bool, ece_bins: int) -> dict[str, float]:
    """Every metric of one (weighted) subset; NaN where a metric is undefined (one class only,
    no predicted positives)."""
    keep = weights > 0
    y, p, w = y[keep], p[keep], weights[keep]
    pred = p > THRESHOLD
    tp, fp, fn = (w * (pred & y)).sum(), (w * (pred & ~y)).sum(), (w * (~pred & y)).sum()
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall) if np.isfinite(precision + recall) else np.nan
    out = {"precision": precision, "recall": recall, "f1": f1, "ece": ece(y, p, ece_bins, w)}
    if y.any() and not y.all():
        score = pred.astype(float) if hard_auc else p
        out["roc_auc"] = roc_auc(y, score, w)
        out["pr_auc"] = average_precision(y, score, w)
    else:
        out["roc_auc"] = out["pr_auc"] = np.nan
    return out


def subsets(n: int, count: int, kind: str, seed: int) -> Iterator[np.ndarray]:
    """Multiplicity vectors over n test rows.

    kfold: the published protocol's KFold(count, shuffle) *training-index* sets, each (count-1)/count
        of the rows (99 % overlap at count=100, hence its tiny standard deviations).
    bootstrap: `count` resamples of n rows with replacement.
    """
    if kind == "kfold":
        count = min(count, n)  # a test set smaller than the fold count: one row left out per subset
        if count < 2:
            raise ValueError(f"kfold subsets need at least 2 folds and 2 test rows, got {count}")
        for keep, _ in KFold(n_splits=count, shuffle=True, random_state=seed).split(np.arange(n)):
            w = np.zeros(n)
            w[keep] = 1.0
            yield w
    elif kind == "bootstrap":
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
    else:
        raise ValueError(f"subset kind must be 'kfold' or 'bootstrap', got {kind!r}")


def evaluate(
    y,
    predictions: dict[str, np.ndarray],
    groups: dict[str, np.ndarray],
    *,
    n_subsets: int,
    kind: str,
    hard_auc: bool,
    ece_bins: int = 5,
    seed: int = 0,
) -> pl.DataFrame:
    """Per-subset metrics for every prediction set x group.

    y: test labels; predictions: model_kind -> test probabilities; groups: group name -> boolean
    mask over the test rows. Returns subset, model_kind, group, metric, value (long).
    """
    y = np.asarray(y, dtype=bool)
    out = []
    for s, w in enumerate(subsets(len(y), n_subsets, kind, seed)):
        for model_kind, p in predictions.items():
            for group, mask in groups.items():
                values = subset_metrics(y, p, w * mask, hard_auc=hard_auc, ece_bins=ece_bins)
                out.extend((s, model_kind, group, m, values[m]) for m in METRICS)
    schema = {"subset": pl.Int64, "model_kind": pl.String, "group": pl.String, "metric": pl.String}
    return pl.DataFrame(out, schema={**schema, "value": pl.Float64}, orient="row")


def summarise(per_subset: pl.DataFrame) -> pl.DataFrame:
    """Mean and standard deviation over subsets (NaN subsets left out and counted)."""
    return (
        per_subset.with_columns(pl.col("value").fill_nan(None))
        .group_by("model_kind", "group", "metric", maintain_order=True)
        .agg(
            pl.col("value").mean().alias("mean"),
            pl.col("value").std().alias("std"),
            pl.col("value").count().cast(pl.Int64).alias("n_subsets"),
        )
    )
