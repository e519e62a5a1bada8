"""The LRT and Wald tests of the taxonomic model against the baseline (`analysis.taxonomy.model.
model_tests`), checked against a direct computation (sklearn unpenalised fits, the information
matrix by hand, and statsmodels where installed) on simulated data where the true model has, or
does not have, category-specific coefficients; and calibrated: p-values under the null are
uniform over 50 simulated data sets."""

import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression

from analysis.taxonomy import fit_models, synthetic
from analysis.taxonomy.features import CATEGORIES
from analysis.taxonomy.model import (
    final_tests_summary,
    independent_columns,
    logistic_mle,
    model_tests,
    summarise_tests,
)

FEATURES = ("f1", "f2", "f3")


def simulate(n: int, seed: int, *, slopes: dict | None = None, intercepts: dict | None = None):
    """n rows, three categories at random, three standard-normal features; logit per category
    = intercept_c + x @ slopes_c (the same for every category unless given)."""
    rng = np.random.default_rng(seed)
    category = np.asarray(CATEGORIES)[rng.integers(0, 3, n)]
    x = rng.normal(size=(n, len(FEATURES)))
    slopes = slopes or {}
    intercepts = intercepts or {}
    logit = np.empty(n)
    for c in CATEGORIES:
        m = category == c
        logit[m] = intercepts.get(c, -0.3) + x[m] @ np.asarray(slopes.get(c, (1.0, -0.5, 0.0)))
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return x, y, category


def by_test(tests: pl.DataFrame, test: str, group: str | None = None, feature: str | None = None) -> dict:
    rows = tests.filter(pl.col("test") == test)
    if group is not None:
        rows = rows.filter(pl.col("group") == group)
    if feature is not None:
        rows = rows.filter(pl.col("feature") == feature)
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def sklearn_fit(x, y):
    """Reference MLE: sklearn without a penalty (lbfgs), log-likelihood from its probabilities and
    the covariance (X'WX)^-1 by hand."""
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    p = lr.predict_proba(x)[:, 1]
    ll = float(np.sum(np.where(y, np.log(p), np.log1p(-p))))
    design = np.column_stack([np.ones(len(y)), x])
    cov = np.linalg.inv((design * (p * (1 - p))[:, None]).T @ design)
    return np.r_[lr.intercept_, lr.coef_[0]], cov, ll


# --------------------------------------------------------------------------- against a direct computation


@pytest.fixture(scope="module")
def differing():
    """Reconstruction's first slope has the opposite sign: the taxonomy matters."""
    slopes = {"reconstruction": (-1.0, -0.5, 0.0), "recollection": (1.0, -0.5, 0.8)}
    return simulate(3000, 0, slopes=slopes, intercepts={"recollection": 0.4})


def test_lrt_and_wald_match_a_direct_computation(differing):
    x, y, category = differing
    tests = model_tests(x, y, category, FEATURES)
    base = sklearn_fit(x, y)
    fits = {c: sklearn_fit(x[category == c], y[category == c]) for c in CATEGORIES}
    # LRT: 2 (sum of per-category log-likelihoods - pooled), df = 3 x 4 - 4
    lrt = by_test(tests, "lrt")
    stat = 2 * (sum(f[2] for f in fits.values()) - base[2])
    assert lrt["statistic"] == pytest.approx(stat, rel=1e-5)
    assert lrt["df"] == 8 and lrt["p_value"] == pytest.approx(stats.chi2.sf(stat, 8), rel=1e-4)
    assert lrt["p_value"] < 1e-10 and lrt["converged"]
    # per coefficient: estimate, SE and z^2 of each model
    for kind, group, (coef, cov, _) in [
        ("baseline", "all", base),
        *(("taxonomic", c, fits[c]) for c in fits),
    ]:
        for j, name in enumerate(("intercept", *FEATURES)):
            row = tests.filter(
                (pl.col("test") == "wald_coefficient")
                & (pl.col("group") == group)
                & (pl.col("feature") == name)
            ).row(0, named=True)
            assert row["model_kind"] == kind
            assert row["estimate"] == pytest.approx(coef[j], rel=1e-4, abs=1e-6)
            assert row["std_error"] == pytest.approx(np.sqrt(cov[j, j]), rel=1e-4)
            assert row["statistic"] == pytest.approx(coef[j] ** 2 / cov[j, j], rel=1e-3, abs=1e-6)
    # jointly zero, and category vs the pooled rest: d' (V_c + V_rest)^-1 d
    coef, cov, _ = fits["recollection"]
    w = coef[1:] @ np.linalg.solve(cov[1:, 1:], coef[1:])
    assert by_test(tests, "wald_zero", "recollection")["statistic"] == pytest.approx(w, rel=1e-4)
    for c in CATEGORIES:
        rest = sklearn_fit(x[category != c], y[category != c])
        d = fits[c][0][1:] - rest[0][1:]
        w = d @ np.linalg.solve(fits[c][1][1:, 1:] + rest[1][1:, 1:], d)
        row = by_test(tests, "wald_vs_rest", c)
        assert row["statistic"] == pytest.approx(w, rel=1e-4) and row["df"] == 3
    assert by_test(tests, "wald_vs_rest", "reconstruction")["p_value"] < 1e-10
    assert by_test(tests, "wald_vs_rest", "recollection")["p_value"] < 1e-6


