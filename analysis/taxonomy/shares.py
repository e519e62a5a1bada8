"""How memorised sequences split into the three categories, across model size and checkpoint.

Shares are computed per (model, step): each model's memorised set is its own denominator.
The paper's appendix table computed its 12b / final-checkpoint cells over every model at that
checkpoint pooled (6,942,844 / 8,210,192 = 84.56 % recitation instead of 12b's own 83.71 %),
which also manufactured the "sudden rise in reconstruction at 86 % of training". `pooled=True`
reproduces that computation for parity; it is never the default.

Everything here works from counts, so the warehouse path can aggregate in SQL and the row-level
helpers (`category_counts`, `code_nl_counts`) only exist for frames already in memory.
"""

from __future__ import annotations

import polars as pl

from analysis.taxonomy.features import CATEGORIES, CODE_NL

KEYS = ("model", "step")


def category_counts(rows: pl.DataFrame) -> pl.DataFrame:
    """Memorised rows per (model, step, category); input: one row per (model, step, instance)."""
    return (
        rows.filter(pl.col("memorised"))
        .group_by(*KEYS, "category")
        .agg(pl.len().cast(pl.Int64).alias("count"))
    )


def _complete(counts: pl.DataFrame, levels: dict[str, tuple[str, ...]]) -> pl.DataFrame:
    """Every (model, step) x level combination, 0 where it has no rows (so shares sum to 100 and
    plots have every bar)."""
    grid = counts.select(*KEYS).unique()
    for column, values in levels.items():
        grid = grid.join(pl.DataFrame({column: list(values)}), how="cross")
    on = [*KEYS, *levels]
    return (
        grid.join(counts.select(*on, "count"), on=on, how="left")
        .with_columns(pl.col("count").fill_null(0).cast(pl.Int64))
        .sort(*on)
    )


def category_shares(counts: pl.DataFrame, *, pooled: bool = False) -> pl.DataFrame:
    """Percent of memorised rows per category, per (model, step).

    counts: model, step, category, count (memorised rows). Returns model, step, category, count,
    total, share (percent), computation ('per_model' or 'pooled').

    pooled=True: the paper's computation for its largest model at the final checkpoint: numerator
    and denominator summed over every model present at that step, the same share on every
    model's row. Where a step holds one model (the paper's intermediate 12b checkpoints) it
    equals the per-model share.
    """
    full = _complete(counts, {"category": CATEGORIES})
    if pooled:
        full = full.with_columns(
            pl.col("count").sum().over("step", "category").alias("_num"),
            pl.col("count").sum().over("step").alias("total"),
        )
    else:
        full = full.with_columns(
            pl.col("count").alias("_num"), pl.col("count").sum().over(*KEYS).alias("total")
        )
    return full.select(
        *KEYS,
        "category",
        "count",
        "total",
        (100.0 * pl.col("_num") / pl.col("total")).alias("share"),
        pl.lit("pooled" if pooled else "per_model").alias("computation"),
    )


def code_nl_counts(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows and memorised rows per (model, step, category, code_nl), every row (not only memorised)."""
    return rows.group_by(*KEYS, "category", "code_nl").agg(
        pl.len().cast(pl.Int64).alias("rows"), pl.col("memorised").sum().cast(pl.Int64).alias("memorised")
    )


def code_nl_breakdown(counts: pl.DataFrame) -> pl.DataFrame:
    """Share of code vs natural language among confidently classified memorised rows, per category
    and over all categories ('all'), per (model, step).

    counts: model, step, category, code_nl, memorised (as from `code_nl_counts`). 'uncertain'
    rows are left out, as in the paper (its classifier leaves most rows near 0.5).
    Returns model, step, category, code_nl, count, total, share (percent of code + nl).
    """
    confident = counts.filter(pl.col("code_nl").is_in(list(CODE_NL)))
    per_category = confident.group_by(*KEYS, "category", "code_nl").agg(
        pl.col("memorised").sum().alias("count")
    )
    overall = per_category.group_by(*KEYS, "code_nl").agg(pl.col("count").sum())
    both = pl.concat([per_category, overall.with_columns(pl.lit("all").alias("category"))], how="diagonal")
    out = _complete(both, {"category": (*CATEGORIES, "all"), "code_nl": CODE_NL})
    out = out.with_columns(pl.col("count").sum().over(*KEYS, "category").alias("total"))
    return out.select(
        *KEYS,
        "category",
        "code_nl",
        "count",
        "total",
        pl.when(pl.col("total") > 0).then(100.0 * pl.col("count") / pl.col("total")).alias("share"),
    ).sort(*KEYS, "category", "code_nl")


def memorised_given_code_nl(counts: pl.DataFrame) -> pl.DataFrame:
    """P(memorised | code), P(memorised | nl) (and | uncertain) over every row of a (model, step).

    The paper's contrast (12b: 7.27 % of code vs 0.29 % of natural language memorised).
    Returns model, step, code_nl, rows, memorised, p_memorised.
    """
    return (
        counts.group_by(*KEYS, "code_nl")
        .agg(pl.col("rows").sum(), pl.col("memorised").sum())
        .with_columns((pl.col("memorised") / pl.col("rows")).alias("p_memorised"))
        .sort(*KEYS, "code_nl")
    )
