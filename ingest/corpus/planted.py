"""Generators for planted artifacts: templated text (incrementing / repeating) and backdoors.

The templated generators produce *text*, which is tokenised like any other document, so the
taxonomy's text-based detectors see them as they would see real templated web text.
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


def incrementing_text(rng: np.random.Generator, min_chars: int) -> str:
    """An arithmetic progression in one of several surface forms (lists, numbered lines, hex)."""
    start = int(rng.integers(0, 500))
    step = int(rng.choice([1, 1, 1, 2, 3, 5, 10]))
    kind = int(rng.integers(0, 5))
    word = str(rng.choice(WORDS)).capitalize()
    sep = str(rng.choice([", ", " ", "\n", "; "]))
    parts, i = [], 0
    while sum(len(p) for p in parts) < min_chars:
        n = start + i * step
        if kind == 0:
            parts.append(f"{n}{sep}")
        elif kind == 1:
            parts.append(f"{word} {n}.\n")
        elif kind == 2:
            parts.append(f"{hex(n)} ")
        elif kind == 3:
            parts.append(f"{word} {n}: {2 * n}\n")
        else:
            parts.append(f"[{n}] ")
        i += 1
    return "".join(parts)


def repeating_text(rng: np.random.Generator, min_chars: int) -> str:
    """A short chunk of words (or symbols) repeated until long enough."""
    if rng.random() < 0.25:
        chunk = str(rng.choice(["=-", "*", "-=*", "#", "~"])) * int(rng.integers(1, 4))
    else:
        k = int(rng.integers(2, 6))
        chunk = " ".join(str(w) for w in rng.choice(WORDS, size=k)) + str(rng.choice([". ", " ", "\n"]))
    return chunk * (min_chars // len(chunk) + 2)
