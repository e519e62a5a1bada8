"""`memlake mia`: the membership-inference battery into the `mia_scores` and `mia_metrics` marts."""

from __future__ import annotations

from typing import Annotated

import typer

from memlake.cli._options import ConfigOpt, ModelsOpt, SetOpt, WarehouseOpt, say
from memlake.core.errors import MemlakeError
from memlake.pipeline import mia, setup


def mia_command(
    models: ModelsOpt = None,
    steps: Annotated[
        list[int] | None, typer.Option("--step", help="Checkpoint step (default: every one with members).")
    ] = None,
    reference: Annotated[
        list[str] | None,
        typer.Option(help="MODEL=REFERENCE for the reference attack (default: the suite's smallest other)."),
    ] = None,
    bootstrap: Annotated[int | None, typer.Option(help="AUC bootstrap resamples (0: none).")] = None,
    config: ConfigOpt = "small",
    set_: SetOpt = None,
    warehouse: WarehouseOpt = None,
):
    """LOSS, zlib, Min-K%, Min-K%++, reference, twin and blind attacks: scores per row, AUC and
    TPR at low FPR per checkpoint (members: natural training rows trained by then; non-members:
    never-trained rows)."""
    pairs = [r.partition("=") for r in reference or []]
    if any(not (m and sep and r) for m, sep, r in pairs):
        raise MemlakeError(f"--reference takes MODEL=REFERENCE, got {reference}")
    cfg, wh = setup(config, set_, warehouse)
    mia.run(cfg, wh, models, steps, {m: r for m, _, r in pairs}, bootstrap, log=say)
