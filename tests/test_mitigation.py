"""Mitigation sweeps end to end: a TinyMem study and a suite study, rows in the lake, resumable
and shardable, the SQL views (selection scores, best runs, Pareto front) and the figures."""

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from ingest.mitigation.methods import REGISTRY
from ingest.mitigation.studies import tinymem_study
from ingest.mitigation.sweep import Run, plan, sweep
from memlake import config, lake, query
from memlake.paths import Warehouse

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]
CONTRACT = ["run_id", "method", "hparams", "seed", "model", "step", "mem_before", "mem_after", "acc_before",
            "acc_after", "ppl_before", "ppl_after", "seconds", "mem_before_dup0"]  # fmt: skip
ISSUE_NAMES = {
    "loss_truncation", "spectral_norm", "example_tied_dropout", "ft_clean", "ft_extra", "ft_both", "zero_out",
    "activations", "slimming", "hard_concrete", "integrated_gradients", "greedy", "durable",
    "durable_aggregate", "second_order", "subnet", "balanced_subnet", "gradient_ascent", "gradient_ascent_kl",
}  # fmt: skip


def sql(wh, text):
    return query.read(wh, text)


def test_every_method_of_the_issue_is_registered():
    assert set(REGISTRY) >= ISSUE_NAMES
    kinds = {REGISTRY[n].kind for n in ISSUE_NAMES}
    assert kinds == {"regulariser", "fine_tuning", "neuron", "weight", "baseline"}
    assert all(REGISTRY[n].grid for n in ISSUE_NAMES)


def test_plan_spreads_grid_points_and_ids_are_stable():
    runs = plan("s", ["balanced_subnet"], seeds=[0, 1], max_per_method=2)
    grid = REGISTRY["balanced_subnet"].grid
    assert [dict(r.hparams) for r in runs[::2]] == [grid[-1], grid[0]] and len(runs) == 4
    assert (
        Run("s", "durable", (("ratio", 0.01),), 0).run_id == Run("s", "durable", (("ratio", 0.01),), 0).run_id
    )
    assert len({r.run_id for r in runs}) == 4


@pytest.fixture(scope="module")
def tinymem(tmp_path_factory):
    cfg = config.load("tiny")
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-mitigation"))
    study = tinymem_study(wh, cfg["mitigation"]["tinymem"])
    return cfg, wh, study


def test_tinymem_sweep_rows_resume_and_shard(tinymem):
    cfg, wh, study = tinymem
    assert study.baseline()["mem"] > 0 and len(study.forget) > 0  # planted noise is memorised
    runs = plan(study.name, ["balanced_subnet", "durable", "ft_extra"], [0], 1)
    first = sweep(wh, study, runs, rank=0, world_size=2, config=cfg)
    assert [r["run_id"] for r in first] == [r.run_id for r in runs[0::2]]
    rest = sweep(wh, study, runs, config=cfg)  # skips rank 0's finished runs
    assert [r["run_id"] for r in rest] == [r.run_id for r in runs[1::2]]
    assert sweep(wh, study, runs, config=cfg) == []  # idempotent
    rows = pl.from_arrow(lake.read_table(wh, "mitigation_runs"))
    assert set(CONTRACT) <= set(rows.columns) and rows["run_id"].n_unique() == 3
    by = {r["method"]: r for r in rows.iter_rows(named=True)}
    assert by["balanced_subnet"]["mem_after"] < by["balanced_subnet"]["mem_before"]
    assert by["ft_extra"]["acc_after"] > 50 and json.loads(by["durable"]["hparams"])["ratio"] > 0
    assert (rows["mem_before"] == study.baseline()["mem"]).all()


def test_views_and_figures(tinymem):
    from analysis.mitigation import draw

    cfg, wh, study = tinymem
    sweep(wh, study, plan(study.name, ["gradient_ascent"], [0], 1), config=cfg)
    scored = sql(wh, "select * from mitigation_scored")
    r = scored.row(0, named=True)
    want = (r["mem_after"] - r["mem_before"]) / r["mem_before"] - (r["acc_after"] - r["acc_before"]) / r[
        "acc_before"
    ]
    assert r["score"] == pytest.approx(want)
    best = sql(wh, "select * from mitigation_best_runs")
    assert best.select("study", "method").is_duplicated().sum() == 0
    front = sql(wh, "select * from mitigation_pareto where on_front")
    assert len(front) >= 1
    others = sql(wh, "select * from mitigation_pareto where not on_front")
    for o in others.iter_rows(named=True):  # every run off the front is dominated by a run on it
        assert any(f["mem_removed"] >= o["mem_removed"] and f["acc_kept"] >= o["acc_kept"]
                   for f in front.iter_rows(named=True))  # fmt: skip
    paths = draw(wh)
    assert {p.stem for p in paths} >= {f"pareto-{study.name}", "time_cost", "dup_classes"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_suite_study_in_the_demo(tiny_demo):
    wh, log = tiny_demo
    assert "[9/9] mitigation" in log
    rows = sql(wh, "select * from mitigation_runs where study = 'suite-s'")
    assert len(rows) > 0 and set(rows["method"]) <= set(REGISTRY)
    ppl = rows.select(pl.col("ppl_before", "ppl_after").cast(pl.Float64))
    assert ppl.null_count().row(0) == (0, 0) and ppl.select(pl.all().is_finite().all()).row(0) == (True, True)
    assert rows.filter(pl.col("method") == "ft_extra")["kind"].to_list() == ["fine_tuning"]
    if rows["n_forget"][0] == 0:  # the tiny suite may memorise nothing: unlearning runs say so
        edits = rows.filter(pl.col("kind") != "fine_tuning")
        assert all("nothing memorised" in s for s in edits["stats"])
        # NaN without extraction-memorised rows, 0 when none of them reproduces the test window
        assert (edits["mem_before"].is_nan() | (edits["mem_before"] == 0)).all()
    else:
        assert (rows["mem_after"] <= 100).all()


def test_cli_errors(tmp_path):
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(tmp_path)}
    out = subprocess.run(MEMLAKE + ["mitigate", "sweep", "--config", "tiny", "--methods", "nope"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 2 and "unknown mitigation method 'nope'" in out.stderr
    out = subprocess.run(MEMLAKE + ["mitigate", "sweep", "suite", "--config", "tiny"], capture_output=True,
                         text=True, env=env)  # fmt: skip
    assert out.returncode == 2 and "extraction" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_study_command_sweeps_a_named_study_and_prints_the_comparison(tmp_path):
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(tmp_path)}
    cmd = MEMLAKE + ["mitigate", "study", "--config", "tiny"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    table = [line for line in out.stderr.splitlines() if line.startswith("| ")]  # the console is stderr
    assert table[0].startswith("| method |") and {r.split(" | ")[0][2:] for r in table[1:]} == {
        "balanced_subnet",
        "subnet",
    }
    runs = lake.read_table(Warehouse.at(tmp_path), "mitigation_runs").to_pylist()
    assert {r["study"] for r in runs} == {"tinymem-study"} and len(runs) == 2
    assert all(r["mem_before"] > 0 for r in runs)
    # its own base model, beside (not instead of) the default TinyMem study's
    assert (tmp_path / "mitigation" / "tinymem-study" / "base").is_dir()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "0 runs written, 2 already done" in again.stderr
