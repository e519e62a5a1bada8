"""What the weight methods share, so their rules cannot drift apart: input checks, the selection
count, top-k masks and their two selection rules (per tensor, global), the forget and retain
losses and the forget gradient, the grad-only context, and forget/retain batches that always
hold both kinds (`MixedBatches`, for Greedy and BalancedSubnet: forget and retain rows come from
two separately shuffled streams; the original shuffled the union, where a batch without forget
rows makes BalancedSubnet's forget mean NaN).

Known flaw fixed (as for the neuron methods): `int(ratio·n)` is 0 for small ratios, a silent
no-op; here a positive ratio always selects at least one weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.methods._sequences import SequenceSet, sequence_loss, suffix_loss

# Ratio grid for the non-subnet weight methods: the mitigation paper's grid below 0.1 (only Subnet
# and BalancedSubnet use ratios >= 0.1). Durable is one gradient pass, so nothing is scaled.
RATIO_GRID = (1e-5, 1e-4, 1e-3, 0.01, 0.05)


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


forget_loss = suffix_loss  # the memorised suffix, what the memorisation metric judges


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


# --------------------------------------------------------------------------- mixed batches


class _Stream:
    """Rows of one set, endlessly, in a fresh seeded shuffle every pass."""

    def __init__(self, seqs: SequenceSet, generator: torch.Generator):
        self.seqs, self.gen = seqs, generator
        self.order, self.pos = torch.randperm(len(seqs), generator=generator), 0

    def take(self, k: int) -> torch.Tensor:
        idx = []
        while len(idx) < k:
            if self.pos == len(self.order):
                self.order, self.pos = torch.randperm(len(self.seqs), generator=self.gen), 0
            n = min(k - len(idx), len(self.order) - self.pos)
            idx.extend(self.order[self.pos : self.pos + n].tolist())
            self.pos += n
        return self.seqs.tokens[idx]


class MixedBatches:
    """Batches of `batch_size` rows: up to half forget rows, the rest retain rows. One epoch =
    enough batches to see the larger of the two sets once."""

    def __init__(self, forget: SequenceSet, retain: SequenceSet, batch_size: int, generator: torch.Generator):
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 to mix forget and retain rows, got {batch_size}")
        self.n_forget = min(len(forget), batch_size // 2)
        self.n_retain = min(len(retain), batch_size - self.n_forget)
        self.steps_per_epoch = max(
            math.ceil(len(forget) / self.n_forget), math.ceil(len(retain) / self.n_retain)
        )
        self._forget, self._retain = _Stream(forget, generator), _Stream(retain, generator)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forget.take(self.n_forget), self._retain.take(self.n_retain)

    def losses(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sequence forget and retain losses [n] of one batch, forget first. The two parts run
        as separate forwards, so forget and retain rows may differ in length and padding."""
        f_tokens, r_tokens = batch
        forget = forget_loss(model, f_tokens, self._forget.seqs)
        return forget, retain_loss(model, r_tokens, self._retain.seqs)
