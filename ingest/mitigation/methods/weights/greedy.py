"""Greedy (Maini et al. 2023): zero one MLP weight at a time, the one whose removal is
estimated to raise the forget loss and lower the retain loss the most.

Each iteration takes a batch mixing forget rows (y = +1) and retain rows (y = −1) and
computes J = mean_i(−y_i·ℓ_i), ℓ_i the per-sequence mean CE. Zeroing weight w changes J by
about ∂J/∂w·(0 − w) = −s with s = w ⊙ ∂J/∂w (first-order Taylor), so the argmax of s over the
still-non-zero MLP weights is the single weight whose removal lowers J most. The original
scaled J by the batch size, which does not move the argmax and is dropped.

T = ⌊ratio × #trainable parameters⌋ iterations (the original's budget counts *all*
parameters although only MLP weights are edited), each a full forward/backward: by far the
slowest method, hence `zero_greedily`'s `max_iterations`, a cap reported in the stats (the
registered method has none).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ingest.lm.arch import mlp_parameters
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods.weights._shared import MixedBatches, check_inputs, grads_only, n_selected

# Ratios scaled for CPU: the mitigation paper sweeps Greedy up to 0.05, but every iteration is a
# full forward/backward, so 0.05 of a 2-layer TinyMem model (~0.4 M parameters) would be ~20 k
# passes. 3e-4 (~120 passes) is the CPU ceiling; Pythia in the original ran 1e-5 only.
RATIO_GRID = (1e-5, 1e-4, 3e-4)
BATCH_SIZE = 64  # rows per iteration, half forget, half retain


def mixed_objective(
    model: nn.Module, batches: MixedBatches, batch: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """J = mean over the batch of −y·ℓ (forget y = +1, retain y = −1)."""
    lf, lr = batches.losses(model, batch)
    return (lr.sum() - lf.sum()) / (len(lf) + len(lr))


def zero_greedily(
    model: nn.Module,
    task: EditTask,
    *,
    seed: int = 0,
    ratio: float = 1e-4,
    batch_size: int = BATCH_SIZE,
    max_iterations: int | None = None,
) -> EditResult:
    """Zero ⌊ratio·#trainable params⌋ MLP weights one by one (at most `max_iterations`; the stats
    say whether the cap or running out of non-zero MLP weights cut it short)."""
    forget, retain = task.forget, task.retain
    ratio = check_inputs(forget, retain, ratio, needs_retain=True)
    if max_iterations is not None and max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    t0 = time.perf_counter()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    target = n_selected(ratio, n_params)
    budget = target if max_iterations is None else min(target, max_iterations)
    weights = [w for _, w in mlp_parameters(model)]
    batches = MixedBatches(forget, retain, batch_size, torch.Generator().manual_seed(seed))
    done = 0
    with grads_only(model, weights):
        for batch in batches:
            if done == budget:
                break
            grads = torch.autograd.grad(mixed_objective(model, batches, batch), weights)
            best = (-math.inf, -1, -1)  # (score, tensor, flat index)
            with torch.no_grad():
                for t, (w, g) in enumerate(zip(weights, grads, strict=True)):
                    s = (w * g).float().flatten().masked_fill(w.flatten() == 0, -math.inf)
                    i = int(s.argmax())
                    if s[i] > best[0]:
                        best = (float(s[i]), t, i)
                if best[1] < 0:  # every MLP weight is already zero
                    break
                weights[best[1]].view(-1)[best[2]] = 0
            done += 1
    return EditResult(
        model,
        {
            "weights_zeroed": done,
            "seconds": time.perf_counter() - t0,
            "iterations": done,
            "target_iterations": target,
            "capped": done < target,
        },
    )


@register("greedy", "weight", grid=[{"ratio": r} for r in RATIO_GRID])
def greedy(model: nn.Module, task: EditTask, *, seed: int = 0, ratio: float = 1e-4) -> EditResult:
    """Zero ⌊ratio·#trainable params⌋ MLP weights one by one, each the estimated best."""
    return zero_greedily(model, task, seed=seed, ratio=ratio)
