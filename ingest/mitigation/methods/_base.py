"""The interface every mitigation method implements, and the registry that names them.

A method is `fn(model, task, *, seed, **hparams) -> EditResult`. It may edit `model` in place
(callers pass a copy) and returns it with method-specific stats. `task` (an `EditTask`) holds the
sequences to forget and to retain and whatever else a kind needs (regularisers: the training set
and recipe). `hparams` are exactly the keys of the method's registered grid, checked when it is
registered, so what a sweep varies is all a method takes besides its task and seed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ingest.mitigation.methods._cache import AttributionCache
from ingest.mitigation.methods._sequences import SequenceSet
from memlake.core.errors import MemlakeError
from memlake.core.registry import Registry

if TYPE_CHECKING:
    from ingest.mitigation.tinymem.data import TinyMemData

KINDS = ("regulariser", "fine_tuning", "neuron", "weight", "baseline")


@dataclass(frozen=True)
class Recipe:
    """A training run: the TinyMem trainer's AdamW (`tinymem.train`) for `epochs` on batches of
    `batch_size`. `out_dir` / `ckpt_every` checkpoint the run (and resume it from `out_dir`);
    `resume_from` continues a trainer checkpoint, weights and optimiser state."""

    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    warmup_fraction: float | None = None
    out_dir: str | Path | None = None
    ckpt_every: int = 0
    resume_from: str | Path | None = None


@dataclass(frozen=True)
class EditTask:
    """What one edit works on.

    `forget`: the sequences to stop reproducing (memorised, e.g. noisy TinyMem rows or extracted
    suite rows); `retain`: sequences whose behaviour must be kept. Regularisers retrain a fresh
    model on `data`, the training set the base model saw (TinyMem only), with `training`, the
    base model's recipe, so the two differ only by the regulariser (forget = the artifact rows
    inside that set). Fine-tuning continues the base model with `fine_tuning`.
    `mask_batch_size`: rows per step of the edge-popup masks (Subnet, BalancedSubnet), when the
    study wants other than the methods' default. `attributions`: the caller's cache of scores that
    do not depend on the swept ratio; without one every edit computes its own.
    """

    forget: SequenceSet
    retain: SequenceSet
    data: TinyMemData | None = None
    training: Recipe | None = None
    fine_tuning: Recipe | None = None
    mask_batch_size: int | None = None
    attributions: AttributionCache | None = None


@dataclass
class EditResult:
    model: nn.Module
    stats: dict[str, Any] = field(default_factory=dict)


MethodFn = Callable[..., EditResult]


@dataclass(frozen=True)
class Method:
    name: str
    kind: str
    fn: MethodFn
    grid: tuple[dict[str, Any], ...]  # the hyper-parameter grid of the sweep (CPU-scaled)


REGISTRY: Registry[Method] = Registry("mitigation method")


def hyper_parameters(fn: MethodFn) -> set[str]:
    """The keyword-only parameters of `fn` besides `seed`; a TypeError unless `fn` has the method
    signature `fn(model, task, *, seed, ...)`."""
    params = inspect.signature(fn).parameters.values()
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keyword = {p.name for p in params if p.kind == p.KEYWORD_ONLY}
    variadic = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if positional != ["model", "task"] or "seed" not in keyword or variadic:
        raise TypeError(f"{fn.__qualname__} must be fn(model, task, *, seed, <hyper-parameters>)")
    return keyword - {"seed"}


def register(name: str, kind: str, grid: list[dict[str, Any]]):
    """Decorator: add `fn` to the registry under `name` with its sweep grid. Every grid point must
    name exactly the function's hyper-parameters (a point that misses one would run the default
    silently; an extra key would fail only when that run starts)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def wrap(fn: MethodFn) -> MethodFn:
        want = hyper_parameters(fn)
        for point in grid or ({},):
            if set(point) != want:
                raise TypeError(
                    f"method {name!r}: grid point {point} does not name exactly its hyper-parameters "
                    f"{sorted(want)}"
                )
        REGISTRY.add(name, Method(name, kind, fn, tuple(grid)))
        return fn

    return wrap


def get(name: str) -> Method:
    """The method called `name`; unknown, a KeyError (a failed lookup, as the sweep's and the
    landscape's callers expect) with the registry's message."""
    try:
        return REGISTRY[name]
    except MemlakeError as e:
        raise KeyError(str(e)) from None
