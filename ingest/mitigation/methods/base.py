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
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("regulariser", "fine_tuning", "neuron", "weight", "baseline")


@dataclass(frozen=True)
class SequenceSet:
    """Fixed-length token rows [N, T]; `pad_id` positions are excluded from every loss.

    Memorisation is judged on tokens[prompt_len:], or per row on tokens[prompt_lens[i]:] when
    the rows' judged windows start at different places (a backdoor's window starts right after
    its trigger). Without per-row starts, the forget loss of a backdoor set would also cover the
    clean tokens before each trigger, and unlearning would ascend on what the model should keep.
    Methods get a batch's starts with `starts(tokens)`, whatever order or repetition the batch has.
    """

    tokens: torch.Tensor
    prompt_len: int  # memorisation is judged on tokens[prompt_len:] (the smallest start)
    pad_id: int | None = None
    clean: torch.Tensor | None = None  # clean counterparts of artifact rows (same shape), if any
    prompt_lens: torch.Tensor | None = None  # [N] per-row starts (each >= prompt_len), if rows differ

    def __post_init__(self):
        if self.tokens.dim() != 2:
            raise ValueError(f"tokens must be [N, T], got {tuple(self.tokens.shape)}")
        if not 0 < self.prompt_len < self.tokens.shape[1]:
            raise ValueError(f"prompt_len {self.prompt_len} must be in (0, {self.tokens.shape[1]})")
        if self.prompt_lens is not None:
            pls = self.prompt_lens
            if pls.shape != (self.tokens.shape[0],):
                raise ValueError(f"prompt_lens must be [{self.tokens.shape[0]}], got {tuple(pls.shape)}")
            if len(pls) and (int(pls.min()) < self.prompt_len or int(pls.max()) >= self.tokens.shape[1]):
                raise ValueError(f"prompt_lens must lie in [{self.prompt_len}, {self.tokens.shape[1]})")

    @cached_property
    def _start_of(self) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for row, start in zip(self.tokens.cpu().numpy(), self.prompt_lens.tolist(), strict=True):
            key = row.tobytes()
            out[key] = min(start, out.get(key, start))  # equal rows: the wider window
        return out

    def starts(self, tokens: torch.Tensor) -> int | torch.Tensor:
        """Where the judged window of each row of `tokens` (rows of this set) starts: `prompt_len`,
        or a [B] tensor of per-row starts. A row that is not in the set has no known window."""
        if self.prompt_lens is None:
            return self.prompt_len
        try:
            found = [self._start_of[row.tobytes()] for row in tokens.cpu().numpy()]
        except KeyError:
            raise ValueError("rows outside this sequence set have no per-row prompt length") from None
        return torch.tensor(found, dtype=torch.long)

    def subset(self, idx: torch.Tensor) -> SequenceSet:
        """The rows `idx` (with their clean counterparts and starts)."""
        return SequenceSet(
            self.tokens[idx],
            self.prompt_len,
            self.pad_id,
            self.clean[idx] if self.clean is not None else None,
            self.prompt_lens[idx] if self.prompt_lens is not None else None,
        )

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


def sequence_loss(
    model: nn.Module, tokens: torch.Tensor, pad_id: int | None, start: int | torch.Tensor = 0
) -> torch.Tensor:
    """Per-sequence mean next-token cross-entropy [N] over targets at positions >= max(start, 1)
    (`start` an int or one per row), padding excluded (the original counted padding; that bug is
    not reproduced here)."""
    logits = model(input_ids=tokens).logits[:, :-1].float()
    targets = tokens[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    keep = torch.ones_like(targets, dtype=torch.bool)
    if pad_id is not None:
        keep &= targets != pad_id
    if isinstance(start, torch.Tensor):
        pos = torch.arange(1, targets.shape[1] + 1, device=targets.device)
        keep &= pos[None, :] >= start.to(targets.device)[:, None]
    elif start > 1:
        keep[:, : start - 1] = False
    return (ce * keep).sum(1) / keep.sum(1).clamp(min=1)
