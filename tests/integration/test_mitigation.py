"""Mitigation sweeps end to end: a TinyMem study and a suite study, rows in the lake, resumable
and shardable, the SQL views (selection scores, best runs, Pareto front) and the figures."""

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, replace

import polars as pl
import pytest
import torch

from analysis.views import SQL_VIEWS
from ingest.mitigation.methods import REGISTRY
from ingest.mitigation.studies import StudySpec, tinymem_study
from ingest.mitigation.sweep import Run, plan_runs, run_sweep
from memlake.core import config, lake, query
from memlake.core.paths import Warehouse
from tests.helpers import memlake

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]
CONTRACT = ["run_id", "method", "hparams", "seed", "model", "step", "mem_before", "mem_after", "acc_before",
            "acc_after", "ppl_before", "ppl_after", "seconds", "mem_before_dup0"]  # fmt: skip
ISSUE_NAMES = {
    "loss_truncation", "spectral_norm", "example_tied_dropout", "ft_clean", "ft_extra", "ft_both", "zero_out",
    "activations", "slimming", "hard_concrete", "integrated_gradients", "greedy", "durable",
    "durable_aggregate", "second_order", "subnet", "balanced_subnet", "gradient_ascent", "gradient_ascent_kl",
}  # fmt: skip


def sql(wh, text):
    return query.read(wh, text, views=SQL_VIEWS)


def test_every_method_of_the_issue_is_registered():
    assert set(REGISTRY) >= ISSUE_NAMES
    kinds = {REGISTRY[n].kind for n in ISSUE_NAMES}
    assert kinds == {"regulariser", "fine_tuning", "neuron", "weight", "baseline"}
    assert all(REGISTRY[n].grid for n in ISSUE_NAMES)


def test_the_demo_runs_every_method_at_three_grid_points():
    """The demo's TinyMem study (small config) runs all 19 methods: the digest's 17 (3
    regularisers, 3 fine-tunings, 11 unlearning methods) and the reviewers' two gradient-ascent
    baselines, each at >= 3 distinct grid points."""
    m = config.load("small")["mitigation"]
    assert sorted(m["methods"]) == sorted(REGISTRY) == sorted(ISSUE_NAMES) and len(m["methods"]) == 19
    kinds = [REGISTRY[n].kind for n in m["methods"]]
    counts = [kinds.count(k) for k in ("regulariser", "fine_tuning", "neuron", "weight", "baseline")]
    assert counts == [3, 3, 5, 6, 2]
    runs = plan_runs("s", m["methods"], m["seeds"], m["max_per_method"])
    for name in m["methods"]:
        assert len({r.hparams for r in runs if r.method == name}) >= 3, name
    # the centre of BalancedSubnet's demo points is the paper's alpha 0.7 at a Pythia-like ratio
    bs = [dict(r.hparams) for r in runs if r.method == "balanced_subnet"]
    assert bs[1] == {"alpha": 0.7, "ratio": 0.05, "epochs": 5}
    suite = m["suite"]["methods"]  # a model study: no training set, so no regulariser
    assert set(suite) <= set(REGISTRY) and not {REGISTRY[n].kind for n in suite} & {"regulariser"}


def test_plan_spreads_grid_points_and_ids_are_stable():
    runs = plan_runs("s", ["balanced_subnet"], seeds=[0, 1], max_per_method=2)
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
    runs = plan_runs(study.name, ["balanced_subnet", "durable", "ft_extra"], [0], 1)
    first = run_sweep(wh, study, runs, rank=0, world_size=2, config=cfg)
    assert [r["run_id"] for r in first] == [r.run_id for r in runs[0::2]]
    rest = run_sweep(wh, study, runs, config=cfg)  # skips rank 0's finished runs
    assert [r["run_id"] for r in rest] == [r.run_id for r in runs[1::2]]
    assert run_sweep(wh, study, runs, config=cfg) == []  # idempotent
    rows = pl.from_arrow(lake.read_table(wh, "mitigation_runs"))
    assert set(CONTRACT) <= set(rows.columns) and rows["run_id"].n_unique() == 3
    by = {r["method"]: r for r in rows.iter_rows(named=True)}
    assert by["balanced_subnet"]["mem_after"] < by["balanced_subnet"]["mem_before"]
    assert by["ft_extra"]["acc_after"] > 50 and json.loads(by["durable"]["hparams"])["ratio"] > 0
    assert (rows["mem_before"] == study.baseline()["mem"]).all()


