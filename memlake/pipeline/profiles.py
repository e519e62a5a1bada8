"""Memorisation profiles: DiD ATT(g,t) fits into marts, and their figures."""

from __future__ import annotations

from pathlib import Path

from memlake.core.paths import Warehouse
from memlake.pipeline._stage import Log, quiet, relabel


@relabel("profiles")
def fit(
    cfg,
    wh: Warehouse,
    models: list[str] | None = None,
    metrics: list[str] | None = None,
    units: list[str] | None = None,
    control_groups: list[str] | None = None,
    base_periods: list[str] | None = None,
    all_epochs: bool = False,
    bootstrap: int | None = None,
    log: Log = quiet,
) -> list:
    """Fit every (model, metric, units, control group, base period) of the grid; each list not
    given comes from the config's profiles section."""
    from analysis.profiles import fit_profiles, grid, models_in
    from ingest.hub_suites import model_key

    p = cfg["profiles"]
    specs = grid(
        [model_key(m) for m in models] if models else models_in(wh),  # a Hub id or its lake key
        metrics or p["metrics"],
        units or p["units"],
        control_groups or p["control_groups"],
        base_periods or p["base_periods"],
        first_epoch=p["first_epoch"] and not all_epochs,
    )

    def report(fit):
        s = fit.spec
        inst = fit.attgt.filter(fit.attgt["step"] == fit.attgt["cohort"])
        sig = int(inst["zero_not_in_cband"].fill_null(False).sum())
        log(
            f"profiles: {s.model}/{s.metric}/{s.units}: {len(fit.attgt)} cells, "
            f"t=g {inst['memorisation'].mean():+.4f}, {sig}/{len(inst)} significant"
        )

    return fit_profiles(
        wh,
        specs,
        bootstrap=bootstrap if bootstrap is not None else p["bootstrap"],
        seed=p["seed"],
        regression=p["regression"],
        on_fit=report,
    )


@relabel()
def figures(wh: Warehouse, metric: str = "sup_seq", options: dict | None = None) -> list[Path]:
    """Profile heatmap, instantaneous vs LR, persistent curve, residual bars, cross-size correlation."""
    from analysis.profiles.figures import draw_profiles

    return draw_profiles(wh, metric, options)
