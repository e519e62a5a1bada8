"""`memlake suite`: the embedded corpus and model suite, Hub suites, the offline replica."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memlake.cli._options import ConfigOpt, SetOpt, WarehouseOpt, say
from memlake.core.paths import Warehouse
from memlake.pipeline import setup, suite

app = typer.Typer(no_args_is_help=True, help="The embedded corpus and model suite.")


@app.command("corpus")
def corpus_command(
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
):
    """Build the tokenizer and the `instances` table (planted artifacts, data order)."""
    cfg, wh = setup(config, set_, warehouse)
    say(f"corpus: {suite.corpus(cfg, wh, force=force)} -> {wh.table('instances')}")


@app.command("train")
def train_command(
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
    models: Annotated[list[str] | None, typer.Option("--model", "-m", help="Train only these.")] = None,
    twins: Annotated[
        bool,
        typer.Option(
            help="Also train each model's counterfactual twin <model>-twin: half the panel's natural "
            "training rows replaced by fresh filler rows (also: --set suite.twins=true)."
        ),
    ] = False,
):
    """Train the suite models (resumable; finished models are skipped)."""
    cfg, wh = setup(config, set_, warehouse)
    suite.train(cfg, wh, models, twins=twins, log=say)


@app.command("register")
def register_command(
    hub_id: Annotated[str, typer.Argument(help="Hub model id, e.g. EleutherAI/pythia-70m-deduped.")],
    batch_size: Annotated[int | None, typer.Option(help="Sequences per optimiser step.")] = None,
    first_epoch_end: Annotated[int | None, typer.Option(help="Last step of the first epoch.")] = None,
    row_len: Annotated[int | None, typer.Option(help="Tokens per training sequence.")] = None,
    max_lr: Annotated[float | None, typer.Option(help="Peak learning rate (for the lr column).")] = None,
    total_steps: Annotated[int | None, typer.Option(help="Training steps (default: last revision).")] = None,
    warmup_fraction: Annotated[float | None, typer.Option(help="Warm-up share of the steps.")] = None,
    min_lr_ratio: Annotated[float | None, typer.Option(help="Cosine floor as a share of the peak.")] = None,
    force: Annotated[bool, typer.Option(help="Replace a registration with other facts.")] = False,
    warehouse: WarehouseOpt = None,
):
    """Write `checkpoints` rows for a Hub model's step<N> revisions (Pythia: from its published
    facts; any other suite: give --batch-size and --first-epoch-end)."""
    facts = dict(batch_size=batch_size, first_epoch_end=first_epoch_end, row_len=row_len,
                 max_lr=max_lr, total_steps=total_steps, warmup_fraction=warmup_fraction,
                 min_lr_ratio=min_lr_ratio)  # fmt: skip
    say(suite.register(Warehouse.at(warehouse), hub_id, force=force, **facts))


@app.command("replica")
def replica_command(out: Annotated[Path, typer.Argument(help="Folder to write the replica into.")]):
    """Build the offline Pythia-shaped replica (HF cache, public artifacts, preshuffled stream) that
    the README's "Running on Pythia" commands run on without the Hub."""
    for line in suite.replica(out):
        say(line)


@app.command("list")
def list_command(warehouse: WarehouseOpt = None):
    """List the suite's checkpoints."""
    from memlake.cli.warehouse import query_command

    query_command(suite.LIST_SQL, warehouse=warehouse)
