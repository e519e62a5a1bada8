"""Callaway & Sant'Anna ATT(g, t) (analysis.did) against R `did`'s published mpdta numbers,
`differences` (the seed's estimator), pyfixest regressions, brute-force influence functions,
and synthetic panels with a planted effect."""

from __future__ import annotations

import warnings
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl
import pytest

from analysis.did import att_gt, event_study_regression
from analysis.did.bootstrap import rademacher_bits
from analysis.did.panel import load_panel
from analysis.did.synthetic import staggered_panel

# pandas 3 deprecations inside differences / pyfixest, not ours
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")

MPDTA = Path(__file__).resolve().parents[2] / "data" / "mpdta.csv"
KW = dict(unit="countyreal", time="year", cohort="first_treat", outcome="lemp")
SYN = dict(unit="unit", time="time", cohort="cohort", outcome="y")


@pytest.fixture(scope="module")
def mpdta() -> pl.DataFrame:
    # R codes never-treated as first.treat = 0; here the cohort is null, explicitly
    return pl.read_csv(MPDTA).with_columns(pl.col("first_treat").replace(0, None))


@pytest.fixture(scope="module")
def mp(mpdta):
    return att_gt(mpdta, **KW, bootstrap=0)


def cell(frame: pl.DataFrame, g: int, t: int) -> dict:
    return frame.filter((pl.col("cohort") == g) & (pl.col("time") == t)).row(0, named=True)


# --- R `did` 2.x published numbers on mpdta (digest section 5) ---------------------------------

R_CELLS = {  # (g, t): (ATT, analytic SE)
    (2004, 2004): (-0.0105, 0.0233),
    (2004, 2005): (-0.0704, 0.0310),
    (2004, 2006): (-0.1373, 0.0364),
    (2004, 2007): (-0.1008, 0.0344),
    (2006, 2004): (0.0065, 0.0233),
    (2006, 2005): (-0.0028, 0.0196),
    (2006, 2006): (-0.0046, 0.0178),
    (2006, 2007): (-0.0412, 0.0202),
    (2007, 2004): (0.0305, 0.0150),
    (2007, 2005): (-0.0027, 0.0164),
    (2007, 2006): (-0.0311, 0.0179),
    (2007, 2007): (-0.0261, 0.0167),
}


def test_mpdta_cells_match_r(mp):
    out = mp.to_polars()
    assert len(out) == len(R_CELLS)
    for (g, t), (att, se) in R_CELLS.items():
        row = cell(out, g, t)
        assert round(row["att"], 4) == att, (g, t, row["att"])
        assert round(row["se"], 4) == se, (g, t, row["se"])
        assert row["base_time"] == (g - 1 if t >= g else t - 1)
        assert row["post"] == (t >= g) and row["event_time"] == t - g
    assert out.filter(pl.col("cohort") == 2004)["n_treated"].to_list() == [20] * 4
    assert set(out["n_control"]) == {309}


def test_mpdta_pretest_matches_r(mp):
    test = mp.pretrend_test()
    assert test.cells == test.df == 5
    assert round(test.p_value, 5) == 0.16812


def test_mpdta_aggregations_match_r(mp):
    simple = mp.aggregate("simple").overall
    assert (round(simple["att"], 4), round(simple["se"], 4)) == (-0.0400, 0.0120)

    dyn = mp.aggregate("dynamic").to_polars()
    assert dyn["key"].to_list()[:-1] == [-3, -2, -1, 0, 1, 2, 3]
    expect = [0.0305, -0.0006, -0.0245, -0.0199, -0.0510, -0.1373, -0.1008]
    assert [round(x, 4) for x in dyn["att"][:-1]] == expect
    assert (round(dyn["att"][-1], 4), round(dyn["se"][-1], 4)) == (-0.0772, 0.0200)

    grp = mp.aggregate("group").to_polars()
    assert grp["key"].to_list() == [2004, 2006, 2007, None]
    assert [round(x, 4) for x in grp["att"]] == [-0.0797, -0.0229, -0.0261, -0.0310]
    assert round(grp["se"][-1], 4) == 0.0124

    cal = mp.aggregate("calendar").to_polars()
    assert [round(x, 4) for x in cal["att"]] == [-0.0105, -0.0704, -0.0488, -0.0371, -0.0417]
    assert round(cal["se"][-1], 4) == 0.0160

    bal = mp.aggregate("event", balance_e=1).to_polars()
    assert bal["key"].to_list()[:-1] == [-2, -1, 0, 1]
    assert [round(x, 4) for x in bal["att"]] == [0.0065, -0.0028, -0.0066, -0.0510, -0.0288]

    window = mp.aggregate("dynamic", min_e=-1, max_e=1).to_polars()
    assert window["key"].to_list()[:-1] == [-1, 0, 1]


