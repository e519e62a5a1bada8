"""`memlake mitigate`: method sweeps, the TinyMem study, loss landscapes and figures."""

from __future__ import annotations

from typing import Annotated

import typer

from memlake.cli._options import ConfigOpt, ExecOpt, ExecutorOpt, SetOpt, WarehouseOpt, key_values, say, split
from memlake.core.paths import Warehouse
from memlake.pipeline import mitigation, setup

app = typer.Typer(no_args_is_help=True, help="Mitigation: TinyMem and suite sweeps, figures.")

VariantOpt = Annotated[
    str | None,
    typer.Option(help="TinyMem variant: math | language (the corpus's instances rows); default: config."),
]


@app.command("sweep")
def sweep_command(
    study: Annotated[
        str,
        typer.Argument(
            help="tinymem, suite, or a model with extraction rows: its lake key (pythia-70m-deduped), "
            "Hub id (EleutherAI/pythia-70m-deduped) or folder of step<N> checkpoints."
        ),
    ] = "tinymem",
    methods: Annotated[
        str | None,
        typer.Option(help="Comma-separated method names (default: the config's mitigation.methods)."),
    ] = None,
    step: Annotated[
        int | None,
        typer.Option(help="Checkpoint step of a model study (default: its latest with extraction rows)."),
    ] = None,
    max_per_method: Annotated[
        int | None, typer.Option(help="Grid points per method (default: config).")
    ] = None,
    rank: Annotated[int, typer.Option(help="This worker's index (shard the run list).")] = 0,
    world_size: Annotated[int, typer.Option(help="Number of workers.")] = 1,
    executor: ExecutorOpt = "local",
    exec_opt: ExecOpt = None,
    variant: VariantOpt = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Run mitigation methods over their grids; every run is a row in the mitigation_runs lake table.
    A model study follows the mitigation paper's Pythia protocol (mitigation.suite in the config).
    --rank/--world-size pick this worker's share of the runs; the executor runs that share."""
    cfg, wh = setup(config, set_, warehouse)
    mitigation.set_variant(cfg, variant)
    args = (split(methods), max_per_method, rank, world_size, step)
    mitigation.sweep(cfg, wh, study, *args, log=say, executor=executor, executor_options=key_values(exec_opt))


@app.command("oracle")
def oracle_command(
    study: Annotated[
        str, typer.Argument(help="tinymem, suite, or a model name with extraction rows.")
    ] = "tinymem",
    step: Annotated[int | None, typer.Option(help="Checkpoint step of a model study.")] = None,
    variant: VariantOpt = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Train a study's retrain oracle (its base model trained again without the forget set) and
    write its mitigation_oracles row. A sweep does this before its first run."""
    cfg, wh = setup(config, set_, warehouse)
    mitigation.set_variant(cfg, variant)
    say(mitigation.oracle(cfg, wh, study, step, log=say))


@app.command("study")
def study_command(
    max_per_method: Annotated[
        int | None, typer.Option(help="Grid points per method (default: the study section).")
    ] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """The TinyMem backdoor comparison of the mitigation paper (config `mitigation.study`): a better
    trained base model under its own name, the study's methods over their grids, then the best run
    per method from the mitigation_best_runs view and the figures."""
    cfg, wh = setup(config, set_, warehouse)
    for line in mitigation.study(cfg, wh, max_per_method, log=say):
        say(line)


@app.command("figures")
def figures_command(warehouse: WarehouseOpt = None):
    """Pareto plot per study, time cost and per-duplication-class effects of the best runs."""
    for p in mitigation.figures(Warehouse.at(warehouse)):
        say(f"figure: {p}")


@app.command("landscape")
def landscape_command(
    study: Annotated[
        str, typer.Argument(help="tinymem, suite, or a model name with extraction rows.")
    ] = "tinymem",
    points: Annotated[int | None, typer.Option(help="Grid points per axis (default: config).")] = None,
    radius: Annotated[
        float | None, typer.Option(help="alpha, beta in [-radius, radius] (default: config).")
    ] = None,
    variant: VariantOpt = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Filter-normalised random-plane loss landscape (Li et al. 2018) of the unedited model, a good
    and a bad edit (re-run from mitigation_runs, else from the config's landscape section)."""
    cfg, wh = setup(config, set_, warehouse)
    mitigation.set_variant(cfg, variant)
    say(mitigation.landscape(cfg, wh, study, points, radius, log=say))
