"""A cache of scores that an edit computes before it applies its swept ratio.

Neuron attributions and second-order saliencies do not depend on the ratio, so a sweep over a
ratio grid computes them once per (weights, forget set, method, attribution settings, seed) and
reuses them at every ratio. The caller owns the cache and so decides how long scores live (the
sweep: one per process, for all its runs); an edit without one computes its own scores.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ingest.mitigation.methods._sequences import SequenceSet


def fingerprint(model: nn.Module, forget: SequenceSet, method: str, key: dict, seed: int) -> str:
    """Content hash of everything a score depends on (weights, not object identity, since callers
    pass each run a fresh copy of the model)."""
    h = hashlib.sha256(
        json.dumps([method, key, seed, forget.prompt_len, forget.pad_id], default=str).encode()
    )
    h.update(forget.tokens.cpu().contiguous().numpy().tobytes())
    if forget.prompt_lens is not None:
        h.update(forget.prompt_lens.cpu().contiguous().numpy().tobytes())
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _timed(compute: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = compute()
    return value, time.perf_counter() - t0


class AttributionCache:
    """Scores by content fingerprint, with the seconds their computation took (a reused run
    reports the original time, and `reused`). Filled through `cached`."""

    def __init__(self) -> None:
        self._scores: dict[str, tuple[Any, float]] = {}

    def __len__(self) -> int:
        return len(self._scores)


def cached(
    cache: AttributionCache | None,
    model: nn.Module,
    forget: SequenceSet,
    method: str,
    key: dict,
    seed: int,
    compute: Callable[[], Any],
) -> tuple[Any, float, bool]:
    """(scores, seconds their computation took, reused): the scores `cache` holds for an identical
    call (same weights, forget set, method, key and seed), else compute(), stored there. Without a
    cache nothing is fingerprinted (hashing the weights is not free)."""
    if cache is None:
        return (*_timed(compute), False)
    memo_key = fingerprint(model, forget, method, key, seed)
    reused = memo_key in cache._scores
    if not reused:
        cache._scores[memo_key] = _timed(compute)
    return (*cache._scores[memo_key], reused)
