"""Outcome metrics of the sequence panel and the sign that makes memorisation positive.

Training on an instance lowers its surprisal, rank and entropy and raises its accuracy and
log-likelihood, so ATT(g, t) is negative for the first three. `memorisation = sign * att` makes
every profile read the same way (the original code negated only some of them, inconsistently).
"""

from __future__ import annotations

SIGN: dict[str, int] = {
    "sup_seq": -1,  # mean surprisal (nats/token)
    "acc_seq": +1,  # share of top-1 tokens
    "avg_rank": -1,  # mean rank of the true token
    "entr_seq": -1,  # mean predictive entropy
    "loglik": +1,  # sum-form log-likelihood
}
METRICS = tuple(SIGN)
LABEL: dict[str, str] = {
    "sup_seq": "surprisal (nats/token)",
    "acc_seq": "top-1 accuracy",
    "avg_rank": "rank of the true token",
    "entr_seq": "entropy (nats)",
    "loglik": "log-likelihood (nats)",
}


def check_metric(metric: str) -> str:
    if metric not in SIGN:
        raise ValueError(f"unknown metric {metric!r}: choose from {', '.join(METRICS)}")
    return metric