def test_statsmodels_interaction_model_agrees(differing):
    """The same numbers from statsmodels: the full interaction model's LR test, and the Wald test
    of the interaction slopes of one category (the rest pooled) in one joint fit."""
    sm = pytest.importorskip("statsmodels.api")
    x, y, category = differing
    tests = model_tests(x, y, category, FEATURES)
    base = sm.Logit(y.astype(float), sm.add_constant(x)).fit(disp=0)
    dummies = np.column_stack([category == c for c in CATEGORIES[1:]]).astype(float)
    inter = np.column_stack([dummies[:, [i]] * x for i in range(2)])
    full = sm.Logit(y.astype(float), np.column_stack([np.ones(len(y)), x, dummies, inter])).fit(disp=0)
    lr_stat, lr_df = 2 * (full.llf - base.llf), full.df_model - base.df_model
    lr_p = stats.chi2.sf(lr_stat, lr_df)
    lrt = by_test(tests, "lrt")
    assert lrt["statistic"] == pytest.approx(lr_stat, rel=1e-6) and lrt["df"] == lr_df == 8
    assert lrt["p_value"] == pytest.approx(lr_p, rel=1e-4)
    c = "reconstruction"
    d = (category == c).astype(float)[:, None]
    one = sm.Logit(y.astype(float), np.column_stack([np.ones(len(y)), x, d, d * x])).fit(disp=0)
    r = np.zeros((3, 8))
    r[:, 5:] = np.eye(3)  # the three slope interactions
    wald = one.wald_test(r, scalar=True)
    row = by_test(tests, "wald_vs_rest", c)
    assert row["statistic"] == pytest.approx(float(wald.statistic), rel=1e-5)
    assert row["p_value"] == pytest.approx(float(wald.pvalue), rel=1e-3)


def test_null_p_values_are_uniform():
    """No category-specific coefficients: over 50 data sets the LRT and the vs-rest Wald p-values
    are uniform (KS test), and the 5 % test rejects about 5 % of the time."""
    lrt, wald = [], []
    for seed in range(50):
        x, y, category = simulate(900, 100 + seed)
        tests = model_tests(x, y, category, FEATURES)
        lrt.append(by_test(tests, "lrt")["p_value"])
        wald.append(by_test(tests, "wald_vs_rest", "recitation")["p_value"])
    for p in (np.array(lrt), np.array(wald)):
        assert stats.kstest(p, "uniform").pvalue > 0.01, np.sort(p)
        assert (p < 0.05).mean() <= 0.14
    x, y, category = differing_rows = simulate(900, 7, slopes={"reconstruction": (-1.0, -0.5, 0.0)})
    assert by_test(model_tests(x, y, category, FEATURES), "lrt")["p_value"] < 1e-4, differing_rows


# --------------------------------------------------------------------------- degenerate designs


def test_constant_and_collinear_columns_are_not_parameters():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2))
    collinear = np.column_stack([x, np.ones(400), x[:, 0] - 2 * x[:, 1]])
    assert independent_columns(collinear).tolist() in ([0, 1], [0, 3], [1, 3])
    y = rng.random(400) < 1 / (1 + np.exp(-x[:, 0]))
    assert logistic_mle(collinear, y).n_params == 3
    # a feature constant within two categories (like is_templating) is estimable in one only
    x, y, category = simulate(1500, 4)
    flag = np.where(
        category == "reconstruction", 1.0, np.where(category == "recollection", 0.0, rng.random(1500) < 0.3)
    )
    x = np.column_stack([x, flag])
    tests = model_tests(x, y, category, (*FEATURES, "flag"))
    assert by_test(tests, "lrt")["df"] == (5 + 4 + 4) - 5
    assert by_test(tests, "wald_vs_rest", "recitation")["df"] == 4
    assert by_test(tests, "wald_vs_rest", "recollection")["df"] == 3  # flag is not compared
    assert "flag" in by_test(tests, "wald_zero", "reconstruction")["note"]


