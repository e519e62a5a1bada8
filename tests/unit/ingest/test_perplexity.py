import math

import numpy as np
import pytest
import torch

from ingest.perplexity import window_perplexities

# Two rows of 7 tokens: 6 scored positions each (position j scores token j+1).
SUP = np.array(
    [
        [1.0, 2.0, 3.0, 0.5, 0.25, 0.25],
        [0.0, 0.0, 0.0, 4.0, 4.0, 4.0],
    ]
)


def test_per_window_normalisation_by_hand():
    # prompt = tokens 0..2: scores tokens 1, 2 -> columns 0, 1; continuation = tokens 3..6 -> columns 2..5
    ppl = window_perplexities(SUP, prompt_len=3)
    np.testing.assert_allclose(ppl.prompt, [math.exp(3.0 / 2), math.exp(0.0)])
    np.testing.assert_allclose(ppl.continuation, [math.exp(4.0 / 4), math.exp(12.0 / 4)])
    np.testing.assert_allclose(ppl.sequence, [math.exp(7.0 / 6), math.exp(12.0 / 6)])


def test_sequence_is_the_count_weighted_geometric_mean_of_the_windows():
    rng = np.random.default_rng(0)
    sup = rng.exponential(2.0, size=(8, 63))
    ppl = window_perplexities(sup, prompt_len=32)
    np.testing.assert_allclose(
        np.log(ppl.sequence), (31 * np.log(ppl.prompt) + 32 * np.log(ppl.continuation)) / 63
    )


def test_shared_denominator_is_the_taxonomy_variant():
    rng = np.random.default_rng(1)
    sup = rng.exponential(2.0, size=(8, 63))  # a 64-token row split 32 / 32, as in the taxonomy paper
    shared = window_perplexities(sup, prompt_len=32, shared_denominator=True)
    np.testing.assert_allclose(shared.prompt * shared.continuation, shared.sequence)
    np.testing.assert_allclose(shared.prompt, np.exp(sup[:, :31].sum(1) / 63))
    np.testing.assert_allclose(shared.continuation, np.exp(sup[:, 31:].sum(1) / 63))
    # the whole-sequence value does not depend on the normalisation; the windows do
    per_window = window_perplexities(sup, prompt_len=32)
    np.testing.assert_allclose(shared.sequence, per_window.sequence)
    assert (shared.prompt < per_window.prompt).all()


def test_mask_drops_positions_from_sums_and_counts():
    mask = np.ones_like(SUP, dtype=bool)
    mask[0, 0] = False  # drop a prompt position of row 0
    mask[1, 5] = False  # and a continuation position of row 1
    ppl = window_perplexities(SUP, prompt_len=3, mask=mask)
    np.testing.assert_allclose(ppl.prompt, [math.exp(2.0), 1.0])
    np.testing.assert_allclose(ppl.continuation, [math.exp(1.0), math.exp(8.0 / 3)])
    np.testing.assert_allclose(ppl.sequence, [math.exp(6.0 / 5), math.exp(8.0 / 5)])
    shared = window_perplexities(SUP, prompt_len=3, mask=mask, shared_denominator=True)
    np.testing.assert_allclose(shared.prompt, [math.exp(2.0 / 5), 1.0])
    np.testing.assert_allclose(shared.prompt * shared.continuation, shared.sequence)


def test_accepts_torch_and_lists():
    ref = window_perplexities(SUP, prompt_len=4)
    for values in (torch.tensor(SUP, dtype=torch.float32), SUP.tolist()):
        got = window_perplexities(values, prompt_len=4)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-6)
            assert a.dtype == np.float64 and a.shape == (2,)


def test_empty_prompt_window_and_bounds():
    ppl = window_perplexities(SUP, prompt_len=1)  # a one-token prompt scores nothing
    assert np.isnan(ppl.prompt).all()
    np.testing.assert_allclose(ppl.continuation, ppl.sequence)
    assert (window_perplexities(SUP, prompt_len=1, shared_denominator=True).prompt == 1.0).all()
    for bad in (0, 7):
        with pytest.raises(ValueError, match="prompt_len"):
            window_perplexities(SUP, prompt_len=bad)
    with pytest.raises(ValueError, match="mask shape"):
        window_perplexities(SUP, prompt_len=3, mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="batch, positions"):
        window_perplexities(SUP[0], prompt_len=3)


def test_windows_follow_the_sample_on_pythia_length_rows():
    # A 2,049-token row: the sample is tokens [0, 64), so the continuation is tokens 32..63
    # (columns 31..62) however long the row is, and the whole row has its own column.
    rng = np.random.default_rng(2)
    sup = rng.exponential(2.0, size=(3, 2048))
    sup[:, 63:] += 5.0  # the rest of the row must not leak into the sample's windows
    ppl = window_perplexities(sup, prompt_len=32, k=32)
    np.testing.assert_allclose(ppl.prompt, np.exp(sup[:, :31].mean(1)))
    np.testing.assert_allclose(ppl.continuation, np.exp(sup[:, 31:63].mean(1)))
    np.testing.assert_allclose(ppl.sequence, np.exp(sup[:, :63].mean(1)))
    np.testing.assert_allclose(ppl.row, np.exp(sup.mean(1)))
    shared = window_perplexities(sup, prompt_len=32, k=32, shared_denominator=True)
    np.testing.assert_allclose(shared.continuation, np.exp(sup[:, 31:63].sum(1) / 63))
    np.testing.assert_allclose(shared.prompt * shared.continuation, shared.sequence)
    # on a 64-token row the sample is the row: the old whole-row definition, unchanged
    short = window_perplexities(sup[:, :63], prompt_len=32, k=32)
    np.testing.assert_allclose(short.sequence, short.row)
    np.testing.assert_allclose(
        short.continuation, window_perplexities(sup[:, :63], prompt_len=32).continuation
    )
