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
    covariates: list[str] | None = None,
    est_method: str | None = None,
    cluster: str | None = None,
    honest: bool | None = None,
    sql: bool = False,
    log: Log = quiet,
) -> list:
    """Fit every (model, metric, units, control group, base period) of the grid; each list not
    given comes from the config's profiles section, and so do the design (covariates, cluster)
    and HonestDiD (`honest` overrides its `enabled`)."""
    from analysis.profiles import Honest, fit_profiles, grid, models_in
    from ingest.hub_suites import model_key

    p = cfg["profiles"]
    h = p.get("honest") or {}
    specs = grid(
        [model_key(m) for m in models] if models else models_in(wh),  # a Hub id or its lake key
        metrics or p["metrics"],
        units or p["units"],
        control_groups or p["control_groups"],
        base_periods or p["base_periods"],
        first_epoch=p["first_epoch"] and not all_epochs,
        covariates=covariates if covariates is not None else p.get("covariates", []),
        est_method=est_method or p.get("est_method", "dr"),
        cluster=cluster if cluster is not None else p.get("cluster"),
    )
    run_honest = h.get("enabled", False) if honest is None else honest
    honest_opts = None
    if run_honest:
        honest_opts = Honest(
            method=h.get("method", "relative_magnitude"),
            test=h.get("test", "C-LF"),
            mbar=tuple(h.get("mbar", (0.5, 1.0, 1.5, 2.0))),
            pre=h.get("pre", 4),
            post=h.get("post", 4),
            metrics=tuple(h.get("metrics", ("sup_seq",))),
        )

    def report(fit):
        s = fit.spec
        inst = fit.attgt.filter(fit.attgt["step"] == fit.attgt["cohort"])
        sig = int(inst["zero_not_in_cband"].fill_null(False).sum())
        design = "" if s.design == "none" else f" ({s.design})"
        log(
            f"profiles: {s.model}/{s.metric}/{s.units}{design}: {len(fit.attgt)} cells, "
            f"t=g {inst['memorisation'].mean():+.4f}, {sig}/{len(inst)} significant"
        )
        if fit.honest is not None:
            avg = fit.honest.filter(fit.honest["target"] == "average")
            method, breakdown = avg["method"][0], avg["breakdown"][0]
            value = "none (no effect under parallel trends)" if breakdown is None else f"{breakdown:.3g}"
            log(f"profiles: {s.model}/{s.metric} HonestDiD breakdown ({method}): {value}")

    return fit_profiles(
        wh,
        specs,
        bootstrap=bootstrap if bootstrap is not None else p["bootstrap"],
        seed=p["seed"],
        regression=p["regression"],
        honest=None if sql else honest_opts,
        sql=sql,
        on_fit=report,
    )


@relabel("profiles")
def validate(
    cfg,
    wh: Warehouse,
    models: list[str] | None = None,
    metrics: list[str] | None = None,
    control_groups: list[str] | None = None,
    bootstrap: int | None = None,
    log: Log = quiet,
) -> list[str]:
    """Each twinned model's DiD against its twin's truth (both control groups by default) into
    the `counterfactual_attgt` and `did_validation` marts; one line per fit."""
    from analysis.profiles.validation import validate as run
    from memlake.core.twins import twins_of

    p = cfg["profiles"]
    twinned = sorted(set(twins_of(wh).values()))
    if not models and not twinned:
        raise ValueError(f"no model in {wh.root} has a twin: train them with `memlake suite train --twins`")
    lines = []
    for model in models or twinned:
        out = run(
            wh,
            model,
            metrics or p["metrics"],
            control_groups or ["never_treated", "not_yet_treated"],
            first_epoch=p["first_epoch"],
            bootstrap=p["bootstrap"] if bootstrap is None else bootstrap,
            seed=p["seed"],
        )
        for r in out.summary.iter_rows(named=True):
            if r["level"] != "attgt" or r["bias"] is None:
                continue
            band = {None: "", 1.0: ", band covers all", 0.0: ", band misses some"}[r["coverage_uniform"]]
            lines.append(
                f"validate: {model}/{r['metric']}/{r['control_group']}: bias {r['bias']:+.4f} "
                f"(|truth| {r['mean_abs_truth']:.4f}), rmse {r['rmse']:.4f}, "
                f"95% coverage {r['coverage_pointwise']:.0%}{band}"
            )
            log(lines[-1])
    return lines


@relabel()
def figures(wh: Warehouse, metric: str = "sup_seq", options: dict | None = None) -> list[Path]:
    """Profile heatmap, instantaneous vs LR, persistent curve, residual bars, cross-size correlation."""
    from analysis.profiles.figures import draw_profiles

    return draw_profiles(wh, metric, options)
