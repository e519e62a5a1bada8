"""Memorisation profiles end to end on the tiny suite: `memlake demo` (ingest -> dbt -> DiD ->
figures), the profile marts' contract, the SQL views, and the science checks of issue 5."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from analysis.profiles import SIGN, fit_profiles, grid
from memlake import query
from memlake.paths import Warehouse

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]
KEYS = ["model", "metric", "units", "control_group", "base_period", "first_epoch"]


def memlake(args, wh):
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    return subprocess.run(MEMLAKE + args, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def demo(tiny_demo, tmp_path_factory):
    """A private copy of the session's demo warehouse (these tests add fits to it)."""
    src, log = tiny_demo
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-profiles"))
    shutil.copytree(src.root, wh.root, dirs_exist_ok=True)
    return wh, log


def sql(wh, text):
    return query.read(wh, text)


def test_demo_runs_every_stage_and_draws_the_figures(demo):
    wh, log = demo
    assert "report:" in log and "(cached)" in log and re.search(r"\[\d/\d\] profiles: fitted", log)
    pngs = sorted((wh.figures / "profiles").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(
        f"{n}-sup_seq" for n in ("profile_heatmap", "instantaneous", "persistent", "residual", "correlation")
    )
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5_000 for p in pngs)


def test_profile_marts_contract(demo):
    wh, _ = demo
    cells = sql(wh, "select * from profiles_attgt")
    contract = [
        "cohort",
        "step",
        "base_step",
        "att",
        "se",
        "ci_lower",
        "ci_upper",
        "zero_not_in_cband",
        "memorisation",
    ]
    assert set(KEYS + contract) <= set(cells.columns)
    assert cells.select(KEYS + ["cohort", "step"]).is_duplicated().sum() == 0
    assert set(cells["model"]) == {"suite-xs", "suite-s"} and set(cells["metric"]) == set(SIGN)
    for metric, sign in SIGN.items():
        part = cells.filter(pl.col("metric") == metric)
        assert np.allclose(part["memorisation"], sign * part["att"])
    post = cells.filter(pl.col("post"))
    assert post["zero_not_in_cband"].null_count() == 0  # the band covers every post cell
    assert (post["ci_lower"] <= post["att"]).all() and (post["att"] <= post["ci_upper"]).all()

    aggs = sql(wh, "select * from profiles_aggregates")
    assert {"event", "cohort", "time", "simple"} <= set(aggs["kind"])
    simple = aggs.filter(pl.col("kind") == "simple")
    assert simple["key"].null_count() == len(simple) == 10  # one per model x metric
    assert aggs.filter(pl.col("kind").is_in(["event", "cohort", "time"]))["key"].null_count() == 0
    tests = sql(wh, "select * from profiles_pretrend")
    assert set(tests["method"]) == {"wald", "sup_t"} and tests["p_value"].is_between(0, 1).all()


def test_views_read_the_marts(demo):
    wh, _ = demo
    full = sql(wh, "select * from profiles_full where metric = 'sup_seq'")
    assert (full["step"] >= full["cohort"]).all()
    inst = sql(wh, "select * from profiles_instantaneous")
    assert (inst["step"] == inst["cohort"]).all() and len(inst) > 0
    resid = sql(
        wh, "select model, metric, max(step) = min(step) as one_step from profiles_residual group by all"
    )
    assert resid["one_step"].all()
    pers = sql(wh, "select * from profiles_persistent")
    assert (pers["event_time"] >= 0).all()
    corr = sql(wh, "select * from profiles_correlation where metric = 'sup_seq'")
    same = corr.filter(pl.col("model_a") == pl.col("model_b"))
    assert np.allclose(same["pearson"], 1.0) and len(corr) == 4
    cross = corr.filter(pl.col("model_a") != pl.col("model_b"))
    assert np.ptp(cross["pearson"].to_numpy()) < 1e-12  # symmetric (to the last bits of the sums)
    a, b = (
        full.filter(pl.col("model") == m).sort("cohort", "step")["memorisation"]
        for m in ("suite-s", "suite-xs")
    )
    assert cross["pearson"][0] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)


def test_regression_cross_check_equals_did_on_post_cells(demo):
    wh, _ = demo
    reg = sql(wh, "select * from profiles_regression where metric = 'sup_seq'")
    assert len(reg) > 0 and reg["att_did"].null_count() == 0
    assert np.allclose(reg["att_regression"], reg["att_did"], atol=1e-9)


def test_duplicated_instances_memorised_more_and_placebos_centred(demo):
    wh, _ = demo
    specs = grid(["suite-s"], ["sup_seq"], units=["single", "duplicated"])
    fits = {f.spec.units: f for f in fit_profiles(wh, specs, bootstrap=199, seed=0, regression=False)}

    def instantaneous(fit):
        agg = fit.aggregates.filter((pl.col("kind") == "event") & (pl.col("key") == 0))
        return agg["memorisation"].item()

    assert instantaneous(fits["duplicated"]) > 1.5 * instantaneous(fits["single"]) > 0
    pre = fits["single"].attgt.filter(~pl.col("post"))
    z = (pre["att"] / pre["se"]).to_numpy()
    assert abs(z.mean()) < 3 / np.sqrt(len(z)) + 0.5 and np.median(np.abs(z)) < 1.5
    # the extra fits land beside the demo's, one file each; re-running replaces, never appends
    count = (
        "select units, count(*) as n from profiles_attgt "
        "where model = 'suite-s' and metric = 'sup_seq' group by all"
    )
    before = sql(wh, count).sort("units")
    fit_profiles(wh, specs[:1], bootstrap=0, regression=False)
    assert before["units"].to_list() == ["all", "duplicated", "single"]
    assert sql(wh, count).sort("units").equals(before)


def test_profiles_cli_errors(demo):
    wh, _ = demo
    out = memlake(["profiles", "fit", "--config", "tiny", "--metrics", "nope"], wh)
    assert out.returncode == 2 and "unknown metric 'nope'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = memlake(["profiles", "fit", "--config", "tiny", "--model", "nobody"], wh)
    assert out.returncode == 2 and "no rows for model 'nobody'" in out.stderr
    empty = Warehouse.at(wh.root.parent / "empty-wh")
    out = memlake(["profiles", "figures"], empty)
    assert out.returncode == 2 and "error" in out.stderr
