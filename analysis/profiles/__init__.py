"""Memorisation profiles: ATT(g, t) fits from the `sequence_panel` view into marts.

    from analysis.profiles import fit_profiles, grid
    fits = fit_profiles(wh, grid(models=["suite-s"], metrics=["sup_seq", "acc_seq"]))

Then, in SQL (`memlake query`): profiles_attgt, profiles_aggregates, profiles_pretrend,
profiles_regression (marts) and the views profiles_instantaneous / _persistent / _residual /
_full / _correlation (analysis/profiles/views/*.sql). `figures.draw_profiles(wh)` plots them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from itertools import product

from analysis.profiles.fitting import (
    DEFAULT_UNITS,
    UNIT_SETS,
    Honest,
    ProfileFit,
    ProfileSpec,
    first_epoch_end,
    fit,
    fit_sql,
    panel_frame,
    write_fit,
)
from analysis.profiles.metrics import METRICS, SIGN
from analysis.views import SQL_VIEWS
from memlake.core.paths import Warehouse

__all__ = [
    "DEFAULT_UNITS",
    "METRICS",
    "Honest",
    "SIGN",
    "UNIT_SETS",
    "ProfileFit",
    "ProfileSpec",
    "fit",
    "fit_profiles",
    "grid",
    "models_in",
]


def models_in(wh: Warehouse) -> list[str]:
    """The models of the panel, twins left out (a twin's cohorts are its model's, so they are
    wrong for its held-out rows; fit a twin by naming it)."""
    from memlake.core.query import connect
    from memlake.core.twins import twin_models

    con = connect(wh, views=SQL_VIEWS)
    try:
        models = [
            m for (m,) in con.execute("select distinct model from sequence_panel order by 1").fetchall()
        ]
        twins = twin_models(con)
        return [m for m in models if m not in twins]
    except Exception as e:  # noqa: BLE001 - the view is missing before the first `memlake build`
        raise ValueError(f"no sequence_panel mart in {wh.root} (run `memlake build`): {e}") from None
    finally:
        con.close()


def grid(
    models: Iterable[str],
    metrics: Iterable[str] = ("sup_seq",),
    units: Iterable[str] = (DEFAULT_UNITS,),
    control_groups: Iterable[str] = ("never_treated",),
    base_periods: Iterable[str] = ("varying",),
    first_epoch: bool = True,
    covariates: Iterable[str] = (),
    est_method: str = "dr",
    cluster: str | None = None,
) -> list[ProfileSpec]:
    """Every combination of the options, one spec each (one design for all)."""
    design = dict(covariates=tuple(covariates), est_method=est_method, cluster=cluster or None)
    return [
        ProfileSpec(m, metric, u, cg, bp, first_epoch, **design)
        for m, u, metric, cg, bp in product(models, units, metrics, control_groups, base_periods)
    ]


def fit_profiles(
    wh: Warehouse,
    specs: list[ProfileSpec],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    regression: bool = True,
    honest: Honest | None = None,
    sql: bool = False,
    on_fit: Callable[[ProfileFit], None] | None = None,
) -> list[ProfileFit]:
    """Fit and write every spec; the panel of a (model, units) pair is read once. sql=True fits
    from sufficient statistics that DuckDB computes over sequence_panel (`fit_sql`): the panel
    never enters Python, and the fits are analytic."""
    from memlake.core.query import connect

    con = connect(wh, views=SQL_VIEWS)
    panels, ends, fits = {}, {}, []
    try:
        for spec in specs:
            if sql:
                ends.setdefault(spec.model, first_epoch_end(con, spec.model))
                result = fit_sql(spec, con, epoch_end=ends[spec.model], alpha=alpha)
                write_fit(wh, result)
                fits.append(result)
                if on_fit:
                    on_fit(result)
                continue
            columns = tuple(dict.fromkeys((*spec.covariates, *([spec.cluster] if spec.cluster else []))))
            if (spec.model, spec.units, columns) not in panels:
                panels[spec.model, spec.units, columns] = panel_frame(con, spec.model, spec.units, columns)
                ends[spec.model] = first_epoch_end(con, spec.model)
            try:
                result = fit(
                    spec,
                    panels[spec.model, spec.units, columns],
                    epoch_end=ends[spec.model],
                    bootstrap=bootstrap,
                    seed=seed,
                    alpha=alpha,
                    regression=regression,
                    honest=honest
                    if spec.units == DEFAULT_UNITS and honest and spec.metric in honest.metrics
                    else None,
                )
            except ValueError as e:
                if spec.units == DEFAULT_UNITS:
                    raise
                # a planted set is a handful of rows: too few per cohort is a note, not a failure
                what = f"{spec.model}/{spec.metric}/{spec.units}"
                warnings.warn(f"profiles: no fit for {what}: {e}", stacklevel=2)
                continue
            write_fit(wh, result)
            fits.append(result)
            if on_fit:
                on_fit(result)
    finally:
        con.close()
    return fits
