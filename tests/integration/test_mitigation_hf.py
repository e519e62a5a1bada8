"""Mitigation on a Hugging Face causal LM under the mitigation paper's Pythia protocol, on a tiny
GPT-NeoX with Pythia's padded vocabulary and 2,049-token rows: the forget/retain/perplexity sets,
batched evaluation with memory bounded by the batch, unknown duplication, and the CLI on either
spelling of the model (lake key or Hub id)."""

import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from ingest.mitigation.studies import (
    _heldout_chunks,
    chunk_metrics,
    greedy_reproduces,
    lake_checkpoint,
    suite_study,
)
from memlake.core import lake
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

MEMLAKE = [sys.executable, "-c", "from memlake.cli import main; main()"]
KEY, HUB_ID = "pythia-70m-deduped", "EleutherAI/pythia-70m-deduped"
VOCAB, ROW, PROMPT = 50_304, 2_049, 32
FULL_MEM, FULL_32, SAMPLE_MEM, SAMPLE_NOT = [0, 1], [2], [100, 101, 102], [103]
VALIDATION = [200, 201, 202, 203]
SUITE = {"forget_max": None, "heldout": 16, "ft_epochs": 1, "seed": 0, "batch_size": 8}


def _model() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=ROW,
    )  # fmt: skip
    return GPTNeoXForCausalLM(cfg).eval()


