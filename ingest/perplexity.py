"""Prompt / continuation / sample / whole-row perplexity of rows from their per-position surprisal.

Input is the `token_stats` layout: `surprisal[b, j]` (nats) scores token j+1 of row b, so a row
of T tokens has T-1 scored positions. The taxonomy paper scores the 64-token *sample* of a row,
prompt = tokens [0, P) and continuation = [P, P + k), whatever the row's length:

    prompt window        tokens 1..P-1       -> columns 0..P-2       (P-1 scored positions)
    continuation window  tokens P..P+k-1     -> columns P-1..P+k-2   (k scored positions)
    sequence (sample)    tokens 1..P+k-1     -> columns 0..P+k-2     (P+k-1 scored positions)
    row                  tokens 1..T-1       -> every column         (T-1 scored positions)

`k=None` runs the continuation to the end of the row (then sequence == row). Default: each
window is normalised by its own number of scored positions, ppl = exp(mean surprisal over the
window). `shared_denominator=True` is the taxonomy paper's variant (semantic-memorization
`inference.py`): the prompt, continuation and sequence sums are divided by the sample's number of
scored positions, so prompt * continuation == sequence (there: 31 + 32 positions over 63).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Perplexities(NamedTuple):
    prompt: np.ndarray  # float64 [B]
    continuation: np.ndarray  # float64 [B]
    sequence: np.ndarray  # float64 [B], the sample: prompt + continuation
    row: np.ndarray  # float64 [B], every scored position of the row


def window_perplexities(
    surprisal,
    prompt_len: int,
    k: int | None = None,
    *,
    mask=None,
    shared_denominator: bool = False,
) -> Perplexities:
    """Per-row perplexities of `surprisal` [B, T-1] (numpy, torch or nested lists): prompt
    [0, prompt_len), continuation [prompt_len, prompt_len + k) (clipped to the row).

    `mask` [B, T-1] (bool, optional) keeps only the positions where it is True, e.g. to drop
    padding; counts then come from the mask. A window with no scored position has perplexity
    NaN per-window, and 1.0 under the shared denominator (an empty sum).
    """
    sup = _as_2d(surprisal, np.float64)
    n_scored = sup.shape[1]
    if not 1 <= prompt_len <= n_scored:
        raise ValueError(
            f"prompt_len must be in 1..{n_scored} for rows of {n_scored + 1} tokens, got {prompt_len}"
        )
    keep = np.ones(sup.shape, dtype=bool) if mask is None else _as_2d(mask, bool)
    if keep.shape != sup.shape:
        raise ValueError(f"mask shape {keep.shape} differs from surprisal shape {sup.shape}")
    sup = np.where(keep, sup, 0.0)
    if k is not None and k < 1:
        raise ValueError(f"k must be a positive number of continuation tokens, got {k}")
    cut = prompt_len - 1  # first continuation column
    end = n_scored if k is None else min(cut + k, n_scored)  # one past the last sample column
    sums = (sup[:, :cut].sum(1), sup[:, cut:end].sum(1), sup[:, :end].sum(1), sup.sum(1))
    counts = (keep[:, :cut].sum(1), keep[:, cut:end].sum(1), keep[:, :end].sum(1), keep.sum(1))
    if shared_denominator:
        counts = (counts[2],) * 3 + counts[3:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return Perplexities(*(np.exp(s / c) for s, c in zip(sums, counts)))


def _as_2d(values, dtype) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, any device
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 2:
        raise ValueError(f"expected a [batch, positions] array, got shape {arr.shape}")
    return arr
