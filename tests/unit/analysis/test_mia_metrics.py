"""The membership-inference metrics against scikit-learn, and the blind baseline on planted
distribution shift."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from analysis.mia import auc, auc_interval, tpr_at_fpr
from analysis.mia.blind import blind_scores, ngram_features


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_tpr_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    member = rng.random(700) < 0.4
    # rounded scores: ties between members and non-members, counted half
    scores = np.round(rng.normal(member * 0.6, 1.0), 1)
    assert auc(scores, member) == pytest.approx(roc_auc_score(member, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(member, scores, drop_intermediate=False)
    for alpha in (0.01, 0.001, 0.1):
        # the best operating point of the ROC curve with FPR <= alpha
        assert tpr_at_fpr(scores, member, alpha) == pytest.approx(tpr[fpr <= alpha].max(), abs=1e-12)


def test_tpr_at_fpr_by_hand():
    member = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    scores = np.array([5.0, 4.0, 1.0, 4.5, 2.0, 0.0, -1.0])
    # at most 1 of 4 non-members may be flagged at FPR 25 %: threshold 2.0 flags 5, 4.5, 4
    assert tpr_at_fpr(scores, member, 0.25) == pytest.approx(2 / 3)
    # none may be flagged below 25 %: only scores above 4.5
    assert tpr_at_fpr(scores, member, 0.01) == pytest.approx(1 / 3)
    assert tpr_at_fpr(scores, member, 1.0) == 1.0


def test_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(0)
    member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    scores = rng.normal(member * 0.5, 1.0)
    low, high = auc_interval(scores, member, draws=500, seed=1)
    assert low < auc(scores, member) < high
    # the true AUC of N(0.5, 1) against N(0, 1) is Phi(0.5 / sqrt 2)
    assert low < 0.638 < high
    small = auc_interval(scores[::5], member[::5], draws=500, seed=1)
    assert small[1] - small[0] > high - low
    assert auc_interval(scores, member, draws=0, seed=1) == (pytest.approx(np.nan, nan_ok=True),) * 2


def test_blind_baseline_sees_a_shift_and_not_its_absence():
    rng = np.random.default_rng(0)
    n = 200
    same = [rng.integers(0, 500, 64).tolist() for _ in range(2 * n)]
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    # no shift: both sets from one distribution
    oof = blind_scores(ngram_features(same), member, folds=5, seed=0)
    assert abs(auc(oof, member) - 0.5) < 0.1
    # a shift: members favour a block of the vocabulary
    shifted = [rng.integers(0, 250, 64).tolist() for _ in range(n)] + same[n:]
    oof = blind_scores(ngram_features(shifted), member, folds=5, seed=0)
    assert auc(oof, member) > 0.9
    assert blind_scores(ngram_features(same[:3]), np.array([True, False, False]), 5, 0) is None
