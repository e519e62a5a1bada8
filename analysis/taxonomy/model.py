"""The baseline and taxonomic logistic models of memorisation (Prashanth et al. 2024), two protocols.

baseline    one L2 logistic regression over every training row;
taxonomic   one per category (recitation / reconstruction / recollection, the taxonomy every
            row carries), each test row scored by its category's model; 'aggregate' = union.

protocol="published" reproduces the paper: the scaler is fit on the full data (test rows
included), 80/20 split stratified on label x category (seed 1024), each LR fit on an inner 80 %
of its training rows (the other 20 % was the original's validation logging), ROC/PR AUC on hard
0/1 predictions, mean +- std over the KFold(100) training-index sets of the test rows.

protocol="leakage_free": scaler fit on training rows only, each LR on all its training rows,
AUCs from probabilities, mean +- std over proper bootstrap resamples of the test set.

Both protocols also test the taxonomy by unpenalised maximum likelihood on the training rows
(`model_tests`, in `analysis.taxonomy.likelihood`): an LRT of the taxonomic model against the
baseline (nested: the taxonomic model is the baseline plus category x feature interactions) and
Wald tests per coefficient, per model and per category against the pooled rest.

Everything takes a polars frame of mart rows (features, `memorised`, `category`), so it runs the
same on the warehouse and on synthetic data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from analysis.taxonomy import metrics
from analysis.taxonomy.features import AGGREGATE, CATEGORICAL, CATEGORIES, CONTINUOUS, SEED
from analysis.taxonomy.likelihood import independent_columns, logistic_mle, model_tests, summarise_tests

# the LRT / Wald functions of `likelihood` are re-exported: callers import them from here
__all__ = [
    "PROTOCOLS",
    "Constant",
    "Design",
    "ModelResult",
    "Protocol",
    "design",
    "final_tests_summary",
    "fit_groups",
    "fit_lr",
    "fit_models",
    "independent_columns",
    "logistic_mle",
    "model_tests",
    "predict_groups",
    "protocol_of",
    "summarise_tests",
    "test_groups",
    "weights_frame",
]


@dataclass(frozen=True)
class Protocol:
    name: str
    scaler_on_train: bool  # False: fit on every row (test leaks into the scaling)
    inner_validation: bool  # fit each LR on 80 % of its training rows
    hard_auc: bool  # ROC / PR AUC from 0/1 predictions
    subsets: str  # 'kfold' (training-index sets of the test rows) or 'bootstrap'


PROTOCOLS = {
    "published": Protocol("published", False, True, True, "kfold"),
    "leakage_free": Protocol("leakage_free", True, False, False, "bootstrap"),
}


def protocol_of(name: str | Protocol) -> Protocol:
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


@dataclass
class Design:
    """The prepared data of one fit: scaled matrix, labels, categories and the split."""

    x: np.ndarray  # (n, 14): 13 z-scored continuous features, then is_templating as 0/1
    raw: np.ndarray  # (n, 14) unscaled
    y: np.ndarray  # bool
    category: np.ndarray  # str
    train: np.ndarray  # row indices
    test: np.ndarray
    scaler: StandardScaler
    protocol: Protocol
    features: tuple[str, ...]
    seed: int
    kept: np.ndarray  # bool over the input rows: False where a feature value was missing

    @property
    def dropped(self) -> int:
        return int((~self.kept).sum())


def _matrix(rows: pl.DataFrame, continuous, categorical) -> np.ndarray:
    cols = [pl.col(c).cast(pl.Float64) for c in (*continuous, *categorical)]
    return rows.select(cols).fill_null(np.nan).to_numpy()


def _stratified_split(index, strata, test_size, seed):
    """train_test_split stratified on `strata`; strata too small to split fall back to the label
    part, then to no stratification (tiny synthetic sets, rare categories)."""
    for candidate in strata:
        _, counts = np.unique(candidate, return_counts=True)
        if counts.min() >= 2 and len(counts) <= min(len(index) * test_size, len(index) * (1 - test_size)):
            return train_test_split(index, test_size=test_size, stratify=candidate, random_state=seed)
    return train_test_split(index, test_size=test_size, random_state=seed)


def design(
    rows: pl.DataFrame,
    protocol: str | Protocol = "published",
    *,
    seed: int = SEED,
    test_size: float = 0.2,
    always_train: str | None = None,
    continuous: tuple[str, ...] = CONTINUOUS,
    categorical: tuple[str, ...] = CATEGORICAL,
) -> Design:
    """Split and scale per the protocol.

    always_train: a boolean column whose true rows skip the split and join the training set (the
    paper appended its sample of memorised sequences to train only, giving a test set with the
    natural ~1 % prevalence). Rows with a missing feature are dropped (`kept` marks the rest).
    """
    protocol = protocol_of(protocol)
    raw = _matrix(rows, continuous, categorical)
    ok = np.isfinite(raw).all(axis=1)
    if ok.sum() < 10:
        names = (*continuous, *categorical)
        empty = [names[j] for j in range(raw.shape[1]) if not np.isfinite(raw[:, j]).any()]
        raise ValueError(
            f"{int(ok.sum())} of {len(ok)} rows have every model feature "
            f"(all missing: {', '.join(empty) or '-'}; perplexities need the checkpoint's token statistics)"
        )
    rows, raw = rows.filter(pl.Series(ok)), raw[ok]
    y = rows["memorised"].cast(pl.Boolean).to_numpy()
    category = rows["category"].cast(pl.String).to_numpy()
    forced = rows[always_train].cast(pl.Boolean).to_numpy() if always_train else np.zeros(len(y), bool)
    pool = np.flatnonzero(~forced)
    strata = (np.char.add(category[pool].astype(str), np.where(y[pool], "|1", "|0")), y[pool])
    train, test = _stratified_split(pool, strata, test_size, seed)
    train = np.sort(np.concatenate([train, np.flatnonzero(forced)]))
    test = np.sort(test)
    k = len(continuous)
    scaler = StandardScaler().fit(raw[train, :k] if protocol.scaler_on_train else raw[:, :k])
    x = np.hstack([scaler.transform(raw[:, :k]), raw[:, k:]])
    return Design(x, raw, y, category, train, test, scaler, protocol, (*continuous, *categorical), seed, ok)


@dataclass(frozen=True)
class Constant:
    """Stand-in for a group whose training rows hold one class only: predicts that class's rate."""

    p: float

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.full(len(x), 1 - self.p), np.full(len(x), self.p)])