def test_runs_are_measured_against_the_retrain_oracle(tinymem):
    """The sweep trains the oracle first (the base recipe without the forget set) and every run
    gains the forget measures; the base model's distance to the oracle is recomputed here."""
    from ingest.mitigation.oracle import forget_quality, mia_auc, privleak, window_scores
    from ingest.mitigation.sweep import train_oracle

    cfg, wh, study = tinymem
    run_sweep(wh, study, plan_runs(study.name, ["durable", "ft_extra"], [0], 1), config=cfg)
    (o,) = sql(wh, "select * from mitigation_oracles").iter_rows(named=True)
    assert train_oracle(wh, study) is None  # written once
    oracle = study.oracle()
    assert not all(
        torch.equal(a, b) for a, b in zip(oracle.parameters(), study.base.parameters(), strict=True)
    )
    probe = study.probe
    base, ref = (window_scores(m, probe.forget) for m in (study.base, oracle))
    base_non, ref_non = (window_scores(m, probe.nonmembers) for m in (study.base, oracle))
    # the forget rows are what the base model reproduces, and the oracle never trained on them
    assert o["base_exact_memorization"] == o["base_extraction_strength"] == 1.0
    assert o["n_forget"] == len(study.forget) > 0 and o["n_nonmembers"] == len(probe.nonmembers) > 0
    assert o["mem"] < study.baseline()["mem"] and o["extraction_strength"] < 0.5
    assert o["mia_auc"] == pytest.approx(mia_auc(ref.min_k, ref_non.min_k))
    assert o["base_mia_auc"] == pytest.approx(mia_auc(base.min_k, base_non.min_k))
    assert (
        o["base_privleak"] == pytest.approx(privleak(o["base_mia_auc"], o["mia_auc"]))
        and o["base_privleak"] < -50
    )
    assert (
        o["base_ks_distance"] == pytest.approx(forget_quality(base.nll, ref.nll)[0])
        and o["base_ks_distance"] > 0.5
    )
    runs = sql(wh, "select * from mitigation_runs")
    measured = runs.select(
        "exact_memorization", "extraction_strength", "mia_auc", "privleak", "forget_quality"
    )
    assert measured.null_count().sum_horizontal()[0] == 0
    assert ((runs["forget_quality"] >= 0) & (runs["forget_quality"] <= 1)).all()
    assert runs["forget_ids"].is_null().all() and o["forget_ids"] is None  # TinyMem rows are no lake rows
    vs = sql(wh, "select * from mitigation_vs_oracle order by oracle_rank").filter(~pl.col("destroyed"))
    assert len(vs) >= 2 and vs["ks_distance"].is_sorted() and (vs["oracle_mem"] == o["mem"]).all()
    front = vs.filter(pl.col("on_oracle_front"))
    assert len(front) >= 1 and vs.row(0, named=True)["on_oracle_front"]  # the closest run is on it
    for r in vs.filter(~pl.col("on_oracle_front")).iter_rows(named=True):  # the rest are dominated
        assert any(f["ks_distance"] <= r["ks_distance"] and f["acc_kept"] >= r["acc_kept"]
                   for f in front.iter_rows(named=True))  # fmt: skip
    from analysis.mitigation.summary import mitigation_html

    views = ("mitigation_scored", "mitigation_best_runs", "mitigation_vs_oracle")
    text = mitigation_html(*(sql(wh, f"select * from {v}") for v in views))
    closest = vs.row(0, named=True)
    assert f"Closest to the oracle: <b>{closest['method']}</b>" in text
    assert f'data-value="{o["base_ks_distance"]!r}"' in text