def test_input_formats_and_never_treated_flag(mpdta, mp):
    ref = mp.to_polars()
    for data in (mpdta.to_pandas(), mpdta.to_arrow()):
        assert att_gt(data, **KW, bootstrap=0).to_polars().equals(ref)
    flagged = mpdta.with_columns(
        never=pl.col("first_treat").is_null(), first_treat=pl.col("first_treat").fill_null(9999)
    )
    assert att_gt(flagged, **KW, never_treated="never", bootstrap=0).to_polars().equals(ref)
    # R's 0-coding is not read as "never treated"
    with pytest.raises(
        ValueError, match="309 units have cohort <= first time 2003: is never-treated coded 0"
    ):
        att_gt(pl.read_csv(MPDTA), **KW, bootstrap=0)
    with pytest.warns(UserWarning, match="dropped 309 units with cohort <= first time 2003"):
        att_gt(pl.read_csv(MPDTA), **KW, bootstrap=0, control_group="not_yet_treated")


def test_summary_and_repr(mpdta):
    res = att_gt(mpdta, **KW, bootstrap=199, seed=1)
    text = res.summary()
    assert "Wald pre-test: chi2(5)" in text and "Simple ATT: -0.0400" in text
    assert "uniform band over 7 cells" in text
    assert "AttGtResult(12 cells" in repr(res)
    assert "event time" in res.aggregate("dynamic").summary()


# --- parity with `differences` (the seed's estimator) -------------------------------------------


