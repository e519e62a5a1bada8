"""HonestDiD (analysis.did.honest): robust confidence sets under smoothness and relative-magnitude
restrictions, against moderndid.didhonest on mpdta's event study, and the conditional test's
size by Monte Carlo."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analysis.did import att_gt
from analysis.did import honest as hd

MPDTA = Path(__file__).resolve().parents[2] / "data" / "mpdta.csv"
KW = dict(unit="countyreal", time="year", cohort="first_treat", outcome="lemp")
M_SD = [0.0, 0.01, 0.02, 0.05]
M_RM = [0.0, 0.5, 1.0, 2.0]


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return pl.read_csv(MPDTA)


@pytest.fixture(scope="module")
def res(raw):
    data = raw.with_columns(pl.col("first_treat").replace(0, None))
    return att_gt(data, **KW, covariates=["lpop"], base_period="universal", bootstrap=0)


@pytest.fixture(scope="module")
def theirs(raw):
    """moderndid's event study and HonestDiD for e = 0 and 2 (FLCI; the conditional test and the
    hybrid C-LF)."""
    md = pytest.importorskip("moderndid")
    pytest.importorskip("cvxpy")
    from moderndid.didhonest import honest_did

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gt = md.att_gt(
            data=raw, yname="lemp", tname="year", idname="countyreal", gname="first_treat",
            xformla="~lpop", boot=False, base_period="universal",
        )  # fmt: skip
        es = md.aggte(gt, type="dynamic")
        out = {}
        for e in (0, 2):
            sd = honest_did(es, event_time=e, sensitivity_type="smoothness", m_vec=M_SD).robust_ci
            rm = honest_did(
                es, event_time=e, sensitivity_type="relative_magnitude", m_bar_vec=M_RM, method="Conditional"
            ).robust_ci
            # C-LF costs moderndid 1,000 LPs per polyhedron and Mbar: one event time is enough
            lf = (
                None
                if e != 2
                else honest_did(
                    es, event_time=e, sensitivity_type="relative_magnitude", m_bar_vec=M_RM, method="C-LF"
                ).robust_ci
            )
            out[e] = (sd, rm, lf)
    return es, out


def test_event_study_matches_moderndid(res, theirs):
    es, _ = theirs
    ours = res.event_study()
    keep = es.event_times != -1
    np.testing.assert_allclose(ours.beta, es.att_by_event[keep], rtol=0, atol=1e-12)
    inf = es.influence_func[:, keep]
    np.testing.assert_allclose(ours.sigma, inf.T @ inf / len(inf) ** 2, rtol=1e-10, atol=1e-16)
    assert (ours.n_pre, ours.n_post) == (3, 4)


@pytest.mark.parametrize("e", [0, 2])
def test_smoothness_flci_matches_moderndid(res, theirs, e):
    ref = theirs[1][e][0]
    ours = res.honest_did(e, method="smoothness", mbar=M_SD)
    # both minimise the half-length over h numerically: equal up to that tolerance
    np.testing.assert_allclose(ours.lower, ref["lb"], rtol=0, atol=5e-5)
    np.testing.assert_allclose(ours.upper, ref["ub"], rtol=0, atol=5e-5)


@pytest.mark.parametrize("e", [0, 2])
def test_relative_magnitudes_match_moderndid(res, theirs, e):
    """Same grid, same test: the same accepted grid points. moderndid 0.2.0 lets only the last
    n_pre - 1 pre-period changes attain the max (an off-by-one against R HonestDiD, which takes
    every one, as Rambachan & Roth define Delta^RM); told to do the same, we agree exactly, and
    with every change our sets contain its."""
    ref = theirs[1][e][1]
    es = res.event_study()
    same = hd.honest_did(es, k=e, event_time=e, method="relative_magnitude", mbar=M_RM, grid_points=100,
                         first_pre_change=1, test="C")  # fmt: skip
    np.testing.assert_allclose(same.lower, ref["lb"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(same.upper, ref["ub"], rtol=0, atol=1e-10)
    full = res.honest_did(e, method="relative_magnitude", mbar=M_RM, grid_points=100, test="C")
    assert (full.lower <= same.lower + 1e-12).all() and (full.upper >= same.upper - 1e-12).all()


@pytest.mark.parametrize("e", [2])
def test_hybrid_relative_magnitudes_match_moderndid(res, theirs, e):
    """C-LF, R's default: the least-favourable critical values are drawn as moderndid draws them
    (numpy's default_rng(0)), so the sets agree on the grid exactly; with every pre-period change
    ours contain them."""
    ref = theirs[1][e][2]
    es = res.event_study()
    same = hd.honest_did(es, k=e, event_time=e, method="relative_magnitude", mbar=M_RM, grid_points=100,
                         first_pre_change=1)  # fmt: skip
    np.testing.assert_allclose(same.lower, ref["lb"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(same.upper, ref["ub"], rtol=0, atol=1e-10)
    full = res.honest_did(e, method="relative_magnitude", mbar=M_RM, grid_points=100)
    assert (full.lower <= same.lower + 1e-12).all() and (full.upper >= same.upper - 1e-12).all()


def test_least_favorable_cv_and_hybrid_decisions():
    """c_LF over the dual vertices equals moderndid's LP per draw on the same draws; eta over the
    vertices equals the LP; the hybrid's decisions equal moderndid's, and its size is about alpha
    on the boundary of the null (every moment binding)."""
    an = pytest.importorskip("moderndid.didhonest.arp_nuisance")
    rng = np.random.default_rng(3)
    n_pre, n_post = 3, 4
    root = rng.normal(size=(7, 7))
    es = hd.EventStudy(beta=rng.normal(size=7) * 0.05, sigma=root @ root.T / 700 + 1e-3 * np.eye(7),
                       n_pre=n_pre, n_post=n_post)  # fmt: skip
    moments = hd._Moments.of(es, es.target(None), hd._rm_polyhedra(n_pre, n_post, 1.0)[1])
    x, sigma = moments.x, moments.sigma
    sd = np.sqrt(np.diag(sigma))
    draws = rng.multivariate_normal(np.zeros(len(sd)), sigma, size=400)
    vertices = hd._dual_vertices(np.column_stack([sd, x]))
    lp = np.array([hd._lp_value(y, x, sd)[0] for y in draws[:50]])
    np.testing.assert_allclose((draws[:50] @ vertices.T).max(axis=1), lp, rtol=0, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c_lf = hd.least_favorable_cv(x, sigma, 0.005)
        assert c_lf == pytest.approx(
            an.compute_least_favorable_cv(x, sigma, 0.005, sims=1000, seed=0), abs=1e-12
        )
        ours = np.array([hd.arp_conditional_test(y, x, sigma, 0.05, (0.005, c_lf)) for y in draws])
        lists = {"hybrid_kappa": 0.005, "lf_cv": c_lf}
        theirs = [an.lp_conditional_test(y, x, sigma, 0.05, "LF", dict(lists))["reject"] for y in draws[:150]]
    np.testing.assert_array_equal(ours[:150], theirs)
    assert 0.02 < ours.mean() < 0.085
    # no vertex table when the bases are too many: one LP per draw gives the same value
    old, hd.MAX_VERTICES = hd.MAX_VERTICES, 1
    try:
        assert hd.least_favorable_cv(x, sigma, 0.005) == pytest.approx(c_lf, abs=1e-12)
    finally:
        hd.MAX_VERTICES = old


@pytest.mark.parametrize("method", ["relative_magnitude", "smoothness"])
def test_breakdown_value_is_where_zero_enters(res, method):
    out = res.honest_did(2, method=method, mbar=[0.0], grid_points=200)
    assert out.original[1] < 0  # ATT at e = 2 is significant under parallel trends
    b = out.breakdown
    assert 0 < b < np.inf
    below, above = (
        res.honest_did(2, method=method, mbar=[0.97 * b, 1.03 * b], grid_points=1000).to_polars().rows()
    )
    assert below[-1] and not above[-1]  # excludes_zero just below, not just above
    assert "breakdown" in str(out)
    # e = 0 is not significant to begin with: no breakdown value
    assert np.isnan(res.honest_did(0, method=method, mbar=[0.0], grid_points=100).breakdown)


def test_conditional_test_size_and_decisions():
    """H0: E[y] - x tau <= 0 for some tau. On the boundary (every moment binding) the test rejects
    about alpha of the time (Monte Carlo), and each decision equals moderndid's. Far outside H0 the
    truncation point lies deep in the tail, where moderndid's truncated-normal quantile breaks
    down (it returns the truncation point or infinity); ours equals a 50-digit computation."""
    rng = np.random.default_rng(0)
    k = 6
    x = rng.normal(size=(k, 1))
    root = rng.normal(size=(k, k))
    sigma = root @ root.T / k + 0.5 * np.eye(k)
    chol = np.linalg.cholesky(sigma)
    mean = x @ np.array([0.7])  # E[y] - x tau = 0 at tau = 0.7
    draws = mean + (chol @ rng.normal(size=(k, 600))).T
    ours = np.array([hd.arp_conditional_test(y, x, sigma, 0.05) for y in draws])
    assert 0.02 < ours.mean() < 0.085
    shifted = np.array([hd.arp_conditional_test(y + 3.0, x, sigma, 0.05) for y in draws[:150]])
    assert shifted.mean() > 2 * ours.mean()
    an = pytest.importorskip("moderndid.didhonest.arp_nuisance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = [an.lp_conditional_test(y, x, sigma, 0.05, "ARP")["reject"] for y in draws[:150]]
        theirs_shifted = [
            an.lp_conditional_test(y + 3.0, x, sigma, 0.05, "ARP")["reject"] for y in draws[:150]
        ]
    np.testing.assert_array_equal(ours[:150], theirs)
    np.testing.assert_array_equal(shifted, theirs_shifted)
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    for lo, p in ((8.1764, 0.95), (9.006, 0.95), (-1.0, 0.5)):
        cdf_lo = mp.ncdf(lo)
        exact = mp.findroot(lambda v, lo=lo, p=p, c=cdf_lo: (mp.ncdf(v) - c) / (1 - c) - p, lo + 0.3)
        assert hd._truncated_quantile(p, lo, np.inf) == pytest.approx(float(exact), abs=1e-7)


def test_honest_did_refusals(raw, res):
    data = raw.with_columns(pl.col("first_treat").replace(0, None))
    varying = att_gt(data, **KW, bootstrap=0)
    with pytest.raises(ValueError, match=r"fit with base_period='universal'"):
        varying.honest_did(0)
    with pytest.raises(ValueError, match=r"e must be a post-treatment event time in 0..3 or .average."):
        res.honest_did(5)
    with pytest.raises(ValueError, match=r"method must be one of"):
        res.honest_did(0, method="smooth")
    with pytest.raises(ValueError, match=r"mbar must be >= 0"):
        res.honest_did(0, mbar=[-1.0])


def test_average_target_is_the_event_study_overall(res):
    """e = "average": theta is the mean post-period effect, the dynamic aggregation's overall row."""
    out = res.honest_did("average", method="smoothness", mbar=[0.01])
    overall = res.aggregate("dynamic", event_time="period").overall
    assert out.estimate == pytest.approx(overall["att"], abs=1e-14)
    assert out.original[0] == pytest.approx(overall["ci_lower"], abs=1e-12)
    assert out.to_polars()["target"].to_list() == ["average"]
    assert out.lower[0] < out.original[0] and out.upper[0] > out.original[1]
