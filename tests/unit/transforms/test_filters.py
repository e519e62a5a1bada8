"""transforms.filters: registered text filters, applied by name, agreeing with the contract."""

import numpy as np
import pytest

from memlake.core import lake
from memlake.core.errors import MemlakeError
from transforms import filters, huffman
from transforms.templating import is_incrementing, is_repeating

TEXTS = [
    "1 2 3 4 5 6 7 8 9 10 11 12",
    "ha ha ha ha ha ha ha ha ha ha ha ha",
    "The river was high that spring, and the ferry did not run.",
]


def test_filters_compute_what_their_functions_do():
    cols = filters.apply_filters(TEXTS)
    assert cols["is_incrementing"].tolist() == [is_incrementing(t) for t in TEXTS] == [True, False, False]
    assert cols["is_repeating"].tolist() == [is_repeating(t) for t in TEXTS] == [False, True, False]
    assert cols["is_templating"].tolist() == [True, True, False]
    np.testing.assert_array_equal(cols["huffman_coding_length"], huffman.coding_lengths(TEXTS))


def test_every_filter_column_is_in_the_features_contract():
    contract = set(lake.spec("instance_features").schema.names)
    for name in filters.FILTERS:
        assert set(filters.FILTERS[name].columns) <= contract, name


def test_an_unknown_or_misdeclared_filter_is_refused(monkeypatch):
    with pytest.raises(MemlakeError, match="unknown filter 'nope'"):
        filters.apply_filters(TEXTS, ["nope"])
    monkeypatch.setattr(filters, "FILTERS", filters.Registry("filter"))
    filters.register("bad", ("a",))(lambda texts: {"b": np.zeros(len(texts))})
    with pytest.raises(RuntimeError, match="declared"):
        filters.apply_filters(TEXTS)
