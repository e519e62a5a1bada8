"""Generators for the planted templated rows (incrementing counters, repeating spans).

They are built as token ids whose decoded text is what the taxonomy's text-based detectors
flag, in a layout a small model can *learn* to complete (the reconstruction category) rather
than having to store each row.
"""

from __future__ import annotations

import numpy as np

WORDS = (
    "alpha",
    "beta",
    "gamma",
    "delta",
    "value",
    "index",
    "item",
    "entry",
    "record",
    "node",
    "field",
    "token",
    "layer",
    "block",
    "shard",
    "batch",
    "step",
    "row",
    "column",
    "table",
    "page",
    "line",
    "chapter",
    "section",
    "figure",
    "note",
    "key",
)


def counter_row(
    rng: np.random.Generator, piece, digit_ids: list[int], row_len: int, max_start: int
) -> np.ndarray:
    """Token ids of a counter ("Item 47.\nItem 48.\n...", "[47] [48] ...", "47, 48, ...").

    Every digit is its own token and the text around the number is tokenised once per row, so
    each item has the same token layout: the model can learn the successor of a digit (with the
    carry) and the layout from many rows, instead of BPE's irregular multi-digit merges, which at
    a 2,048-token vocabulary make a successor rule unlearnable. Random layouts and starts keep
    two rows from sharing a 32-token window.
    """
    word = str(rng.choice(WORDS))
    word = word.capitalize() if rng.random() < 0.5 else word
    kind = int(rng.integers(0, 3))
    if kind == 0:
        before, after = "", str(rng.choice([", ", " ", "\n", "; ", " | "]))
    elif kind == 1:
        before, after = f"{word} ", str(rng.choice([".\n", ", ", ":\n", "; "]))
    else:
        before, after = str(rng.choice(["[", "(", "#"])), str(rng.choice(["] ", ") ", "\n"]))
    pre, post = piece(before), piece(after)
    out: list[int] = []
    n = int(rng.integers(0, max_start))
    while len(out) < row_len:
        out += pre + [digit_ids[int(d)] for d in str(n)] + post
        n += 1
    return np.asarray(out[:row_len], dtype=np.int32)


def repeating_row(span: np.ndarray, row_len: int) -> np.ndarray:
    """`span` repeated to `row_len` tokens. A row with period p holds the 32-gram that starts at
    offset 32 (the continuation) (row_len - 32) // p + 1 times, so a long enough period keeps it
    at most 5 times in the stream (the recitation threshold) even when the row is seen in two
    epochs (p >= 17 for 64-token rows): completing it is copying from the context, not recalling
    a duplicated row."""
    return np.resize(np.asarray(span, dtype=np.int32), row_len)
