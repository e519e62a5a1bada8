"""Scoring jobs over checkpoints (token statistics, extraction) and Hub imports."""

from __future__ import annotations

from memlake.core.paths import Warehouse


def score(
    job: str,
    cfg,
    wh: Warehouse,
    models: list[str] | None = None,
    revisions: str = "all",
    shards: int = 1,
    executor: str = "local",
    executor_options: dict | None = None,
    extra: dict | None = None,
) -> str:
    """Plan `job`'s units over the models' checkpoints, run them, and summarise."""
    from ingest.executors import execute
    from ingest.jobs import plan_units

    opts = {
        "seed": cfg["seed"],
        "batch_size": cfg["ingest"]["batch_size"],
        "panel": cfg["ingest"]["panel"],
        "runtime": cfg.get("runtime") or {},  # recorded in each partition's manifest
        **(extra or {}),
    }
    names = models or default_models(job, cfg, wh)
    units = [u for name in names for u in plan_units(job, name, revisions, wh, shards, opts)]
    results = execute(units, executor, **(executor_options or {}))
    done = [r for r in results if not r["skipped"]]
    tokens = sum(r["tokens"] for r in done)
    secs = sum(r["seconds"] for r in done)
    return f"{job}: {len(done)} partitions written, {len(results) - len(done)} already complete" + (
        f", {tokens / secs:.0f} tokens/s" if secs else ""
    )


def default_models(job: str, cfg, wh: Warehouse) -> list[str]:
    """The models a job scores when none are named: the config's suite models and, for token
    statistics, their trained twins (a twin is scored over the same panel as its model, for the
    true effect of training; the other jobs feed per-model analyses, which skip twins)."""
    from memlake.core.twins import twins_of

    names = [m["name"] for m in cfg["suite"]["models"]]
    if job != "token_stats":
        return names
    twins = twins_of(wh)
    return names + [t for m in names for t, of in sorted(twins.items()) if of == m]


def extraction_options(cfg, prompt_len: int | None = None, gen_len: int | None = None) -> dict:
    """The extraction job's (P, G): the command line's, else the config's."""
    ex = cfg["ingest"]["extraction"]
    return {"prompt_len": prompt_len or ex["prompt_len"], "gen_len": gen_len or ex["gen_len"]}


def import_hub(kind: str, source: str | None, wh: Warehouse, **opts) -> str:
    """Import a public Hugging Face dataset into the lake; the summary line."""
    from ingest.hub_import import import_dataset

    s = import_dataset(kind, source, wh, **opts)
    return (
        f"{s.kind} -> {s.table}: {s.written} partitions written ({s.rows} rows), {s.skipped} already complete"
    )