def _differences_cells(data: pl.DataFrame, kw: dict, **opts) -> pl.DataFrame:
    from differences import ATTgt

    pdf = data.to_pandas().set_index([kw["unit"], kw["time"]])
    est = ATTgt(
        pdf, cohort_column=kw["cohort"], base_period=opts["base_period"], anticipation=opts["anticipation"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = est.fit(kw["outcome"], control_group=opts["control_group"], progress_bar=False)
    df = res.to_pandas()
    df.columns = [c[-1] for c in df.columns]
    return res, pl.from_pandas(df.reset_index()).select("cohort", "time", "ATT", "std_error")


def _differences_agg(res, kind: str) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = (
            [res.aggregate(kind)] if kind == "simple" else [res.aggregate(kind), res.aggregate(kind, True)]
        )
    att = np.concatenate([p.iloc[:, 0].to_numpy() for p in parts])
    se = np.concatenate([p.iloc[:, 1].to_numpy() for p in parts])
    return att, se


def _unequal_panel() -> pl.DataFrame:
    """Pythia-shaped (steps of 1000, cohort = first checkpoint after training) but small, with
    unequal cohort sizes so the estimated-weight (wif) terms of the aggregations matter."""
    df = staggered_panel(n_cohorts=8, units_per_cohort=30, n_never=80, n_times=10, step=1000, seed=7)
    units = np.arange(df["unit"].max() + 1)
    kept = units[np.random.default_rng(1).random(len(units)) < 0.7]
    return df.filter(pl.col("unit").is_in(kept))


CONFIGS = [
    dict(control_group="never_treated", base_period="varying", anticipation=0),
    dict(control_group="not_yet_treated", base_period="varying", anticipation=0),
    dict(control_group="never_treated", base_period="universal", anticipation=0),
    dict(control_group="not_yet_treated", base_period="universal", anticipation=1),
]


@pytest.mark.filterwarnings("ignore:dropped .* units with cohort <= first time")  # anticipation=1 config
@pytest.mark.parametrize("opts", CONFIGS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("which", ["mpdta", "pythia-shaped"])
def test_cells_match_differences(opts, which, mpdta):
    pytest.importorskip("differences")
    data, kw = (mpdta, KW) if which == "mpdta" else (_unequal_panel(), SYN)
    opts = dict(opts, anticipation=opts["anticipation"] * (1 if which == "mpdta" else 1000))
    _, ref = _differences_cells(data, kw, **opts)
    ours = att_gt(data, **kw, **opts, bootstrap=0).to_polars()
    joined = ours.join(ref, on=["cohort", "time"], how="full", coalesce=True)
    assert len(joined) == len(ours) == len(ref)
    np.testing.assert_allclose(joined["att"], joined["ATT"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        joined["se"].fill_null(np.nan), joined["std_error"].fill_null(np.nan), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
@pytest.mark.parametrize("which", ["mpdta", "pythia-shaped"])
def test_aggregations_match_differences(control_group, which, mpdta):
    pytest.importorskip("differences")
    data, kw = (mpdta, KW) if which == "mpdta" else (_unequal_panel(), SYN)
    opts = dict(control_group=control_group, base_period="varying", anticipation=0)
    res, _ = _differences_cells(data, kw, **opts)
    ours = att_gt(data, **kw, **opts, bootstrap=0)
    for theirs, kind in [
        ("simple", "simple"),
        ("event", "dynamic"),
        ("cohort", "group"),
        ("time", "calendar"),
    ]:
        att, se = _differences_agg(res, theirs)
        agg = ours.aggregate(kind)
        np.testing.assert_allclose(agg.att, att, atol=1e-10, err_msg=kind)
        np.testing.assert_allclose(agg.se, se, atol=1e-10, err_msg=kind)


def test_no_never_treated_uses_last_cohort_as_control(mpdta):
    treated_only = mpdta.filter(pl.col("first_treat").is_not_null())
    with pytest.raises(ValueError, match="no never-treated units"):
        att_gt(treated_only, **KW)
    res = att_gt(treated_only, **KW, control_group="not_yet_treated", bootstrap=0)
    out = res.to_polars()
    assert out["time"].max() == 2006 and set(out["cohort"]) == {2004, 2006}
    assert any("cohort 2007 is the last-resort control" in note for note in res.notes)


# --- pyfixest regression event study --------------------------------------------------------


def test_regression_event_study_cross_check(mpdta):
    reg = event_study_regression(mpdta, **KW)
    cs = att_gt(mpdta, **KW, base_period="universal", bootstrap=0).to_polars()
    joined = reg.join(cs, on=["cohort", "time"], suffix="_cs")
    assert len(joined) == len(reg) == 12  # every cell but the three reference cells
    # post-treatment cells: exactly ATT(g, t); pre-treatment: the universal-base ATT(g, t)
    np.testing.assert_allclose(joined["att"], joined["att_cs"], atol=1e-8)
    ratio = (joined["se"] / joined["se_cs"]).to_numpy()
    assert np.all((ratio > 1.0) & (ratio < 1.01)), ratio  # CRV1 small-sample factor only
    varying = att_gt(mpdta, **KW, bootstrap=0).to_polars().filter("post")
    post = joined.filter("post").sort("cohort", "time")
    np.testing.assert_allclose(post["att"], varying.sort("cohort", "time")["att"], atol=1e-8)


# --- influence functions and bootstrap internals against brute force ---------------------------


def _brute_force_if(data: pl.DataFrame, res, control_group: str) -> np.ndarray:
    """The (n x cells) influence-function matrix from its definition, unit by unit."""
    panel = load_panel(data, **SYN, control_group=control_group)
    y, n = panel.y, panel.n
    group = np.repeat(np.arange(panel.n_groups), panel.group_sizes)
    cohort = np.r_[panel.cohorts, np.iinfo(np.int64).max][group]
    out = np.zeros((n, len(res.grid)))
    for k in range(len(res.grid)):
        g, t, b = res.cohort[k], res.grid.t[k], res.grid.b[k]
        dy = y[:, t] - y[:, b]
        treated = cohort == g
        control = group == panel.n_groups - 1
        if control_group == "not_yet_treated":
            control |= (cohort > panel.times[max(t, b)] + res.settings.anticipation) & ~treated
        if t != b:
            assert dy[treated].mean() - dy[control].mean() == pytest.approx(res.att[k], abs=1e-12)
            out[treated, k] = n / treated.sum() * (dy[treated] - dy[treated].mean())
            out[control, k] = -n / control.sum() * (dy[control] - dy[control].mean())
    return out


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
@pytest.mark.parametrize("base_period", ["varying", "universal"])
def test_covariance_and_draws_equal_brute_force(control_group, base_period):
    data = staggered_panel(n_cohorts=4, units_per_cohort=12, n_never=20, n_times=7, step=3, seed=2)
    res = att_gt(data, **SYN, control_group=control_group, base_period=base_period, bootstrap=64, seed=5)
    inf = _brute_force_if(data, res, control_group)
    n = inf.shape[0]
    np.testing.assert_allclose(res.covariance(), inf.T @ inf / n**2, atol=1e-14)
    se = np.sqrt(np.diag(inf.T @ inf)) / n
    np.testing.assert_allclose(np.nan_to_num(res.cells.se), se, atol=1e-14)  # NaN: reference cells
    w = np.random.default_rng(0).normal(size=(len(res.grid), 3))
    np.testing.assert_allclose(res.influence.covariance(w), w.T @ inf.T @ inf @ w / n**2, atol=1e-13)
    # the O(1)-per-cell bootstrap equals (1/n) sum_i V_bi IF_i with the same Rademacher weights
    bits = rademacher_bits(n, 64, 5)
    v = 2.0 * np.unpackbits(bits, axis=1, count=64) - 1.0  # (n, B), rows in panel order
    np.testing.assert_allclose(res.draws.cells, inf.T @ v / n, atol=1e-13)


def test_bootstrap_statistics_on_mpdta(mpdta, mp):
    res = att_gt(mpdta, **KW, bootstrap=999, seed=11)
    ratio = res.se / mp.cells.se
    assert np.all(np.abs(ratio - 1) < 0.10), ratio
    k = int(res.cband_mask.sum())
    assert k == 7  # post-treatment cells by default
    bonferroni = NormalDist().inv_cdf(1 - 0.05 / (2 * k))
    assert 1.96 <= res.crit_value <= bonferroni
    out = res.to_polars()
    post = out.filter("post")
    assert post["cband"].all() and not out.filter(~pl.col("post"))["cband"].any()
    np.testing.assert_allclose(post["ci_upper"] - post["att"], res.crit_value * post["se"])
    assert out.filter(~pl.col("post"))["zero_not_in_cband"].is_null().all()
    for kind in ("simple", "dynamic", "group", "calendar"):
        agg = res.aggregate(kind)
        assert np.all(np.abs(agg.se / agg.se_analytic - 1) < 0.15), (kind, agg.se / agg.se_analytic)
    dyn = res.aggregate("dynamic")
    assert 1.96 <= dyn.crit_value <= NormalDist().inv_cdf(1 - 0.05 / (2 * len(dyn.keys)))


def test_bootstrap_seed_and_band_choice(mpdta):
    a = att_gt(mpdta, **KW, bootstrap=200, seed=3)
    b = att_gt(mpdta, **KW, bootstrap=200, seed=3)
    c = att_gt(mpdta, **KW, bootstrap=200, seed=4)
    assert np.array_equal(a.se, b.se) and a.crit_value == b.crit_value
    assert not np.array_equal(a.se, c.se)
    every = att_gt(mpdta, **KW, bootstrap=200, seed=3, cband_cells="all")
    assert every.cband_mask.all() and every.crit_value >= a.crit_value
    pairs = att_gt(mpdta, **KW, bootstrap=200, seed=3, cband_cells=[(2004, 2006), (2006, 2007)])
    assert pairs.cband_mask.sum() == 2 and pairs.crit_value <= a.crit_value
    with pytest.raises(ValueError, match="not cells"):
        att_gt(mpdta, **KW, bootstrap=10, cband_cells=[(2004, 2003)])
    assert a.pretrend_test("sup_t").cells == 5
    with pytest.raises(ValueError, match="needs bootstrap"):
        att_gt(mpdta, **KW, bootstrap=0).pretrend_test("sup_t")


# --- synthetic panels with a known effect ----------------------------------------------------


def test_planted_effect_recovered():
    step = 16  # irregular units: "previous period" is the previous observed time, not t - 1
    data = staggered_panel(
        n_cohorts=5, units_per_cohort=200, n_never=400, n_times=8, step=step, effect=0.5, effect_cohorts=[32]
    )
    res = att_gt(data, **SYN, bootstrap=299, seed=0)
    out = res.to_polars()
    truth = np.where((out["cohort"] == 32) & (out["time"] >= 32), 0.5, 0.0)
    z = (out["att"] - truth) / out["se"]
    assert (z.abs() < 4).all(), out.filter(z.abs() >= 4)
    assert cell(out, 32, 48)["base_time"] == 16 and cell(out, 64, 48)["base_time"] == 32
    hit = out.filter(pl.col("zero_not_in_cband"))
    assert set(hit["cohort"]) == {32} and len(hit) == 6  # every effect cell, nothing else
    dyn = res.aggregate("dynamic").to_polars()
    assert dyn["key"].to_list()[0] == 16 - 80  # event time in time units: first cell time - last cohort
    assert res.pretrend_test().p_value > 0.001


def _uneven_panel() -> pl.DataFrame:
    """Times 0, 10, 20, 25 (the last one off the 10-step spacing); cohorts 10, 20, 25 of 2, 3, 4
    units and 2 never-treated; y = unit effect + time effect + tau(g, t), no noise, so every cell
    is exactly tau(g, t) and the aggregations can be derived by hand."""
    tau = {(10, 10): 1.0, (10, 20): 2.0, (10, 25): 3.0, (20, 20): 4.0, (20, 25): 5.0, (25, 25): 6.0}
    rows, unit = [], 0
    for g, m in ((10, 2), (20, 3), (25, 4), (None, 2)):
        for _ in range(m):
            unit += 1
            for t in (0, 10, 20, 25):
                y = 0.7 * unit + 0.01 * t**2 + tau.get((g, t), 0.0)
                rows.append({"unit": unit, "time": t, "cohort": g, "y": y})
    return pl.DataFrame(rows)


def test_event_time_period_recoding_on_an_uneven_grid():
    """R `did`'s recoding: times (and cohorts) -> period indices 0->1, 10->2, 20->3, 25->4, then
    e = t - g on that scale; cohort shares weight the cells (sizes 2, 3, 4)."""
    res = att_gt(_uneven_panel(), **SYN, bootstrap=0)

    def agg(kind, **kw):
        out = res.aggregate(kind, **kw).to_polars()
        return dict(zip(out["key"].to_list(), out["att"].to_list()))

    period = agg("dynamic", event_time="period")
    # e = 0: (10,10), (20,20), (25,25); e = 1: (10,20), (20,25); e = 2: (10,25);
    # e = -1: placebos (20,10), (25,20); e = -2: (25,10)
    expect = {-2: 0.0, -1: 0.0, 0: (2 * 1 + 3 * 4 + 4 * 6) / 9, 1: (2 * 2 + 3 * 5) / 5, 2: 3.0}
    expect[None] = (expect[0] + expect[1] + expect[2]) / 3  # overall: mean over e >= 0
    assert period.keys() == expect.keys()
    for e, v in expect.items():
        assert period[e] == pytest.approx(v, abs=1e-12), e
    # time units (R 2.5's dynamic keys): the off-grid last step splits e = 1 period into 5 and 15
    timed = agg("dynamic")
    assert sorted(k for k in timed if k is not None and k >= 0) == [0, 5, 10, 15]
    assert (
        timed[5] == pytest.approx(5.0) and timed[10] == pytest.approx(2.0) and timed[15] == pytest.approx(3.0)
    )
    # max_e and balance_e count periods too: R's simple/group windows (t <= g + max_e, recoded)
    simple = agg("simple", event_time="period", max_e=1)[None]
    assert simple == pytest.approx((2 * 1 + 2 * 2 + 3 * 4 + 3 * 5 + 4 * 6) / 14, abs=1e-12)
    group = agg("group", event_time="period", max_e=1)
    assert (
        group[10] == pytest.approx(1.5)
        and group[20] == pytest.approx(4.5)
        and group[25] == pytest.approx(6.0)
    )
    assert agg("group", max_e=1) == {10: 1.0, 20: 4.0, 25: 6.0, None: pytest.approx((2 + 12 + 24) / 9)}
    balanced = agg("dynamic", event_time="period", balance_e=1)  # cohorts seen >= 1 period after g
    assert balanced[1] == pytest.approx(19 / 5) and balanced[0] == pytest.approx((2 + 12) / 5)
    assert set(balanced) == {-1, 0, 1, None}  # e = -2 was only cohort 25, which is not balanced
    # calendar keys stay in time units
    assert set(agg("calendar", event_time="period")) == {10, 20, 25, None}
    with pytest.raises(ValueError, match="event_time"):
        res.aggregate("dynamic", event_time="steps")


def test_event_time_wald_pretest():
    """The event-study pre-test: Wald over the pre-treatment keys of the dynamic aggregation."""
    data = staggered_panel(n_cohorts=6, units_per_cohort=30, n_never=200, n_times=8, step=16, seed=5)
    res = att_gt(data, **SYN, bootstrap=0)
    dyn = res.aggregate("dynamic", event_time="period").to_polars().filter(pl.col("key") < 0)
    one = res.pretrend_test("wald_event", min_e=-1)  # a single key: the squared z of e = -1
    row = dyn.filter(pl.col("key") == -1).row(0, named=True)
    assert one.cells == 1 and one.statistic == pytest.approx((row["att"] / row["se_analytic"]) ** 2)
    full = res.pretrend_test("wald_event")
    assert full.cells == len(dyn) == 5 and "Event-time Wald" in str(full) and full.p_value > 0.05
    # a pre-trend planted in every cohort (the treated drift 0.5 per period before g) is found
    drift = pl.when(pl.col("cohort").is_not_null() & (pl.col("time") < pl.col("cohort")))
    tilted = data.with_columns(y=drift.then(pl.col("y") + 0.5 * pl.col("time") / 16).otherwise(pl.col("y")))
    assert att_gt(tilted, **SYN, bootstrap=0).pretrend_test("wald_event").p_value < 1e-6
    with pytest.raises(ValueError, match="wald_event"):
        res.pretrend_test("chi2")


def test_universal_base_and_not_yet_treated():
    data = staggered_panel(n_cohorts=4, units_per_cohort=40, n_never=80, n_times=7, seed=3)
    varying = att_gt(data, **SYN, bootstrap=0).to_polars()
    universal = att_gt(data, **SYN, base_period="universal", bootstrap=0).to_polars()
    # universal pre-cells are (minus) sums of the varying one-step placebo changes up to g - 1
    for g in (3, 4):
        for t in range(0, g - 1):
            steps = varying.filter((pl.col("cohort") == g) & (pl.col("time") > t) & (pl.col("time") <= g - 1))
            assert cell(universal, g, t)["att"] == pytest.approx(-steps["att"].sum(), abs=1e-12)
        ref = cell(universal, g, g - 1)
        assert ref["att"] == 0 and ref["se"] is None and ref["base_time"] == g - 1
    post = universal.filter("post").join(varying.filter("post"), on=["cohort", "time"])
    np.testing.assert_allclose(post["att"], post["att_right"], atol=1e-12)

    nyt = att_gt(data, **SYN, control_group="not_yet_treated", bootstrap=0).to_polars()
    sizes = {g: 40 for g in (1, 2, 3, 4)}
    for row in nyt.iter_rows(named=True):
        later = sum(
            m for g, m in sizes.items() if g > max(row["time"], row["base_time"]) and g != row["cohort"]
        )
        assert row["n_control"] == 80 + later
    # with no anticipation, cells of the last cohort at t >= 3 only have never-treated controls
    assert cell(nyt, 1, 3)["n_control"] == 120 and cell(nyt, 1, 4)["n_control"] == 80


def test_anticipation_shifts_the_base_period():
    step = 1000
    # effect 1.0 from one checkpoint before g on (anticipation), noise small
    data = staggered_panel(
        n_cohorts=3, units_per_cohort=300, n_never=300, n_times=7, step=step, effect=0.0, seed=4
    )
    early = (pl.col("cohort").is_not_null()) & (pl.col("time") >= pl.col("cohort") - step)
    data = data.with_columns(y=pl.when(early).then(pl.col("y") + 1.0).otherwise(pl.col("y")))
    naive = att_gt(data, **SYN, bootstrap=0).to_polars()
    with pytest.warns(
        UserWarning, match="dropped 300 units with cohort <= first time 0 \\+ anticipation 1000"
    ):
        shifted = att_gt(data, **SYN, anticipation=step, bootstrap=0).to_polars()
    g = 3000
    assert cell(naive, g, g)["base_time"] == 2000 and cell(shifted, g, g)["base_time"] == 1000
    assert abs(cell(naive, g, 4000)["att"]) < 0.3  # base already treated: effect differenced out
    post = shifted.filter("post")
    assert ((post["att"] - 1.0).abs() < 4 * post["se"]).all()
    assert 1000 not in set(shifted["cohort"])  # no period before g - anticipation


def test_first_epoch_restricts_times_and_cohorts():
    data = staggered_panel(n_cohorts=6, units_per_cohort=10, n_never=30, n_times=8, step=1000)
    res = att_gt(data, **SYN, first_epoch=4000, bootstrap=0)
    out = res.to_polars()
    assert out["time"].max() == 4000 and out["cohort"].max() == 4000
    assert res.group_sizes[-1] == 30  # later cohorts are dropped, not turned into controls
    assert any("first_epoch=4000" in note for note in res.notes)


# --- input validation ------------------------------------------------------------------------


def test_unbalanced_and_malformed_panels(mpdta):
    missing_row = mpdta.filter(~((pl.col("countyreal") == 8019) & (pl.col("year") == 2005)))
    with pytest.raises(ValueError, match="unit 8019 has no row at time 2005"):
        att_gt(missing_row, **KW)
    missing_y = mpdta.with_columns(
        lemp=pl.when((pl.col("countyreal") == 8001) & (pl.col("year") == 2007)).then(None).otherwise("lemp")
    )
    with pytest.raises(ValueError, match="unit 8001 has a missing outcome at time 2007"):
        att_gt(missing_y, **KW)
    with pytest.raises(ValueError, match="rows at time"):
        att_gt(pl.concat([mpdta, mpdta.head(1)]), **KW)
    two_cohorts = mpdta.with_columns(
        first_treat=pl.when((pl.col("countyreal") == 8001) & (pl.col("year") == 2003))
        .then(2006)
        .otherwise("first_treat")
    )
    with pytest.raises(ValueError, match="unit 8001 has more than one cohort"):
        att_gt(two_cohorts, **KW)
    with pytest.raises(KeyError, match="outcome column 'nope'"):
        att_gt(mpdta, **{**KW, "outcome": "nope"})
    with pytest.raises(ValueError, match="control_group"):
        att_gt(mpdta, **KW, control_group="notyettreated")
    with pytest.raises(ValueError, match="kind must be"):
        att_gt(mpdta, **KW, bootstrap=0).aggregate("weekly")


def test_off_grid_and_single_unit_cohorts(mpdta):
    off_grid = mpdta.filter(pl.col("year") != 2005).with_columns(
        first_treat=pl.when(pl.col("countyreal") == 8001).then(2005).otherwise("first_treat")
    )
    with pytest.raises(ValueError, match="unit 8001 has cohort 2005, which is not an observed time"):
        att_gt(off_grid, **KW)
    lone = mpdta.with_columns(  # county 8001 alone in a fresh 2005 cohort
        first_treat=pl.when(pl.col("countyreal") == 8001).then(2005).otherwise("first_treat")
    )
    with pytest.warns(UserWarning, match=r"dropped 1 cohorts with a single unit \(5 rows; cohorts 2005\)"):
        res = att_gt(lone, **KW, bootstrap=0)
    assert 2005 not in res.to_polars()["cohort"].to_list()
    assert any("single unit" in note for note in res.notes)


def test_bias_and_uniform_band_coverage_over_repeated_simulations():
    """Unbiased cells, and the sup-t band covers *every* post cell's truth ~95 % of the time."""
    sims, errors, covered, pointwise = 200, [], 0, []
    for seed in range(sims):
        data = staggered_panel(n_cohorts=3, units_per_cohort=40, n_never=80, n_times=6, effect=0.3, seed=seed)
        out = att_gt(data, **SYN, bootstrap=199, seed=seed).to_polars()
        truth = np.where(out["time"] >= out["cohort"], 0.3, 0.0)
        post = out["post"].to_numpy()
        errors.append(out["att"].to_numpy() - truth)
        lo, hi = out["ci_lower"].to_numpy()[post], out["ci_upper"].to_numpy()[post]
        covered += bool(((lo <= truth[post]) & (truth[post] <= hi)).all())
        pointwise.append(np.abs(errors[-1][~post] / out["se"].to_numpy()[~post]) <= 1.96)
    errors = np.array(errors)
    se_of_mean = errors.std(0) / np.sqrt(sims)
    assert (np.abs(errors.mean(0)) < 4 * se_of_mean).all()  # bias ~ 0 in every cell
    assert 0.90 <= covered / sims <= 0.99  # simultaneous coverage of the 95 % band
    assert 0.92 <= np.mean(pointwise) <= 0.98  # pre cells: pointwise 95 % intervals
