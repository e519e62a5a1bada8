"""What the five neuron-unlearning methods share: attribution → per-layer top-k → removal.

Each neuron method (Chang et al. 2024, as used by the mitigation paper) only differs in how it
scores MLP neurons; everything else lives here so the methods cannot drift apart:

- `neuron_method` validates the inputs, times the attribution, removes the top
  `n_remove(ratio, d_ff)` neurons of every layer and reports what it did; the attribution goes
  through the task's `AttributionCache`, so a sweep scores once per (weights, forget set,
  attribution settings, seed) and removes at every ratio (attribution does not depend on it);
- `frozen` keeps the model's own weights out of autograd while mask coefficients are trained;
- `register_mask_method` registers a learned-mask method (Slimming, HardConcrete) from the
  function that trains its mask;
- `gated`, `backward_forget_loss` and `sample_sequences` serve the learned-mask and the
  per-sequence-expensive attributions.

"The memorised part" (`suffix_mask`, `suffix_loss`) is defined once for every kind, in
`methods._sequences`.

Known flaw fixed: the original took `int(ratio·d_ff)` neurons, which is 0 for
ratio < 1/d_ff, so ratio 1e-3 on a 512-wide TinyMem MLP silently removed nothing. Here every
ratio > 0 removes at least one neuron per layer; the stats say how many.

As in the original, the neuron methods localise from the forget set alone; `task.retain` is
unused here (it is what the cost of an edit is measured on).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ingest.lm.arch import mlps, neuron_hook
from ingest.mitigation.methods._base import EditResult, EditTask, MethodFn, register
from ingest.mitigation.methods._cache import cached
from ingest.mitigation.methods._sequences import SequenceSet, check_forget, suffix_loss

# The ratios the neuron methods sweep (Sakarvadia et al. 2024: neuron methods need ratio > 1e-4;
# ≥ 0.1 is only used by the subnet methods).
RATIO_GRID = (1e-3, 0.01, 0.05)

Attribution = Callable[[nn.Module, SequenceSet, torch.Generator], tuple[list[torch.Tensor], dict]]


def check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:  # also rejects NaN
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return ratio


def n_remove(ratio: float, d_ff: int) -> int:
    """Neurons removed per layer: ⌊ratio·d_ff⌋, but at least one (see the module docstring)."""
    return min(d_ff, max(1, math.floor(check_ratio(ratio) * d_ff)))


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the model's own weights (only mask coefficients train);
    the previous state is restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def ranked(scores: torch.Tensor, k: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the k highest scores. Ties (common for slimming/HardConcrete coefficients pinned
    at 0 or 1) are broken by a seeded random order rather than by index, so a tie never
    systematically favours low-numbered neurons; without `gen` the lower index wins."""
    scores = scores.detach().float().cpu()
    order = torch.randperm(len(scores), generator=gen) if gen is not None else torch.arange(len(scores))
    best = torch.sort(scores[order], descending=True, stable=True).indices[:k]
    return order[best]


@torch.no_grad()
def remove_top(
    model: nn.Module, scores: list[torch.Tensor], ratio: float, gen: torch.Generator | None = None
) -> tuple[list[list[int]], list[int]]:
    """Remove, in every layer, the `n_remove(ratio, d_ff)` neurons with the highest score.
    Returns their indices and, per layer, how many neurons tied with the cut-off score (a large
    count means the attribution could not tell the removed neurons from the kept ones)."""
    layers = mlps(model)
    if len(scores) != len(layers):
        raise ValueError(f"{len(scores)} score vectors for {len(layers)} MLP layers")
    removed, ties = [], []
    for mlp, s in zip(layers, scores):
        if s.shape != (mlp.d_ff,):
            raise ValueError(f"layer {mlp.layer}: scores of shape {tuple(s.shape)}, expected ({mlp.d_ff},)")
        if not torch.isfinite(s).all():
            raise ValueError(f"layer {mlp.layer}: non-finite attribution scores")
        s = s.detach().float().cpu()
        idx = ranked(s, n_remove(ratio, mlp.d_ff), gen)
        mlp.remove_neurons(idx.to(mlp.up.weight.device))
        removed.append(sorted(idx.tolist()))
        ties.append(int((s == s[idx].min()).sum()))
    return removed, ties


