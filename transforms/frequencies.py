"""Corpus token frequencies and the six per-sequence frequency statistics of Prashanth et al. 2024.

The corpus frequency of a token id is its number of occurrences in the whole training stream
(Pythia: 146,432,000 rows x 2049 tokens, so counts need int64). A sample's statistics are taken
over the corpus frequencies of its tokens (all 64 of them): max, mean, min, median, p25, p75.
A sample with a rare token has a low `min_frequency`; that is the paper's recollection signal.

Quantiles, over the L values of a row:
- `median_frequency` is exact: the middle value, or the mean of the two middle values for even L
  (Spark's exact `median`, numpy's `np.median`);
- `p25_frequency` / `p75_frequency` default to `method="inverted_cdf"`: the value of rank
  ceil(q * L), an element of the row. That is what Spark's `percentile_approx` returns when it
  keeps every sample, as it does for 64 values at its default accuracy (the original pipeline).
  Any numpy quantile `method` can be asked for instead (e.g. "linear", numpy's default).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

STAT_COLUMNS = (
    "max_frequency",
    "avg_frequency",
    "min_frequency",
    "median_frequency",
    "p25_frequency",
    "p75_frequency",
)

_BINCOUNT_CHUNK = 1 << 24  # tokens per bincount call: bounds the intp copy bincount makes (128 MiB)


def token_counts(stream: np.ndarray | Iterable[np.ndarray], vocab_size: int) -> np.ndarray:
    """Occurrences of every token id 0..vocab_size-1 in `stream`, as int64 [vocab_size].

    `stream` is an array of token ids of any shape (a [R, L] row matrix, a flat memmap) or an
    iterable of such arrays (chunks read one at a time). Ids outside 0..vocab_size-1 are an error.
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    chunks = [stream] if isinstance(stream, np.ndarray) else stream
    for chunk in chunks:
        flat = np.asarray(chunk).reshape(-1)
        for start in range(0, flat.size, _BINCOUNT_CHUNK):
            part = flat[start : start + _BINCOUNT_CHUNK]
            if part.size and (part.min() < 0 or part.max() >= vocab_size):
                raise ValueError(f"token ids must lie in 0..{vocab_size - 1}")
            counts += np.bincount(part, minlength=vocab_size)
    return counts


def sequence_frequencies(tokens: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Corpus frequency of every token of `tokens` [N, L] (the `frequencies` list column), int64 [N, L]."""
    return np.asarray(counts, dtype=np.int64)[np.asarray(tokens)]


def frequency_stats(
    tokens: np.ndarray,
    counts: np.ndarray,
    *,
    quantile_method: str = "inverted_cdf",
    chunk_rows: int = 1 << 16,
) -> dict[str, np.ndarray]:
    """The six statistics of the corpus frequencies of each row of `tokens` [N, L], keyed by column name.

    `max_frequency`/`min_frequency` are int64, the others float64, each of shape [N]. Rows are
    processed `chunk_rows` at a time (one sort per chunk), so memory is bounded by the chunk.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"tokens must be a non-empty [N, L] matrix, got shape {tokens.shape}")
    n, length = tokens.shape
    out = {
        c: np.empty(n, dtype=np.int64 if c in ("max_frequency", "min_frequency") else np.float64)
        for c in STAT_COLUMNS
    }
    for start in range(0, n, chunk_rows):
        rows = slice(start, start + chunk_rows)
        freq = np.sort(sequence_frequencies(tokens[rows], counts), axis=1)
        out["min_frequency"][rows] = freq[:, 0]
        out["max_frequency"][rows] = freq[:, -1]
        out["avg_frequency"][rows] = freq.mean(axis=1)
        mid = length // 2
        if length % 2:
            out["median_frequency"][rows] = freq[:, mid]
        else:  # the mean of the two middle values, in float64 like np.median
            out["median_frequency"][rows] = (freq[:, mid - 1].astype(np.float64) + freq[:, mid]) / 2
        q = np.quantile(freq, [0.25, 0.75], axis=1, method=quantile_method)
        out["p25_frequency"][rows], out["p75_frequency"][rows] = q[0], q[1]
    return out
