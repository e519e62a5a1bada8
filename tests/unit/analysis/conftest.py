"""Fixtures of the analysis tests."""

import polars as pl
import pytest

from analysis.taxonomy import synthetic
from memlake.core.paths import Warehouse


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """A warehouse holding synthetic taxonomy marts, as dbt names their columns; (warehouse, frames)."""
    wh = Warehouse.at(tmp_path_factory.mktemp("wh-taxonomy"))
    wh.marts.mkdir(parents=True)
    frames = synthetic.marts(
        1200, models=("suite-s", "suite-m"), steps=(1000, 2000), seed=6, validation_share=0.1
    )
    # the dbt mart's naming: per-window continuation_perplexity, *_shared parity variants, text
    frames["sequence_features"] = (
        frames["sequence_features"]
        .rename({"generation_perplexity": "continuation_perplexity"})
        .with_columns(
            (pl.col("prompt_perplexity") * 2).alias("prompt_perplexity_shared"),
            (pl.col("continuation_perplexity") * 2).alias("continuation_perplexity_shared"),
            pl.lit("the text").alias("text"),
        )
    )
    for name, frame in frames.items():
        frame.write_parquet(wh.marts / f"{name}.parquet")
    return wh, frames
