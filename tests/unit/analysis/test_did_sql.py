"""ATT(g, t) from sufficient statistics computed in SQL (analysis.did.sql) equals the in-memory
estimator, cell by cell and aggregation by aggregation, with every sample rule at work."""

from __future__ import annotations

import warnings
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from analysis.did import att_gt
from analysis.did.sql import att_gt_sql, moments_sql
from analysis.did.synthetic import staggered_panel

MPDTA = Path(__file__).resolve().parents[2] / "data" / "mpdta.csv"
KW = dict(unit="countyreal", time="year", cohort="first_treat", outcome="lemp")
SYN = dict(unit="unit", time="time", cohort="cohort", outcome="y")
AGGS = ("simple", "dynamic", "group", "calendar")


def assert_same(a, b, tol: float = 1e-12) -> None:
    np.testing.assert_array_equal(a.cohort, b.cohort)
    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_allclose(a.att, b.att, rtol=0, atol=tol)
    np.testing.assert_allclose(a.cells.se, b.cells.se, rtol=0, atol=tol)
    np.testing.assert_array_equal(a.cells.n_control, b.cells.n_control)
    for kind in AGGS:
        x, y = a.aggregate(kind, event_time="period"), b.aggregate(kind, event_time="period")
        np.testing.assert_allclose(x.att, y.att, rtol=0, atol=tol)
        np.testing.assert_allclose(x.se, y.se, rtol=0, atol=tol)
    assert a.pretrend_test().statistic == pytest.approx(b.pretrend_test().statistic, rel=1e-9)
    assert a.notes == b.notes


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    yield c
    c.close()


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
@pytest.mark.parametrize("base_period", ["varying", "universal"])
def test_mpdta_equals_in_memory(con, control_group, base_period):
    df = pl.read_csv(MPDTA).with_columns(pl.col("first_treat").replace(0, None))
    con.register("mpdta", df.to_arrow())
    opts = dict(control_group=control_group, base_period=base_period)
    assert_same(att_gt(df, **KW, bootstrap=0, **opts), att_gt_sql(con, "mpdta", **KW, **opts))


def test_sample_rules_and_chunks_equal_in_memory(con):
    """Late cohorts, a cohort before the first time, a single-unit cohort, first_epoch and an
    anticipation shift: the SQL path applies the same rules and notes the same changes."""
    panel = staggered_panel(n_cohorts=6, units_per_cohort=25, n_never=150, n_times=9, step=1000, seed=2)
    panel = panel.with_columns(
        y=pl.col("y") * 40 + 300,  # large levels: the centring keeps the sums of products exact
        cohort=pl.when(pl.col("unit") < 5)
        .then(0)  # treated before the first time: dropped
        .when(pl.col("unit") == 60)
        .then(7000)  # a lone cohort: dropped
        .when(pl.col("unit").is_between(70, 80))
        .then(99000)  # after the last time: never-treated
        .otherwise(pl.col("cohort")),
    )
    con.register("syn", panel.to_arrow())
    for opts in (dict(), dict(first_epoch=6000), dict(anticipation=1000, control_group="not_yet_treated")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = att_gt(panel, **SYN, bootstrap=0, **opts)
            for chunks in (1, 4):
                assert_same(ref, att_gt_sql(con, "syn", **SYN, chunks=chunks, **opts))
    # a query works as the source too
    query = "select unit, time, cohort, y from syn where unit >= 5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(
            att_gt(panel.filter(pl.col("unit") >= 5), **SYN, bootstrap=0), att_gt_sql(con, query, **SYN)
        )


def test_moments_sql_is_plain_sql():
    sql = moments_sql("panel", unit="u", time="t", outcome="y", times=[0, 1, 2], groups="g")
    assert "sum(y0 * y2) as p0_2" in sql and "hash(" not in sql
    assert sql.count("sum(case when") == 3


def test_bad_panels_name_the_unit(con):
    df = pl.read_csv(MPDTA).with_columns(pl.col("first_treat").replace(0, None))
    con.register("holes", df.filter(~((pl.col("countyreal") == 8019) & (pl.col("year") == 2005))).to_arrow())
    with pytest.raises(ValueError, match=r"unbalanced panel: unit 8019 has 4 rows for 5 times"):
        att_gt_sql(con, "holes", **KW)
    mixed = df.with_columns(
        first_treat=pl.when((pl.col("countyreal") == 8001) & (pl.col("year") == 2004)).then(2006)
        .otherwise(pl.col("first_treat"))
    )  # fmt: skip
    con.register("mixed", mixed.to_arrow())
    with pytest.raises(ValueError, match=r"unit 8001 has more than one cohort value"):
        att_gt_sql(con, "mixed", **KW)
    with pytest.raises(ValueError, match=r"control_group must be one of"):
        att_gt_sql(con, "mixed", **KW, control_group="nevertreated")
