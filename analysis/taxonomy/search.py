"""The greedy taxonomic search (Prashanth et al. 2024, "optimally partitioned model").

Is the intuitive taxonomy (duplicates, then templating) the best two-rule partition? Every
ordered pair of (feature, quantile) rules with different features defines three groups:

    group 1 if f1 >= t1; else group 2 if f2 >= t2; else group 3

with thresholds the 25/50/75 % quantiles of each feature over the *memorised* rows (raw units).
Ten features x three quantiles give 30 x 29 - 60 = 810 candidates. Each fits three LRs exactly as
the taxonomic model does (same design, split and protocol) and is scored by the aggregate F1
over the test rows. A candidate is skipped when a group has no training rows or one class only.
The paper's winner: huffman_coding_length >= q25, then sequence_duplicates >= q25, F1 0.6356.

Candidates are numbered in a fixed order, so a run can be sharded by index range (start, end)
and the shards' frames concatenate to the unsharded result.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from itertools import product

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from analysis.taxonomy import metrics
from analysis.taxonomy.features import SEARCH_FEATURES, SEARCH_QUANTILES, SEED
from analysis.taxonomy.model import Constant, Design, design, fit_groups, predict_groups


@dataclass(frozen=True)
class Candidate:
    index: int
    first_feature: str
    first_quantile: float
    first_threshold: float
    second_feature: str
    second_quantile: float
    second_threshold: float


def thresholds(rows: pl.DataFrame, features, quantiles) -> dict[tuple[str, float], float]:
    """Each feature's quantiles over the memorised rows (linear interpolation, as pandas)."""
    memorised = rows.filter(pl.col("memorised"))
    if memorised.is_empty():
        raise ValueError("no memorised rows: the search's thresholds are quantiles of the memorised set")
    out = {}
    for f in features:
        values = memorised[f].cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
        for q in quantiles:
            out[f, q] = float(np.quantile(values, q)) if len(values) else np.nan
    return out


def candidates(rows: pl.DataFrame, features=SEARCH_FEATURES, quantiles=SEARCH_QUANTILES) -> list[Candidate]:
    """Every ordered pair of (feature, quantile) rules on different features, in a fixed order."""
    t = thresholds(rows, features, quantiles)
    rules = list(product(features, quantiles))
    pairs = [(a, b) for a, b in product(rules, rules) if a[0] != b[0]]
    return [
        Candidate(i, f1, q1, t[f1, q1], f2, q2, t[f2, q2]) for i, ((f1, q1), (f2, q2)) in enumerate(pairs)
    ]


def candidate_count(features=SEARCH_FEATURES, quantiles=SEARCH_QUANTILES) -> int:
    """F x Q rules, ordered pairs on different features: F Q (F Q - Q) (810 for the paper's 10 x 3)."""
    rules = len(features) * len(quantiles)
    return rules * (rules - len(quantiles))


def partition(first: np.ndarray, t1: float, second: np.ndarray, t2: float) -> np.ndarray:
    """Group 1, 2 or 3 per row by the candidate's two rules."""
    return np.where(first >= t1, 1, np.where(second >= t2, 2, 3))


RESULT_SCHEMA = {
    "candidate": pl.Int64,
    "first_feature": pl.String,
    "first_quantile": pl.Float64,
    "first_threshold": pl.Float64,
    "second_feature": pl.String,
    "second_quantile": pl.Float64,
    "second_threshold": pl.Float64,
    "n_group1": pl.Int64,
    "n_group2": pl.Int64,
    "n_group3": pl.Int64,
    "skipped": pl.Boolean,
    "reason": pl.String,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "f1": pl.Float64,
    "f1_mean": pl.Float64,
    "f1_std": pl.Float64,
}


def _subset_matrix(d: Design, n_subsets: int) -> np.ndarray:
    """(n_subsets, n_test) multiplicities of the protocol's evaluation subsets."""
    if n_subsets == 0:
        return np.zeros((0, len(d.test)))
    return np.stack(list(metrics.subsets(len(d.test), n_subsets, d.protocol.subsets, d.seed)))


