"""Outcome metrics of the sequence panel and the sign that makes memorisation positive.

Training on an instance lowers its surprisal, rank and entropy and raises its accuracy and
log-likelihood, so ATT(g, t) is negative for the first three. `memorisation = sign * att` makes
every profile read the same way (the original code negated only some of them, inconsistently).
A new metric is a `sequence_panel` column registered here with its sign and axis label.
"""

from __future__ import annotations

from dataclasses import dataclass

from memlake.core.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str  # the sequence_panel column
    sign: int  # +1 if training raises it, -1 if training lowers it
    label: str  # axis label


_ALL = (
    Metric("sup_seq", -1, "surprisal (nats/token)"),  # mean surprisal
    Metric("acc_seq", +1, "top-1 accuracy"),  # share of top-1 tokens
    Metric("avg_rank", -1, "rank of the true token"),  # mean rank of the true token
    Metric("entr_seq", -1, "entropy (nats)"),  # mean predictive entropy
    Metric("loglik", +1, "log-likelihood (nats)"),  # sum-form log-likelihood
)
PROFILE_METRICS: Registry[Metric] = Registry("metric")
for _m in _ALL:
    PROFILE_METRICS.add(_m.name, _m)

METRICS = tuple(m.name for m in _ALL)  # this order is the marts' and the figures'
SIGN: dict[str, int] = {m: PROFILE_METRICS[m].sign for m in METRICS}
LABEL: dict[str, str] = {m: PROFILE_METRICS[m].label for m in METRICS}


def check_metric(metric: str) -> str:
    """The metric's name, or the registry's one-line error for an unknown one."""
    return PROFILE_METRICS.get(metric).name
