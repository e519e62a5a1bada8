"""What every command shares: the options defined once, list parsing at the edge, the console."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def say(line: str) -> None:
    """Progress and results go to stderr, so stdout carries only data (query output)."""
    console.print(line, soft_wrap=True)


def split(value: str | None) -> list[str] | None:
    """A comma list from the command line; None when not given (the config decides)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def key_values(items: list[str] | None) -> dict:
    """`k=v` items as keywords (digits as integers)."""
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        out[k] = int(v) if v.isdigit() else v
    return out


ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Preset (tiny/small/medium) or a YAML file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: a.b=value.")]
WarehouseOpt = Annotated[
    Path | None,
    typer.Option("--warehouse", "-w", help="Warehouse root (default ./warehouse or $MEMLAKE_WAREHOUSE)."),
]
ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="Suite name, checkpoint folder or Hub id (default: every suite model; token-stats: "
        "and their twins).",
    ),
]
ExecutorOpt = Annotated[str, typer.Option("--executor", "-e", help="local | slurm | ray")]
ExecOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exec-opt",
        help="Executor option k=v (local: workers; slurm: cluster, partition, timeout_min, "
        "array_parallelism; ray: address, num_gpus).",
    ),
]
ListOpt = Annotated[
    str | None, typer.Option(help="Comma-separated; default from the config's profiles section.")
]
