"""Membership-inference metrics of one attack's scores (higher = more likely a member): ROC-AUC
with a stratified bootstrap interval, and the true-positive rate at a fixed false-positive rate
(the low-FPR regime that Carlini et al. 2022 argue is the one that matters)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(scores: np.ndarray, member: np.ndarray) -> float:
    """P(score of a member > score of a non-member), ties counted half (Mann-Whitney U)."""
    return float(_auc_rows(np.asarray(scores, dtype=np.float64)[None], np.asarray(member, bool))[0])


def _auc_rows(scores: np.ndarray, member: np.ndarray) -> np.ndarray:
    """AUC of each row of `scores` [B, n] with the same labels `member` [n]."""
    n1, n0 = int(member.sum()), int((~member).sum())
    ranks = rankdata(scores, axis=1)  # midranks: a tie between a member and a non-member is 1/2
    return (ranks[:, member].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def auc_interval(
    scores: np.ndarray, member: np.ndarray, draws: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the AUC over `draws` bootstrap resamples, members and non-members
    resampled separately (their counts are fixed by the design, not random); (nan, nan) if
    draws is 0."""
    if not draws:
        return float("nan"), float("nan")
    scores, member = np.asarray(scores, dtype=np.float64), np.asarray(member, bool)
    rng = np.random.default_rng(seed)
    pos, neg = scores[member], scores[~member]
    resampled = np.concatenate(
        [rng.choice(pos, (draws, len(pos))), rng.choice(neg, (draws, len(neg)))], axis=1
    )
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    values = _auc_rows(resampled, labels)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def tpr_at_fpr(scores: np.ndarray, member: np.ndarray, fpr: float) -> float:
    """The largest share of members flagged by a threshold that flags at most `fpr` of the
    non-members (flagged: score strictly above it). With n non-members, at most floor(fpr * n)
    may be flagged; below 1/n that is none, and the threshold is the largest non-member score."""
    scores, member = np.asarray(scores, dtype=np.float64), np.asarray(member, bool)
    neg = np.sort(scores[~member])[::-1]
    allowed = int(np.floor(fpr * len(neg)))
    if allowed >= len(neg):
        return 1.0
    return float(np.mean(scores[member] > neg[allowed]))
