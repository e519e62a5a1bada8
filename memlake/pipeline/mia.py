"""Membership inference: the attack battery into the `mia_scores` and `mia_metrics` marts."""

from __future__ import annotations

from memlake.core import settings
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.pipeline._stage import Log, quiet, relabel


def default_references(suite: settings.Suite) -> dict[str, str]:
    """Each suite model's reference: the smallest other model of the suite (MIMIR's reference
    attack calibrates by a model trained on similar data; a smaller one is the usual choice)."""
    size = {m.name: m.layers * m.hidden_size**2 for m in suite.models}
    return {m: min((o for o in size if o != m), key=lambda o: (size[o], o)) for m in size if len(size) > 1}


@relabel("mia")
def run(
    cfg,
    wh: Warehouse,
    models: list[str] | None = None,
    steps: list[int] | None = None,
    reference: dict[str, str] | None = None,
    bootstrap: int | None = None,
    log: Log = quiet,
) -> list[str]:
    """Every attack at every checkpoint with members and non-members (or at `steps`); one line per
    model: each attack's AUC at the last step."""
    from analysis.mia import MiaSpec, run_mia, scored_models
    from ingest.hub_suites import model_key

    s = settings.of(cfg)
    scored = scored_models(wh)
    refs = {m: r for m, r in default_references(s.suite).items() if r in scored}
    refs.update(s.mia.reference)
    refs.update(reference or {})
    unknown = sorted({r for r in refs.values() if r not in scored} | (set(reference or {}) - scored))
    if unknown:
        raise MemlakeError(f"no token statistics for model(s) {unknown} (reference or subject)")
    spec = MiaSpec(
        bootstrap=s.mia.bootstrap if bootstrap is None else bootstrap,
        seed=s.mia.seed,
        blind_folds=s.mia.blind_folds,
        reference=refs,
    )
    lines = []

    def report(model, metrics):
        last = metrics.filter(metrics["step"] == metrics["step"].max())
        rows = last.drop_nulls("auc").iter_rows(named=True)
        aucs = ", ".join(f"{r['attack']} {r['auc']:.3f}" for r in rows)
        lines.append(f"mia: {model}@{last['step'][0]}: AUC {aucs}")
        log(lines[-1])

    run_mia(wh, spec, [model_key(m) for m in models] if models else None, steps, on_model=report)
    return lines
