"""Does the taxonomy fit better than one pooled model? Likelihood-ratio and Wald tests of the
taxonomic model against the baseline (`analysis.taxonomy.model`), by maximum likelihood.

The models of `analysis.taxonomy.model` are L2-penalised with balanced class weights (the
paper's), which is not a likelihood a chi-squared test can use; these tests refit the same design
by plain maximum likelihood (no penalty, no weights) on the design's training rows. The paper's
code ran an LRT on hard 0/1 predictions with df=1 and per-coefficient Wald tests with Fisher
information on the *test* set; both are fixed here: log-likelihoods of fitted probabilities, df =
the difference in parameter counts, and Wald covariances (X'WX)^-1 at the training MLE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from analysis.taxonomy.features import AGGREGATE, CATEGORIES

TEST_SCHEMA = {
    "test": pl.String,  # lrt | wald_coefficient | wald_zero | wald_vs_rest
    "model_kind": pl.String,  # baseline | taxonomic
    "group": pl.String,  # 'all' (baseline), a category, or 'aggregate' (the LRT)
    "feature": pl.String,  # wald_coefficient: the coefficient tested (or 'intercept'); else null
    "estimate": pl.Float64,  # wald_coefficient: the MLE coefficient (z-score units)
    "std_error": pl.Float64,
    "statistic": pl.Float64,  # chi-squared statistic (a coefficient's z squared)
    "df": pl.Int64,
    "p_value": pl.Float64,
    "n_rows": pl.Int64,  # rows of the fit(s) behind the test
    "n_positive": pl.Int64,
    "converged": pl.Boolean,  # False: Newton did not settle; Wald numbers unreliable
    "estimator": pl.String,  # ml | firth (penalised: some ML fit did not exist, separation)
    "note": pl.String,
}


@dataclass(frozen=True)
class MLE:
    """A logistic-regression fit, unpenalised or Firth-penalised (`loglik` is then the penalised
    log-likelihood): intercept first, then the kept feature columns."""

    coef: np.ndarray
    cov: np.ndarray  # (X'WX)^-1 at the MLE
    loglik: float
    columns: np.ndarray  # indices of the kept columns of the feature matrix
    converged: bool
    n: int
    n_positive: int

    @property
    def n_params(self) -> int:
        return len(self.coef)


def independent_columns(x: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Indices (ascending) of a largest set of columns of `x` linearly independent of each other
    and of the intercept: constant columns go (is_templating within reconstruction, say), then
    exact linear combinations (pivoted QR of the centred, unit-norm columns)."""
    from scipy.linalg import qr

    if x.shape[0] == 0 or x.shape[1] == 0:
        return np.arange(0)
    xc = x - x.mean(axis=0)
    norms = np.linalg.norm(xc, axis=0)
    varying = np.flatnonzero(norms > tol * max(1.0, float(np.abs(x).max())) * np.sqrt(len(x)))
    if not len(varying):
        return varying
    _, r, pivot = qr(xc[:, varying] / norms[varying], mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > tol * diag[0]).sum())
    return np.sort(varying[pivot[:rank]])


Blocks = list[tuple[np.ndarray, np.ndarray]]  # (row mask, feature columns) of a Firth penalty


def logistic_mle(
    x: np.ndarray, y: np.ndarray, *, max_iter: int = 100, firth: bool = False, penalty: Blocks | None = None
) -> MLE:
    """Maximum-likelihood logistic regression with an intercept (Newton-Raphson with step
    halving) on the linearly independent columns of `x`; `cov` is the inverse observed (= expected)
    information at the estimate. Under (quasi-)separation the likelihood has no maximum: the
    fit stops after `max_iter` steps with `converged=False` and a log-likelihood at its supremum.

    `firth`: Firth's bias-reduced estimate (Firth 1993), which maximises the penalised
    log-likelihood l(b) + log|X'WX| / 2 and exists under separation (Heinze & Schemper 2002).
    Its score is X'(y - p + h (1/2 - p)), h the hat-matrix diagonal of W^1/2 X. `penalty` takes
    the penalty from another design instead, sum over blocks of log|X_B'W X_B| / 2 with X_B the
    block's rows and columns (plus an intercept): a model restricted inside a larger one keeps the
    larger one's penalty, so that penalised likelihood ratios are nested (and scale-free)."""
    from scipy.special import expit

    y = np.asarray(y, dtype=float)
    cols = independent_columns(x)
    design_x = np.column_stack([np.ones(len(y)), x[:, cols]])
    if firth and penalty is None:
        penalty = [(np.ones(len(y), dtype=bool), cols)]
    blocks = [
        (rows, np.column_stack([np.ones(int(rows.sum())), x[np.ix_(rows, c)]])) for rows, c in penalty or []
    ]

    def information(design, p):
        return (design * (p * (1 - p))[:, None]).T @ design

    def loglik(beta):
        eta = design_x @ beta
        ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        p = expit(eta)
        for rows, design in blocks:
            sign, logdet = np.linalg.slogdet(information(design, p[rows]))
            ll += 0.5 * logdet if sign > 0 else -np.inf
        return ll

    beta = np.zeros(design_x.shape[1])
    ll, converged = loglik(beta), False
    for _ in range(max_iter):
        p = expit(design_x @ beta)
        info = information(design_x, p)
        residual = y - p
        for rows, design in blocks:  # the penalty's score: its hat diagonal times (1/2 - p)
            q = p[rows]
            h = q * (1 - q) * np.einsum("ij,ij->i", design @ np.linalg.pinv(information(design, q)), design)
            residual[rows] += h * (0.5 - q)
        score = design_x.T @ residual
        step = np.linalg.lstsq(info, score, rcond=None)[0]
        t = 1.0
        while True:  # halve until the likelihood does not fall
            new = beta + t * step
            new_ll = loglik(new)
            if new_ll >= ll - 1e-12 * (1 + abs(ll)) or t < 1e-10:
                break
            t /= 2
        beta, ll = new, max(new_ll, ll)
        if np.max(np.abs(t * step)) < 1e-8 * (1 + np.max(np.abs(beta))):
            # steps also vanish while an unpenalised fit runs off to infinity (quasi-separation):
            # a fitted probability within ~1e-9 of 0 or 1 says so (R's glm warns on the same)
            converged = bool(blocks) or np.abs(design_x @ beta).max() < 20
            break
    else:  # Newton on a penalised likelihood can cycle at rounding level around its maximum
        converged = bool(blocks) and np.abs(score).max() < 1e-6 * len(y)
    info = information(design_x, expit(design_x @ beta))
    return MLE(beta, np.linalg.pinv(info), ll, cols, converged, len(y), int(y.sum()))


