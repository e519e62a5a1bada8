"""The taxonomy of memorisation: recitation / reconstruction / recollection analyses.

    from analysis.taxonomy import run_shares, run_correlations, run_kl, run_models, run_search, draw_taxonomy
    run_shares(wh)                              # taxonomy_shares, taxonomy_code_nl, taxonomy_p_memorised
    run_correlations(wh)                        # taxonomy_correlations
    run_kl(wh)                                  # taxonomy_kl
    run_models(wh, protocol="leakage_free")     # taxonomy_model_metrics, _weights, _tests (LRT, Wald)
    run_search(wh, 0, 810, shard_size=90)       # taxonomy_search (one file per shard, resumable)
    run_main_search(wh)                         # the same, at the main (model, step) only
    run_search(wh, shard_size=90, workers=4)    # the shards as units on an executor (local here)
    draw_taxonomy(wh)                           # PNGs under wh.figures / "taxonomy"

Every run_* reads the `sequence_features` + `taxonomy` marts through SQL (`data`), hands polars
frames to a pure function (`shares`, `correlations`, `kl`, `model`, `search`) and writes one
mart file per option set with `memlake.core.marts.write` (key columns inside the file). The pure
functions take frames of the marts' shape, so `synthetic` data exercises them without a lake.
Pairs: model/step None means every (model, step) in the marts; split "train" (default) keeps
trained instances only (None: every row); perplexity "per_window" (default) or "shared" (the
paper's shared-denominator prompt / generation perplexities, for parity).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from analysis.taxonomy import data
from analysis.taxonomy.correlations import correlation_table, xi_correlation
from analysis.taxonomy.features import MODEL_FEATURES, SEARCH_FEATURES, SEED
from analysis.taxonomy.keys import keyed, pair_keys, split_key
from analysis.taxonomy.kl import kl_by_duplicates
from analysis.taxonomy.model import PROTOCOLS, ModelResult, fit_models
from analysis.taxonomy.search import best, candidate_count, candidates, search
from analysis.taxonomy.shards import SearchShard, plan_search
from analysis.taxonomy.shares import category_shares, code_nl_breakdown, memorised_given_code_nl
from analysis.views import SQL_VIEWS
from ingest.executors import execute
from memlake.core import marts, query
from memlake.core.paths import Warehouse

if TYPE_CHECKING:
    from analysis.taxonomy.figures import draw_taxonomy

MARTS = marts.declare(
    "taxonomy_shares",
    "taxonomy_code_nl",
    "taxonomy_p_memorised",
    "taxonomy_correlations",
    "taxonomy_kl",
    "taxonomy_model_metrics",
    "taxonomy_model_weights",
    "taxonomy_model_tests",
    "taxonomy_search",
)

__all__ = [
    "MODEL_FEATURES",
    "PROTOCOLS",
    "SEARCH_FEATURES",
    "ModelResult",
    "SearchShard",
    "best",
    "candidate_count",
    "candidates",
    "category_shares",
    "code_nl_breakdown",
    "correlation_table",
    "draw_taxonomy",
    "fit_models",
    "kl_by_duplicates",
    "memorised_given_code_nl",
    "plan_search",
    "run_correlations",
    "run_kl",
    "run_models",
    "run_main_search",
    "run_search",
    "run_shares",
    "search",
    "search_results",
    "xi_correlation",
]


def _pairs_and_rows(wh: Warehouse, model, step, split, perplexity, columns: str = "*"):
    con = query.connect(wh, views=SQL_VIEWS)
    try:
        for m, s in data.select_pairs(con, model, step, split):
            yield m, s, data.rows(con, model=m, step=s, split=split, columns=columns, perplexity=perplexity)
    finally:
        con.close()


def run_shares(wh: Warehouse, *, split: str | None = "train") -> dict[str, pl.DataFrame]:
    """Category counts and shares (per-model and the paper's pooled computation), the code/NL
    breakdown per category and P(memorised | code / NL), aggregated in SQL."""
    con = query.connect(wh, views=SQL_VIEWS)
    try:
        data.require_marts(con, "sequence_features", "taxonomy")
        where, params = data._where(None, None, split)
        base = f"({data.rows_sql(con)}){where}"
        counts = query.frame(
            con,
            f"""select model, step, category, count(*) filter (where memorised) as count
                from {base} group by all""",
            params,
        )
        code_nl = query.frame(
            con,
            f"""select model, step, category, code_nl, count(*) as rows,
                       count(*) filter (where memorised) as memorised
                from {base} group by all""",
            params,
        )
    finally:
        con.close()
    key = split_key(split)
    out = {
        "taxonomy_shares": pl.concat([category_shares(counts), category_shares(counts, pooled=True)]),
        "taxonomy_code_nl": code_nl_breakdown(code_nl),
        "taxonomy_p_memorised": memorised_given_code_nl(code_nl),
    }
    for name, frame in out.items():
        out[name] = keyed(frame, split=key)
        marts.write(wh, name, marts.file_key(key), out[name])
    return out


def run_correlations(
    wh: Warehouse,
    *,
    model: str | None = None,
    step: int | None = None,
    split: str | None = "train",
    perplexity: str = "per_window",
    seed: int = 0,
) -> pl.DataFrame:
    """Pearson / Spearman / xi of every feature vs the label, per group x subset, per (model, step)."""
    frames = []
    for m, s, rows in _pairs_and_rows(wh, model, step, split, perplexity):
        keys = pair_keys(m, s, split, perplexity)
        frame = keyed(correlation_table(rows, seed=seed), **keys)
        marts.write(wh, "taxonomy_correlations", marts.file_key(*keys.values()), frame)
        frames.append(frame)
    return pl.concat(frames)


def run_kl(
    wh: Warehouse,
    *,
    model: str | None = None,
    step: int | None = None,
    split: str | None = "train",
    perplexity: str = "per_window",
    methods: tuple[str, ...] = ("histogram", "vector"),
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pl.DataFrame:
    """KL-vs-duplicates per (model, step) and method (histogram: default; vector: the original's)."""
    frames = []
    columns = "memorised, sequence_duplicates, generation_perplexity"
    for m, s, rows in _pairs_and_rows(wh, model, step, split, perplexity, columns):
        for method in methods:
            kl = kl_by_duplicates(rows, method=method, n_bootstrap=n_bootstrap, seed=seed)
            keys = pair_keys(m, s, split, perplexity, method=method)
            frame = keyed(kl.drop("method"), **keys)
            marts.write(wh, "taxonomy_kl", marts.file_key(*keys.values()), frame)
            frames.append(frame)
    return pl.concat(frames)


def run_models(
    wh: Warehouse,
    *,
    protocol: str = "leakage_free",
    model: str | None = None,
    step: int | None = None,
    split: str | None = "train",
    perplexity: str = "per_window",
    n_subsets: int = 100,
    ece_bins: int = 5,
    seed: int = SEED,
) -> dict[tuple[str, int], ModelResult]:
    """Baseline and taxonomic LRs per (model, step): metrics (mean +- std over subsets), weights,
    and the LRT / Wald tests of the taxonomic model against the baseline (`likelihood.model_tests`)."""
    results = {}
    for m, s, rows in _pairs_and_rows(wh, model, step, split, perplexity):
        res = fit_models(rows, protocol, n_subsets=n_subsets, ece_bins=ece_bins, seed=seed)
        keys = pair_keys(m, s, split, perplexity, protocol=protocol)
        key = marts.file_key(*keys.values())
        marts.write(wh, "taxonomy_model_metrics", key, keyed(res.metrics, **keys, ece_bins=ece_bins))
        marts.write(wh, "taxonomy_model_weights", key, keyed(res.weights, **keys))
        marts.write(wh, "taxonomy_model_tests", key, keyed(res.tests, **keys))
        results[m, s] = res
    return results


def run_search(
    wh: Warehouse,
    start: int = 0,
    end: int | None = None,
    *,
    model: str | None = None,
    step: int | None = None,
    split: str | None = "train",
    perplexity: str = "per_window",
    protocol: str = "published",
    shard_size: int | None = None,
    resume: bool = True,
    n_subsets: int = 100,
    features: tuple[str, ...] = SEARCH_FEATURES,
    seed: int = SEED,
    executor: str = "local",
    **options,
) -> pl.DataFrame:
    """Greedy taxonomic search over candidates [start, end) per (model, step).

    The range is cut into shards of `shard_size` candidates (default: one shard), each a
    `SearchShard` unit run on `executor` with its `options` (`ingest.executors`) and written as
    its own file of the `taxonomy_search` mart keyed by (model, step, split, protocol, range).
    resume=True skips shards whose file exists, so an interrupted run continues where it stopped
    and several processes can split a range between them. Returns every row of the range.
    """
    con = query.connect(wh, views=SQL_VIEWS)
    try:
        pairs = data.select_pairs(con, model, step, split)
    finally:
        con.close()
    shards = plan_search(
        wh, pairs, start, end, shard_size, split=split, perplexity=perplexity, protocol=protocol,
        n_subsets=n_subsets, features=features, seed=seed, force=not resume,
    )  # fmt: skip
    execute(shards, executor, **options)
    return pl.concat([pl.read_parquet(u.path) for u in shards]).sort("model", "step", "candidate")


def run_main_search(
    wh: Warehouse, *, n_subsets: int = 100, protocol: str = "published", **kwargs
) -> pl.DataFrame:
    """`run_search` over every candidate at the main pair (`data.main_pair`: the (model, step)
    with the most memorised rows, the largest model's final checkpoint in a suite that memorises
    more with scale and training; the paper searches Pythia 12b's). Empty when no pair holds a
    memorised training row: the thresholds are quantiles of the memorised rows."""
    con = query.connect(wh, views=SQL_VIEWS)
    try:
        model, step = data.main_pair(con, kwargs.get("split", "train"))
        memorised = query.frame(
            con,
            f"select count(*) filter (where memorised) as n from ({data.rows_sql(con)}) "
            "where model = $model and step = $step and split = 'train'",
            {"model": model, "step": step},
        )["n"][0]
    finally:
        con.close()
    if not memorised:
        return pl.DataFrame()
    return run_search(wh, model=model, step=step, n_subsets=n_subsets, protocol=protocol, **kwargs)


def search_results(wh: Warehouse, *, protocol: str = "published") -> pl.DataFrame:
    """Every searched candidate in the warehouse (all shards), best first per (model, step)."""
    con = query.connect(wh, views=SQL_VIEWS)
    try:
        data.require_marts(con, "taxonomy_search")
        return query.frame(
            con,
            """select * from taxonomy_search where protocol = $protocol
               order by model, step, skipped, f1 desc nulls last, candidate""",
            {"protocol": protocol},
        )
    finally:
        con.close()


def __getattr__(name: str) -> Any:
    # matplotlib is only needed for the figures: import it on first use of `draw_taxonomy`
    if name == "draw_taxonomy":
        from analysis.taxonomy.figures import draw_taxonomy

        return draw_taxonomy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
