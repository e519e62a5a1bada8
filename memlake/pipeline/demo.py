"""The demo: every stage on the embedded default, in order, as one loop."""

from __future__ import annotations

import time
from collections.abc import Callable

from memlake.core.paths import Warehouse
from memlake.pipeline import cross, mia, mitigation, profiles, scoring, suite, taxonomy, warehouse
from memlake.pipeline._stage import Log, quiet


def _suite(cfg, wh: Warehouse, log: Log) -> str:
    return ", ".join(r["model"] for r in suite.train(cfg, wh, log=log))


def _profiles(cfg, wh: Warehouse, log: Log) -> str:
    profiles.fit(cfg, wh, log=log)
    figures = profiles.figures(wh)
    return f"fitted; {len(figures)} figures in {figures[0].parent}"


def _validation(cfg, wh: Warehouse, log: Log) -> str:
    from memlake.core.twins import twins_of

    if not twins_of(wh):
        return "no twins (suite.twins is off in this config)"
    return f"{len(profiles.validate(cfg, wh, log=log))} fits against the truth"


def _mitigation(cfg, wh: Warehouse, log: Log) -> str:
    rows = mitigation.sweep(cfg, wh, "tinymem", log=log) + mitigation.sweep(cfg, wh, "suite", log=log)
    landscape = mitigation.landscape(cfg, wh, "tinymem", log=log)
    figures = mitigation.figures(wh, landscapes=False)
    return f"{len(rows)} runs; {len(figures)} figures in {figures[0].parent}; {landscape}"


Stage = Callable[..., str]  # (cfg, wh, log) -> a summary line

# Extraction precedes the features (their sample is the extracted rows' model and step), and the
# features precede the build (the taxonomy marts join them).
STAGES: list[tuple[str, Stage]] = [
    ("corpus", lambda cfg, wh, log: suite.corpus(cfg, wh)),
    ("suite", _suite),
    ("token statistics over every checkpoint", lambda cfg, wh, log: scoring.score("token_stats", cfg, wh)),
    (
        "extraction over every checkpoint",
        lambda cfg, wh, log: scoring.score("extraction", cfg, wh, extra=scoring.extraction_options(cfg)),
    ),
    ("taxonomy features", lambda cfg, wh, log: taxonomy.features(cfg, wh)),
    ("dbt build", lambda cfg, wh, log: warehouse.build_for(cfg, wh)),
    ("profiles", _profiles),
    ("DiD against the twins' truth", _validation),
    ("membership inference", lambda cfg, wh, log: "; ".join(mia.run(cfg, wh, log=log))),
    ("taxonomy", lambda cfg, wh, log: taxonomy.analyses(cfg, wh, search=True)),
    ("mitigation", _mitigation),
    ("cross-analyses", lambda cfg, wh, log: cross.run(cfg, wh, log=log)),
]


def run(cfg, wh: Warehouse, log: Log = quiet) -> list[str]:
    """Run every stage, logging `[i/N] stage: summary`; the lines that say where outputs are."""
    t0 = time.perf_counter()
    for i, (name, stage) in enumerate(STAGES, 1):
        log(f"[{i}/{len(STAGES)}] {name}: {stage(cfg, wh, log)}")
    index = warehouse.report(wh)
    return [
        f"done in {time.perf_counter() - t0:.0f}s",
        f"lake:        {wh.lake}",
        f"checkpoints: {wh.suite}",
        f"tokenizer:   {wh.tokenizer}",
        f"catalog:     {wh.catalog}",
        "try:         memlake query "
        '"select split, artifact, count(*) from instances group by all order by all"',
        f"report:      {index}",
        f"explore:     memlake serve --warehouse {wh.root}   (a browser on http://127.0.0.1:8765/)",
    ]
