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


# --- repeated cross sections: rows are observations, `post` marks the later period ------------
#
# R `did` uses these for an unbalanced panel (allow_unbalanced_panel): each (unit, time) row is
# an observation of the cell's two periods, and the influence functions are summed per unit
# afterwards. `y` is (n,), one cell at a time: the rows differ from cell to cell.


def _ols_rows(c: Comparison, y: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fitted X beta (n,) of the weighted OLS of y on X over `rows` (a 0/1 mask), and its linear
    representation (n, p): (w rows (y - X beta))_i x_i' (X' diag(w rows) X / n)^-1."""
    n = len(y)
    sel = c.w * rows
    gram = c.x.T @ (sel[:, None] * c.x) / n
    try:
        inv = linalg.inv(gram)
    except linalg.LinAlgError as err:
        raise ValueError("a period's covariate matrix is singular: drop a collinear covariate") from err
    fit = c.x @ (inv @ (c.x.T @ (sel * y) / n))
    return fit, ((sel * (y - fit))[:, None] * c.x) @ inv


def _ratio_if(weight: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray]:
    """E[weight z] / E[weight] and its leading influence function."""
    m = weight.mean()
    eta = float((weight * z).mean() / m)
    return eta, weight * (z - eta) / m


def _moment(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (weight[:, None] * x).mean(axis=0) / weight.mean()


def att_reg_rc(c: Comparison, y: np.ndarray, post: np.ndarray) -> tuple[float, np.ndarray]:
    pre = 1.0 - post
    fit_pre, lin_pre = _ols_rows(c, y, (1.0 - c.d) * pre)
    fit_post, lin_post = _ols_rows(c, y, (1.0 - c.d) * post)
    wd = c.w * c.d
    eta_post, inf_post = _ratio_if(wd * post, y)
    eta_pre, inf_pre = _ratio_if(wd * pre, y)
    eta_c, inf_c = _ratio_if(wd, fit_post - fit_pre)
    m = _moment(wd, c.x)
    inf_c = inf_c + (lin_post - lin_pre) @ m
    return eta_post - eta_pre - eta_c, inf_post - inf_pre - inf_c


def att_ipw_rc(c: Comparison, y: np.ndarray, post: np.ndarray, ps: np.ndarray) -> tuple[float, np.ndarray]:
    pre = 1.0 - post
    wd, wc = c.w * c.d, _control_weights(c, ps)
    eta_tpost, inf_tpost = _ratio_if(wd * post, y)
    eta_tpre, inf_tpre = _ratio_if(wd * pre, y)
    eta_cpost, inf_cpost = _ratio_if(wc * post, y)
    eta_cpre, inf_cpre = _ratio_if(wc * pre, y)
    # d/dgamma of a ratio weighted by the odds p/(1-p): E[w_c (y - eta) x] / E[w_c]
    grad = (wc * post * (y - eta_cpost)) @ c.x / len(y) / (wc * post).mean()
    grad -= (wc * pre * (y - eta_cpre)) @ c.x / len(y) / (wc * pre).mean()
    inf_c = inf_cpost - inf_cpre + _logit_linearisation(c, ps) @ grad
    return (eta_tpost - eta_tpre) - (eta_cpost - eta_cpre), inf_tpost - inf_tpre - inf_c


def att_dr_rc(c: Comparison, y: np.ndarray, post: np.ndarray, ps: np.ndarray) -> tuple[float, np.ndarray]:
    """The locally efficient DR estimator (Sant'Anna & Zhao 2020, eq. 3.4).

    Its influence function is derived here term by term and checked against the infinitesimal
    jackknife (n w_i d ATT / d w_i) and the `drdid` package (which csdid uses). moderndid 0.2.0
    flips the sign of the pre-period control regression's estimation effect in its treated and
    control terms; that term vanishes without covariates and asymptotically when both models
    are right, so the two agree there and differ in finite samples with covariates."""
    n, pre = len(y), 1.0 - post
    ctrl, treat = 1.0 - c.d, c.d
    fc_pre, lc_pre = _ols_rows(c, y, ctrl * pre)
    fc_post, lc_post = _ols_rows(c, y, ctrl * post)
    ft_pre, lt_pre = _ols_rows(c, y, treat * pre)
    ft_post, lt_post = _ols_rows(c, y, treat * post)
    resid = y - (post * fc_post + pre * fc_pre)
    wd, wc = c.w * c.d, _control_weights(c, ps)
    parts = {
        "t_post": _ratio_if(wd * post, resid),
        "t_pre": _ratio_if(wd * pre, resid),
        "c_post": _ratio_if(wc * post, resid),
        "c_pre": _ratio_if(wc * pre, resid),
        "d_post": _ratio_if(wd, ft_post - fc_post),
        "dt1_post": _ratio_if(wd * post, ft_post - fc_post),
        "d_pre": _ratio_if(wd, ft_pre - fc_pre),
        "dt0_pre": _ratio_if(wd * pre, ft_pre - fc_pre),
    }
    sign = {"t_post": 1, "t_pre": -1, "c_post": -1, "c_pre": 1, "d_post": 1, "dt1_post": -1, "d_pre": -1}
    sign["dt0_pre"] = 1
    att = sum(sign[k] * parts[k][0] for k in parts)
    inf = sum(sign[k] * parts[k][1] for k in parts)
    # estimation effects: d ATT / d parameter, times each parameter's linear representation
    m = {k: _moment(wd * s, c.x) for k, s in (("d", 1.0), ("dt1", post), ("dt0", pre))}
    m_t = {"post": _moment(wd * post, c.x), "pre": _moment(wd * pre, c.x)}
    m_c = {"post": _moment(wc * post, c.x), "pre": _moment(wc * pre, c.x)}
    inf = inf + lc_post @ (-m_t["post"] + m_c["post"] - (m["d"] - m["dt1"]))
    inf = inf + lc_pre @ (m_t["pre"] - m_c["pre"] + (m["d"] - m["dt0"]))
    inf = inf + lt_post @ (m["d"] - m["dt1"]) - lt_pre @ (m["d"] - m["dt0"])
    grad_ps = (wc * post * (resid - parts["c_post"][0])) @ c.x / n / (wc * post).mean()
    grad_ps -= (wc * pre * (resid - parts["c_pre"][0])) @ c.x / n / (wc * pre).mean()
    inf = inf - _logit_linearisation(c, ps) @ grad_ps
    return float(att), inf


def estimate_rc(method: str, c: Comparison, y: np.ndarray, post: np.ndarray) -> tuple[float, np.ndarray]:
    """ATT and influence function (n,) of `method` on repeated cross-section rows."""
    if method == "reg":
        return att_reg_rc(c, y, post)
    ps = propensity(c)
    if ps.max() >= OVERLAP_LIMIT:
        raise OverlapError(f"propensity score reaches {ps.max():.6g}")
    return att_ipw_rc(c, y, post, ps) if method == "ipw" else att_dr_rc(c, y, post, ps)