def test_one_class_categories_are_left_out_and_separation_is_flagged():
    x, y, category = simulate(1200, 5)
    y = np.where(category == "recollection", False, y)
    tests = model_tests(x, y, category, FEATURES)
    lrt = by_test(tests, "lrt")
    assert lrt["df"] == 4 and "left out (one class only): recollection" in lrt["note"]
    assert lrt["n_rows"] == int((category != "recollection").sum())
    assert "recollection" not in set(tests["group"])
    # perfect separation inside recitation: no ML fit there, so every fit is Firth's, and says so
    y = np.where(category == "recitation", x[:, 0] > 0, y)
    assert not logistic_mle(x[category == "recitation"], y[category == "recitation"]).converged
    tests = model_tests(x, y, category, FEATURES)
    assert by_test(tests, "wald_zero", "recitation")["estimator"] == "firth"
    assert by_test(tests, "lrt")["converged"]
    assert "the ML fits separate" in summarise_tests(tests)
    # one category with both classes: the taxonomic model is the baseline, no LRT (Wald rows stay)
    single = model_tests(x, np.where(category == "recitation", y, False), category, FEATURES)
    assert by_test(single, "lrt")["statistic"] is None
    assert "needs two categories" in by_test(single, "lrt")["note"]
    assert by_test(single, "wald_zero", "recitation")["df"] == 3
    none = model_tests(x, np.zeros(len(y), bool), category, FEATURES)
    assert none.height == 1 and none["statistic"][0] is None
    assert "not computed" in summarise_tests(none)


def test_fit_models_carries_the_tests_of_its_training_rows():
    rows = synthetic.rows(1500, seed=8)
    res = fit_models(rows, "leakage_free", n_subsets=2)
    lrt = by_test(res.tests, "lrt")
    assert lrt["n_rows"] == len(res.design.train) and lrt["p_value"] < 1e-6  # the planted interaction
    published = fit_models(rows, "published", n_subsets=2).tests
    # the protocols scale differently (scaler on train vs on all rows): slopes' tests are scale-free
    assert by_test(published, "lrt")["statistic"] == pytest.approx(lrt["statistic"], rel=1e-6)
    assert by_test(published, "wald_vs_rest", "recollection")["statistic"] == pytest.approx(
        by_test(res.tests, "wald_vs_rest", "recollection")["statistic"], rel=1e-5
    )
    line = final_tests_summary({("suite-s", 1000): res, ("suite-s", 2000): res})
    assert line.startswith("suite-s@2000 LRT taxonomic vs baseline chi2=") and "@1000" not in line


# --------------------------------------------------------------------------- separation: Firth


def test_firth_matches_the_haldane_corrected_odds_ratio():
    """With one binary covariate, Firth's slope is the log odds ratio of the 2x2 table with 1/2
    added to every cell (a closed form), zero cells and all, where the MLE does not exist."""
    for a, b, c, d in [(12, 0, 5, 9), (20, 7, 4, 15), (0, 6, 8, 3)]:
        # covariate 1: a memorised, b not; covariate 0: c memorised, d not
        x = np.r_[np.ones(a + b), np.zeros(c + d)][:, None]
        y = np.r_[np.ones(a), np.zeros(b), np.ones(c), np.zeros(d)].astype(bool)
        fit = logistic_mle(x, y, firth=True)
        expected = np.log((a + 0.5) * (d + 0.5) / ((b + 0.5) * (c + 0.5)))
        assert fit.converged
        assert fit.coef[1] == pytest.approx(expected, abs=1e-7)
        assert fit.coef[0] == pytest.approx(np.log((c + 0.5) / (d + 0.5)), abs=1e-7)
    assert not logistic_mle(x, y).converged  # the last table has a zero cell: no MLE


def test_separated_categories_fall_back_to_firth():
    """A feature that predicts memorisation perfectly in one category (as a model's own perplexity
    does) leaves that category without an MLE: every fit is redone by Firth's penalised
    likelihood, the tests are finite and the fits converge; the penalised score is zero."""
    from scipy.special import expit

    x, y, category = simulate(900, 11)
    rec = category == "recitation"
    y = np.where(rec, x[:, 0] > 0, y)  # perfect separation within recitation
    assert not logistic_mle(x[rec], y[rec]).converged
    tests = model_tests(x, y, category, FEATURES)
    assert set(tests["estimator"]) == {"firth"} and tests["converged"].all()
    lrt = by_test(tests, "lrt")
    assert np.isfinite(lrt["statistic"]) and 0 <= lrt["p_value"] <= 1 and lrt["df"] == 8
    fit = logistic_mle(x[rec], y[rec], firth=True)
    design = np.column_stack([np.ones(rec.sum()), x[rec]])
    p = expit(design @ fit.coef)
    w = p * (1 - p)
    h = w * np.einsum("ij,ij->i", design @ np.linalg.inv((design * w[:, None]).T @ design), design)
    assert np.abs(design.T @ (y[rec] - p + h * (0.5 - p))).max() < 1e-6
    assert "Firth-penalised" in summarise_tests(tests)
    # nested under one penalty, the penalised LRT does not depend on the features' scale
    rescaled = by_test(model_tests(x * [3.0, 0.5, 10.0], y, category, FEATURES), "lrt")
    assert rescaled["statistic"] == pytest.approx(lrt["statistic"], rel=1e-6)
    # data without separation keep the ML estimator, as the direct computation above checks
    assert set(model_tests(*simulate(900, 12), FEATURES)["estimator"]) == {"ml"}
