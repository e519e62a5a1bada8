"""The profile fit's design frame: text covariates as indicators, null clusters as their own."""

from __future__ import annotations

import polars as pl
import pytest

from analysis.profiles.fitting import ProfileSpec, design_frame


def _panel(document) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "instance_id": [1, 1, 2, 2, 3, 3],
            "step": [0, 48, 0, 48, 0, 48],
            "source": ["prose", "prose", "code", "code", "prose", "prose"],
            "avg_frequency": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
            "document": document,
        }
    )


def test_text_covariates_become_indicators_of_all_but_the_commonest_level():
    spec = ProfileSpec("m", covariates=("source", "avg_frequency"), cluster="document")
    out, names = design_frame(_panel([7, 7, None, None, 7, 7]), spec)
    assert names == ["source=code", "avg_frequency"]
    assert out["source=code"].to_list() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    # a row without a document (a never-trained or synthetic row) is a cluster of its own
    assert out["document"].to_list() == ["7", "7", "own-2", "own-2", "7", "7"]
    assert spec.design == "dr(source+avg_frequency);cluster=document"


def test_a_cluster_column_null_everywhere_warns():
    """A Hub import has no document ids: clustering on them clusters nothing, and says so."""
    spec = ProfileSpec("m", cluster="document")
    with pytest.warns(UserWarning, match=r"cluster column 'document' is null for every row"):
        out, _ = design_frame(_panel(pl.Series([None] * 6, dtype=pl.Int64)), spec)
    assert out["document"].n_unique() == 3
