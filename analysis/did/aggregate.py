"""Aggregations of ATT(g, t) (R `did::aggte`), as cell-weight matrices plus estimated-weight IF terms.

Every aggregate, and its overall summary, is a linear combination `att @ W[:, j]`. When W uses
cohort shares p_g = n_g / n, which are estimated, the IF gains R's `wif` term. For keys whose
cells K carry weights p_{g_k} / S (S = sum_{k in K} p_{g_k}), R's wif simplifies, per unit i, to

    sum_{k in K} att_k wif_k(i) = (A_{G_i} - c_{G_i} theta) / S

with A_h, c_h the sum and count of att over the keys' cells of cohort h, theta the aggregate;
it is 0 for units outside those cohorts. It is constant within a cohort, so it is stored per row
group (H', K) and goes into the IF intercept (analytic) or the N_bh weight sums (bootstrap).

  simple:   post cells (t >= g, t - g <= max_e), share-weighted, with wif.
  dynamic:  per event time e = t - g (negative e too), share-weighted with wif; `balance_e` keeps
            cohorts observed at least balance_e after treatment and e in
            [balance_e - (last - first time), balance_e]; then min_e <= e <= max_e. Overall = mean
            over e >= 0 of the per-e estimates (their IFs, no further wif).
  group:    per cohort, mean of its post cells (t - g <= max_e); overall = share-weighted mean over
            cohorts with wif (cohorts without post cells are left out).
  calendar: per time t >= first cohort, share-weighted post cells at t with wif; overall = mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = {"simple": "simple", "dynamic": "dynamic", "event": "dynamic", "group": "group"}
KINDS |= {"cohort": "group", "calendar": "calendar", "time": "calendar"}


@dataclass(frozen=True)
class AggregationSpec:
    kind: str
    keys: np.ndarray  # (K,) event time / cohort / time; empty for simple
    weights: np.ndarray  # (C, K + 1): last column is the overall estimate
    wif: np.ndarray  # (H', K + 1)
    banded: bool  # whether the keys get a uniform band (all but simple)


def _share_weighted(
    keep: np.ndarray, att: np.ndarray, group: np.ndarray, shares: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weights p_g / S over the kept cells of each column, and R's wif term for each column."""
    share = shares[group][:, None] * keep
    total = share.sum(axis=0)
    total[total == 0] = np.nan
    weights = np.nan_to_num(share / total)
    theta = att @ weights
    onehot = np.zeros((n_groups, len(group)))
    onehot[group, np.arange(len(group))] = 1.0
    att_sum, count = onehot @ (keep * att[:, None]), onehot @ keep
    wif = np.nan_to_num((att_sum - count * theta) / total)
    return weights, wif


def build(
    kind: str,
    *,
    att: np.ndarray,
    cohort: np.ndarray,
    time: np.ndarray,
    group: np.ndarray,
    post: np.ndarray,
    shares: np.ndarray,
    n_groups: int,
    all_times: np.ndarray,
    min_e: float | None = None,
    max_e: float | None = None,
    balance_e: int | None = None,
) -> AggregationSpec:
    """Weight matrices for one aggregation. `shares` = n_g / n per treated cohort index."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    kind = KINDS[kind]
    e = time - cohort
    lo = -np.inf if min_e is None else min_e
    hi = np.inf if max_e is None else max_e
    in_window = post & (e <= hi)

    def share(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _share_weighted(keep.astype(float), att, group, shares, n_groups)

    if kind == "simple":
        w, wif = share(in_window[:, None])
        return AggregationSpec(kind, np.array([], dtype=np.int64), w, wif, banded=False)

    if kind == "dynamic":
        include = np.ones(len(att), dtype=bool)
        keys = np.unique(e)
        if balance_e is not None:
            include = all_times[-1] - cohort >= balance_e
            keys = np.unique(e[include])
            keys = keys[(keys <= balance_e) & (keys >= balance_e - all_times[-1] + all_times[0])]
        keys = keys[(keys >= lo) & (keys <= hi)]
        w, wif = share((e[:, None] == keys[None, :]) & include[:, None])
        pos = keys >= 0
        if pos.any():
            overall_w, overall_wif = w[:, pos].mean(axis=1), wif[:, pos].mean(axis=1)
        else:
            overall_w, overall_wif = np.full(len(att), np.nan), np.zeros(n_groups)

    elif kind == "group":
        keys = np.unique(cohort[in_window])
        keep = (cohort[:, None] == keys[None, :]) & in_window[:, None]
        w = keep / keep.sum(axis=0)
        wif = np.zeros((n_groups, len(keys)))
        theta = att @ w
        key_group = np.unique(group[in_window])  # row group of each key, same order as keys
        p = shares[key_group]
        overall_w = w @ (p / p.sum())
        overall_wif = np.zeros(n_groups)
        overall_wif[key_group] = (theta - theta @ (p / p.sum())) / p.sum()

    else:  # calendar
        keys = np.unique(time[time >= cohort.min()])
        w, wif = share((time[:, None] == keys[None, :]) & post[:, None])
        overall_w, overall_wif = w.mean(axis=1), wif.mean(axis=1)

    weights = np.column_stack([w, overall_w])
    return AggregationSpec(kind, keys, weights, np.column_stack([wif, overall_wif]), banded=True)
