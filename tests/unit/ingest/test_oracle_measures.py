"""The forget measures of `ingest.mitigation.oracle` against direct computations: Extraction
Strength against greedy decoding from every prefix, Exact Memorization against the argmax, the
loss and Min-K% against the log-softmax, privleak against MUSE's definition, forget quality
against scipy, and the oracle's training set."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp

from ingest.mitigation.oracle import Rows, forget_quality, mia_auc, privleak, window_scores
from ingest.mitigation.studies import oracle_data
from ingest.mitigation.tinymem.arithmetic import math_data
from ingest.mitigation.tinymem.metrics import greedy_generate
from ingest.mitigation.tinymem.model import tinymem_model

PROMPT, K, T = 6, 8, 18


@pytest.fixture(scope="module")
def model_rows():
    """Rows a random model continues greedily, with one token of the window changed in most rows
    (so the window is reproduced from some prefixes only), and per-row window starts."""
    model = tinymem_model(1, 14, n_positions=32, seed=3).eval()
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(PROMPT - 2, PROMPT + 3, (24,), generator=g)
    rows = torch.randint(0, 14, (24, T), generator=g)
    for i, s in enumerate(starts.tolist()):
        rows[i, : s + K] = greedy_generate(model, rows[i : i + 1, :s], K)[0]
        if i % 4:  # leave every fourth row reproduced whole
            j = s + int(torch.randint(0, K, (1,), generator=g))
            rows[i, j] = (rows[i, j] + 1) % 14
    return model, Rows(rows, starts, K)


def _greedy_gives_the_rest(model, row: torch.Tensor, start: int, j: int) -> bool:
    """Greedy decoding from the prompt and the first j window tokens reproduces the rest."""
    out = greedy_generate(model, row[:, : start + j], K - j)
    return torch.equal(out[0, start + j :], row[0, start + j : start + K])


def test_extraction_strength_equals_greedy_decoding_from_every_prefix(model_rows):
    model, rows = model_rows
    s = window_scores(model, rows, batch_size=5)
    for i in range(len(rows)):
        row, start = rows.tokens[i : i + 1], int(rows.starts[i])
        k_star = next(j for j in range(K + 1) if j == K or _greedy_gives_the_rest(model, row, start, j))
        assert s.es[i] == pytest.approx(1 - k_star / K), i
    assert 0 < s.es.mean() < 1 and s.extracted.sum() >= len(rows) // 4


def test_exact_memorization_loss_and_min_k_against_the_log_softmax(model_rows):
    model, rows = model_rows
    s = window_scores(model, rows, batch_size=7)
    with torch.no_grad():
        logits = model(input_ids=rows.tokens).logits[:, :-1].double()
    logp = F.log_softmax(logits, -1)
    for i in range(len(rows)):
        start = int(rows.starts[i])
        targets = rows.tokens[i, start : start + K]
        lp = logp[i, start - 1 : start - 1 + K].gather(-1, targets[:, None])[:, 0].numpy()
        assert s.nll[i] == pytest.approx(-lp.mean(), abs=1e-5)
        assert s.em[i] == pytest.approx(
            (logp[i, start - 1 : start - 1 + K].argmax(-1) == targets).double().mean()
        )
        lowest = np.sort(lp)[: max(1, math.floor(0.2 * K))]
        assert s.min_k[i] == pytest.approx(lowest.mean(), abs=1e-5)


def test_privleak_forget_quality_and_auc():
    # MUSE: PrivLeak = (AUC_unlearn - AUC_retrain) / AUC_retrain, with AUCs in its orientation (1 - ours)
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(1.0, 0.5) == -100.0  # every forget row separable: a model that forgot nothing
    assert privleak(0.3, 0.6) == pytest.approx(((1 - 0.3) - (1 - 0.6)) / (1 - 0.6) * 100)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(0.5, size=70)
    stat, p = forget_quality(a, b)
    assert (stat, p) == pytest.approx(tuple(ks_2samp(a, b)))
    members, nonmembers = np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.5])
    assert mia_auc(members, nonmembers) == pytest.approx(5 / 6)  # pairs ranked right: 5 of 6
    assert math.isnan(mia_auc(members, nonmembers[:0]))


@pytest.mark.parametrize("artifact", ["noise", "backdoor"])
def test_the_oracle_trains_on_the_clean_rows_in_place_of_the_forget_set(artifact):
    data = math_data(artifact=artifact, num_7=400, num_extra=60, n_test=40, n_noise=30, dup_classes=2,
                     length=6, max_ctx=30, prompt_len=8, k=8, extra_cs=(2,))  # fmt: skip
    forget = torch.zeros(data.n_artifacts, dtype=torch.bool)
    forget[::2] = True
    o = oracle_data(data, forget)
    is_forget = data.train_artifact & forget[data.train_ids.clamp(max=data.n_artifacts - 1)]
    assert is_forget.sum() > forget.sum() or data.dup_class.max() == 0  # every copy is replaced
    assert torch.equal(o.train[is_forget], data.clean[data.train_ids[is_forget]])
    assert torch.equal(o.train[~is_forget], data.train[~is_forget])
    assert torch.equal(o.train_artifact, data.train_artifact & ~is_forget)
    assert o.train.shape == data.train.shape and torch.equal(o.train_ids, data.train_ids)
    rows, starts = data.nonmembers()
    assert len(rows) > 0 and starts.shape == (len(rows),)
    # never-trained: no non-member row is a training row
    trained = {tuple(r) for r in data.train.tolist()}
    assert not any(tuple(r) in trained for r in rows.tolist())
