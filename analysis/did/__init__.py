"""Callaway & Sant'Anna difference-in-differences for memorisation profiles, on any long panel.

The profiles are those of Lesci et al. (ACL 2024).

    from analysis.did import att_gt
    res = att_gt(df, unit="seq_idx", time="step", cohort="cohort", outcome="sup_seq",
                 first_epoch=95_000, bootstrap=1000, seed=0)
    res.to_polars()                  # ATT(g, t): cohort, time, base_time, att, se, ci_*, zero_not_in_cband
    res.aggregate("dynamic")         # event-time curve (+ overall); also "simple", "group", "calendar"
    res.pretrend_test()              # Wald placebo test over pre-treatment cells
    print(res.summary())

Thin API over separate internals: `panel` (input -> unit x time matrix, R's sample rules),
`cells` (cell grid, base periods, control sets; the plain DiD from per-cohort sufficient
statistics), `units` (the unit-level engine for covariates, weights, clusters and unbalanced
panels) over `drdid` (Sant'Anna & Zhao's reg / ipw / dr estimators and their influence
functions), `inference` (influence-function covariances, Wald test), `bootstrap` (multiplier
bootstrap, uniform bands), `aggregate` (aggregation weights with the estimated-weights IF term),
`results` (result objects), `honest` (Rambachan & Roth sensitivity), `sql` (sufficient statistics
computed by a database), `regression` (pyfixest event-study cross-check), `synthetic` (panels with
a known effect). Numbers match R `did` 2.x on its `mpdta` example (tests/unit/analysis/test_did.py)
and moderndid / csdid on every option (test_did_covariates.py, test_did_honest.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import att_gt
from .inference import PretrendTest
from .results import AggResult, AttGtResult

if TYPE_CHECKING:
    from .regression import event_study_regression

__all__ = ["AggResult", "AttGtResult", "PretrendTest", "att_gt", "event_study_regression"]


def __getattr__(name: str) -> Any:
    # pyfixest is only needed for the regression cross-check; import it on first use
    if name == "event_study_regression":
        from .regression import event_study_regression

        return event_study_regression
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
