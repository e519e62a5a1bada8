"""Activations: remove the neurons that fire hardest on the memorised continuations.

Score of neuron i = |mean activation over forget sequences at the judged suffix positions|
× ‖i's output-weight vector‖₂ — a neuron matters for the output only as much as it both fires
and writes into the residual stream. One forward pass over the forget set, so it is the
cheapest neuron method and the one that scales to Pythia.
"""

from __future__ import annotations

import torch
from torch import nn

from ingest.lm.arch import mlps, neuron_hook
from ingest.lm.runtime import model_device
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods._sequences import SequenceSet, suffix_mask
from ingest.mitigation.methods.neurons._attribution import RATIO_GRID, neuron_method

BATCH_SIZE = 64  # forget rows per forward: memory only, the scores do not depend on it


@torch.no_grad()
def attribute(model: nn.Module, forget: SequenceSet, _gen: torch.Generator, batch_size: int = BATCH_SIZE):
    layers = mlps(model)
    total = [torch.zeros(m.d_ff, dtype=torch.float64) for m in layers]
    count = 0
    dev = model_device(model)
    for tokens in forget.batches(batch_size):
        mask = suffix_mask(tokens, forget.starts(tokens), forget.pad_id).to(dev)
        count += int(mask.sum())

        def record(layer: int, act: torch.Tensor, mask=mask) -> None:
            total[layer] += act[mask].double().sum(0).cpu()

        with neuron_hook(model, record):
            model(input_ids=tokens.to(dev))
    scores = [
        (t / count).abs().float() * m.neuron_out_weights().detach().float().norm(dim=1).cpu()
        for t, m in zip(total, layers)
    ]
    return scores, {"positions": count}


@register("activations", "neuron", [{"ratio": r} for r in RATIO_GRID])
def activations(model: nn.Module, task: EditTask, *, seed: int = 0, ratio: float) -> EditResult:
    """Remove the per-layer top `ratio` neurons by |mean suffix activation| × ‖output weights‖."""
    key = {"batch_size": BATCH_SIZE}
    return neuron_method(
        model, task, ratio, seed, lambda m, f, g: attribute(m, f, g, **key), method="activations", key=key
    )
