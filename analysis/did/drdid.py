"""Two-group, two-period ATT estimators with covariates (Sant'Anna & Zhao 2020), panel data.

Each function takes one comparison (a treated group D = 1 and its controls D = 0, the units of
one or more cells that share them) and many outcome changes at once: `dy` is (n, K), one column
per cell. The propensity score and the regression design depend only on (D, X, w), so they are
fitted once for all K cells; everything else is linear in `dy`.

Definitions, with w the sampling weights normalised to mean 1 over the n units, X the covariates
with an intercept, p(X) a weighted logit of D on X and beta the weighted OLS of dy on X among
the controls:

  reg  ATT = E_w[D (dy - X beta)] / E_w[D]                                  (outcome regression)
  ipw  ATT = E_w[D dy] / E_w[D] - E_w[r dy] / E_w[r],  r = (1 - D) p / (1 - p)  (Hajek IPW)
  dr   ATT = E_w[D (dy - X beta)] / E_w[D] - E_w[r (dy - X beta)] / E_w[r]      (locally efficient DR)

Controls with p >= TRIM_LEVEL get weight 0 in ipw and dr (R `DRDID`'s default trimming). The
returned influence functions include the estimation effect of p and beta, on the scale where
Var(ATT) = sum_i IF_i^2 / n^2, exactly as R `DRDID::{reg_did_panel, std_ipw_did_panel,
drdid_panel}` return them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

EST_METHODS = ("dr", "ipw", "reg")
TRIM_LEVEL = 0.995  # R DRDID: controls with a propensity score at or above this are dropped
OVERLAP_LIMIT = 0.999  # R did: a score this close to 1 means overlap fails for the cell


class OverlapError(ValueError):
    """The propensity score reaches 1: treated units without comparable controls."""


@dataclass(frozen=True)
class Comparison:
    """The units of one comparison: treatment indicator, covariates, normalised weights."""

    d: np.ndarray  # (n,) float 0/1
    x: np.ndarray  # (n, p) covariates with the intercept first
    w: np.ndarray  # (n,) sampling weights, mean 1

    @classmethod
    def of(cls, d: np.ndarray, x: np.ndarray, w: np.ndarray) -> Comparison:
        return cls(d.astype(float), x, w / w.mean())


def propensity(c: Comparison) -> np.ndarray:
    """Weighted logit MLE of D on X (no penalty): fitted scores."""
    from sklearn.linear_model import LogisticRegression  # heavy import, only with covariates

    model = LogisticRegression(
        C=np.inf, fit_intercept=False, solver="newton-cholesky", tol=1e-14, max_iter=200
    )
    model.fit(c.x, c.d, sample_weight=c.w)
    return model.predict_proba(c.x)[:, 1]


def _ols_on_controls(c: Comparison, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """beta (p, K) of the weighted OLS of dy on X among controls, fitted X beta (n, K), and the
    inverse of the normalised design matrix (X' diag(w (1 - D)) X / n)^-1."""
    wc = c.w * (1.0 - c.d)
    gram = c.x.T @ (wc[:, None] * c.x) / len(c.d)
    try:
        factor = linalg.cho_factor(gram)
    except linalg.LinAlgError as err:
        raise ValueError("the controls' covariate matrix is singular: drop a collinear covariate") from err
    beta = linalg.cho_solve(factor, c.x.T @ (wc[:, None] * dy) / len(c.d))
    return beta, c.x @ beta, linalg.cho_solve(factor, np.eye(gram.shape[0]))


def _logit_linearisation(c: Comparison, ps: np.ndarray) -> np.ndarray:
    """Asymptotic linear representation of the logit coefficients, (n, p): score @ Hessian^-1."""
    hess = c.x.T @ ((ps * (1.0 - ps) * c.w)[:, None] * c.x) / len(c.d)
    score = (c.w * (c.d - ps))[:, None] * c.x
    return score @ linalg.inv(hess)


def _control_weights(c: Comparison, ps: np.ndarray) -> np.ndarray:
    keep = (c.d == 1) | (ps < TRIM_LEVEL)
    return keep * c.w * ps * (1.0 - c.d) / (1.0 - ps)


def att_reg(c: Comparison, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(c.d)
    beta, fit, design_inv = _ols_on_controls(c, dy)
    wt = c.w * c.d
    mt = wt.mean()
    eta_t = (wt @ dy) / n / mt
    eta_c = (wt @ fit) / n / mt
    inf_treat = wt[:, None] * (dy - eta_t) / mt
    # OLS estimation effect: residual_i x_i' A^-1 E[w D x]
    lever = c.x @ (design_inv @ (c.x.T @ wt / n))
    inf_ols = (c.w * (1.0 - c.d))[:, None] * (dy - fit) * lever[:, None]
    inf_cont = (wt[:, None] * (fit - eta_c) + inf_ols) / mt
    return eta_t - eta_c, inf_treat - inf_cont


def att_ipw(c: Comparison, dy: np.ndarray, ps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(c.d)
    wt, wc = c.w * c.d, _control_weights(c, ps)
    mt, mc = wt.mean(), wc.mean()
    eta_t = (wt @ dy) / n / mt
    eta_c = (wc @ dy) / n / mc
    inf_treat = wt[:, None] * (dy - eta_t) / mt
    resid_c = wc[:, None] * (dy - eta_c)
    inf_ps = _logit_linearisation(c, ps) @ (c.x.T @ resid_c / n)
    inf_cont = (resid_c + inf_ps) / mc
    return eta_t - eta_c, inf_treat - inf_cont


def att_dr(c: Comparison, dy: np.ndarray, ps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(c.d)
    _, fit, design_inv = _ols_on_controls(c, dy)
    wt, wc = c.w * c.d, _control_weights(c, ps)
    mt, mc = wt.mean(), wc.mean()
    resid = dy - fit
    eta_t = (wt @ resid) / n / mt
    eta_c = (wc @ resid) / n / mc
    ols_resid = (c.w * (1.0 - c.d))[:, None] * resid  # OLS scores, times x_i' A^-1 below
    lever_t = c.x @ (design_inv @ (c.x.T @ wt / n))
    lever_c = c.x @ (design_inv @ (c.x.T @ wc / n))
    inf_treat = (wt[:, None] * (resid - eta_t) - ols_resid * lever_t[:, None]) / mt
    resid_c = wc[:, None] * (resid - eta_c)
    inf_ps = _logit_linearisation(c, ps) @ (c.x.T @ resid_c / n)
    inf_cont = (resid_c + inf_ps - ols_resid * lever_c[:, None]) / mc
    return eta_t - eta_c, inf_treat - inf_cont


def estimate(method: str, c: Comparison, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ATT (K,) and influence functions (n, K) of `method` for the K outcome changes in `dy`."""
    if method == "reg":
        return att_reg(c, dy)
    ps = propensity(c)
    if ps.max() >= OVERLAP_LIMIT:  # R did's overlap check; a separating logit lands here too
        raise OverlapError(f"propensity score reaches {ps.max():.6g}")
    return att_ipw(c, dy, ps) if method == "ipw" else att_dr(c, dy, ps)