def neuron_method(
    model: nn.Module,
    task: EditTask,
    ratio: float,
    seed: int,
    attribute: Attribution,
    *,
    method: str,
    key: dict,
) -> EditResult:
    """Run one neuron method: score every neuron with `attribute(model, forget, generator)`,
    then remove the per-layer top ones. `attribute` returns (scores per layer, extra stats);
    `key` holds the settings the scores depend on (the cache's key, with the method and seed)."""
    forget = task.forget
    ratio = check_ratio(ratio)
    check_forget(forget)
    layers = mlps(model)  # fails early, with a clear message, on an unsupported architecture

    def compute():
        with frozen(model):
            return attribute(model, forget, torch.Generator().manual_seed(seed))

    (scores, extra), attribution_seconds, reused = cached(
        task.attributions, model, forget, method, key, seed, compute
    )
    t1 = time.perf_counter()
    removed, ties = remove_top(model, scores, ratio, torch.Generator().manual_seed(seed))
    stats = {
        "ratio": ratio,
        "neurons_removed": [len(r) for r in removed],
        "removed": removed,
        "tied_at_cutoff": ties,
        "d_ff": [m.d_ff for m in layers],
        "attribution_seconds": attribution_seconds,
        "attribution_reused": reused,
        "seconds": attribution_seconds + time.perf_counter() - t1,
        **extra,
    }
    return EditResult(model, stats)


@dataclass(frozen=True)
class MaskTraining:
    """How Slimming and HardConcrete train their neuron masks: the original's settings, fixed in
    the sweep (its grid varies ratio and epochs). `batch_size` bounds memory only for Slimming,
    whose step is full-batch; HardConcrete steps per batch."""

    lam: float = 1000.0
    lr: float = 0.1
    stop_loss: float = 0.1
    batch_size: int = 64


MaskAttribution = Callable[
    [nn.Module, SequenceSet, torch.Generator, int, MaskTraining], tuple[list[torch.Tensor], dict]
]


def mask_method(
    model: nn.Module,
    task: EditTask,
    attribute: MaskAttribution,
    *,
    method: str,
    seed: int,
    ratio: float,
    epochs: int,
    training: MaskTraining = MaskTraining(),
) -> EditResult:
    """A learned-mask neuron method: `attribute(model, forget, generator, epochs, training)`
    trains the mask for `epochs`, then `neuron_method` removes the per-layer top `ratio`."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    key = {"epochs": epochs, **asdict(training)}
    return neuron_method(
        model, task, ratio, seed, lambda m, f, g: attribute(m, f, g, epochs, training), method=method, key=key
    )


def register_mask_method(
    name: str, attribute: MaskAttribution, epoch_grid: tuple[int, ...], doc: str
) -> MethodFn:
    """Register the learned-mask neuron method `name` (grid: RATIO_GRID x `epoch_grid`): remove the
    per-layer top `ratio` neurons by the scores `attribute` learns in `epochs` epochs."""

    def method(
        model: nn.Module, task: EditTask, *, seed: int = 0, ratio: float, epochs: int = 10
    ) -> EditResult:
        return mask_method(model, task, attribute, method=name, seed=seed, ratio=ratio, epochs=epochs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    grid = [{"ratio": r, "epochs": e} for r in RATIO_GRID for e in epoch_grid]
    return register(name, "neuron", grid)(method)


def backward_forget_loss(model: nn.Module, forget: SequenceSet, rows: torch.Tensor, chunk: int) -> float:
    """Backpropagate the mean suffix CE over forget rows `rows`, `chunk` rows at a time (the
    gradient equals one big batch's; memory stays bounded on large models). Returns the loss."""
    total = 0.0
    for part in rows.split(chunk):
        loss = suffix_loss(model, forget.tokens[part], forget).sum() / len(rows)
        loss.backward()
        total += loss.item()
    return total


@contextmanager
def gated(model: nn.Module, gate: Callable[[int], torch.Tensor]) -> Iterator[None]:
    """Multiply every layer's neuron activations by `gate(layer)` ([d_ff], recomputed per forward
    so sampled masks get fresh noise)."""
    with neuron_hook(model, lambda layer, act: act * gate(layer).to(act.dtype)):
        yield


def sample_sequences(seqs: SequenceSet, max_sequences: int | None, gen: torch.Generator) -> SequenceSet:
    """A seeded random subset of at most `max_sequences` rows (all rows when None): how the CPU
    grids keep the per-sequence-expensive attributions (Zero-Out, IG) affordable."""
    if max_sequences is None or len(seqs) <= max_sequences:
        return seqs
    if max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1 or None, got {max_sequences}")
    idx = torch.randperm(len(seqs), generator=gen)[:max_sequences].sort().values
    return seqs.subset(idx)
