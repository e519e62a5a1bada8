"""Slimming: learn which neurons the memorised continuations cannot do without.

A coefficient c_i (init 1, clipped to [0, 1] in the forward pass) multiplies every neuron's
activation. Minimising LM(forget) + λ·mean|c| drives the coefficients to zero except where the
forget loss needs them, so a high c marks a neuron the memorised data depends on — those are
removed. Full-batch Adam (lr 0.1), one step per epoch; stop early once the L1 term is below
`stop_loss`, checked every 10 steps (the original's rule). The model's weights stay frozen.
"""

from __future__ import annotations

import torch
from torch import nn

from ingest.lm.arch import mlps
from ingest.lm.runtime import model_device
from ingest.mitigation.methods._sequences import SequenceSet
from ingest.mitigation.methods.neurons._attribution import (
    MaskTraining,
    backward_forget_loss,
    gated,
    register_mask_method,
)

EPOCHS = (1, 10, 20)  # the paper's grid; one full-batch step per epoch is cheap on CPU, so unscaled


def attribute(model: nn.Module, forget: SequenceSet, _gen: torch.Generator, epochs: int, t: MaskTraining):
    dev = model_device(model)
    coefs = [torch.ones(m.d_ff, device=dev, requires_grad=True) for m in mlps(model)]
    opt = torch.optim.Adam(coefs, lr=t.lr)
    rows = torch.arange(len(forget))
    stopped_early, steps, lm, l1 = False, 0, float("nan"), float("nan")
    with gated(model, lambda layer: coefs[layer].clamp(0.0, 1.0)):
        for step in range(epochs):
            opt.zero_grad()
            l1_term = torch.cat(coefs).abs().mean()
            l1 = l1_term.item()
            if (step + 1) % 10 == 0 and l1 < t.stop_loss:
                stopped_early = True
                break
            lm = backward_forget_loss(model, forget, rows, t.batch_size)
            (t.lam * l1_term).backward()
            opt.step()
            steps += 1
    scores = [c.detach().clamp(0.0, 1.0).cpu() for c in coefs]
    return scores, {"steps": steps, "stopped_early": stopped_early, "lm_loss": lm, "l1": l1}


slimming = register_mask_method(
    "slimming", attribute, EPOCHS, "Remove the per-layer top `ratio` neurons by learned slimming coefficient."
)
