"""Durable and Durable-Aggregate: zero the MLP weights the forget loss leans on hardest.

Both score a weight by |∂LM(forget)/∂w|, the gradient accumulated over the whole forget set
(the original borrowed this from the "durable backdoor"/Neurotoxin code: coordinates with
large gradient on some data are the ones that data depends on). They differ in where the
budget goes:

- `durable` ranks inside every MLP tensor, so each tensor loses the same fraction;
- `durable_aggregate` ranks over *all* trainable parameters (embeddings, attention, norms
  included) and zeroes only the part of that global top-k that lies in MLP weights, so the
  budget flows to the tensors that matter most and the edit may be smaller than `ratio`.

One gradient pass, no search: the cheapest weight method.

This module also holds what every weight method shares (input checks, the selection count,
top-k masks, the forget loss and gradient, the grad-only context), so the rules cannot drift
apart between methods. Known flaw fixed (as in `neurons`): `int(ratio·n)` is 0 for small
ratios, a silent no-op; here a positive ratio always selects at least one weight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.arch import mlp_parameters
from ingest.mitigation.methods.base import EditResult, SequenceSet, register, sequence_loss

# Ratio grid for the non-subnet weight methods: the mitigation paper's grid below 0.1 (only Subnet
# and BalancedSubnet use ratios >= 0.1). Durable is one gradient pass, so nothing is scaled.
RATIO_GRID = (1e-5, 1e-4, 1e-3, 0.01, 0.05)


# --------------------------------------------------------------------------- shared helpers


def check_inputs(
    forget: SequenceSet, retain: SequenceSet, ratio: float, *, needs_retain: bool = False
) -> float:
    """Reject what would otherwise become NaN or a silent no-op: an empty forget set (nothing is
    memorised), an empty retain set for methods that balance against it, a ratio outside (0, 1]."""
    if len(forget) == 0:
        raise ValueError("forget set is empty: nothing is memorised, nothing to unlearn")
    if needs_retain and len(retain) == 0:
        raise ValueError("retain set is empty: this method balances forgetting against retained data")
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:  # also rejects NaN
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return ratio


def n_selected(ratio: float, n: int) -> int:
    """How many of n entries a ratio selects: ⌊ratio·n⌋, but at least one (see module docstring)."""
    return min(n, max(1, math.floor(ratio * n)))


def top_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask, shaped like `score`, of its k largest entries (exactly k, ties broken by topk)."""
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    mask[torch.topk(score.flatten().float(), k).indices] = True
    return mask.view_as(score)


