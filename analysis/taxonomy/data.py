"""Reading the taxonomy marts through SQL: the one place that knows their names and join.

`sequence_features` (every feature, one row per model x step x instance) joined with
`taxonomy` (the category of every row, memorised or not: the paper's `base_taxonomy`).
Analyses receive plain polars frames from here, so they stay testable on synthetic data.
"""

from __future__ import annotations

import duckdb
import polars as pl

from memlake.core import query
from memlake.core.twins import twin_models

SKIPPED = ("text", "prompt_text", "tokens", "frequencies")  # heavy and unused by the analyses

# analysis name -> mart column, per perplexity variant: `sequence_features` holds the per-window
# perplexities (prompt_ / continuation_ / sequence_perplexity) and the paper's shared-denominator
# variants (*_shared); the analyses call the continuation's `generation_perplexity`, as the paper.
PERPLEXITIES = {
    "per_window": {
        "prompt_perplexity": "prompt_perplexity",
        "generation_perplexity": "continuation_perplexity",
    },
    "shared": {
        "prompt_perplexity": "prompt_perplexity_shared",
        "generation_perplexity": "continuation_perplexity_shared",
    },
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rows_sql(con: duckdb.DuckDBPyConnection, perplexity: str = "per_window") -> str:
    """The row source: every feature under the analyses' names, with the row's category.

    The category comes from `taxonomy` (unless the features mart carries one). Perplexity
    columns are mapped per `perplexity` ('per_window', or 'shared' for parity with the paper);
    a mart that already names a column `generation_perplexity` is read as it is.
    """
    if perplexity not in PERPLEXITIES:
        raise ValueError(f"perplexity must be one of {', '.join(PERPLEXITIES)}, got {perplexity!r}")
    columns = [r[0] for r in con.execute("describe sequence_features").fetchall()]
    renames = {name: source for name, source in PERPLEXITIES[perplexity].items() if source != name}
    if perplexity == "per_window" and "generation_perplexity" in columns:
        renames.pop("generation_perplexity", None)  # the mart already uses the analyses' name
    missing = [source for source in renames.values() if source not in columns]
    if missing and perplexity == "shared":
        raise ValueError(f"sequence_features has no {', '.join(missing)}: no shared-denominator perplexities")
    renames = {name: source for name, source in renames.items() if source in columns}
    dropped = set(SKIPPED) | set(renames) | set(renames.values())
    select = [f"f.{_quote(c)}" for c in columns if c not in dropped]
    select += [f"f.{_quote(source)} as {_quote(name)}" for name, source in renames.items()]
    if "category" in columns:
        return f"select {', '.join(select)} from sequence_features as f"
    return f"""select {", ".join(select)}, t.category
        from sequence_features as f
        join taxonomy as t using (model, step, instance_id)"""


def _where(model: str | None, step: int | None, split: str | None) -> tuple[str, dict]:
    clauses, params = [], {}
    for name, value in (("model", model), ("step", step), ("split", split)):
        if value is not None:
            clauses.append(f"{name} = ${name}")
            params[name] = value
    return (" where " + " and ".join(clauses)) if clauses else "", params


def require_marts(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    """Fail with a hint when a mart the analysis reads has not been built yet."""
    have = query.view_names(con)
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(f"marts {', '.join(missing)} are missing: run `memlake build` first")


def rows(
    con: duckdb.DuckDBPyConnection,
    *,
    model: str | None = None,
    step: int | None = None,
    split: str | None = "train",
    columns: str = "*",
    perplexity: str = "per_window",
) -> pl.DataFrame:
    """Feature rows with their category, filtered by model/step/split (None: no filter)."""
    require_marts(con, "sequence_features", "taxonomy")
    where, params = _where(model, step, split)
    source = rows_sql(con, perplexity)
    return query.frame(
        con, f"select {columns} from ({source}){where} order by model, step, instance_id", params
    )


def pairs(con: duckdb.DuckDBPyConnection, split: str | None = "train") -> list[tuple[str, int]]:
    """Every (model, step) the marts hold, in order."""
    require_marts(con, "sequence_features", "taxonomy")
    where, params = _where(None, None, split)
    frame = query.frame(
        con, f"select distinct model, step from ({rows_sql(con)}){where} order by 1, 2", params
    )
    return list(frame.iter_rows())


def main_pair(con: duckdb.DuckDBPyConnection, split: str | None = "train") -> tuple[str, int]:
    """The (model, step) with the most memorised rows: the paper's single-model figures use the
    largest model at its last checkpoint, which is this pair in any suite that memorises more
    with scale and training."""
    require_marts(con, "sequence_features", "taxonomy")
    where, params = _where(None, None, split)
    twins = sorted(twin_models(con))
    if twins:  # a twin never trained on part of the panel: not the suite's main pair
        where += (" and " if where else " where ") + "model not in (select unnest($twins))"
        params["twins"] = twins
    frame = query.frame(
        con,
        f"""select model, step from ({rows_sql(con)}){where}
            group by model, step order by count(*) filter (where memorised) desc, model, step limit 1""",
        params,
    )
    if frame.is_empty():
        raise ValueError("the taxonomy marts hold no rows")
    return frame.row(0)


def select_pairs(
    con: duckdb.DuckDBPyConnection, model: str | None, step: int | None, split: str | None = "train"
) -> list[tuple[str, int]]:
    """The pairs a run covers: every pair (twins left out: their training counts are wrong for
    their held-out rows), narrowed by model and/or step when given (a twin by name too)."""
    twins = twin_models(con) if model is None else set()
    out = [
        (m, s) for m, s in pairs(con, split) if model in (None, m) and step in (None, s) and m not in twins
    ]
    if not out:
        raise ValueError(f"no rows for model={model!r} step={step!r} split={split!r}")
    return out