def _f1(tp, fp, fn):
    with np.errstate(divide="ignore", invalid="ignore"):
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        return precision, recall, 2 * precision * recall / (precision + recall)


def _evaluate(d: Design, groups: np.ndarray, w: np.ndarray) -> tuple:
    train_groups = groups[d.train]
    sizes = [int((train_groups == g).sum()) for g in (1, 2, 3)]
    for g, size in zip((1, 2, 3), sizes):
        if size == 0:
            return (*sizes, True, f"group {g} has no training rows", *[np.nan] * 5)
    models = fit_groups(d, groups, [1, 2, 3])
    for g, model in models.items():
        if isinstance(model, Constant):
            return (*sizes, True, f"group {g} has one class in training", *[np.nan] * 5)
    y = d.y[d.test]
    pred = predict_groups(models, d.x[d.test], groups[d.test]) > metrics.THRESHOLD
    counts = np.stack([pred & y, pred & ~y, ~pred & y]).astype(np.float64)  # tp, fp, fn
    precision, recall, f1 = _f1(*counts.sum(axis=1))
    per_subset = _f1(*(w @ counts.T).T)[2] if len(w) else np.array([np.nan])
    per_subset = per_subset[np.isfinite(per_subset)]
    mean = float(per_subset.mean()) if len(per_subset) else np.nan
    std = float(per_subset.std(ddof=1)) if len(per_subset) > 1 else np.nan
    return (*sizes, False, None, float(precision), float(recall), float(f1), mean, std)


def search(
    rows: pl.DataFrame,
    start: int = 0,
    end: int | None = None,
    *,
    protocol: str = "published",
    features: tuple[str, ...] = SEARCH_FEATURES,
    quantiles: tuple[float, ...] = SEARCH_QUANTILES,
    n_subsets: int = 100,
    seed: int = SEED,
) -> pl.DataFrame:
    """Evaluate candidates[start:end] on one (model, step)'s rows; one result row per candidate.

    The thresholds, split and scaling depend on the whole of `rows`, never on the range, so any
    sharding of [0, len) concatenates to the unsharded frame. f1/precision/recall: the full test
    set; f1_mean/f1_std: over the protocol's `n_subsets` evaluation subsets (0: none).
    """
    with threadpool_limits(1):  # see model.fit_models: small BLAS calls only contend for cores
        return _search(rows, start, end, protocol, features, quantiles, n_subsets, seed)


def _search(rows, start, end, protocol, features, quantiles, n_subsets, seed) -> pl.DataFrame:
    d = design(rows, protocol, seed=seed)
    kept = rows.filter(pl.Series(d.kept))
    all_candidates = candidates(kept, features, quantiles)
    end = len(all_candidates) if end is None else end
    if not 0 <= start <= end <= len(all_candidates):
        raise ValueError(f"candidate range [{start}, {end}) outside [0, {len(all_candidates)})")
    values = {f: kept[f].cast(pl.Float64).fill_null(np.nan).to_numpy() for f in features}
    w = _subset_matrix(d, n_subsets)
    out = []
    for c in all_candidates[start:end]:
        groups = partition(
            values[c.first_feature], c.first_threshold, values[c.second_feature], c.second_threshold
        )
        out.append((*astuple(c), *_evaluate(d, groups, w)))
    return pl.DataFrame(out, schema=RESULT_SCHEMA, orient="row")


def best(results: pl.DataFrame, by: str = "f1") -> dict:
    """The evaluated candidate with the highest `by` (ties: lowest index)."""
    ok = results.filter(~pl.col("skipped") & pl.col(by).is_not_nan() & pl.col(by).is_not_null())
    if ok.is_empty():
        raise ValueError("every candidate was skipped")
    return ok.sort([by, "candidate"], descending=[True, False]).row(0, named=True)
