"""What the five neuron-unlearning methods share: attribution → per-layer top-k → removal.

Each neuron method (Chang et al. 2024, as used by the mitigation paper) only differs in how it
scores MLP neurons; everything else lives here so the methods cannot drift apart:

- `neuron_method` validates the inputs, times the attribution, removes the top
  `n_remove(ratio, d_ff)` neurons of every layer and reports what it did;
- `suffix_mask` / `suffix_loss` define "the memorised part" once: the predictions of tokens
  `prompt_len..T-1` that are not padding, i.e. what the memorisation metric judges;
- `frozen` keeps the model's own weights out of autograd while mask coefficients are trained;
- `reuse_attributions` lets a sweep score once per (weights, forget set, attribution
  hyper-parameters, seed) and remove at every ratio, since attribution does not depend on ratio.

Known flaw fixed: the original took `int(ratio·d_ff)` neurons, which is 0 for
ratio < 1/d_ff, so ratio 1e-3 on a 512-wide TinyMem MLP silently removed nothing. Here every
ratio > 0 removes at least one neuron per layer; the stats say how many.

As in the original, the neuron methods localise from the forget set alone; `retain` is part of
the shared interface but unused here (it is what the cost of an edit is measured on).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.arch import mlps, neuron_hook
from ingest.mitigation.methods.base import EditResult, SequenceSet, sequence_loss

# The ratios the neuron methods sweep (Sakarvadia et al. 2024: neuron methods need ratio > 1e-4;
# ≥ 0.1 is only used by the subnet methods).
RATIO_GRID = (1e-3, 0.01, 0.05)

Attribution = Callable[[nn.Module, SequenceSet, torch.Generator], tuple[list[torch.Tensor], dict]]


def check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:  # also rejects NaN
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return ratio


def check_nonempty(seqs: SequenceSet, name: str) -> None:
    """An empty set is a caller error (e.g. nothing memorised): say so instead of producing NaN."""
    if len(seqs) == 0:
        raise ValueError(f"{name} set is empty: nothing to {'unlearn' if name == 'forget' else 'retain'}")


def check_forget(forget: SequenceSet) -> None:
    """The forget set must have rows and at least one judged (non-padding) suffix token; otherwise
    every attribution would be 0 and the removal an arbitrary tie-break."""
    check_nonempty(forget, "forget")
    if not suffix_mask(forget.tokens, forget.starts(forget.tokens), forget.pad_id).any():
        raise ValueError("forget set has no non-padding tokens after prompt_len: nothing to unlearn")


def n_remove(ratio: float, d_ff: int) -> int:
    """Neurons removed per layer: ⌊ratio·d_ff⌋, but at least one (see the module docstring)."""
    return min(d_ff, max(1, math.floor(check_ratio(ratio) * d_ff)))


def suffix_mask(tokens: torch.Tensor, prompt_len: int | torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """[N, T] bool: positions t whose next-token prediction is judged — prompt_len-1 ≤ t ≤ T-2 and
    tokens[t+1] is not padding (`prompt_len` an int or one per row, see `SequenceSet.starts`).
    The activation at t is what produces the prediction of t+1."""
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    if isinstance(prompt_len, torch.Tensor):
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        mask[:, :-1] = pos[None, :-1] >= prompt_len.to(tokens.device)[:, None] - 1
    else:
        mask[:, prompt_len - 1 : -1] = True
    if pad_id is not None:
        mask[:, :-1] &= tokens[:, 1:] != pad_id
    return mask


def suffix_loss(model: nn.Module, tokens: torch.Tensor, seqs: SequenceSet) -> torch.Tensor:
    """Per-sequence CE [N] on the memorised suffix (targets at positions >= each row's start, padding
    excluded): the quantity every method here probes, trains or ascends."""
    return sequence_loss(model, tokens.to(model_device(model)), seqs.pad_id, start=seqs.starts(tokens))


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


_MEMO: dict[str, tuple[object, float]] | None = None


@contextmanager
def reuse_attributions() -> Iterator[None]:
    """Within this block, a neuron method that already scored identical weights and forget set
    with the same attribution hyper-parameters and seed reuses those scores. A ratio sweep then
    pays for Zero-Out or IG once. Reused runs report the original attribution time (the
    original code logged NaN there) and `attribution_reused: true`."""
    global _MEMO
    outer, _MEMO = _MEMO, ({} if _MEMO is None else _MEMO)
    try:
        yield
    finally:
        _MEMO = outer


def fingerprint(model: nn.Module, forget: SequenceSet, method: str, key: dict, seed: int) -> str:
    """Content hash of everything an attribution depends on (weights, not object identity, since
    callers pass each run a fresh copy of the model)."""
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


def cached(model: nn.Module, forget: SequenceSet, method: str, key: dict, seed: int, compute: Callable):
    """(compute(), seconds it took, reused) — reused from an identical earlier call inside
    `reuse_attributions` (same weights, forget set, method, key and seed). For any score that
    does not depend on the ratio: neuron attributions, second-order saliencies."""
    memo_key = fingerprint(model, forget, method, key, seed) if _MEMO is not None else None
    if memo_key is not None and memo_key in _MEMO:
        value, seconds = _MEMO[memo_key]
        return value, seconds, True
    t0 = time.perf_counter()
    value = compute()
    seconds = time.perf_counter() - t0
    if memo_key is not None:
        _MEMO[memo_key] = (value, seconds)
    return value, seconds, False


def neuron_method(
    model: nn.Module,
    forget: SequenceSet,
    ratio: float,
    seed: int,
    attribute: Attribution,
    *,
    method: str,
    key: dict,
) -> EditResult:
    """Run one neuron method: score every neuron with `attribute(model, forget, generator)`,
    then remove the per-layer top ones. `attribute` returns (scores per layer, extra stats);
    `key` holds the hyper-parameters the scores depend on (for `reuse_attributions`)."""
    ratio = check_ratio(ratio)
    check_forget(forget)
    layers = mlps(model)  # fails early, with a clear message, on an unsupported architecture

    def compute():
        with frozen(model):
            return attribute(model, forget, torch.Generator().manual_seed(seed))

    (scores, extra), attribution_seconds, reused = cached(model, forget, method, key, seed, compute)
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


def shuffled_batches(n: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Row indices of one epoch in seeded random order, split into batches of `size`."""
    order = torch.randperm(n, generator=gen)
    return list(order.split(size))


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
