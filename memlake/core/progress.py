"""Rich progress bars for every long loop; quiet when MEMLAKE_QUIET=1 (tests, CI logs)."""

from __future__ import annotations

import os

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=os.environ.get("MEMLAKE_QUIET") == "1",
        transient=False,
    )
