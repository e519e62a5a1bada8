"""ATT(g, t) with covariates (dr / ipw / reg), sampling weights and clusters (analysis.did.units).

References: R `did`'s vignette on mpdta with `xformla = ~lpop` (published numbers), `moderndid`
(cell by cell and aggregation by aggregation), brute force (a unit of integer weight w is w
copies of it clustered together), and Monte Carlo for the clustered variance."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analysis.did import att_gt
from analysis.did.bootstrap import rademacher_bits
from analysis.did.drdid import Comparison, OverlapError, estimate_rc
from analysis.did.panel import load_panel
from analysis.did.synthetic import staggered_panel

MPDTA = Path(__file__).resolve().parents[2] / "data" / "mpdta.csv"
KW = dict(unit="countyreal", time="year", cohort="first_treat", outcome="lemp")
SYN = dict(unit="unit", time="time", cohort="cohort", outcome="y")
AGGS = ("simple", "dynamic", "group", "calendar")


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    """mpdta as R ships it (never-treated coded 0), with per-county weights and a state id."""
    df = pl.read_csv(MPDTA)
    ids = df["countyreal"].unique().sort()
    rng = np.random.default_rng(1)
    weight = dict(zip(ids.to_list(), rng.integers(1, 4, len(ids)).tolist()))
    return df.with_columns(
        w=pl.col("countyreal").replace_strict(weight).cast(pl.Int64),
        pair=pl.col("countyreal").rank("dense").cast(pl.Int64) // 2,  # clusters of two counties
    )


@pytest.fixture(scope="module")
def mpdta(raw) -> pl.DataFrame:
    return raw.with_columns(pl.col("first_treat").replace(0, None))


# --- R `did` vignette: att_gt(yname="lemp", xformla=~lpop, data=mpdta), est_method "dr" ---------

R_LPOP = {  # (g, t): ATT
    (2004, 2004): -0.0145, (2004, 2005): -0.0764, (2004, 2006): -0.1404, (2004, 2007): -0.1069,
    (2006, 2004): -0.0005, (2006, 2005): -0.0062, (2006, 2006): 0.0010, (2006, 2007): -0.0413,
    (2007, 2004): 0.0267, (2007, 2005): -0.0046, (2007, 2006): -0.0284, (2007, 2007): -0.0288,
}  # fmt: skip


def test_dr_with_lpop_matches_r_vignette(mpdta):
    res = att_gt(mpdta, **KW, covariates=["lpop"], bootstrap=0)
    got = {(r["cohort"], r["time"]): r["att"] for r in res.to_polars().iter_rows(named=True)}
    assert got.keys() == R_LPOP.keys()
    for key, att in R_LPOP.items():
        assert got[key] == pytest.approx(att, abs=5e-5), key
    assert res.pretrend_test().p_value == pytest.approx(0.23267, abs=5e-6)
    assert "covariates lpop; estimator dr" in res.summary()


# --- moderndid, every option ---------------------------------------------------------------------


def _moderndid(raw: pl.DataFrame, **opts):
    md = pytest.importorskip("moderndid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = md.att_gt(
            data=raw, yname="lemp", tname="year", idname="countyreal", gname="first_treat", **opts
        )
        aggs = {kind: md.aggte(ref, type=kind) for kind in AGGS}
    return ref, aggs


@pytest.mark.parametrize("method", ["dr", "ipw", "reg"])
@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
@pytest.mark.parametrize("base_period", ["varying", "universal"])
def test_cells_and_aggregations_match_moderndid(raw, mpdta, method, control_group, base_period):
    ref, aggs = _moderndid(
        raw, xformla="~lpop", est_method=method, boot=False, base_period=base_period,
        control_group=control_group.replace("_", ""),
    )  # fmt: skip
    res = att_gt(
        mpdta, **KW, covariates=["lpop"], est_method=method, bootstrap=0,
        control_group=control_group, base_period=base_period,
    )  # fmt: skip
    np.testing.assert_allclose(res.att, ref.att_gt, rtol=0, atol=1e-11)
    np.testing.assert_allclose(res.to_polars()["se"].fill_null(np.nan), ref.se_gt, rtol=0, atol=1e-11)
    for kind in AGGS:
        agg, theirs = res.aggregate(kind), aggs[kind]
        assert agg.att[-1] == pytest.approx(theirs.overall_att, abs=1e-11)
        assert agg.se[-1] == pytest.approx(theirs.overall_se, abs=1e-11)
        if kind != "simple":
            np.testing.assert_allclose(agg.att[:-1], theirs.att_by_event, rtol=0, atol=1e-11)
            np.testing.assert_allclose(agg.se[:-1], theirs.se_by_event, rtol=0, atol=1e-11)


def test_weighted_cells_match_moderndid(raw, mpdta):
    ref, _ = _moderndid(raw, xformla="~lpop", boot=False, weightsname="w")
    res = att_gt(mpdta, **KW, covariates=["lpop"], weights="w", bootstrap=0)
    np.testing.assert_allclose(res.att, ref.att_gt, rtol=0, atol=1e-11)
    np.testing.assert_allclose(res.cells.se, ref.se_gt, rtol=0, atol=1e-11)


@pytest.mark.parametrize("method", ["dr", "ipw", "reg"])
def test_weights_equal_duplicated_units_clustered(mpdta, method):
    """Brute force: a unit of integer weight w counts as w copies that share one cluster. Every
    cell, aggregation and SE must then agree exactly. (moderndid 0.2.0 drops the weights from its
    aggregations' cohort shares, so its weighted aggregates differ from both; R weights them.)"""
    copies = (
        mpdta.with_columns(copy=pl.int_ranges(0, pl.col("w")))
        .explode("copy")
        .with_columns(uid=pl.col("countyreal") * 10 + pl.col("copy"))
    )
    opts = dict(time="year", cohort="first_treat", outcome="lemp", covariates=["lpop"], est_method=method)
    weighted = att_gt(mpdta, unit="countyreal", weights="w", bootstrap=0, **opts)
    copied = att_gt(copies, unit="uid", cluster="countyreal", bootstrap=0, **opts)
    np.testing.assert_allclose(weighted.att, copied.att, rtol=0, atol=1e-13)
    np.testing.assert_allclose(weighted.cells.se, copied.cells.se, rtol=1e-11)
    for kind in AGGS:
        a, b = weighted.aggregate(kind), copied.aggregate(kind)
        np.testing.assert_allclose(a.att, b.att, rtol=0, atol=1e-13)
        np.testing.assert_allclose(a.se, b.se, rtol=1e-11)
    # and the weights matter: unweighted shares give another simple ATT
    assert abs(att_gt(mpdta, **KW, **{k: v for k, v in opts.items() if k not in KW}, bootstrap=0)
               .aggregate("simple").att[-1] - weighted.aggregate("simple").att[-1]) > 1e-4  # fmt: skip


def test_unit_engine_equals_cohort_engine_without_covariates():
    """A constant weight sends the same problem through the unit-level engine: same cells, SEs,
    aggregations, and (same seed, same Rademacher bits) the same bootstrap draws."""
    panel = staggered_panel(n_cohorts=4, units_per_cohort=30, n_never=80, n_times=7, seed=3)
    panel = panel.with_columns(one=pl.lit(2.0))
    for control_group in ("never_treated", "not_yet_treated"):
        a = att_gt(panel, **SYN, control_group=control_group, bootstrap=199, seed=5)
        b = att_gt(panel, **SYN, control_group=control_group, bootstrap=199, seed=5, weights="one")
        np.testing.assert_allclose(a.att, b.att, rtol=0, atol=1e-13)
        np.testing.assert_allclose(a.cells.se, b.cells.se, rtol=1e-11)
        np.testing.assert_allclose(a.draws.cells, b.draws.cells, rtol=0, atol=1e-13)
        assert a.crit_value == pytest.approx(b.crit_value, rel=1e-12)
        for kind in AGGS:
            x, y = a.aggregate(kind), b.aggregate(kind)
            np.testing.assert_allclose(x.att, y.att, rtol=0, atol=1e-13)
            np.testing.assert_allclose(x.se, y.se, rtol=1e-10)
            np.testing.assert_allclose(x.se_analytic, y.se_analytic, rtol=1e-11)
        idx = np.flatnonzero(~a.grid.post)
        np.testing.assert_allclose(
            a.influence.cell_covariance(idx), b.influence.cell_covariance(idx), rtol=1e-10, atol=1e-18
        )


def test_covariates_remove_a_planted_confounded_trend():
    """Trends parallel only given X: the plain DiD is biased, every adjusted estimator is not."""
    panel = staggered_panel(
        n_cohorts=3, units_per_cohort=300, n_never=900, n_times=6, effect=0.5, covariates=2,
        confounding=1.5, noise=0.3, seed=4,
    )  # fmt: skip
    plain = att_gt(panel, **SYN, bootstrap=0).aggregate("simple")
    assert plain.att[-1] - 0.5 > 5 * plain.se[-1]  # biased upwards, far outside its own CI
    for method in ("dr", "ipw", "reg"):
        adjusted = att_gt(panel, **SYN, covariates=["x1", "x2"], est_method=method, bootstrap=0)
        simple = adjusted.aggregate("simple")
        assert abs(simple.att[-1] - 0.5) < 3 * simple.se[-1], method
        pre = adjusted.to_polars().filter(~pl.col("post"))
        assert (pre["att"].abs() < 4 * pre["se"]).all(), method


# --- clusters ---------------------------------------------------------------------------------


def test_clustered_bootstrap_agrees_with_analytic_and_moderndid(raw, mpdta):
    """Equal clusters of two counties: R's cluster-mean rescaling equals the cluster sum, so
    moderndid's bootstrap SE, ours and our analytic clustered SE estimate one number."""
    res = att_gt(mpdta, **KW, covariates=["lpop"], cluster="pair", bootstrap=4000, seed=2)
    ref, _ = _moderndid(raw, xformla="~lpop", boot=True, biters=4000, clustervars=["pair"], random_state=2)
    # every draw is sum_c V_bc (IF summed over cluster c) / n, one sign per cluster
    inf = res.influence
    signs = 2.0 * np.unpackbits(rademacher_bits(inf.n_clusters, 4000, 2), axis=1, count=4000) - 1
    brute = inf.psi(np.eye(len(res.att))).T @ signs[inf.cluster] / inf.n
    np.testing.assert_allclose(res.draws.cells, brute, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.draws.cells.std(axis=1), res.cells.se, rtol=0.05)
    # Cohort 2004 has 20 counties = 10 clusters: the IQR of a sum of 10 dominant signed terms is
    # not 1.349 sigma, so R's IQR-based SE is coarse there, for R (Mammen) and for us (Rademacher).
    big = res.cohort != 2004
    np.testing.assert_allclose(res.se[big], res.cells.se[big], rtol=0.08)
    np.testing.assert_allclose(res.se[big], ref.se_gt[big], rtol=0.1)
    unclustered = att_gt(mpdta, **KW, covariates=["lpop"], bootstrap=0)
    assert not np.allclose(res.cells.se, unclustered.cells.se, rtol=1e-3)
    # clustering by the unit itself is no clustering (R: clustervars=[idname])
    same = att_gt(mpdta, **KW, covariates=["lpop"], cluster=["countyreal"], bootstrap=0)
    np.testing.assert_allclose(same.cells.se, unclustered.cells.se, rtol=1e-13)


def test_clustered_se_matches_monte_carlo_with_unequal_clusters():
    """Units cut from documents of unequal size with a shared document shock. Over 200 panels the
    spread of the simple ATT matches our clustered SE (IF summed per cluster); R's formula (IF
    averaged per cluster, rescaled by the number of clusters) misstates it."""
    est, ours, r_rule, naive = [], [], [], []
    for seed in range(200):
        panel = staggered_panel(
            n_cohorts=3, units_per_cohort=60, n_never=200, n_times=5, effect=0.2, noise=0.5,
            documents=100, document_shock=0.8, seed=seed,
        )  # fmt: skip
        res = att_gt(panel, **SYN, cluster="document", bootstrap=0)
        agg = res.aggregate("simple")
        est.append(agg.att[-1])
        ours.append(agg.se[-1])
        spec = res._spec("simple", "time")
        psi = res.influence.psi(spec.weights, spec.wif)[:, 0]
        codes = res.influence.cluster
        sizes = np.bincount(codes)
        means = np.bincount(codes, weights=psi) / sizes
        r_rule.append(np.sqrt((means**2).sum()) / len(sizes))
        naive.append(att_gt(panel, **SYN, bootstrap=0).aggregate("simple").se[-1])
    truth = np.std(est, ddof=1)
    assert abs(np.mean(est) - 0.2) < 3 * truth / np.sqrt(200)
    assert np.mean(ours) == pytest.approx(truth, rel=0.1)  # measured 0.95 of the spread
    assert np.mean(r_rule) < 0.88 * truth  # 0.80: a one-unit cluster counts as much as a big one
    assert np.mean(naive) < 0.6 * truth  # 0.40: ignoring the documents


# --- bad input ---------------------------------------------------------------------------------


def test_bad_design_inputs_name_the_column(mpdta):
    varying = mpdta.with_columns(lpop=pl.col("lpop") + (pl.col("year") == 2005) * 0.1)
    with pytest.raises(ValueError, match=r"covariate column 'lpop' varies within unit 8001 .*base-period"):
        att_gt(varying, **KW, covariates=["lpop"])
    moved = mpdta.with_columns(pair=pl.col("pair") + (pl.col("year") == 2007))
    with pytest.raises(ValueError, match=r"cluster column 'pair' varies within unit 8001"):
        att_gt(moved, **KW, cluster="pair")
    negative = mpdta.with_columns(w=pl.col("w") - 2)
    with pytest.raises(ValueError, match=r"weights column 'w' has negative values"):
        att_gt(negative, **KW, weights="w")
    with pytest.raises(KeyError, match=r"covariate column 'pop' not in data"):
        att_gt(mpdta, **KW, covariates=["pop"])
    with pytest.raises(TypeError, match=r"covariate column 'state' must be numeric"):
        att_gt(mpdta.with_columns(state=pl.lit("CO")), **KW, covariates=["state"])
    with pytest.raises(ValueError, match=r"cluster takes the unit column and at most one other"):
        att_gt(mpdta, **KW, cluster=["pair", "w"])
    with pytest.raises(ValueError, match=r"est_method must be one of"):
        att_gt(mpdta, **KW, covariates=["lpop"], est_method="aipw")


def test_overlap_failure_names_the_cohort(mpdta):
    """A covariate that all but identifies cohort 2004 pushes its propensity score to 1."""
    rng = np.random.default_rng(0)
    ids = mpdta["countyreal"].unique().sort()
    jitter = dict(zip(ids.to_list(), rng.normal(0, 0.01, len(ids)).tolist()))
    separating = mpdta.with_columns(
        tell=(pl.col("first_treat") == 2004).fill_null(False).cast(pl.Float64) * 5
        + pl.col("countyreal").replace_strict(jitter)
    )
    for method in ("dr", "ipw"):
        with pytest.raises(OverlapError, match=r"overlap fails for cohort 2004: propensity score reaches"):
            att_gt(separating, **KW, covariates=["tell"], est_method=method, bootstrap=0)
    # outcome regression needs no propensity score
    assert np.isfinite(att_gt(separating, **KW, covariates=["tell"], est_method="reg", bootstrap=0).att).all()


# --- unbalanced panels: R's repeated-cross-section rule -----------------------------------------


@pytest.fixture(scope="module")
def holes(raw) -> pl.DataFrame:
    """mpdta with a tenth of its (county, year) rows missing."""
    drop = np.random.default_rng(0).uniform(size=len(raw)) < 0.1
    return raw.filter(~pl.Series(drop))


@pytest.mark.parametrize("method", ["dr", "ipw", "reg"])
@pytest.mark.parametrize("covariates", [(), ("lpop",)])
def test_unbalanced_panel_matches_csdid(holes, method, covariates):
    att_gt_csdid = pytest.importorskip("csdid.att_gt").ATTgt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = att_gt_csdid(
            yname="lemp", tname="year", idname="countyreal", gname="first_treat", data=holes.to_pandas(),
            xformla=f"lemp~{'+'.join(covariates)}" if covariates else None, allow_unbalanced_panel=True,
        ).fit(est_method=method, bstrap=False)  # fmt: skip
    ours = att_gt(
        holes.with_columns(pl.col("first_treat").replace(0, None)), **KW, covariates=covariates,
        est_method=method, bootstrap=0, allow_unbalanced_panel=True,
    )  # fmt: skip
    np.testing.assert_allclose(ours.att, ref.results["att"], rtol=0, atol=1e-11)
    np.testing.assert_allclose(ours.cells.se, ref.results["se"], rtol=0, atol=1e-11)
    assert "unbalanced panel: " in ours.summary()
    for kind in AGGS:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            ref.aggte(typec=kind, bstrap=False)
        agg = ours.aggregate(kind)
        assert agg.att[-1] == pytest.approx(ref.atte["overall_att"], abs=1e-11), kind
        assert agg.se[-1] == pytest.approx(ref.atte["overall_se"], abs=1e-11), kind


def test_unbalanced_option_leaves_a_balanced_panel_alone(mpdta):
    a = att_gt(mpdta, **KW, covariates=["lpop"], bootstrap=0)
    b = att_gt(mpdta, **KW, covariates=["lpop"], bootstrap=0, allow_unbalanced_panel=True)
    np.testing.assert_array_equal(a.att, b.att)
    np.testing.assert_array_equal(a.cells.se, b.cells.se)


def _jackknife(data: pl.DataFrame, unit_ids: np.ndarray, cell: int, eps: float = 1e-6, **opts) -> np.ndarray:
    """n w_i d ATT_cell / d w_i by central differences: the influence function, brute force."""
    base = data["w"].cast(pl.Float64)
    out = np.empty(len(unit_ids))
    for j, uid in enumerate(unit_ids):
        bump = (data["unit"] == uid).cast(pl.Float64) * eps * base
        up = att_gt(data.with_columns(w=base + bump), **SYN, weights="w", bootstrap=0, **opts).att[cell]
        down = att_gt(data.with_columns(w=base - bump), **SYN, weights="w", bootstrap=0, **opts).att[cell]
        out[j] = (up - down) / (2 * eps)
    return out * len(unit_ids)


@pytest.mark.parametrize("balanced", [True, False])
def test_influence_functions_equal_the_infinitesimal_jackknife(balanced):
    """Every piece of the IF (propensity score, both regressions, the per-unit sum over rows of an
    unbalanced panel, the n / n_cell scale, the weights) against d ATT / d w_i, for DR."""
    panel = staggered_panel(n_cohorts=2, units_per_cohort=12, n_never=24, n_times=4, covariates=2,
                            confounding=0.5, seed=7)  # fmt: skip
    rng = np.random.default_rng(7)
    panel = panel.with_columns(w=pl.Series(np.repeat(rng.uniform(0.5, 2.0, 48), 4)))
    if not balanced:
        panel = panel.filter(~pl.Series(rng.uniform(size=len(panel)) < 0.15))
    opts = dict(covariates=["x1", "x2"], est_method="dr", allow_unbalanced_panel=not balanced)
    res = att_gt(panel, **SYN, weights="w", bootstrap=0, **opts)
    psi = res.influence.psi(np.eye(len(res.att)))  # rows in the panel's (cohort-sorted) order
    rows = load_panel(panel, **SYN, covariates=("x1", "x2"), weights="w", allow_unbalanced=not balanced)
    for cell in (0, len(res.att) - 1):
        brute = _jackknife(panel, rows.unit_ids, cell, **opts)
        np.testing.assert_allclose(psi[:, cell], brute, rtol=0, atol=1e-6)


def test_dr_cross_section_influence_function_where_moderndid_differs():
    """The locally efficient DR estimator on repeated cross sections: our IF equals the
    infinitesimal jackknife; moderndid 0.2.0's `drdid_rc` does not (it flips the sign of the
    pre-period control regression's estimation effect; the `drdid` package agrees with us).
    The ATT itself is the same."""
    rng = np.random.default_rng(0)
    n = 200
    d = (rng.uniform(size=n) < 0.3).astype(float)
    post = (rng.uniform(size=n) < 0.5).astype(float)
    x = np.column_stack([np.ones(n), rng.normal(size=n) + 0.5 * d, rng.normal(size=n)])
    y = x @ [1.0, 0.5, -0.3] + post * (0.4 + 0.3 * x[:, 1]) + 0.2 * d * post + rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    att, inf = estimate_rc("dr", Comparison.of(d, x, w), y, post)
    brute = np.empty(n)
    for i in range(n):
        up, down = w.copy(), w.copy()
        up[i] += 1e-6
        down[i] -= 1e-6
        diff = estimate_rc("dr", Comparison.of(d, x, up), y, post)[0]
        diff -= estimate_rc("dr", Comparison.of(d, x, down), y, post)[0]
        brute[i] = n * w[i] * diff / 2e-6
    np.testing.assert_allclose(inf, brute, rtol=0, atol=1e-6)
    drdid_rc = pytest.importorskip("moderndid.drdid.estimators.drdid_rc").drdid_rc
    theirs = drdid_rc(y=y, post=post, d=d, covariates=x, i_weights=w.copy(), influence_func=True)
    assert theirs.att == pytest.approx(att, abs=1e-12)
    assert np.abs(theirs.att_inf_func - brute).max() > 0.1


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
def test_synthetic_panel_with_covariates_matches_moderndid(control_group):
    """A Pythia-shaped grid (steps of 1,000) with two confounding covariates: every cell and
    aggregation of the doubly robust estimator equals moderndid's."""
    md = pytest.importorskip("moderndid")
    panel = staggered_panel(n_cohorts=4, units_per_cohort=40, n_never=120, n_times=7, step=1000,
                            covariates=2, confounding=0.5, seed=5)  # fmt: skip
    ours = att_gt(panel, **SYN, covariates=["x1", "x2"], bootstrap=0, control_group=control_group)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = md.att_gt(
            data=panel.with_columns(pl.col("cohort").fill_null(0)), yname="y", tname="time", idname="unit",
            gname="cohort", xformla="~x1+x2", boot=False, control_group=control_group.replace("_", ""),
        )  # fmt: skip
        aggs = {kind: md.aggte(ref, type=kind) for kind in AGGS}
    np.testing.assert_allclose(ours.att, ref.att_gt, rtol=0, atol=1e-11)
    np.testing.assert_allclose(ours.cells.se, ref.se_gt, rtol=0, atol=1e-11)
    for kind in AGGS:
        agg = ours.aggregate(kind)
        assert agg.att[-1] == pytest.approx(aggs[kind].overall_att, abs=1e-11)
        assert agg.se[-1] == pytest.approx(aggs[kind].overall_se, abs=1e-11)
        if kind != "simple":
            np.testing.assert_allclose(agg.att[:-1], aggs[kind].att_by_event, rtol=0, atol=1e-11)
            np.testing.assert_allclose(agg.se[:-1], aggs[kind].se_by_event, rtol=0, atol=1e-11)
