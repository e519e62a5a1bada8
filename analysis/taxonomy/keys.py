"""How the taxonomy marts' files carry their options: key columns inside every file."""

from __future__ import annotations

import polars as pl


def split_key(split: str | None) -> str:
    """The marts' `split` column: the split a run kept, `all` for every row."""
    return "all" if split is None else split


def pair_keys(model: str, step: int, split: str | None, perplexity: str, **more) -> dict:
    """The key columns of one (model, step) fit, with its further options (`more`) last, in the
    order the file key joins them."""
    return {"model": model, "step": step, "split": split_key(split), "perplexity": perplexity, **more}


def keyed(frame: pl.DataFrame, **keys) -> pl.DataFrame:
    """Key columns first, so every mart file holds its own options (ints as BIGINT, like the marts)."""
    lits = [pl.lit(v, dtype=pl.Int64 if type(v) is int else None).alias(k) for k, v in keys.items()]
    return frame.select(*lits, pl.all())