@torch.no_grad()
def zero_masked(weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> int:
    """Zero weights[i][masks[i]] in place; returns how many entries were selected."""
    for w, m in zip(weights, masks, strict=True):
        w.masked_fill_(m, 0)
    return int(sum(int(m.sum()) for m in masks))


def forget_loss(model: nn.Module, tokens: torch.Tensor, seqs: SequenceSet) -> torch.Tensor:
    """Per-sequence CE [N] on the memorised suffix (tokens after each row's start, see
    `SequenceSet.starts`), what the memorisation metric judges; the prefix is ordinary context
    the model may keep predicting."""
    return sequence_loss(model, tokens.to(model_device(model)), seqs.pad_id, start=seqs.starts(tokens))


def retain_loss(model: nn.Module, tokens: torch.Tensor, seqs: SequenceSet) -> torch.Tensor:
    """Per-sequence CE [N] over the whole row: everything about retained data should be kept."""
    return sequence_loss(model, tokens.to(model_device(model)), seqs.pad_id)


@contextmanager
def grads_only(model: nn.Module, params: Sequence[nn.Parameter] = ()) -> Iterator[None]:
    """Eval mode (no dropout noise in scores) with autograd on for `params` and off for every
    other weight, so backward passes cost only what the method needs; restores both after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    wanted = {id(p) for p in params}
    model.eval()
    for p, _ in flags:
        p.requires_grad_(id(p) in wanted)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def forget_gradients(
    model: nn.Module, forget: SequenceSet, params: Sequence[nn.Parameter], batch_size: int
) -> tuple[list[torch.Tensor], int]:
    """∂(mean forget loss)/∂p for each p, accumulated batch by batch (exactly the full-set
    gradient, at one batch of memory); returns the gradients and the number of batches."""
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    n_batches = 0
    with grads_only(model, params):
        for tokens in forget.batches(batch_size):
            loss = forget_loss(model, tokens, forget).sum() / len(forget)
            for acc, g in zip(grads, torch.autograd.grad(loss, list(params)), strict=True):
                acc += g.float()
            n_batches += 1
    return grads, n_batches


# --------------------------------------------------------------------------- selection rules


def per_tensor_masks(scores: Sequence[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Durable's rule: the top ⌊ratio·numel⌋ of every tensor, independently."""
    return [top_k_mask(s, n_selected(ratio, s.numel())) for s in scores]


def global_masks(
    scores: Sequence[torch.Tensor], ratio: float, editable: Sequence[bool]
) -> list[torch.Tensor]:
    """Durable-Aggregate's rule: the top ⌊ratio·Σnumel⌋ over all tensors together, kept only in
    the `editable` tensors (the rest of the global top-k is selected but never edited)."""
    flat = torch.cat([s.flatten().float() for s in scores])
    chosen = top_k_mask(flat, n_selected(ratio, flat.numel()))
    masks, start = [], 0
    for s, ok in zip(scores, editable, strict=True):
        part = chosen[start : start + s.numel()].view_as(s)
        masks.append(part if ok else torch.zeros_like(part))
        start += s.numel()
    return masks


# --------------------------------------------------------------------------- methods


@register("durable", "weight", grid=[{"ratio": r} for r in RATIO_GRID])
def durable(
    model: nn.Module,
    forget: SequenceSet,
    retain: SequenceSet,
    *,
    seed: int = 0,
    ratio: float = 1e-3,
    batch_size: int = 32,
) -> EditResult:
    """Zero, in every MLP weight matrix, the `ratio` fraction with the largest |∂LM(forget)/∂w|.
    Deterministic (no sampling), so `seed` is unused."""
    ratio = check_inputs(forget, retain, ratio)
    t0 = time.perf_counter()
    weights = [w for _, w in mlp_parameters(model)]
    grads, n_batches = forget_gradients(model, forget, weights, batch_size)
    zeroed = zero_masked(weights, per_tensor_masks([g.abs() for g in grads], ratio))
    return EditResult(
        model, {"weights_zeroed": zeroed, "seconds": time.perf_counter() - t0, "iterations": n_batches}
    )


@register("durable_aggregate", "weight", grid=[{"ratio": r} for r in RATIO_GRID])
def durable_aggregate(
    model: nn.Module,
    forget: SequenceSet,
    retain: SequenceSet,
    *,
    seed: int = 0,
    ratio: float = 1e-3,
    batch_size: int = 32,
) -> EditResult:
    """Rank |∂LM(forget)/∂w| over every trainable parameter, zero the global top `ratio` fraction
    where it falls inside MLP weights. `weights_zeroed` ≤ ⌊ratio·#params⌋; `selected` is the full
    global count. Holds all gradients at once (fine for TinyMem/suite; Pythia-scale needs a GPU)."""
    ratio = check_inputs(forget, retain, ratio)
    t0 = time.perf_counter()
    mlp_ids = {id(w) for _, w in mlp_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad or id(p) in mlp_ids]
    grads, n_batches = forget_gradients(model, forget, params, batch_size)
    editable = [id(p) in mlp_ids for p in params]
    masks = global_masks([g.abs() for g in grads], ratio, editable)
    pairs = [(p, m) for p, m, ok in zip(params, masks, editable, strict=True) if ok]
    zeroed = zero_masked([p for p, _ in pairs], [m for _, m in pairs])
    return EditResult(
        model,
        {
            "weights_zeroed": zeroed,
            "selected": n_selected(ratio, sum(p.numel() for p in params)),
            "seconds": time.perf_counter() - t0,
            "iterations": n_batches,
        },
    )
