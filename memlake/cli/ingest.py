"""`memlake ingest`: scoring jobs over checkpoints, and Hub imports."""

from __future__ import annotations

from typing import Annotated

import typer

from memlake.cli._options import (
    ConfigOpt,
    ExecOpt,
    ExecutorOpt,
    ModelsOpt,
    SetOpt,
    WarehouseOpt,
    key_values,
    say,
)
from memlake.core.paths import Warehouse
from memlake.pipeline import scoring, setup

app = typer.Typer(no_args_is_help=True, help="Scoring jobs over checkpoints, and Hub imports.")

RevisionsOpt = Annotated[
    str,
    typer.Option(
        "--revisions", "-r", help="step0,step16 | step0-step64 (local grid) | step0-step64:16 | all"
    ),
]
ShardsOpt = Annotated[int, typer.Option("--shards", help="Split each checkpoint's panel into N units.")]


@app.command("token-stats")
def token_stats_command(
    models: ModelsOpt = None,
    revisions: RevisionsOpt = "all",
    shards: ShardsOpt = 1,
    executor: ExecutorOpt = "local",
    exec_opt: ExecOpt = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """Per-token surprisal, rank, entropy and second moment of log p per (checkpoint, panel instance)."""
    cfg, wh = setup(config, set_, warehouse)
    say(scoring.score("token_stats", cfg, wh, models, revisions, shards, executor, key_values(exec_opt)))


@app.command("extraction")
def extraction_command(
    models: ModelsOpt = None,
    revisions: RevisionsOpt = "all",
    shards: ShardsOpt = 1,
    executor: ExecutorOpt = "local",
    exec_opt: ExecOpt = None,
    prompt_len: Annotated[int | None, typer.Option(help="Prompt tokens P.")] = None,
    gen_len: Annotated[int | None, typer.Option(help="Greedy tokens G.")] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """k-extractable memorisation: greedy continuation of a P-token prompt for G tokens."""
    cfg, wh = setup(config, set_, warehouse)
    extra = scoring.extraction_options(cfg, prompt_len, gen_len)
    say(
        scoring.score("extraction", cfg, wh, models, revisions, shards, executor, key_values(exec_opt), extra)
    )


@app.command("import")
def import_command(
    kind: Annotated[
        str,
        typer.Argument(
            help="pile-deduped-subset | pythia-deduped-stats-raw | pythia-memorized-evals | "
            "pile-deduped-pythia-random-sampled | pile-duped-pythia-random-sampled | semantic-filters | "
            "semantic-filters-intermediate"
        ),
    ],
    source: Annotated[
        str | None,
        typer.Argument(help="Local folder with the Hub files (default: download the public Hub dataset)."),
    ] = None,
    sizes: Annotated[
        list[str] | None,
        typer.Option("--size", help="stats-raw, memorized-evals, semantic-filters: model sizes."),
    ] = None,
    steps: Annotated[list[int] | None, typer.Option("--step", help="stats-raw: checkpoint steps.")] = None,
    splits: Annotated[
        list[str] | None, typer.Option("--split", help="memorized-evals, semantic-filters: splits.")
    ] = None,
    scheme: Annotated[
        str | None,
        typer.Option(help="memorized-evals, semantic-filters: training stream, deduped (default) or duped."),
    ] = None,
    stream_rows: Annotated[
        int | None, typer.Option(help="Rows of the training stream (default Pythia's 143,000 x 1,024).")
    ] = None,
    swap_matches: Annotated[
        bool, typer.Option(help="semantic-filters: read *_templates as semantic, *_snowclones as textual.")
    ] = False,
    warehouse: WarehouseOpt = None,
):
    """Import a public Hugging Face dataset into the lake tables the embedded pipeline writes."""
    opts = dict(sizes=sizes or None, steps=steps or None, splits=splits or None, scheme=scheme,
                stream_rows=stream_rows, swap_matches=swap_matches or None)  # fmt: skip
    say(scoring.import_hub(kind, source, Warehouse.at(warehouse), **opts))
