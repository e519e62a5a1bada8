"""`memlake profiles`: DiD memorisation profiles into marts, and their figures."""

from __future__ import annotations

from typing import Annotated

import typer

from memlake.cli._options import ConfigOpt, ListOpt, ModelsOpt, SetOpt, WarehouseOpt, say, split
from memlake.core.paths import Warehouse
from memlake.pipeline import profiles, setup

app = typer.Typer(no_args_is_help=True, help="Memorisation profiles: DiD ATT(g,t) fits and figures.")


@app.command("fit")
def fit_command(
    models: ModelsOpt = None,
    metrics: ListOpt = None,
    units: ListOpt = None,
    control_groups: ListOpt = None,
    base_periods: ListOpt = None,
    all_epochs: Annotated[bool, typer.Option(help="Use every checkpoint, not only the first epoch.")] = False,
    bootstrap: Annotated[int | None, typer.Option(help="Bootstrap draws (0: analytic only).")] = None,
    covariates: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated per-instance columns (instances, instance_features) to adjust for."
        ),
    ] = None,
    est_method: Annotated[str | None, typer.Option(help="With covariates: dr, ipw or reg.")] = None,
    cluster: Annotated[
        str | None, typer.Option(help="A per-instance column whose rows share a bootstrap weight.")
    ] = None,
    honest: Annotated[
        bool | None, typer.Option("--honest/--no-honest", help="HonestDiD robust sets and breakdown values.")
    ] = None,
    sql: Annotated[
        bool,
        typer.Option(
            help="Fit from sufficient statistics DuckDB computes (panels larger than memory; analytic)."
        ),
    ] = False,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """ATT(g,t), aggregations, placebo tests and the pyfixest cross-check into the profiles marts."""
    cfg, wh = setup(config, set_, warehouse)
    lists = [split(v) for v in (metrics, units, control_groups, base_periods)]
    profiles.fit(
        cfg, wh, models, *lists, all_epochs=all_epochs, bootstrap=bootstrap, covariates=split(covariates),
        est_method=est_method, cluster=cluster, honest=honest, sql=sql, log=say,
    )  # fmt: skip


@app.command("validate")
def validate_command(
    models: ModelsOpt = None,
    metrics: ListOpt = None,
    control_groups: Annotated[
        str | None, typer.Option(help="Comma-separated (default: never_treated,not_yet_treated).")
    ] = None,
    bootstrap: Annotated[int | None, typer.Option(help="Bootstrap draws (0: no uniform band).")] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """The DiD against the truth of each model's counterfactual twin (`suite train --twins`): bias,
    RMSE and coverage into the counterfactual_attgt and did_validation marts."""
    cfg, wh = setup(config, set_, warehouse)
    profiles.validate(cfg, wh, models, split(metrics), split(control_groups), bootstrap, log=say)


@app.command("figures")
def figures_command(
    metric: Annotated[str, typer.Option(help="Outcome metric.")] = "sup_seq",
    units: Annotated[
        str, typer.Option(help="single (natural rows seen once), duplicated, backdoor, noise, templated, all")
    ] = "single",
    control_group: Annotated[str, typer.Option()] = "never_treated",
    base_period: Annotated[str, typer.Option()] = "varying",
    all_epochs: Annotated[bool, typer.Option(help="Figures of the all-epochs fit.")] = False,
    design: Annotated[str, typer.Option(help="The fit's design key ('none': no covariates).")] = "none",
    warehouse: WarehouseOpt = None,
):
    """Profile heatmap, instantaneous vs LR, persistent curve, residual bars, cross-size correlation."""
    opts = dict(
        units=units, control_group=control_group, base_period=base_period, first_epoch=not all_epochs,
        design=design,
    )  # fmt: skip
    for path in profiles.figures(Warehouse.at(warehouse), metric, opts):
        say(f"figure: {path}")
