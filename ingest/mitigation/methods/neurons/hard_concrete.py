"""HardConcrete (L0): learn a sparse stochastic mask that still reproduces the memorised data.

Each neuron gets a hard-concrete gate (Louizos et al. 2018) on the down-projection input:
log α ~ N(0, 0.01) at the start (the original meant a constant init but overwrote it with
this — we keep the behaviour it actually ran), temperature β = 2/3, stretch
interval (l, r) = (−0.1, 1.1):

    s = σ((log u − log(1−u) + log α) / β),  u ~ U(0, 1)
    gate = clamp(s·(r − l) + l, 0, 1)
    reg = mean σ(log α − β·log(−l/r))          (expected fraction of open gates)

Loss = LM(forget) + λ·reg with Adam (lr 0.1) on batches of 64; stop once reg < `stop_loss`,
checked every 10 steps. Gates that stay open under the L0 pressure carry the memorised data:
attribution = σ(log α), highest removed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ingest.lm.arch import mlps
from ingest.lm.runtime import model_device
from ingest.mitigation.methods._sequences import SequenceSet, shuffled_batches
from ingest.mitigation.methods.neurons._attribution import (
    MaskTraining,
    backward_forget_loss,
    gated,
    register_mask_method,
)

EPOCHS = (1, 10, 20)  # the paper's grid; TinyMem forget sets are a few batches, so unscaled
BETA, LEFT, RIGHT = 2 / 3, -0.1, 1.1


def gate_sample(log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid((u.log() - (1 - u).log() + log_alpha) / BETA)
    return (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def l0_penalty(log_alphas: list[torch.Tensor]) -> torch.Tensor:
    return torch.sigmoid(torch.cat(log_alphas) - BETA * math.log(-LEFT / RIGHT)).mean()


def attribute(model: nn.Module, forget: SequenceSet, gen: torch.Generator, epochs: int, t: MaskTraining):
    dev = model_device(model)
    layers = mlps(model)
    log_alphas = [(torch.randn(m.d_ff, generator=gen) * 0.01).to(dev).requires_grad_(True) for m in layers]
    opt = torch.optim.Adam(log_alphas, lr=t.lr)
    noise: list[torch.Tensor] = []
    stopped_early, steps, lm, reg_value = False, 0, float("nan"), float("nan")
    with gated(model, lambda layer: gate_sample(log_alphas[layer], noise[layer])):
        for _ in range(epochs):
            for rows in shuffled_batches(len(forget), t.batch_size, gen):
                opt.zero_grad()
                reg = l0_penalty(log_alphas)
                reg_value = reg.item()
                if (steps + 1) % 10 == 0 and reg_value < t.stop_loss:
                    stopped_early = True
                    break
                # one mask sample per step, shared by the batch (as a per-neuron gate is)
                noise[:] = [torch.rand(m.d_ff, generator=gen).clamp(1e-6, 1 - 1e-6).to(dev) for m in layers]
                lm = backward_forget_loss(model, forget, rows, t.batch_size)
                (t.lam * reg).backward()
                opt.step()
                steps += 1
            if stopped_early:
                break
    scores = [torch.sigmoid(a.detach()).cpu() for a in log_alphas]
    return scores, {"steps": steps, "stopped_early": stopped_early, "lm_loss": lm, "l0": reg_value}


hard_concrete = register_mask_method(
    "hard_concrete",
    attribute,
    EPOCHS,
    "Remove the per-layer top `ratio` neurons by learned L0 gate probability σ(log α).",
)
