"""Memorisation profiles end to end on the tiny suite: `memlake demo` (ingest -> dbt -> DiD ->
figures), the profile marts' contract, the SQL views, and the science checks of the profiles paper."""

import os
import re
import shutil

import numpy as np
import polars as pl
import pytest

from analysis.profiles import SIGN, fit_profiles, grid
from analysis.views import SQL_VIEWS
from memlake.core import query
from memlake.core.paths import Warehouse
from tests.helpers import memlake as run_cli

KEYS = ["model", "metric", "units", "control_group", "base_period", "first_epoch"]


def memlake(args, wh):
    return run_cli(args, env={**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)})


@pytest.fixture(scope="module")
def demo(tiny_demo, tmp_path_factory):
    """A private copy of the session's demo warehouse (these tests add fits to it)."""
    src, log = tiny_demo
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-profiles"))
    shutil.copytree(src.root, wh.root, dirs_exist_ok=True)
    return wh, log


def sql(wh, text):
    return query.read(wh, text, views=SQL_VIEWS)


def test_demo_runs_every_stage_and_draws_the_figures(demo):
    wh, log = demo
    assert "report:" in log and "(cached)" in log and re.search(r"\[\d+/\d+\] profiles: fitted", log)
    pngs = sorted((wh.figures / "profiles").glob("*.png"))
    names = ("instantaneous", "persistent", "residual", "correlation", "units")
    assert [p.stem for p in pngs] == sorted(f"{n}-sup_seq" for n in names)
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
    assert simple["key"].null_count() == len(simple) == 20  # one per model x metric x unit set
    assert set(aggs["units"]) == {"single", "duplicated"}  # the tiny config's sets, natural first
    assert aggs.filter(pl.col("kind").is_in(["event", "cohort", "time"]))["key"].null_count() == 0
    tests = sql(wh, "select * from profiles_pretrend")
    assert set(tests["method"]) == {"wald", "wald_event", "sup_t"} and tests["p_value"].is_between(0, 1).all()


def test_views_read_the_marts(demo):
    wh, _ = demo
    full = sql(wh, "select * from profiles_full where metric = 'sup_seq' and units = 'single'")
    assert (full["step"] >= full["cohort"]).all()
    inst = sql(wh, "select * from profiles_instantaneous")
    assert (inst["step"] == inst["cohort"]).all() and len(inst) > 0
    resid = sql(
        wh, "select model, metric, max(step) = min(step) as one_step from profiles_residual group by all"
    )
    assert resid["one_step"].all()
    pers = sql(wh, "select * from profiles_persistent")
    assert (pers["event_time"] >= 0).all()
    corr = sql(wh, "select * from profiles_correlation where metric = 'sup_seq' and units = 'single'")
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


def test_units_default_to_natural_single_exposure_rows(tiny_cfg):
    from analysis.profiles import DEFAULT_UNITS, UNIT_SETS, ProfileSpec
    from analysis.profiles.figures import DEFAULT
    from memlake.core import config

    assert DEFAULT_UNITS == "single" == ProfileSpec("m").units == grid(["m"])[0].units == DEFAULT["units"]
    assert "copies" in UNIT_SETS["single"] and "'none'" in UNIT_SETS["single"]
    for preset in ("tiny", "small", "medium"):
        assert config.load(preset)["profiles"]["units"][0] == "single", preset


def test_natural_rows_pass_the_placebo_test_and_the_grid_is_even(demo, tiny_cfg):
    """The demo's own outputs: natural rows show no pre-trend (the event-study Wald pre-test at 5 %),
    and the checkpoint grid (every fit's steps) is evenly spaced and ends on the final step."""
    wh, _ = demo
    p = sql(
        wh,
        "select model, p_value from profiles_pretrend where units = 'single' and metric = 'sup_seq' "
        "and method = 'wald_event' and control_group = 'never_treated'",
    )
    assert len(p) == 2 and (p["p_value"] >= 0.05).all(), p
    every = tiny_cfg["order"]["checkpoint_every"]
    for model in ("suite-xs", "suite-s"):
        steps = sql(wh, f"select step from checkpoints where model = '{model}' order by step")["step"]
        assert (np.diff(steps.to_numpy()) == every).all() and steps[0] == 0
        fitted = sql(wh, f"select distinct step from profiles_full where model = '{model}' order by step")
        assert (np.diff(fitted["step"].to_numpy()) == every).all()


def test_duplicated_instances_memorised_more_and_placebos_centred(demo):
    wh, _ = demo
    event0 = sql(
        wh,
        "select units, memorisation from profiles_aggregates where model = 'suite-s' and metric = 'sup_seq' "
        "and kind = 'event' and key = 0",
    )
    inst = dict(zip(event0["units"], event0["memorisation"]))
    assert inst["duplicated"] > 1.5 * inst["single"] > 0
    pre = sql(
        wh,
        "select att, se from profiles_attgt where model = 'suite-s' and metric = 'sup_seq' "
        "and units = 'single' and not post",
    )
    z = (pre["att"] / pre["se"]).to_numpy()
    assert abs(z.mean()) < 3 / np.sqrt(len(z)) + 0.5 and np.median(np.abs(z)) < 1.5
    # an extra fit lands beside the demo's, one file each; re-running replaces, never appends
    count = (
        "select units, count(*) as n from profiles_attgt "
        "where model = 'suite-s' and metric = 'sup_seq' group by all"
    )
    specs = grid(["suite-s"], ["sup_seq"], units=["all"])
    fit_profiles(wh, specs, bootstrap=0, regression=False)
    before = sql(wh, count).sort("units")
    assert before["units"].to_list() == ["all", "duplicated", "single"]
    fit_profiles(wh, specs, bootstrap=0, regression=False)
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