def test_an_oracle_needs_forget_artifacts(tinymem, tmp_path):
    from ingest.mitigation.methods import SequenceSet
    from ingest.mitigation.sweep import train_oracle
    from memlake.core.errors import MemlakeError

    _, _, study = tinymem
    f = study.forget
    empty = replace(study, task=replace(study.task, forget=SequenceSet(f.tokens[:0], f.prompt_len, f.pad_id)))
    wh = Warehouse.at(tmp_path)
    with pytest.raises(MemlakeError, match="has no forget artifacts"):
        train_oracle(wh, empty)
    assert not (tmp_path / "lake" / "mitigation_oracles").exists()


def test_only_rank_0_trains_the_oracle(tinymem, tmp_path):
    from memlake.core.errors import MemlakeError

    cfg, _, study = tinymem
    runs = plan_runs(study.name, ["durable", "ft_extra"], [0], 1)
    with pytest.raises(MemlakeError, match="oracle of .* is not trained yet"):
        run_sweep(Warehouse.at(tmp_path), study, runs, rank=1, world_size=2, config=cfg)
    assert not (tmp_path / "lake").exists()


def test_views_and_figures(tinymem):
    from analysis.mitigation import draw_mitigation

    cfg, wh, study = tinymem
    run_sweep(wh, study, plan_runs(study.name, ["gradient_ascent"], [0], 1), config=cfg)
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
    paths = draw_mitigation(wh)
    assert {p.stem for p in paths} >= {"time_cost", "dup_classes"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_suite_study_in_the_demo(tiny_demo):
    wh, log = tiny_demo
    assert re.search(r"\[\d+/\d+\] mitigation: ", log)
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


def test_sweep_refuses_an_unknown_executor_option_before_building_the_study(tmp_path):
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(tmp_path)}
    out = memlake(["mitigate", "sweep", "-c", "tiny", "--executor", "local", "--exec-opt", "bogus=1"], env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "executor 'local' takes no option 'bogus' (its options: workers)" in out.stderr
    assert not (tmp_path / "mitigation").exists()  # refused before TinyMem was trained


@pytest.mark.slow  # the same study runs in the tiny demo (test_suite_study_in_the_demo)
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


def _timeless(wh: Warehouse) -> pl.DataFrame:
    """The lake's runs without what timing or attribution reuse changes (seconds, cache hits)."""
    rows = pl.from_arrow(lake.read_table(wh, "mitigation_runs")).sort("run_id")
    stats = [
        json.dumps({k: v for k, v in json.loads(s).items() if "seconds" not in k and "reused" not in k})
        for s in rows["stats"]
    ]
    return rows.drop("seconds").with_columns(pl.Series("stats", stats))


@pytest.mark.slow  # worker processes also run in test_a_failing_worker_fails_the_sweep and the demo
def test_worker_processes_write_the_same_rows(tinymem, tmp_path):
    """Two spawned workers, each building the study from its spec, write exactly the rows of the
    in-process sweep; a re-run skips every finished run and rewrites nothing."""
    cfg, _, study = tinymem
    runs = plan_runs(study.name, ["durable", "activations"], [0], 2)
    serial = run_sweep(Warehouse.at(tmp_path / "a"), study, runs, config=cfg, workers=1)
    seen = []
    forked = run_sweep(Warehouse.at(tmp_path / "b"), study, runs, config=cfg, workers=2, on_run=seen.append)
    key = lambda r: r["run_id"]  # noqa: E731
    assert len(forked) == len(seen) == len(runs)
    for a, b in zip(sorted(serial, key=key), sorted(forked, key=key)):
        assert (a["run_id"], a["mem_after"], a["acc_after"]) == (b["run_id"], b["mem_after"], b["acc_after"])
    rows = lake.read_table(Warehouse.at(tmp_path / "b"), "mitigation_runs").to_pylist()
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in runs)
    assert _timeless(Warehouse.at(tmp_path / "a")).equals(_timeless(Warehouse.at(tmp_path / "b")))
    manifests = sorted((tmp_path / "b" / "lake" / "mitigation_runs").rglob("_manifest.json"))
    written = [m.read_text() for m in manifests]
    assert len(manifests) == len(runs)
    assert run_sweep(Warehouse.at(tmp_path / "b"), study, runs, config=cfg, workers=2) == []
    assert [m.read_text() for m in manifests] == written


