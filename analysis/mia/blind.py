"""The blind baseline (Das et al. 2024): a classifier that sees only the text. If it separates
members from non-members, the two sets differ in distribution and an attack's AUC measures that
shift as much as the model's memory of its training data (Duan et al. 2024, MIMIR)."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

MIN_PER_CLASS = 2


def ngram_features(rows: list[list[int]]):
    """Bag of token-id unigrams and bigrams (the tokenizer's subwords, so no decoding), hashed
    and L2-normalised per row."""
    docs = [" ".join(map(str, r)) for r in rows]
    vectorizer = HashingVectorizer(
        token_pattern=r"\S+", ngram_range=(1, 2), n_features=2**18, alternate_sign=False, norm="l2"
    )
    return vectorizer.transform(docs)


def blind_scores(features, member: np.ndarray, folds: int, seed: int) -> np.ndarray | None:
    """Out-of-fold P(member) of a logistic regression on the n-gram features (stratified k-fold,
    so every row is scored by a model that never saw it); None when a class has fewer than two
    rows."""
    member = np.asarray(member, bool)
    smallest = min(int(member.sum()), int((~member).sum()))
    if smallest < MIN_PER_CLASS:
        return None
    cv = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    classifier = LogisticRegression(max_iter=2000)
    return cross_val_predict(classifier, features, member, cv=cv, method="predict_proba")[:, 1]