def test_fit_with_covariates_clusters_and_honest_did(demo):
    """`memlake profiles fit --covariates ... --cluster ... --honest`: a second design beside the
    paper's plain fit (its own rows, keyed by `design`), equal to analysis.did on the same panel,
    HonestDiD rows with a breakdown value, and the report's sensitivity section."""
    wh, _ = demo
    args = ["profiles", "fit", "--config", "tiny", "-m", "suite-s", "--metrics", "sup_seq", "--units",
            "single", "--covariates", "source,avg_frequency", "--cluster", "document", "--honest",
            "--bootstrap", "99"]  # fmt: skip
    out = memlake(args, wh)
    assert out.returncode == 0, out.stderr[-2000:]
    design = "dr(source+avg_frequency);cluster=document"
    assert f"suite-s/sup_seq/single ({design})" in out.stderr
    cells = sql(wh, "select * from profiles_attgt where model = 'suite-s' and metric = 'sup_seq' "
                    "and units = 'single' order by design, cohort, step")  # fmt: skip
    plain, adjusted = (cells.filter(pl.col("design") == d) for d in ("none", design))
    assert len(plain) == len(adjusted) > 0
    assert not np.allclose(plain["att"], adjusted["att"])  # the covariates change the estimate
    # the mart holds what analysis.did gives on the same panel and design
    from analysis.did import att_gt
    from analysis.profiles.fitting import ProfileSpec, design_frame, first_epoch_end, panel_frame

    con = query.connect(wh, views=SQL_VIEWS)
    try:
        spec = ProfileSpec("suite-s", covariates=("source", "avg_frequency"), cluster="document")
        panel, names = design_frame(
            panel_frame(con, "suite-s", "single", ("source", "avg_frequency", "document")), spec
        )
        end = first_epoch_end(con, "suite-s")
        res = att_gt(panel, unit="instance_id", time="step", cohort="cohort", outcome="sup_seq",
                     covariates=names, cluster="document", bootstrap=0, first_epoch=end)  # fmt: skip
    finally:
        con.close()
    assert names[-1] == "avg_frequency" and all(n.startswith("source=") for n in names[:-1])
    np.testing.assert_allclose(adjusted["att"], res.att, rtol=0, atol=1e-12)
    np.testing.assert_allclose(adjusted["se_analytic"], res.cells.se, rtol=1e-10)

    honest = sql(wh, f"select * from profiles_honest where design = '{design}'")
    assert set(honest["target"]) == {"average", "0"} and (honest["method"] == "relative_magnitude").all()
    assert (honest["test"] == "C-LF").all()  # the config's default, R's
    average = honest.filter(pl.col("target") == "average").sort("bound")
    assert (average["ci_lower"].diff().drop_nulls() <= 1e-12).all()  # the sets grow with Mbar
    assert (average["ci_upper"].diff().drop_nulls() >= -1e-12).all()
    for row in honest.iter_rows(named=True):  # a breakdown value exactly where PT finds an effect
        significant = row["original_lower"] > 0 or row["original_upper"] < 0
        assert (row["breakdown"] is not None and row["breakdown"] > 0) == significant, row

    assert memlake(["report"], wh).returncode == 0
    page = (wh.root / "report" / "index.html").read_text()
    assert "Sensitivity to parallel trends (HonestDiD)" in page and "&lt;span" not in page

    bad = memlake(["profiles", "fit", "--config", "tiny", "-m", "suite-s", "--metrics", "sup_seq",
                   "--units", "single", "--covariates", "nope"], wh)  # fmt: skip
    assert bad.returncode == 2 and "no per-instance column 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_sql_fit_equals_the_in_memory_fit(demo):
    """`memlake profiles fit --sql`: DuckDB computes the sufficient statistics over sequence_panel
    and the cells equal the in-memory analytic fit's (runs last: it replaces the plain fit's rows)."""
    wh, _ = demo
    out = memlake(["profiles", "fit", "--config", "tiny", "-m", "suite-s", "--metrics", "sup_seq", "--units",
                   "single", "--sql"], wh)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    from analysis.profiles.fitting import ProfileSpec, first_epoch_end, fit, panel_frame

    con = query.connect(wh, views=SQL_VIEWS)
    try:
        end = first_epoch_end(con, "suite-s")
        mem = fit(
            ProfileSpec("suite-s"), panel_frame(con, "suite-s"), epoch_end=end, bootstrap=0, regression=False
        )
    finally:
        con.close()
    cells = sql(wh, "select * from profiles_attgt where model = 'suite-s' and metric = 'sup_seq' "
                    "and units = 'single' and design = 'none' order by cohort, step")  # fmt: skip
    ref = mem.attgt.sort("cohort", "step")
    np.testing.assert_allclose(cells["att"], ref["att"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cells["se_analytic"], ref["se_analytic"], rtol=0, atol=1e-12)
    aggs = sql(wh, "select * from profiles_aggregates where model = 'suite-s' and metric = 'sup_seq' "
                   "and units = 'single' and design = 'none' order by kind, key")  # fmt: skip
    np.testing.assert_allclose(aggs["att"], mem.aggregates.sort("kind", "key")["att"], rtol=0, atol=1e-12)
    bad = memlake(["profiles", "fit", "--config", "tiny", "-m", "suite-s", "--metrics", "sup_seq", "--units",
                   "single", "--sql", "--covariates", "avg_frequency"], wh)  # fmt: skip
    assert bad.returncode == 2 and "--sql fits the plain DiD" in bad.stderr
