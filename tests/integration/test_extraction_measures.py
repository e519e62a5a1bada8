"""The extraction_measures mart, checked on the tiny demo against the model itself: greedy decoding
from every prefix of the continuation (Extraction Strength), teacher-forced argmax (Exact
Memorization) and the generated tokens (prefix_match_len). The SQL works from token statistics
and extraction rows only, so these are independent computations of the same quantities."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest
import torch

from ingest.checkpoints import load_model, resolve
from ingest.extraction import generate_greedy
from memlake.core import lake
from memlake.core.paths import REPO_ROOT


@pytest.fixture(scope="module")
def measured(tiny_demo):
    wh, _ = tiny_demo
    rows = duckdb.sql(
        f"select * from '{wh.marts / 'extraction_measures.parquet'}' order by model, step, instance_id"
    ).to_df()
    return wh, rows


def _sample(rows, n: int = 12):
    """Rows at the last checkpoint of one model, spread over extraction strength (both ends and
    the middle), so the check is not only on rows the model gets all right or all wrong."""
    last = rows[(rows.model == rows.model.iloc[0]) & (rows.step == rows.step.max())]
    ranked = last.sort_values(["extraction_strength", "instance_id"])
    pick = np.unique(np.linspace(0, len(ranked) - 1, n).round().astype(int))
    return ranked.iloc[pick]


def test_measures_are_complete_and_in_range(measured):
    _, rows = measured
    assert len(rows) and rows.exact_memorization.notna().all() and rows.extraction_strength.notna().all()
    assert (rows.prefix_match_len <= rows.gen_len).all()
    # a full greedy match is extraction strength 1 and the other way round (ties aside)
    full = rows.prefix_match_len == rows.gen_len
    assert ((rows.extraction_strength == 1) == full).mean() > 0.99
    # training moves every measure up from the untrained checkpoint
    by_step = rows.groupby("step")[["prefix_match_len", "exact_memorization", "extraction_strength"]].mean()
    assert (by_step.iloc[-1] > by_step.iloc[0]).all()
    for n in (10, 100, 1000):  # more samples never extract less
        assert (rows[f"p_extract_{n}"] >= rows["p_extract_1"] - 1e-15).all()


def test_extraction_strength_is_greedy_decoding_from_every_prefix(measured):
    wh, rows = measured
    sample = _sample(rows)
    tokens = {
        r["instance_id"]: r["tokens"]
        for r in lake.read_table(wh, "instances", columns=["instance_id", "tokens"]).to_pylist()
    }
    ((model_name, step, p, g),) = (
        sample[["model", "step", "prompt_len", "gen_len"]].drop_duplicates().itertuples(index=False)
    )
    model = load_model(resolve(model_name, int(step), wh)).eval()
    batch = torch.tensor([tokens[i][: p + g] for i in sample.instance_id], dtype=torch.long)
    truth = batch[:, p:]
    with torch.inference_mode():
        # greedy decoding after the prompt and the first k continuation tokens, for every k (one
        # batch per k: every row has the same prefix length)
        right_from = torch.stack(
            [(generate_greedy(model, batch[:, : p + k], g - k) == truth[:, k:]).all(1) for k in range(g)]
            + [torch.ones(len(batch), dtype=torch.bool)]
        )
        argmax = model(input_ids=batch).logits[:, p - 1 : p + g - 1].argmax(-1)
    k_star = right_from.int().argmax(0)  # the first k from which greedy decoding is right
    first = generate_greedy(model, batch[:, :p], g) == truth  # the k = 0 generation
    for j, r in enumerate(sample.itertuples()):
        assert r.extraction_strength == pytest.approx(1 - k_star[j].item() / g, abs=1e-12)
        assert r.exact_memorization == pytest.approx(
            (argmax[j] == truth[j]).double().mean().item(), abs=1e-12
        )
        assert r.prefix_match_len == (first[j].tolist() + [False]).index(False)
    assert len(set(k_star.tolist())) > 2  # rows of different strengths were compared


@pytest.mark.parametrize("log_p", [0.0, -1e-3, -0.7, -5.0, -13.8, -14.0, -30.0, -250.0])
def test_probabilistic_extraction_is_exact_over_the_whole_range(log_p):
    """The macro's SQL against 1 - (1 - p)^n computed without cancellation (the macro is plain
    Jinja, rendered here as dbt would)."""
    import jinja2

    macros = (REPO_ROOT / "macros" / "extraction.sql").read_text()
    for n in (1, 10, 100, 1000):
        sql = jinja2.Template(macros + "{{ extraction_probability(log_p, n) }}").render(log_p=log_p, n=n)
        got = duckdb.sql(f"select {sql}").fetchall()[0][0]
        want = -math.expm1(n * math.log1p(-math.exp(log_p))) if log_p < 0 else 1.0
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300)
