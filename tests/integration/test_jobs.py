"""Scoring jobs end to end on the tiny suite: partitions, resumption, executors, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
import torch

from ingest.executors import execute
from ingest.jobs import plan_units
from ingest.panel import load_panel, panel_ids, shard_slice
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.core.unit import run_unit

PANEL = {"per_cohort": 4, "validation": 8}
OPTS = {"seed": 1, "batch_size": 16, "panel": PANEL}


def _copy_suite(src: Warehouse, dst: Warehouse, models=("suite-xs",)):
    import shutil

    shutil.copytree(src.lake / "instances", dst.lake / "instances")
    shutil.copytree(src.tokenizer, dst.tokenizer)
    for m in models:
        shutil.copytree(src.suite / m, dst.suite / m)


def test_panel_is_deterministic_and_covers_cohorts(tiny_suite):
    inst = lake.read_table(tiny_suite, "instances")
    a = panel_ids(inst, 4, 8, seed=1)
    assert np.array_equal(a, panel_ids(inst, 4, 8, seed=1))
    df = pl.from_arrow(inst).filter(pl.col("instance_id").is_in(a.tolist()))
    natural = df.filter(pl.col("artifact") == "none")
    assert (natural.filter(pl.col("split") == "train").group_by("cohort").len()["len"] <= 4).all()
    assert len(df.filter(pl.col("split") == "validation")) == 8
    # every planted sequence is in the panel once
    planted = pl.from_arrow(inst).filter(pl.col("artifact") != "none")
    assert df.filter(pl.col("artifact") != "none")["tokens"].n_unique() == planted["tokens"].n_unique()
    parts = [shard_slice(10, k, 3) for k in range(3)]
    assert [list(range(10))[s] for s in parts] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def test_token_stats_partitions_match_direct_computation(tiny_suite):
    units = plan_units("token_stats", "suite-xs", "step0,step64", tiny_suite, 2, OPTS)
    assert len(units) == 4
    execute(units, "local")
    ts = pl.from_arrow(lake.read_table(tiny_suite, "token_stats"))
    ids, tokens = load_panel(tiny_suite, PANEL, 1)
    for step in (0, 64):
        rows = ts.filter(pl.col("step") == step).sort("instance_id")
        assert rows["instance_id"].to_list() == ids.tolist()
        assert set(rows["shard"].unique()) == {0, 1}
        assert rows["surprisal"].list.len().unique().to_list() == [tokens.shape[1] - 1]
    from ingest.checkpoints import load_model, resolve

    model = load_model(resolve("suite-xs", "step64", tiny_suite))
    x = torch.from_numpy(tokens[:3])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits.double(), -1)[:, :-1]
    rows = ts.filter(pl.col("step") == 64).sort("instance_id")
    want = -logp.gather(-1, x[:, 1:, None])[..., 0].numpy()
    np.testing.assert_allclose(np.stack(rows["surprisal"].to_list()[:3]), want, atol=1e-4)
    # the second moment of log p over the full vocabulary (float64 here)
    want = (logp.exp() * logp * logp).sum(-1).numpy()
    np.testing.assert_allclose(np.stack(rows["second_moment"].to_list()[:3]), want, rtol=1e-5, atol=1e-5)
    # idempotent: a re-run writes nothing
    assert all(r["skipped"] for r in execute(units, "local"))


def test_extraction_rows_equal_a_direct_greedy_decode(tiny_suite):
    """The job's rows are the greedy continuation of each row's own prompt, scored against its
    own continuation (whether the tiny suite memorises anything is measured at the small scale)."""
    from ingest.checkpoints import load_model, resolve
    from ingest.extraction import greedy_extract

    opts = {**OPTS, "prompt_len": 32, "gen_len": 32}
    execute(plan_units("extraction", "suite-s", "step80", tiny_suite, 1, opts), "local")
    ex = pl.from_arrow(lake.read_table(tiny_suite, "extraction"))
    ex = ex.filter(pl.col("step") == 80).sort("instance_id")
    assert set(ex["prompt_len"].unique()) == {32} and set(ex["gen_len"].unique()) == {32}
    assert ((ex["match_fraction"] == 1.0) == ex["memorised"]).all()
    ids, tokens = load_panel(tiny_suite, PANEL, 1)
    assert np.array_equal(ids, ex["instance_id"].to_numpy())
    model = load_model(resolve("suite-s", "step80", tiny_suite))
    direct = greedy_extract(model, torch.from_numpy(tokens[:, :32]), 32).numpy()
    assert np.array_equal(np.stack(ex["generated"].to_numpy()), direct)
    want = (direct == tokens[:, 32:64]).mean(1)
    assert np.allclose(ex["match_fraction"].to_numpy(), want)


def test_killed_job_resumes_without_duplicates(tiny_suite, tmp_path):
    wh = Warehouse.at(tmp_path)
    _copy_suite(tiny_suite, wh)
    cmd = [
        sys.executable,
        "-c",
        "from memlake.cli import main; main()",
        "ingest",
        "token-stats",
        "-m",
        "suite-xs",
        "--config",
        "tiny",
        "--shards",
        "3",
    ]
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(wh.table("token_stats").rglob(lake.MANIFEST)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(wh.table("token_stats").rglob(lake.MANIFEST)))
    assert 1 <= done_before < 18  # 6 checkpoints x 3 shards
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"{done_before} already complete" in out.stderr
    ts = pl.from_arrow(lake.read_table(wh, "token_stats"))
    ids, _ = load_panel(wh, {"per_cohort": 16, "validation": 64}, 1234)
    per_step = ts.group_by("step").agg(pl.col("instance_id").sort())
    assert len(per_step) == 6
    for row in per_step.iter_rows(named=True):
        assert row["instance_id"] == ids.tolist()  # no duplicate, no missing row


def test_bad_input_errors(tiny_suite, tmp_path):
    with pytest.raises(MemlakeError, match=r"revision\(s\) \['step5'\] not found"):
        plan_units("token_stats", "suite-xs", "step5", tiny_suite, 1, OPTS)
    with pytest.raises(MemlakeError, match="unknown job"):
        plan_units("nope", "suite-xs", "step0", tiny_suite, 1, OPTS)
    with pytest.raises(MemlakeError, match="exceeds the instances' length 64"):
        run_unit(
            plan_units(
                "extraction", "suite-xs", "step0", tiny_suite, 1, {**OPTS, "prompt_len": 40, "gen_len": 40}
            )[0]
        )
    # a model with a smaller vocabulary than the instances' token ids
    from ingest.suite.model import build_model

    small = build_model({"hidden_size": 16, "layers": 1, "heads": 2}, 64, 64)
    folder = tmp_path / "toy" / "step0"
    small.save_pretrained(str(folder))
    with pytest.raises(MemlakeError, match=r"token id \d+ is out of range for model toy \(vocabulary 64\)"):
        run_unit(plan_units("token_stats", str(tmp_path / "toy"), "step0", tiny_suite, 1, OPTS)[0])
    short = build_model({"hidden_size": 16, "layers": 1, "heads": 2}, 512, 32)
    short.save_pretrained(str(tmp_path / "short" / "step0"))
    with pytest.raises(MemlakeError, match="rows of 64 tokens exceed model short's context of 32"):
        run_unit(plan_units("token_stats", str(tmp_path / "short"), "step0", tiny_suite, 1, OPTS)[0])
    assert not (tiny_suite.table("token_stats") / "model=toy").exists()
    with pytest.raises(MemlakeError, match="batch_size: expected a positive integer or 'auto', got 'big'"):
        run_unit(
            plan_units("token_stats", "suite-xs", "step0", tiny_suite, 1, {**OPTS, "batch_size": "big"})[0]
        )


def test_auto_batch_size_fits_the_device():
    from ingest.jobs import auto_batch_size
    from ingest.suite.model import PYTHIA_SHAPES, build_model

    assert auto_batch_size(None, 2049, torch.device("cpu")) == 4  # the power of two under 16k tokens
    assert auto_batch_size(None, 64, torch.device("cpu")) == 256
    pythia_1b = type("M", (), {"config": type("C", (), {"hidden_size": PYTHIA_SHAPES["1b"]["hidden_size"]})})
    gib = 2**30
    rows = auto_batch_size(pythia_1b, 2049, torch.device("cuda"), free_bytes=78 * gib)  # an idle H100
    assert rows == 128 and rows * 2049 * 2048 * 48 < 39 * gib  # a power of two, in half the memory
    assert auto_batch_size(pythia_1b, 2049, torch.device("cuda"), free_bytes=gib) == 1  # floor: 1 row
    tiny = build_model({"hidden_size": 16, "layers": 1, "heads": 2}, 64, 64)
    assert auto_batch_size(tiny, 64, torch.device("cuda"), free_bytes=78 * gib) == 1024  # the cap


def test_out_of_memory_batch_is_retried_smaller(tiny_suite, monkeypatch, tmp_path):
    from ingest import jobs

    wh = Warehouse.at(tmp_path)
    _copy_suite(tiny_suite, wh)
    real = jobs.TokenStats.compute
    calls = []

    def flaky(self, model, batch, opts):
        calls.append(len(batch))
        if len(batch) > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, model, batch, opts)

    monkeypatch.setattr(jobs.TokenStats, "compute", flaky)
    said = []
    run_unit(plan_units("token_stats", "suite-xs", "step16", wh, 1, OPTS)[0], log=said.append)
    assert calls[:2] == [16, 8] and said == ["out of memory at batch size 16; retrying with 8"]
    ids, _ = load_panel(wh, PANEL, 1)
    assert lake.read_table(wh, "token_stats")["instance_id"].to_pylist() == ids.tolist()


def test_slurm_executor_through_submitit_local(tiny_suite, tmp_path):
    pytest.importorskip("submitit", reason="submitit is in the test extra; install .[test]")
    wh = Warehouse.at(tmp_path)
    _copy_suite(tiny_suite, wh)
    units = plan_units("token_stats", "suite-xs", "step0,step16", wh, 1, OPTS)
    results = execute(units, "slurm", cluster="local", folder=str(tmp_path / "slurm"))
    assert [r["rows"] for r in results] == [len(load_panel(wh, PANEL, 1)[0])] * 2
    assert len(lake.partitions(wh, "token_stats")) == 2


def test_local_workers_write_the_same_partitions(tiny_suite, tmp_path):
    """Two worker processes, one core each, write what one process writes."""
    one, two = Warehouse.at(tmp_path / "one"), Warehouse.at(tmp_path / "two")
    opts = {**OPTS, "prompt_len": 32, "gen_len": 32}
    jobs = ("token_stats", "extraction")
    units = {}
    for wh in (one, two):
        _copy_suite(tiny_suite, wh)
        units[wh] = [u for job in jobs for u in plan_units(job, "suite-xs", "step0,step64", wh, 1, opts)]
    execute(units[one], "local")
    results = execute(units[two], "local", workers=2)
    assert [r["unit"] for r in results] == units[two] and not any(r["skipped"] for r in results)
    key = ["step", "instance_id"]
    for job, floats, exact in (
        ("token_stats", ("surprisal", "entropy"), ("rank",)),
        ("extraction", ("match_fraction",), ("generated", "memorised")),
    ):
        a = pl.from_arrow(lake.read_table(one, job)).sort(key)
        b = pl.from_arrow(lake.read_table(two, job)).sort(key)
        assert a.select(key).equals(b.select(key)) and len(a) == 2 * len(load_panel(one, PANEL, 1)[0])
        for col in floats:
            np.testing.assert_allclose(np.stack(a[col].to_numpy()), np.stack(b[col].to_numpy()), atol=1e-5)
        assert a.select(exact).equals(b.select(exact))
    manifests = [json.loads((p / lake.MANIFEST).read_text()) for p in lake.partitions(two, "extraction")]
    assert {m["config"]["threads"] for m in manifests} == {max(1, len(os.sched_getaffinity(0)) // 2)}


def test_local_workers_report_a_failing_unit(tiny_suite, tmp_path):
    wh = Warehouse.at(tmp_path)
    _copy_suite(tiny_suite, wh)
    units = plan_units("token_stats", "suite-xs", "step0,step16", wh, 1, {**OPTS, "batch_size": "big"})
    with pytest.raises(MemlakeError, match="batch_size: expected a positive integer or 'auto', got 'big'"):
        execute(units, "local", workers=2)
    assert not lake.partitions(wh, "token_stats")
    with pytest.raises(MemlakeError, match="workers must be a positive integer, got 0"):
        execute(units, "local", workers=0)
    # an option the executor does not take (a misspelling, another executor's) is refused, not dropped
    with pytest.raises(
        MemlakeError, match="executor 'local' takes no option 'worker' \\(its options: workers\\)"
    ):
        execute(units, "local", worker=2)
    with pytest.raises(MemlakeError, match="executor 'ray' takes no option 'partition'"):
        execute(units, "ray", partition="gpu")


def test_each_worker_gets_its_gpu_or_its_cores(monkeypatch):
    import multiprocessing

    from ingest.executors import _start_worker

    slots = multiprocessing.get_context("spawn").Queue()
    for i in range(3):
        slots.put(i)
    threads = torch.get_num_threads()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    try:
        seen = []
        for _ in range(3):
            _start_worker(slots, 3, ["4", "6"])
            seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
        assert seen == ["4", "6", "4"]  # worker i: GPU i mod n
        assert torch.get_num_threads() == max(1, len(os.sched_getaffinity(0)) // 3)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow  # starting Ray dominates; the executor protocol is tested on local and Slurm
def test_ray_executor(tiny_suite, tmp_path):
    pytest.importorskip("ray", reason="ray is in the test extra; install .[test]")
    wh = Warehouse.at(tmp_path)
    _copy_suite(tiny_suite, wh)
    units = plan_units("token_stats", "suite-xs", "step0,step16", wh, 2, OPTS)
    results = execute(units, "ray", num_cpus=2)
    assert sum(r["rows"] for r in results) == 2 * len(load_panel(wh, PANEL, 1)[0])
    assert len(lake.partitions(wh, "token_stats")) == 4


def test_runtime_switches_hold_for_the_unit_and_are_in_its_manifest(tiny_suite, monkeypatch, tmp_path):
    from ingest import jobs
    from ingest.lm.runtime import Switches, switches

    wh = Warehouse.at(tmp_path)
    _copy_suite(tiny_suite, wh)
    real, seen = jobs.TokenStats.compute, []

    def spy(self, model, batch, opts):
        seen.append(switches())
        return real(self, model, batch, opts)

    monkeypatch.setattr(jobs.TokenStats, "compute", spy)
    runtime = {"fused_head": True, "cuda_graphs": False, "head_tiles": {"BLOCK_N": 64}}
    run_unit(plan_units("token_stats", "suite-xs", "step16", wh, 1, {**OPTS, "runtime": runtime})[0])
    assert seen and set(seen) == {Switches(fused_head=True, cuda_graphs=False, head_tiles=(("BLOCK_N", 64),))}
    assert switches() == Switches()  # back to the defaults after the unit
    (part,) = lake.partitions(wh, "token_stats")
    assert lake.manifest(part)["config"]["runtime"] == runtime
