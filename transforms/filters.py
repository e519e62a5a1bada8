"""Filters: features of a sample that its decoded text alone decides, registered by name.

The taxonomy paper's pipeline (Prashanth et al. 2024) runs a list of such filters over every
sample. Here each is a function from the samples' texts to its columns, declared with the columns
it adds to the `instance_features` contract; the features job applies every registered filter.
Features that need more than the text (duplicates and frequencies over the training stream, the
code-vs-NL classifier, matches against a corpus) are steps of the features job instead
(`ingest/features.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from memlake.core.registry import Registry
from transforms import huffman
from transforms.templating import templating_flags

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class Filter:
    name: str
    columns: tuple[str, ...]  # what it adds, in contract order
    fn: Callable[[Sequence[str]], Columns]


FILTERS: Registry[Filter] = Registry("filter")


def register(name: str, columns: tuple[str, ...]) -> Callable[[Callable], Callable]:
    def deco(fn: Callable[[Sequence[str]], Columns]) -> Callable:
        FILTERS.add(name, Filter(name, columns, fn))
        return fn

    return deco


@register("templating", ("is_incrementing", "is_repeating", "is_templating"))
def templating(texts: Sequence[str]) -> Columns:
    flags = np.array([templating_flags(t) for t in texts], dtype=bool).reshape(len(texts), 2)
    return {"is_incrementing": flags[:, 0], "is_repeating": flags[:, 1], "is_templating": flags.any(axis=1)}


@register("huffman", ("huffman_coding_length",))
def huffman_length(texts: Sequence[str]) -> Columns:
    return {"huffman_coding_length": huffman.coding_lengths(texts)}


def apply_filters(texts: Sequence[str], names: Sequence[str] | None = None) -> Columns:
    """Every registered filter's columns (or those of `names`), one value per text; a filter that
    returns other columns than it declared, or the wrong number of rows, is a programming error."""
    out: Columns = {}
    for name in names if names is not None else FILTERS.names():
        f = FILTERS.get(name)
        cols = f.fn(texts)
        if tuple(cols) != f.columns or any(len(v) != len(texts) for v in cols.values()):
            raise RuntimeError(f"filter {name!r} returned {sorted(cols)}, declared {list(f.columns)}")
        out.update(cols)
    return out
