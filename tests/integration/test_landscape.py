"""Filter-normalised random-plane loss landscapes (ingest/mitigation/landscape.py, drawn by
analysis/mitigation/landscape.py) on a trained tiny TinyMem study: filter norms of the directions,
the grid's centre, exactly restored weights, the trained model's basin, edits re-run from
`mitigation_runs`, the mart, the figure and the CLI."""

import copy
import json
import os
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from analysis.mitigation import landscape as figures
from analysis.views import SQL_VIEWS
from ingest.mitigation import landscape as ls
from ingest.mitigation.methods import REGISTRY, SequenceSet, sequence_loss
from ingest.mitigation.studies import tinymem_study
from ingest.mitigation.sweep import Run, run_sweep
from memlake.core import config, query
from memlake.core.paths import Warehouse

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]
CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
GOOD = Run("", "balanced_subnet", (("alpha", 0.7), ("epochs", 1), ("ratio", 0.3)), 0)
BAD_STRONG = Run("", "gradient_ascent", (("lr", 1e-3), ("steps", 50)), 0)
BAD_MILD = Run("", "gradient_ascent", (("lr", 1e-4), ("steps", 10)), 0)


@pytest.fixture(scope="module")
def tinymem(tmp_path_factory):
    """The tiny config's TinyMem study, trained once (about 10 s), on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = config.load("tiny")
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-landscape"))
    yield cfg, wh, tinymem_study(wh, cfg["mitigation"]["tinymem"])
    torch.set_num_threads(threads)


def _filter_norms(t: torch.Tensor, axis: int) -> torch.Tensor:
    return t.detach().movedim(axis, 0).reshape(t.shape[axis], -1).norm(dim=1)


def _neox() -> GPTNeoXForCausalLM:
    cfg = GPTNeoXConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=16)  # fmt: skip
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(cfg).eval()


def test_directions_are_filter_normalised(tinymem):
    _cfg, _wh, study = tinymem
    for model in (study.base, _neox()):
        d1, d2 = ls.random_plane(model, seed=3)
        named = ls.parameters(model)
        assert len(d1) == len(d2) == len(named)
        n_matrices = 0
        for (name, w), a, b in zip(named, d1, d2):
            assert a.shape == w.shape == b.shape
            if w.dim() == 1:  # biases and LayerNorm: zero direction
                assert not a.any() and not b.any(), name
                continue
            n_matrices += 1
            # a filter is one output unit: a column of GPT-2's Conv1D [in, out], else a row
            axis = 1 if name.endswith(CONV1D) else 0
            for d in (a, b):
                torch.testing.assert_close(
                    _filter_norms(d, axis), _filter_norms(w, axis), rtol=1e-4, atol=1e-6
                )
            assert not torch.allclose(a, b)  # two different directions
        assert n_matrices >= 6
    # c_fc's filters are its 512 output units (columns), not its 128 input rows
    c_fc = dict(ls.parameters(study.base))["transformer.h.0.mlp.c_fc.weight"]
    assert ls.filter_axes(study.base)["transformer.h.0.mlp.c_fc.weight"] == 1 and c_fc.shape == (128, 512)
    # the same seed draws the same raw direction for another model: only the filter scales differ
    other = copy.deepcopy(study.base)
    with torch.no_grad():
        other.transformer.h[0].mlp.c_fc.weight.mul_(torch.linspace(0.1, 3.0, 512))
    base_d, _ = ls.random_plane(study.base, seed=3)
    other_d, _ = ls.random_plane(other, seed=3)
    i = [n for n, _ in ls.parameters(study.base)].index("transformer.h.0.mlp.c_fc.weight")
    cos = torch.nn.functional.cosine_similarity(base_d[i], other_d[i], dim=0)  # per column
    torch.testing.assert_close(cos, torch.ones(512), rtol=0, atol=1e-5)
    assert not torch.allclose(base_d[i], other_d[i])


def test_centre_is_the_plain_loss_and_weights_are_restored(tinymem):
    _cfg, _wh, study = tinymem
    model = study.base
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = ls.study_losses(study, max_rows=10_000)
    d1, d2 = ls.random_plane(model, seed=0)
    surf = ls.surface(model, losses, d1, d2, ls.grid(3, 0.5))
    with torch.no_grad():
        f, r = study.forget, study.retain
        forget = sequence_loss(model, f.tokens, f.pad_id, f.prompt_len).mean().item()
        retain = sequence_loss(model, r.tokens, r.pad_id).mean().item()
    assert surf["forget_loss"][1, 1] == pytest.approx(forget, rel=1e-5)
    assert surf["retain_loss"][1, 1] == pytest.approx(retain, rel=1e-5)
    assert surf["retain_loss"][0, 2] != pytest.approx(retain, rel=1e-3)  # off-centre points moved
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # restored even when a loss fails half-way through the grid
    calls = []

    def failing(m):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError, match="boom"):
        ls.surface(model, {"x": failing}, d1, d2, ls.grid(3, 0.5))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="points >= 2"):
        ls.grid(1, 1.0)


def test_trained_model_sits_in_a_basin(tinymem):
    _cfg, _wh, study = tinymem
    losses = ls.study_losses(study, max_rows=64)
    d1, d2 = ls.random_plane(study.base, seed=0)
    coords = ls.grid(5, 1.0)  # -1, -0.5, 0, 0.5, 1
    surf = ls.surface(study.base, losses, d1, d2, coords)
    ring = np.maximum.outer(np.abs(coords), np.abs(coords))
    for name, z in surf.items():
        assert np.isfinite(z).all()
        centre, inner, outer = z[ring == 0].item(), z[ring == 0.5], z[ring == 1.0]
        assert centre < inner.min() and inner.mean() < outer.mean(), name  # rises away from theta
        assert outer.mean() > 2 * centre, name


def test_edits_from_the_lake_mart_and_figure(tinymem):
    cfg, wh, study = tinymem
    runs = [Run(study.name, r.method, r.hparams, r.seed) for r in (GOOD, BAD_STRONG, BAD_MILD)]
    run_sweep(wh, study, runs, config=cfg)
    lc = cfg["mitigation"]["landscape"]
    edits = {e.edit: e for e in ls.choose_edits(wh, study.name, lc, views=SQL_VIEWS)}
    assert edits["unedited"].method is None
    assert edits["good"].run_id == runs[0].run_id and edits["good"].source == "mitigation_runs"
    lake_runs = query.read(wh, "select * from mitigation_runs")
    ga = lake_runs.filter(pl.col("method") == "gradient_ascent")
    worst = ga.sort(pl.col("acc_after") / pl.col("acc_before")).row(0, named=True)
    assert edits["bad"].run_id == worst["run_id"] and edits["bad"].hparams == json.loads(worst["hparams"])
    # re-running an edit reproduces its sweep row exactly (methods are deterministic given the seed)
    good_row = lake_runs.filter(pl.col("run_id") == runs[0].run_id).row(0, named=True)
    again = study.evaluate(ls.apply_edit(study, edits["good"]))
    assert again["mem"] == pytest.approx(good_row["mem_after"]) and again["acc"] == pytest.approx(
        good_row["acc_after"]
    )

    rows, _ = ls.compute_landscape(wh, study, lc, views=SQL_VIEWS, points=3, radius=0.5)
    path = figures.save_figure(wh, rows)
    mart = query.read(wh, f"select * from mitigation_landscape where study = '{study.name}'")
    assert mart.columns[: len(ls.COLUMNS)] == ls.COLUMNS
    assert len(mart) == 27 and sorted(mart["edit"].unique()) == ["bad", "good", "unedited"]
    assert mart.filter(pl.col("edit") != "unedited")["source"].unique().to_list() == ["mitigation_runs"]
    centre = {
        r["edit"]: r
        for r in mart.filter((pl.col("alpha") == 0) & (pl.col("beta") == 0)).iter_rows(named=True)
    }
    assert centre["good"]["forget_loss"] > centre["unedited"]["forget_loss"]  # the edit unlearned
    assert centre["bad"]["retain_loss"] > 3 * centre["unedited"]["retain_loss"]  # and this one broke it
    assert centre["good"]["mem"] == pytest.approx(good_row["mem_after"])
    assert path.name == f"landscape-{study.name}.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert figures.draw_landscapes(wh) == [path]


def test_fallback_edits_without_runs(tmp_path):
    lc = config.load("tiny")["mitigation"]["landscape"]
    edits = ls.choose_edits(Warehouse.at(tmp_path), "tinymem-increment-noise-2l", lc, seed=4, views=SQL_VIEWS)
    assert [(e.edit, e.method, e.source) for e in edits] == [
        ("unedited", None, "base"),
        ("good", "balanced_subnet", "config"),
        ("bad", "gradient_ascent", "config"),
    ]
    assert edits[1].hparams == {} and edits[2].hparams == dict(REGISTRY["gradient_ascent"].grid[-1])
    assert edits[2].hparams == {"lr": 1e-3, "steps": 50} and edits[2].seed == 4
    with pytest.raises(KeyError, match="unknown mitigation method"):
        ls.choose_edits(Warehouse.at(tmp_path), "s", {**lc, "bad": "nope"}, views=SQL_VIEWS)


def test_empty_forget_set_is_an_error(tinymem):
    _cfg, wh, study = tinymem
    empty = copy.copy(study)
    empty.task = replace(
        study.task, forget=SequenceSet(study.forget.tokens[:0], study.forget.prompt_len, study.forget.pad_id)
    )
    with pytest.raises(ValueError, match="nothing is memorised"):
        ls.compute(wh, empty, config.load("tiny")["mitigation"]["landscape"], views=SQL_VIEWS, points=3)


def test_cli_landscape(tinymem):
    _cfg, wh, study = tinymem  # the study is trained there: the command loads it
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    cmd = MEMLAKE + ["mitigate", "landscape", "tinymem", "-c", "tiny", "--points", "3", "--radius", "0.25"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"landscape of {study.name} (3 models x 3x3 points)" in out.stderr
    assert out.stderr.count("landscape: ") == 3
    mart = query.read(wh, "select distinct radius, points from mitigation_landscape")
    assert mart.rows() == [(0.25, 3)]
    out = subprocess.run(cmd[:-4] + ["--points", "1"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "points >= 2" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_demo_draws_the_landscape(tiny_demo):
    wh, log = tiny_demo
    line = next(x for x in log.splitlines() if re.match(r"\[\d+/\d+\] mitigation", x))
    assert "landscape of tinymem-increment-noise-2l" in line
    mart = query.read(wh, "select * from mitigation_landscape")
    points = config.load("tiny")["mitigation"]["landscape"]["points"]
    assert len(mart) == 3 * points**2 and mart["forget_loss"].is_finite().all()
    # the demo swept both methods, so both edits are re-runs of its lake rows
    assert set(mart.filter(pl.col("edit") != "unedited")["source"]) == {"mitigation_runs"}
    assert (wh.figures / "mitigation" / "landscape-tinymem-increment-noise-2l.png").exists()
    assert "landscape-tinymem-increment-noise-2l.png" in (wh.root / "report" / "index.html").read_text()