def _wald(estimate: np.ndarray, cov: np.ndarray) -> tuple[float, int, float]:
    """(W, df, p) for H0: estimate = 0, W = b' V^-1 b ~ chi2(df)."""
    from scipy.stats import chi2

    if not len(estimate):
        return np.nan, 0, np.nan
    w = float(estimate @ np.linalg.pinv(cov) @ estimate)
    return w, len(estimate), float(chi2.sf(w, len(estimate)))


def model_tests(
    x: np.ndarray, y: np.ndarray, category: np.ndarray, features: tuple[str, ...]
) -> pl.DataFrame:
    """LRT of the taxonomic model against the baseline, and Wald tests, by maximum likelihood;
    when any fit has no MLE (separation: a memorisation predicted perfectly, as a model's own
    perplexity often does), every fit is redone by Firth's penalised likelihood, and the LRT is
    the penalised likelihood-ratio test (Heinze & Schemper 2002). Column `estimator` says which.

    x: (n, k) feature matrix of the fitting rows (the design's training rows), y: bool labels,
    category: each row's category. Categories whose rows hold one class only have no MLE and
    are left out of every test (and the baseline is refit without them); the LRT row's note
    names them. Rows (`test`):

    lrt               taxonomic (one LR per category = features x category interactions,
                      category intercepts included) vs baseline (one LR: features + intercept),
                      nested; statistic 2 (ll_taxonomic - ll_baseline) ~ chi2(df), df = the
                      difference in parameter counts (columns constant or collinear within a
                      category are not parameters there).
    wald_coefficient  every coefficient of the baseline and of each category's model against 0:
                      z^2 ~ chi2(1) with SE from (X'WX)^-1 (what the paper's code computed, per
                      coefficient; here on the training MLE).
    wald_zero         per model, its feature coefficients jointly 0 (intercept free).
    wald_vs_rest      per category, its feature coefficients equal to those of one model pooled
                      over the other categories' rows, intercepts free: the Wald test of the
                      slope interactions of `category == c` (d = b_c - b_rest, V = V_c + V_rest,
                      the two fits being independent); only coefficients estimable in both.
    """
    from scipy.stats import chi2

    y = np.asarray(y, dtype=bool)
    category = np.asarray(category).astype(str)
    present = [c for c in CATEGORIES if (category == c).any()]
    groups = [c for c in present if 0 < y[category == c].sum() < (category == c).sum()]
    one_class = [c for c in present if c not in groups]
    keep = np.isin(category, groups)
    x, y, category = x[keep], y[keep], category[keep]
    rows: list[dict] = []

    estimator = "ml"

    def add(test, kind, group, fit_n, fit_pos, converged, **values):
        rows.append(
            {"test": test, "model_kind": kind, "group": group, "n_rows": fit_n, "n_positive": fit_pos,
             "converged": converged, "estimator": estimator, **values}
        )  # fmt: skip

    if not groups:
        note = "no category holds both classes" + (
            f" (one class only: {', '.join(one_class)})" if one_class else ""
        )
        add("lrt", "taxonomic", AGGREGATE, int(len(y)), int(y.sum()), False, note=note)
        return pl.DataFrame(rows, schema=TEST_SCHEMA)

    def rest_of(c: str) -> np.ndarray | None:
        others = category != c
        return others if others.any() and y[others].any() and not y[others].all() else None

    def fit_all(firth: bool):
        fits = {c: logistic_mle(x[category == c], y[category == c], firth=firth) for c in groups}
        # penalised, the baseline is the taxonomic model with its interactions set to 0, under the
        # taxonomic model's penalty (Heinze & Schemper's nested test), not a Firth fit of its own
        penalty = [(category == c, fits[c].columns) for c in groups] if firth else None
        base = logistic_mle(x, y, firth=firth, penalty=penalty)
        rests = {c: logistic_mle(x[o], y[o], firth=firth) for c in groups if (o := rest_of(c)) is not None}
        return base, fits, rests

    base, fits, rests = fit_all(False)
    if not all(f.converged for f in (base, *fits.values(), *rests.values())):
        estimator = "firth"  # one estimator for every fit, so that the nested models compare
        base, fits, rests = fit_all(True)
    ll_tax = sum(f.loglik for f in fits.values())
    df = sum(f.n_params for f in fits.values()) - base.n_params
    stat = max(2 * (ll_tax - base.loglik), 0.0)
    note = f"categories: {', '.join(groups)}"
    if one_class:
        note += f"; left out (one class only): {', '.join(one_class)}"
    converged = base.converged and all(f.converged for f in fits.values())
    if len(groups) < 2:  # the taxonomic model is the baseline: nothing to test
        add("lrt", "taxonomic", AGGREGATE, base.n, base.n_positive, converged,
            note=f"needs two categories holding both classes; {note}")  # fmt: skip
    else:
        add(
            "lrt", "taxonomic", AGGREGATE, base.n, base.n_positive, converged,
            statistic=stat, df=df, p_value=float(chi2.sf(stat, df)) if df > 0 else np.nan, note=note,
        )  # fmt: skip
    for kind, group, fit in [("baseline", "all", base), *(("taxonomic", c, fits[c]) for c in groups)]:
        names = ["intercept", *(features[j] for j in fit.columns)]
        se = np.sqrt(np.clip(np.diag(fit.cov), 0, None))
        for name, b, s in zip(names, fit.coef, se):
            z2 = (b / s) ** 2 if s > 0 else np.nan
            add(
                "wald_coefficient", kind, group, fit.n, fit.n_positive, fit.converged, feature=name,
                estimate=float(b), std_error=float(s), statistic=float(z2), df=1,
                p_value=float(chi2.sf(z2, 1)) if s > 0 else np.nan,
            )  # fmt: skip
        w, k, p = _wald(fit.coef[1:], fit.cov[1:, 1:])
        dropped = [f for j, f in enumerate(features) if j not in set(fit.columns)]
        add(
            "wald_zero", kind, group, fit.n, fit.n_positive, fit.converged, statistic=w, df=k, p_value=p,
            note=f"not estimable here: {', '.join(dropped)}" if dropped else None,
        )  # fmt: skip
    for c in groups:
        if c not in rests:
            add("wald_vs_rest", "taxonomic", c, fits[c].n, fits[c].n_positive, False,
                note="the other categories hold one class or no rows")  # fmt: skip
            continue
        rest = rests[c]
        shared = np.intersect1d(fits[c].columns, rest.columns)
        ic = 1 + np.searchsorted(fits[c].columns, shared)
        ir = 1 + np.searchsorted(rest.columns, shared)
        diff = fits[c].coef[ic] - rest.coef[ir]
        w, k, p = _wald(diff, fits[c].cov[np.ix_(ic, ic)] + rest.cov[np.ix_(ir, ir)])
        add(
            "wald_vs_rest", "taxonomic", c, int(len(y)), int(y.sum()), fits[c].converged and rest.converged,
            statistic=w, df=k, p_value=p, note=f"rest: {', '.join(g for g in groups if g != c)}",
        )  # fmt: skip
    return pl.DataFrame(rows, schema=TEST_SCHEMA)


def summarise_tests(tests: pl.DataFrame) -> str:
    """One phrase for a log line: the LRT and which categories differ from the rest."""
    lrt = tests.filter(pl.col("test") == "lrt").row(0, named=True)
    if lrt["statistic"] is None:
        return f"LRT not computed ({lrt['note']})"  # the per-model Wald rows are still in the mart
    out = f"LRT taxonomic vs baseline chi2={lrt['statistic']:.1f} df={lrt['df']} p={lrt['p_value']:.2g}"
    if lrt.get("estimator") == "firth":
        out += " (Firth-penalised: the ML fits separate)"
    vs = tests.filter((pl.col("test") == "wald_vs_rest") & pl.col("p_value").is_not_null())
    if len(vs):
        out += "; Wald vs rest " + ", ".join(
            f"{r['group']} p={r['p_value']:.2g}" for r in vs.iter_rows(named=True)
        )
    if not all(tests["converged"].drop_nulls()):
        out += " (some fits separate: see converged)"
    return out