def test_local_workers_default_to_the_config_for_a_small_model_on_the_cpu(tinymem, tmp_path):
    from ingest.mitigation.sweep import MitigationRun, _default_workers, holding

    cfg, _, study = tinymem
    runs = plan_runs(study.name, ["durable", "activations"], [0], 1)
    units = [MitigationRun(r, str(tmp_path), study.spec) for r in runs]
    two = {"mitigation": {"workers": 2}}
    assert _default_workers(study, units, two) == min(2, os.cpu_count())
    assert _default_workers(study, units, cfg) == 1  # the tiny config names no workers
    with holding(study):
        units[0].run()
    assert _default_workers(study, units, two) == 1  # one method left to run: one process


def _row(study: str, method: str, hp: dict, mem: tuple, acc: tuple, kind: str = "weight") -> dict:
    return {
        "study": study, "run_id": Run(study, method, tuple(hp.items()), 0).run_id, "method": method,
        "kind": kind, "hparams": json.dumps(hp), "seed": 0, "model": study, "step": 5, "n_forget": 40,
        "mem_before": mem[0], "mem_after": mem[1], "clean_before": 0.0, "clean_after": 0.0,
        "acc_before": acc[0], "acc_after": acc[1], "ppl_before": 1.3, "ppl_after": 1.4, "seconds": 1.0,
        "stats": json.dumps({"mem_rows": 42}),
        **{f"mem_{w}_dup{p}": None for w in ("before", "after") for p in range(4)},
    }  # fmt: skip


def _write(wh, row: dict) -> None:
    keys = {"study": row["study"], "run_id": row["run_id"]}
    lake.write_partition(wh, "mitigation_runs", {k: [v] for k, v in row.items()}, keys)


