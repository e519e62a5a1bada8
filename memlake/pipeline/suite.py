"""The embedded corpus and model suite, Hub suite registration and the offline replica."""

from __future__ import annotations

from pathlib import Path

from memlake.core import config as configuration
from memlake.core import settings
from memlake.core.paths import Warehouse
from memlake.pipeline._stage import Log, quiet


def corpus(cfg, wh: Warehouse, force: bool = False) -> str:
    """Build the tokenizer and the `instances` table; the summary line."""
    from ingest.corpus.build import build_corpus

    s = settings.of(cfg)
    r = build_corpus(s.corpus, s.order, s.seed, wh, force=force)
    configuration.save(cfg, wh.suite / "config.yaml")
    return f"{r['rows']} instances{' (cached)' if r['skipped'] else ''}"


def train(
    cfg, wh: Warehouse, models: list[str] | None = None, twins: bool = False, log: Log = quiet
) -> list[dict]:
    """Train the suite models (finished ones are skipped), with `twins` (or `suite.twins`) each
    model's counterfactual twin after it; one record per model."""
    from ingest.suite.train import select_models, train_suite
    from ingest.suite.twins import Draw

    s = settings.of(cfg)
    draw = Draw(s.corpus, s.ingest.panel) if twins or s.suite.twins else None
    select_models(s.suite, wh, models, twins=draw is not None)  # a bad name writes nothing
    configuration.save(cfg, wh.suite / "config.yaml")
    out = []
    for r in train_suite(s.suite, s.order, s.corpus.row_len, s.seed, wh, models, draw):
        note = "already trained" if r.get("skipped") else (
            f"{r['steps']} steps, {r['tokens_per_s']:.0f} tokens/s, final loss {r['final_loss']:.3f}"
        )  # fmt: skip
        log(f"{r['model']}: {note}")
        out.append(r)
    return out


def register(wh: Warehouse, hub_id: str, force: bool = False, **facts) -> str:
    """Register a Hub model's step<N> revisions in `checkpoints`; the summary line."""
    from ingest.hub_suites import register_suite

    r = register_suite(wh, hub_id, force=force, **facts)
    what = "already registered" if r["skipped"] else "registered"
    return f"{r['hub_id']}: {what} as model {r['model']!r} ({r['checkpoints']} checkpoints)"


def replica(out: Path) -> list[str]:
    """Build the offline Pythia-shaped replica; the lines that say where its parts are."""
    from ingest.replica import build_replica

    info = build_replica(out)
    return [
        f"replica: {out} ({info['panel']['train']} + {info['panel']['validation']} panel rows)",
        f"export HF_HOME={info['hf_home']} HF_HUB_OFFLINE=1",
        *(f"{name}: {path}" for name, path in info["artifacts"].items()),
        f"stream: {info['stream']}",
    ]


LIST_SQL = (
    "select model, count(*) as checkpoints, max(step) as last_step, "
    "round(min(train_loss), 3) as best_loss from checkpoints group by model order by model"
)