@torch.no_grad()
def _greedy(model, prompt: np.ndarray, n: int) -> np.ndarray:
    """The model's n greedy tokens after `prompt`, checked teacher-forced (no near-tie flips)."""
    ids = torch.from_numpy(prompt).long()[None]
    for _ in range(n):
        ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], 1)
    assert greedy_reproduces(model, ids, len(prompt), 1).all()
    return ids[0, len(prompt) :].numpy()


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A warehouse with the model at step1000/step143000 (a folder under the lake key) and an HF
    cache holding it as the Hub repo. Instances: 2,049-token training rows (0, 1 reproduce 40
    tokens after the prompt, 2 only 32; copies known), 64-token `sample_only` rows (100-102
    reproduce their 32-token continuation, 103 does not; copies null, as Hub imports leave them)
    and four validation rows. Extraction: rows 0-2 memorised at step 1000, 100-103 at 143000."""
    root = tmp_path_factory.mktemp("wh-mitigation-hf")
    wh, model = Warehouse.at(root / "wh"), _model()
    for step in (1000, 143000):
        model.save_pretrained(wh.suite / KEY / f"step{step}")
    sha = "b" * 40
    repo = root / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    model.save_pretrained(repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "step143000").write_text(sha)

    rng = np.random.default_rng(0)
    rows = {}
    for i in range(6):
        row = rng.integers(0, VOCAB, ROW)
        if i in FULL_MEM:
            row[PROMPT : PROMPT + 40] = _greedy(model, row[:PROMPT], 40)
        elif i in FULL_32:  # reproduces the extraction's 32 tokens, not the protocol's 40
            row[PROMPT : PROMPT + 32] = _greedy(model, row[:PROMPT], 32)
            row[PROMPT + 32] = (_greedy(model, row[: PROMPT + 32], 1)[0] + 1) % VOCAB
        rows[i] = row
    for i in SAMPLE_MEM + SAMPLE_NOT:
        row = rng.integers(0, VOCAB, 64)
        if i in SAMPLE_MEM:
            row[PROMPT:] = _greedy(model, row[:PROMPT], 32)
        rows[i] = row
    rows |= {i: rng.integers(0, VOCAB, ROW) for i in VALIDATION}
    ids = sorted(rows)
    train = [i not in VALIDATION for i in ids]
    lake.write_partition(wh, "instances", {
        "instance_id": ids,
        "split": ["train" if t else "validation" for t in train],
        "tokens": pa.array([rows[i].tolist() for i in ids], lake.TOKENS),
        "batch_idx": [0 if t else None for t in train],
        "cohort": [1 if t else None for t in train],
        "source": ["prose"] * len(ids),
        "artifact": ["none"] * len(ids),
        "copies": pa.array([{1: 10}.get(i, 1) if i < 100 else None for i in ids], pa.int32()),
        "clean_tokens": pa.array([None] * len(ids), lake.TOKENS),
        "sample_only": [i in SAMPLE_MEM + SAMPLE_NOT for i in ids],
    })  # fmt: skip
    for step, members in ((1000, {i: i in FULL_MEM + FULL_32 for i in range(6)}),
                          (143000, {i: True for i in SAMPLE_MEM + SAMPLE_NOT})):  # fmt: skip
        n = len(members)
        full = {"model": KEY, "step": step, "prompt_len": PROMPT, "gen_len": 32, "shard": 0}
        lake.write_partition(wh, "extraction", {
            "instance_id": list(members),
            "generated": pa.array([rows[i][PROMPT : PROMPT + 32].tolist() for i in members], lake.TOKENS),
            "match_fraction": pa.array([float(m) for m in members.values()], pa.float32()),
            "memorised": list(members.values()),
            "prompt_len": pa.array([PROMPT] * n, pa.int32()),
            "gen_len": pa.array([32] * n, pa.int32()),
        }, {k: full[k] for k in lake.spec("extraction").partition_by})  # fmt: skip
    return wh, root / "hub", rows


def test_lake_key_is_the_same_for_every_spelling():
    assert lake_checkpoint(HUB_ID) == (HUB_ID, KEY, None)
    assert lake_checkpoint(KEY, 143000) == (KEY, KEY, 143000)
    assert lake_checkpoint(f"{HUB_ID}@step1000") == (HUB_ID, KEY, 1000)
    assert lake_checkpoint(f"/ckpt/{KEY}/step1000/") == (f"/ckpt/{KEY}", KEY, 1000)
    with pytest.raises(MemlakeError, match="names step 1000"):
        lake_checkpoint(f"{KEY}@step1000", 143000)


def test_full_rows_use_the_40_token_window_and_known_copies(hf):
    wh, _, rows = hf
    study = suite_study(wh, KEY, SUITE, step=1000)
    assert (study.name, study.model, study.step) == (KEY, KEY, 1000)
    # rows 0-2 were extracted as memorised over 32 tokens; only 0 and 1 reproduce 40
    assert study.forget.tokens.shape == (2, PROMPT + 40)
    assert study.forget.tokens.tolist() == [rows[i][: PROMPT + 40].tolist() for i in FULL_MEM]
    before = study.baseline()
    assert before["mem"] == pytest.approx(200 / 3)
    assert before["mem_dup0"] == 50.0 and before["mem_dup1"] == 100.0  # rows 0, 2: 1 copy; row 1: 10
    assert math.isfinite(before["ppl"]) and 0 <= before["acc"] <= 100
    assert study.retain.tokens.shape == (16, 80)  # 80-token chunks of validation rows
    assert "reproduce 40 tokens" in study.about


def test_sample_rows_fall_back_to_gen_len_and_null_copies_leave_classes_unset(hf):
    wh, *_ = hf
    study = suite_study(wh, str(wh.suite / KEY), SUITE)  # a checkpoints folder; the latest extracted step
    assert (study.name, study.step) == (KEY, 143000)
    assert study.forget.tokens.shape == (3, 64)  # 64-token sample_only rows: the 32-token window
    before = study.evaluate(study.base)
    assert before["mem"] == 75.0 and not any(k.startswith("mem_dup") for k in before)


def test_a_model_study_is_built_again_from_its_spec(hf):
    """What a worker process does with a unit's spec: the same sets and the same baseline."""
    wh, *_ = hf
    study = suite_study(wh, str(wh.suite / KEY), SUITE)
    again = pickle.loads(pickle.dumps(study.spec)).build()
    assert (again.name, again.step) == (study.name, study.step) == (KEY, 143000)
    assert again.spec == study.spec  # the resolved step is in it: the study does not move on
    assert torch.equal(again.forget.tokens, study.forget.tokens)
    assert torch.equal(again.retain.tokens, study.retain.tokens)
    assert again.baseline() == study.baseline()


