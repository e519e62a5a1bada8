"""What every stage shares: loading its inputs, a progress sink, and one error rule."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from memlake.core import config as configuration
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse

Log = Callable[[str], None]
F = TypeVar("F", bound=Callable[..., Any])


def quiet(_: str) -> None:
    """The default progress sink: a stage called from Python reports nothing."""


def setup(config: str | Path, overrides: list[str] | None, warehouse: Path | None):
    """The resolved config and the warehouse of a run."""
    cfg = configuration.load(config, overrides)
    wh = Warehouse.at(warehouse)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return cfg, wh


def relabel(prefix: str | None = None) -> Callable[[F], F]:
    """Turn the analyses' input errors (ValueError, KeyError: a missing mart, an unknown metric)
    into one-line `MemlakeError`s, optionally prefixed with the stage's name."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (ValueError, KeyError) as e:
                raise MemlakeError(f"{prefix}: {e}" if prefix else str(e)) from None

        return wrapped  # type: ignore[return-value]

    return deco