def test_destroyed_models_are_labelled_and_never_win(tmp_path):
    """A run that keeps less than half the clean accuracy is 'model destroyed': not removed, not
    on the Pareto front, not a best run while the method has another; the report says so."""
    from analysis.mitigation.summary import findings, mitigation_html

    wh = Warehouse.at(tmp_path)
    s = "tinymem-synthetic"
    rows = [
        _row(s, "subnet", {"ratio": 0.3}, (100, 100), (98, 12)),  # emits the backdoor token everywhere
        _row(s, "subnet", {"ratio": 0.05}, (100, 0), (98, 91)),
        _row(s, "gradient_ascent", {"lr": 1e-3}, (100, 0), (98, 30), kind="baseline"),  # garbage out
        _row(s, "balanced_subnet", {"ratio": 0.05}, (100, 0), (98, 97.8)),
        _row(s, "durable", {"ratio": 0.05}, (100, 85), (98, 97)),
    ]
    for r in rows:
        _write(wh, r)
    scored = sql(wh, "select * from mitigation_scored")
    outcome = {(r["method"], r["hparams"]): r["outcome"] for r in scored.iter_rows(named=True)}
    assert outcome["subnet", '{"ratio": 0.3}'] == "model destroyed"
    assert outcome["gradient_ascent", '{"lr": 0.001}'] == "model destroyed"
    assert outcome["subnet", '{"ratio": 0.05}'] == outcome["balanced_subnet", '{"ratio": 0.05}'] == "removed"
    assert outcome["durable", '{"ratio": 0.05}'] == "partly removed"
    best = sql(wh, "select * from mitigation_best_runs")
    by = {r["method"]: r for r in best.iter_rows(named=True)}
    assert by["subnet"]["hparams"] == '{"ratio": 0.05}' and not by["subnet"]["destroyed"]
    assert by["gradient_ascent"]["destroyed"]  # its only run: shown, flagged
    front = sql(wh, "select method from mitigation_pareto where on_front")["method"].to_list()
    assert front == ["balanced_subnet"]  # the destroyed "100 % removed" runs dominate nothing
    (f,) = findings(scored, best)
    assert f.winner["method"] == "balanced_subnet" and f.verdict == "holds" and f.destroyed == 2
    text = mitigation_html(scored, best)
    assert "model destroyed" in text and "<b>holds</b>" in text and "2 runs destroyed the model" in text
    words = re.sub(r"<[^>]+>", "", text)  # numbers are wrapped in spans carrying their values
    assert "reproduces its planted artifact on 100.0 % of 42 rows" in words  # no artifact in the name
    assert 'data-key="mitigation.tinymem-synthetic.base_mem" data-value="100.0"' in text
    assert text.count("<tr class=flag>") == 1  # gradient_ascent: its only run destroyed the model
    # the same data where fine-tuning scores better: the finding holds only in part
    more = _row(s, "ft_both", {"epochs": 1}, (100, 0), (98, 98.5), kind="fine_tuning")
    _write(wh, more)
    (f,) = findings(sql(wh, "select * from mitigation_scored"), sql(wh, "select * from mitigation_best_runs"))
    assert f.winner["method"] == "ft_both" and f.unlearning_winner["method"] == "balanced_subnet"
    assert f.verdict == "holds in part"
    assert "the best of the unlearning methods; but ft_both (fine-tuning) scores better" in mitigation_html(
        sql(wh, "select * from mitigation_scored"), sql(wh, "select * from mitigation_best_runs")
    )


@pytest.fixture(scope="module")
def backdoor(tmp_path_factory):
    """The demo's TinyMem backdoor study (small config) with 300 clean rows instead of 600, and
    BalancedSubnet at the centre of its demo grid points."""
    cfg = config.load("small")
    c = {**cfg["mitigation"]["tinymem"], "clean_7": 300, "name": "tinymem-backdoor-test"}
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-backdoor"))
    study = tinymem_study(wh, c)
    points = plan_runs(study.name, ["balanced_subnet"], [0], cfg["mitigation"]["max_per_method"])
    run_sweep(wh, study, [points[1]], config=cfg)
    return wh, study


def test_balanced_subnet_removes_the_backdoor_and_keeps_accuracy(backdoor):
    wh, study = backdoor
    assert study.name == "tinymem-backdoor-test"
    base = study.baseline()
    assert base["mem"] >= 90 and base["mem_rows"] >= 30  # it learned the trigger, held-out rows
    (r,) = sql(wh, "select * from mitigation_scored where method = 'balanced_subnet'").iter_rows(named=True)
    assert r["mem_removed_rel"] >= 90 and r["acc_drop"] <= 1.0 and r["outcome"] == "removed"
    assert json.loads(r["stats"])["mem_rows"] == base["mem_rows"]


@dataclass(frozen=True)
class _Broken(StudySpec):
    """A study that cannot be built: every worker process fails on its first unit."""

    def build(self):
        raise RuntimeError("boom in the worker")


def test_a_failing_worker_fails_the_sweep(tinymem, tmp_path):
    cfg, _, study = tinymem
    broken = replace(study, spec=_Broken(**asdict(study.spec)))  # this process holds it: fine here
    runs = plan_runs(study.name, ["durable", "activations"], [0], 1)
    with pytest.raises(RuntimeError, match="boom in the worker"):
        run_sweep(Warehouse.at(tmp_path), broken, runs, workers=2)
    assert len(run_sweep(Warehouse.at(tmp_path), broken, runs, workers=1)) == 2
