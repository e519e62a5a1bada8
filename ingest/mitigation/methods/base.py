"""The interface every mitigation method implements, and the registry that names them.

A method is `fn(model, forget, retain, *, seed, **hparams) -> EditResult`. It may edit `model`
in place (callers pass a copy) and returns it with method-specific stats. `forget` holds the
sequences to stop reproducing (memorised, e.g. noisy TinyMem rows or extracted suite rows),
`retain` sequences whose behaviour must be kept. Train-time regularisers take the same data
(forget = the artifact rows inside the training set) and return a model trained with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("regulariser", "fine_tuning", "neuron", "weight", "baseline")


@dataclass(frozen=True)
class SequenceSet:
    """Fixed-length token rows [N, T]; `pad_id` positions are excluded from every loss."""

    tokens: torch.Tensor
    prompt_len: int  # memorisation is judged on tokens[prompt_len:]
    pad_id: int | None = None
    clean: torch.Tensor | None = None  # clean counterparts of artifact rows (same shape), if any

    def __post_init__(self):
        if self.tokens.dim() != 2:
            raise ValueError(f"tokens must be [N, T], got {tuple(self.tokens.shape)}")
        if not 0 < self.prompt_len < self.tokens.shape[1]:
            raise ValueError(f"prompt_len {self.prompt_len} must be in (0, {self.tokens.shape[1]})")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batches(self, size: int, *, generator: torch.Generator | None = None):
        order = (
            torch.randperm(len(self), generator=generator)
            if generator is not None
            else torch.arange(len(self))
        )
        for i in range(0, len(self), size):
            yield self.tokens[order[i : i + size]]


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


REGISTRY: dict[str, Method] = {}


def register(name: str, kind: str, grid: list[dict[str, Any]]):
    """Decorator: add `fn` to the registry under `name` with its sweep grid."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def wrap(fn: MethodFn) -> MethodFn:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        REGISTRY[name] = Method(name, kind, fn, tuple(grid))
        return fn

    return wrap


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise KeyError(f"unknown mitigation method {name!r}: choose from {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def sequence_loss(model: nn.Module, tokens: torch.Tensor, pad_id: int | None, start: int = 0) -> torch.Tensor:
    """Per-sequence mean next-token cross-entropy [N] over targets at positions >= max(start, 1),
    padding excluded (the original counted padding; that bug is not reproduced here)."""
    logits = model(input_ids=tokens).logits[:, :-1].float()
    targets = tokens[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    keep = torch.ones_like(targets, dtype=torch.bool)
    if pad_id is not None:
        keep &= targets != pad_id
    if start > 1:
        keep[:, : start - 1] = False
    return (ce * keep).sum(1) / keep.sum(1).clamp(min=1)