def test_heldout_chunks_are_disjoint_halves(hf):
    wh, _, rows = hf
    inst = lake.read_table(wh, "instances")
    lengths = np.array([len(t) for t in inst["tokens"].to_pylist()])
    cfg = {"chunk_len": 80, "heldout": 40}
    ppl, retain = _heldout_chunks(inst, lengths, np.random.default_rng(0), cfg, PROMPT)
    assert ppl.shape == (40, 80) and retain.shape == (40, 80)

    def source(chunk):
        return {i for i in VALIDATION for s in range(0, ROW - 79, 80) if (rows[i][s : s + 80] == chunk).all()}

    src = [set().union(*(source(c.numpy()) for c in half)) for half in (ppl, retain)]
    assert src[0] and src[1] and not src[0] & src[1]  # never a row in both halves
    cfg["chunk_len"] = 4000  # longer than every row: the rows' own length
    assert _heldout_chunks(inst, lengths, np.random.default_rng(0), cfg, PROMPT)[0].shape[1] == ROW


def test_evaluate_memory_is_bounded_by_the_batch(hf):
    wh, *_ = hf
    study = suite_study(wh, KEY, {**SUITE, "batch_size": 3}, step=1000)
    seen = []
    hook = study.base.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        study.evaluate(study.base)
    finally:
        hook.remove()
    assert max(seen) <= 3 and len(seen) >= 16 // 3 + 1  # 3 candidates + 16 chunks, 3 rows a forward


def test_batched_metrics_equal_unbatched(hf):
    wh, *_ = hf
    study = suite_study(wh, KEY, SUITE, step=1000)
    m, chunks, memo = study.base, study.retain.tokens, study.forget.tokens
    with torch.no_grad():
        logits = m(input_ids=chunks[:, :-1]).logits.float()  # the whole set in one forward
    acc = 100.0 * (logits.argmax(-1) == chunks[:, 1:]).float().mean().item()
    ppl = math.exp(F.cross_entropy(logits.transpose(1, 2), chunks[:, 1:]).item())
    for bs in (1, 5, 64):
        got = chunk_metrics(m, chunks, bs)
        assert got[0] == pytest.approx(acc) and got[1] == pytest.approx(ppl, rel=1e-5)
        assert greedy_reproduces(m, memo, PROMPT, bs).tolist() == [True, True]


@pytest.mark.slow  # the real-path test sweeps a Pythia-shaped checkpoint through the CLI too
def test_cli_sweep_on_a_pythia_checkpoint_by_either_name(hf):
    wh, hub, _ = hf
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    sets = ["--set", "mitigation.suite.heldout=16", "--set", "mitigation.suite.batch_size=8"]

    def sweep(model, methods):
        cmd = MEMLAKE + ["mitigate", "sweep", model, "--step", "143000", "--methods", methods,
                         "--max-per-method", "1", "--config", "tiny", *sets]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, env=env)

    out = sweep(HUB_ID, "ft_extra,durable,activations")  # loads from the HF cache
    assert out.returncode == 0, out.stderr[-3000:]
    assert "3 runs written" in out.stderr and "3 of 4 extraction-memorised rows" in out.stderr
    runs = lake.read_table(wh, "mitigation_runs").to_pylist()
    assert {(r["study"], r["model"], r["step"]) for r in runs} == {(KEY, KEY, 143000)}
    assert {r["method"] for r in runs} == {"ft_extra", "durable", "activations"}
    for r in runs:
        assert r["mem_before"] == 75.0 and r["n_forget"] == 3
        assert all(math.isfinite(r[k]) for k in ("acc_before", "acc_after", "ppl_before", "ppl_after"))
        assert all(r[f"mem_{w}_dup{p}"] is None for w in ("before", "after") for p in range(4))
    again = sweep(KEY, "ft_extra,durable,activations")  # the lake key: the warehouse's folder
    assert again.returncode == 0 and "0 runs written, 3 already done" in again.stderr
    bad = sweep(KEY, "durable,loss_truncation")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "loss_truncation needs training data" in bad.stderr