def fit_lr(x: np.ndarray, y: np.ndarray, *, seed: int = SEED, inner_validation: bool = False):
    """L2 logistic regression, C=1, balanced class weights, lbfgs, max_iter 10000 (the paper's).

    inner_validation: fit on a label-stratified 80 % (the published protocol's validation hold-out),
        when each class has at least 5 rows (else on all rows).
    One class only: a `Constant` at that class's rate; no rows: None.
    """
    if len(y) == 0:
        return None
    if y.all() or not y.any():
        return Constant(float(y.mean()))
    if inner_validation:
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= 5:  # enough of each class for both sides of the hold-out
            keep, _ = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
            x, y = x[keep], y[keep]
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000, random_state=seed)
    return lr.fit(x, y)


def fit_groups(d: Design, groups: np.ndarray, labels=None) -> dict:
    """One LR per group label over the design's training rows (None where a group has none)."""
    labels = np.unique(groups) if labels is None else labels
    train_groups = groups[d.train]
    out = {}
    for g in labels:
        rows = d.train[train_groups == g]
        out[g] = fit_lr(d.x[rows], d.y[rows], seed=d.seed, inner_validation=d.protocol.inner_validation)
    return out


def predict_groups(models: dict, x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row's P(memorised) from its group's model (NaN where the group had no model)."""
    p = np.full(len(x), np.nan)
    for g, model in models.items():
        mask = groups == g
        if model is not None and mask.any():
            p[mask] = model.predict_proba(x[mask])[:, 1]
    return p


def weights_frame(models: dict, features: tuple[str, ...], model_kind: str) -> pl.DataFrame:
    """LR coefficients (z-score units; is_templating per unit) and intercept per group."""
    out = []
    for group, model in models.items():
        if isinstance(model, LogisticRegression):
            out.extend((model_kind, str(group), f, float(w)) for f, w in zip(features, model.coef_[0]))
            out.append((model_kind, str(group), "intercept", float(model.intercept_[0])))
    schema = {"model_kind": pl.String, "category": pl.String, "feature": pl.String, "weight": pl.Float64}
    return pl.DataFrame(out, schema=schema, orient="row")


@dataclass
class ModelResult:
    metrics: pl.DataFrame  # model_kind, group, metric, mean, std, n_subsets, n_test, n_positive
    per_subset: pl.DataFrame  # subset, model_kind, group, metric, value
    weights: pl.DataFrame  # model_kind, category, feature, weight
    design: Design
    baseline: object
    taxonomic: dict
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # model_kind -> test probabilities
    tests: pl.DataFrame | None = None  # LRT and Wald tests by unpenalised ML (`model_tests`)


def test_groups(d: Design) -> dict[str, np.ndarray]:
    """Boolean masks over the test rows: each category, and 'aggregate' (every test row)."""
    category = d.category[d.test]
    return {**{c: category == c for c in CATEGORIES}, AGGREGATE: np.ones(len(d.test), bool)}


def fit_models(
    rows: pl.DataFrame,
    protocol: str | Protocol = "published",
    *,
    n_subsets: int = 100,
    ece_bins: int = 5,
    seed: int = SEED,
    always_train: str | None = None,
) -> ModelResult:
    """Fit the baseline and the taxonomic model and score both per category and in aggregate.

    A category whose training rows hold one class is predicted at that class's rate (`Constant`);
    one with no training rows falls back to the baseline's scores.
    """
    with threadpool_limits(1):  # tiny BLAS calls: threads cost more in contention than they share
        return _fit_models(rows, protocol, n_subsets, ece_bins, seed, always_train)


def _fit_models(rows, protocol, n_subsets, ece_bins, seed, always_train) -> ModelResult:
    d = design(rows, protocol, seed=seed, always_train=always_train)
    everyone = np.zeros(len(d.y), dtype=object)
    everyone[:] = "all"
    baseline = fit_groups(d, everyone, ["all"])
    taxonomic = fit_groups(d, d.category, list(CATEGORIES))
    x_test = d.x[d.test]
    base_p = predict_groups(baseline, x_test, everyone[d.test])
    taxo_p = predict_groups(taxonomic, x_test, d.category[d.test])
    # a category with no training rows at all has no model: its test rows get the baseline's score
    predictions = {"baseline": base_p, "taxonomic": np.where(np.isnan(taxo_p), base_p, taxo_p)}
    groups = test_groups(d)
    per_subset = metrics.evaluate(
        d.y[d.test],
        predictions,
        groups,
        n_subsets=n_subsets,
        kind=d.protocol.subsets,
        hard_auc=d.protocol.hard_auc,
        ece_bins=ece_bins,
        seed=seed,
    )
    sizes = pl.DataFrame(
        {
            "group": list(groups),
            "n_test": [int(m.sum()) for m in groups.values()],
            "n_positive": [int(d.y[d.test][m].sum()) for m in groups.values()],
        }
    )
    summary = metrics.summarise(per_subset).join(sizes, on="group", how="left")
    weights = pl.concat(
        [weights_frame(baseline, d.features, "baseline"), weights_frame(taxonomic, d.features, "taxonomic")]
    )
    tests = model_tests(d.x[d.train], d.y[d.train], d.category[d.train], d.features)
    return ModelResult(summary, per_subset, weights, d, baseline["all"], taxonomic, predictions, tests)


def final_tests_summary(results: dict[tuple[str, int], ModelResult]) -> str:
    """`summarise_tests` of each model's last step in `run_models` results, for the CLI's line."""
    last = {}
    for m, s in results:
        last[m] = max(last.get(m, s), s)
    return "; ".join(f"{m}@{s} {summarise_tests(results[m, s].tests)}" for m, s in sorted(last.items()))
