"""Taxonomy of memorisation: features per instance, categories, the taxonomic model and search."""

from __future__ import annotations

from memlake.core.paths import Warehouse
from memlake.pipeline._stage import relabel


def features(
    cfg, wh: Warehouse, force: bool = False, tokenizer: str | None = None, stream=None, match_corpus=None
) -> str:
    """Run the features job; a one-line summary of what it did."""
    from ingest.features import build_features
    from memlake.core import settings

    s = settings.of(cfg)
    r = build_features(
        s.taxonomy,
        s.ingest.panel,
        s.seed,
        wh,
        force=force,
        tokenizer=tokenizer,
        stream=stream,
        match_corpus=match_corpus,
    )
    if r["skipped"]:
        return f"{r['rows']} instances (cached)"
    secs = r["seconds"]
    return (
        f"{r['rows']} instances in {sum(secs.values()):.0f}s (embedding {secs['embedding']:.0f}s), "
        f"duplicates over {r['stream_rows']} stream rows in {secs['duplicates']:.0f}s, "
        f"code-vs-NL held-out accuracy {r['held_out_accuracy']:.3f}"
    )


def stream_source(stream: str | None, row_len: int | None, shards: int, executor: str, options: dict):
    """The training stream to count over, or None for the warehouse's own training rows."""
    if stream is None:
        return None
    from ingest.stream_counts import StreamSource

    return StreamSource(stream, row_len, shards, executor, tuple(sorted(options.items())))


@relabel("taxonomy")
def analyses(
    cfg,
    wh: Warehouse,
    protocols: tuple[str, ...] = ("leakage_free", "published"),
    model: str | None = None,
    step: int | None = None,
    search: bool = False,
) -> str:
    """Shares, correlations, KL, both model protocols (every checkpoint, or `model`/`step`),
    with `search` the partition search at the main (model, step), and the figures; a
    one-line summary."""
    import analysis.taxonomy as tax
    from analysis.taxonomy.model import final_tests_summary
    from ingest.hub_suites import model_key

    t = cfg["taxonomy"]
    model = model_key(model) if model else None
    shares = tax.run_shares(wh)["taxonomy_shares"]
    tax.run_correlations(wh)
    tax.run_kl(wh, n_bootstrap=t["kl_bootstrap"])
    for protocol in protocols:
        fits = tax.run_models(wh, protocol=protocol, model=model, step=step, n_subsets=t["n_subsets"])
    found = tax.run_main_search(wh, n_subsets=t["n_subsets"]) if search else None
    figures = tax.draw_taxonomy(wh)
    last = shares.filter((shares["computation"] == "per_model") & shares["share"].is_not_nan())
    last = last.filter(last["step"] == last["step"].max()) if len(last) else last
    parts = [
        f"{r['model']}@{r['step']} {r['category']} {r['share']:.0f}%"
        for r in last.sort("model", "category").iter_rows(named=True)
    ]
    return (
        f"{len(figures)} figures; memorised shares: "
        + (", ".join(parts) or "no memorised sequences")
        + f"; tests (taxonomy_model_tests): {final_tests_summary(fits)}"
        + (f"; {search_summary(found)}" if found is not None else "")
    )


def search_summary(found) -> str:
    """The best partition per searched (model, step), or why none was searched."""
    if found.is_empty():
        return "partition search: not run (no memorised training row)"
    import analysis.taxonomy as tax

    parts = []
    for (m, s), rows in found.group_by(["model", "step"], maintain_order=True):
        evaluated = int((~rows["skipped"]).sum())
        try:
            b = tax.best(rows)
        except ValueError:
            parts.append(f"{m}@{s} all {len(rows)} candidates skipped")
            continue
        parts.append(
            f"{m}@{s} {b['first_feature']} >= q{b['first_quantile']:.2f}, then {b['second_feature']} "
            f">= q{b['second_quantile']:.2f}: F1 {b['f1']:.3f} ({evaluated} of {len(rows)} candidates fitted)"
        )
    return "partition search (taxonomy_search): " + "; ".join(parts)


@relabel("taxonomy search")
def search(
    cfg,
    wh: Warehouse,
    start: int = 0,
    end: int | None = None,
    shard_size: int | None = None,
    executor: str = "local",
    executor_options: dict | None = None,
):
    """Candidates [start, end) of the greedy partition search, in units of `shard_size`
    candidates run on `executor`; the best three partitions so far."""
    import analysis.taxonomy as tax

    n = cfg["taxonomy"]["n_subsets"]
    tax.run_search(
        wh, start, end, n_subsets=n, shard_size=shard_size, executor=executor, **(executor_options or {})
    )
    return tax.search_results(wh).head(3)
