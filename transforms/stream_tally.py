"""One pass over a training stream's rows for the corpus statistics of the taxonomy features.

For every [r, L] chunk of stream rows, read once: the k-token windows equal to each query window
(`sequence_duplicates`, never crossing rows), the rows equal to each whole query row
(`whole_sequence_duplicates`), and the occurrences of every token id (corpus frequencies). All
three are sums over chunks, so a stream split into row ranges can be counted range by range
and the partial tallies added up (the sharded counts of ingest/stream_counts.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from transforms.duplicates import DuplicateCounter, bounded_map


@dataclass
class Tally:
    windows: np.ndarray | None  # int64 [N]: stream windows equal to each query window
    rows: np.ndarray | None  # int64 [M]: stream rows equal to each whole query row
    tokens: np.ndarray | None  # int64 [max id + 1]: occurrences of each token id
    rows_read: int
    tokens_read: int


def tally(
    chunks: Iterable[np.ndarray],
    windows: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    *,
    count_tokens: bool = True,
    threads: int = 1,
) -> Tally:
    """Counts of the query `windows` [N, k] and whole `rows` [M, L] in the stream `chunks`, and its
    token counts, in one read of each chunk; None for what is not asked.

    Every chunk must be an [r, L] integer matrix with L equal to the query rows' length (a whole row
    can only equal a stream row of its own length). `threads` > 1 counts chunks in parallel
    (numpy releases the GIL), at most 2 * threads chunks in flight.
    """
    win = DuplicateCounter(windows) if windows is not None else None
    whole = DuplicateCounter(rows, first_only=True) if rows is not None else None
    width = None if rows is None else np.asarray(rows).shape[1]

    def work(chunk: np.ndarray):
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or not np.issubdtype(chunk.dtype, np.integer):
            raise ValueError(
                f"stream chunks must be [rows, L] integer matrices, got {chunk.dtype} {chunk.shape}"
            )
        if width is not None and chunk.shape[1] != width:
            raise ValueError(f"stream rows have {chunk.shape[1]} tokens, the whole query rows {width}")
        if count_tokens and chunk.size and np.issubdtype(chunk.dtype, np.signedinteger) and chunk.min() < 0:
            raise ValueError(f"negative token id {int(chunk.min())} in the stream")
        return (
            win.matches(chunk) if win is not None else None,
            whole.matches(chunk) if whole is not None else None,
            np.bincount(chunk.reshape(-1)) if count_tokens else None,
            chunk.shape,
        )

    tokens = np.zeros(0, dtype=np.int64)
    n_rows = n_tokens = 0
    for found_w, found_r, counts, shape in bounded_map(work, chunks, threads):
        if win is not None:
            win.add(found_w)
        if whole is not None:
            whole.add(found_r)
        if counts is not None:
            if len(counts) > len(tokens):
                tokens = np.pad(tokens, (0, len(counts) - len(tokens)))
            tokens[: len(counts)] += counts
        n_rows += shape[0]
        n_tokens += shape[0] * shape[1]
    return Tally(
        windows=win.counts() if win is not None else None,
        rows=whole.counts() if whole is not None else None,
        tokens=tokens if count_tokens else None,
        rows_read=n_rows,
        tokens_read=n_tokens,
    )
