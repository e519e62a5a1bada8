"""The model suite: training, checkpoints, resumption, memorisation, and loading paths."""

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ingest.checkpoints import expand_revisions, load_model, resolve
from ingest.suite.schedule import lr_at
from ingest.suite.train import check_even_grid, epochs_for_even_grid, step_dir, train_model
from memlake.core import lake, settings
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse


def _seq_loss(model, tokens: list[list[int]]) -> float:
    x = torch.tensor(tokens, dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=x).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1)).item()


def test_checkpoints_table(tiny_suite, tiny_cfg):
    ck = pl.from_arrow(lake.read_table(tiny_suite, "checkpoints"))
    names = [m["name"] for m in tiny_cfg["suite"]["models"]]
    assert sorted(ck["model"].unique()) == sorted(names)
    inst = lake.read_table(tiny_suite, "instances", columns=["split"])
    n_train = inst["split"].to_pylist().count("train")
    bs, every = tiny_cfg["order"]["batch_size"], tiny_cfg["order"]["checkpoint_every"]
    total = -(-n_train * tiny_cfg["order"]["epochs"] // bs)  # the corpus's run length
    for name in names:
        rows = ck.filter(pl.col("model") == name).sort("step")
        # an even grid that ends on the final step: every cohort is treated over `every` steps
        assert total % every == 0 and rows["step"].to_list() == list(range(0, int(total) + 1, every))
        assert rows["epoch"][-1] == pytest.approx(total * bs / n_train)
        assert (rows["first_epoch_end"] == n_train // bs).all()
        assert all(os.path.isdir(p) for p in rows["path"])
        # Warm-up then cosine decay: peak early, ends at min_lr_ratio * lr.
        spec = next(m for m in tiny_cfg["suite"]["models"] if m["name"] == name)
        assert rows["lr"][-1] == pytest.approx(tiny_cfg["suite"]["min_lr_ratio"] * spec["lr"])
        assert rows["train_loss"][1] > rows["train_loss"][-1]


def test_uneven_grid_warns_with_the_epochs_that_fix_it():
    import math

    with pytest.warns(UserWarning, match=r"206 steps, not a multiple of order.checkpoint_every=16.*1\.0073"):
        check_even_grid(206, 16, 206)
    assert math.ceil(206 * epochs_for_even_grid(206, 16, 206)) == 208
    assert math.ceil(67 * epochs_for_even_grid(67, 16, 67)) == 80
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_even_grid(208, 16, 206)


def test_schedule_shape():
    lrs = [lr_at(s, 100, 1.0, 0.1, 0.1) for s in range(0, 101)]
    assert lrs[0] == 0 and lrs[10] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_duplicates_are_learned_better_than_validation(tiny_suite, tiny_cfg):
    inst = pl.from_arrow(lake.read_table(tiny_suite, "instances"))
    dup = inst.filter((pl.col("artifact") == "duplicate") & (pl.col("copies") >= 10))
    val = inst.filter(pl.col("split") == "validation")
    for spec in tiny_cfg["suite"]["models"]:
        last = max(int(p.name[4:]) for p in (tiny_suite.suite / spec["name"]).glob("step*"))
        model = load_model(resolve(spec["name"], f"step{last}", tiny_suite))
        first = load_model(resolve(spec["name"], "step0", tiny_suite))
        assert _seq_loss(model, dup["tokens"].to_list()) < _seq_loss(model, val["tokens"].to_list()) - 0.3
        assert _seq_loss(model, val["tokens"].to_list()) < _seq_loss(first, val["tokens"].to_list())


def test_interrupted_training_resumes_to_identical_weights(tiny_suite, tiny_cfg, tmp_path):
    wh = Warehouse.at(tmp_path)
    shutil.copytree(tiny_suite.lake / "instances", wh.lake / "instances")
    shutil.copytree(tiny_suite.tokenizer, wh.tokenizer)
    shutil.copy(tiny_suite.suite / "data_order.npy", wh.suite / "data_order.npy")
    s = settings.of(tiny_cfg)
    spec = s.suite.models[0]
    args = (spec, s.suite, s.order, s.corpus.row_len, s.seed, wh)
    assert train_model(*args, stop_after=20) == {"model": spec.name, "stopped_at": 20}
    assert not lake.is_complete(wh, "checkpoints", {"model": spec.name})
    train_model(*args)  # resumes from step16
    last = max(int(p.name[4:]) for p in (tiny_suite.suite / spec.name).glob("step*"))
    final = step_dir(wh, spec.name, last) / "model.safetensors"
    ref = step_dir(tiny_suite, spec.name, last) / "model.safetensors"
    a, b = load_file(final), load_file(ref)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert lake.is_complete(wh, "checkpoints", {"model": spec.name})
    assert train_model(*args)["skipped"]


def test_resolve_forms(tiny_suite):
    name = "suite-xs"
    by_name = resolve(name, "step16", tiny_suite)
    assert (by_name.name, by_name.step, by_name.is_local) == (name, 16, True)
    assert resolve(f"{name}@step16", wh=tiny_suite) == by_name
    folder = str(tiny_suite.suite / name)
    assert resolve(folder, "step16", tiny_suite).location == by_name.location
    assert resolve(f"{folder}/step16", wh=tiny_suite).name == name
    hub = resolve("EleutherAI/pythia-70m-deduped", "step1000", tiny_suite)
    assert (hub.name, hub.step, hub.revision) == ("pythia-70m-deduped", 1000, "step1000")


@pytest.mark.parametrize(
    "model, revision, message",
    [
        ("suite-xs", "step17", r"revision step17 not found \(available: step0, step16"),
        ("suite-xs", "latest", "not of the form step<N>"),
        ("suite-xs", None, "give a revision"),
        ("no/such/path", None, "not a suite model, a local checkpoint folder or a Hub id"),
    ],
)
def test_resolve_errors(tiny_suite, model, revision, message):
    with pytest.raises(MemlakeError, match=message):
        resolve(model, revision, tiny_suite)


def test_unreachable_hub_model_is_a_clear_error(tiny_suite):
    with pytest.raises(MemlakeError, match=r"model EleutherAI/pythia-70m-deduped@step1000: cannot load"):
        load_model(resolve("EleutherAI/pythia-70m-deduped", "step1000", tiny_suite))


def test_hub_revision_loads_through_the_same_code_path(tiny_suite, tmp_path):
    """A Hub id + revision resolves from a Hugging Face cache laid out like Pythia's repo."""
    repo = tmp_path / "hub" / "models--EleutherAI--pythia-70m-deduped"
    sha = "a" * 40
    shutil.copytree(step_dir(tiny_suite, "suite-xs", 16), repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "step1000").write_text(sha)
    code = (
        "from ingest.checkpoints import resolve, load_model, load_tokenizer\n"
        "ref = resolve('EleutherAI/pythia-70m-deduped', 'step1000')\n"
        "m = load_model(ref); t = load_tokenizer(ref)\n"
        "print(ref.name, ref.step, type(m).__name__, t.eos_token_id)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "MEMLAKE_WAREHOUSE": str(tiny_suite.root),
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["pythia-70m-deduped", "1000", "GPTNeoXForCausalLM", "0"]


def test_expand_revisions():
    avail = [0, 16, 32, 48, 64, 67]
    assert expand_revisions("step0,step16", avail) == [0, 16]
    assert expand_revisions("step16-step64", avail) == [16, 32, 48, 64]
    assert expand_revisions("step0-step4:2") == [0, 2, 4]
    assert expand_revisions("all", avail) == avail
    with pytest.raises(MemlakeError, match="runs backwards"):
        expand_revisions("step64-step0", avail)


def test_checkpoint_is_pythia_shaped(tiny_suite):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(step_dir(tiny_suite, "suite-s", 16)))
    rotary = getattr(cfg, "rotary_pct", None) or cfg.rope_parameters["partial_rotary_factor"]
    assert cfg.model_type == "gpt_neox" and rotary == 0.25 and cfg.use_parallel_residual
    assert cfg.vocab_size % 64 == 0
    assert np.load(tiny_suite.suite / "data_order.npy").dtype == np.int64
