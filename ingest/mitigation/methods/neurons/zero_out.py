"""Zero-Out: remove the neurons whose ablation hurts the memorised continuations most.

Score of neuron (l, i) = forget loss with i's activation zeroed at every position − the
unedited forget loss (suffix CE, see `_sequences.suffix_loss`). This is the definition the
original intended; its one-hot mask kept *only* the probed neuron.

Exact ablation costs L·d_ff forward passes over the forget set, so the probes are batched:
K neurons × n sequences form one batch of K·n rows, and a hook on layer l zeroes neuron j in
the j-th block of rows. Neurons that never fire on the forget set (activation exactly 0 at
every position, common with ReLU) have Δ = 0 without a forward pass and are skipped.
Pythia runs skipped Zero-Out in the paper; on CPU the grid probes a sample of the forget set.
"""

from __future__ import annotations

import torch
from torch import nn

from ingest.lm.arch import mlps, neuron_hook
from ingest.lm.runtime import model_device
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods._sequences import SequenceSet, suffix_loss
from ingest.mitigation.methods.neurons._attribution import RATIO_GRID, neuron_method, sample_sequences

# CPU scaling of the grid: probe a seeded sample of 16 forget rows (a 2-layer TinyMem model then
# needs ~1k neurons × 16 rows ≈ 16k sequence-forwards); pass max_sequences=None to probe all.
CPU_MAX_SEQUENCES = 16
MAX_ROWS = 256  # rows (neurons × sequences) per probe batch: memory only, not the scores


@torch.no_grad()
def live_neurons(model: nn.Module, forget: SequenceSet, batch_size: int) -> list[torch.Tensor]:
    """Per layer, the neurons with a non-zero activation somewhere on the forget set."""
    layers = mlps(model)
    peak = [torch.zeros(m.d_ff) for m in layers]
    dev = model_device(model)

    def record(layer: int, act: torch.Tensor) -> None:
        peak[layer] = torch.maximum(peak[layer], act.detach().abs().amax(dim=(0, 1)).float().cpu())

    with neuron_hook(model, record):
        for tokens in forget.batches(batch_size):
            model(input_ids=tokens.to(dev))
    return [torch.nonzero(p > 0).flatten() for p in peak]


@torch.no_grad()
def ablation_deltas(
    model: nn.Module, forget: SequenceSet, layer: int, neurons: torch.Tensor, max_rows: int = MAX_ROWS
) -> torch.Tensor:
    """Δ mean suffix loss when each of `neurons` (in `layer`) is zeroed alone, batched."""
    dev = model_device(model)
    d_ff = mlps(model)[layer].d_ff
    n_seq = min(len(forget), max_rows)
    k_max = max(1, max_rows // n_seq)
    delta = torch.zeros(len(neurons), dtype=torch.float64)
    for tokens in forget.batches(n_seq):
        tokens = tokens.to(dev)
        nb = tokens.shape[0]
        base = suffix_loss(model, tokens, forget).double().sum().cpu()
        for lo in range(0, len(neurons), k_max):
            probe = neurons[lo : lo + k_max]
            k = len(probe)
            keep = torch.ones(k, 1, 1, d_ff, device=dev)
            keep[torch.arange(k), 0, 0, probe.to(dev)] = 0

            def zero(at: int, act: torch.Tensor, keep=keep, k=k) -> torch.Tensor | None:
                if at != layer:
                    return None
                shaped = act.reshape(k, -1, *act.shape[1:])
                return (shaped * keep.to(act.dtype)).reshape(act.shape)

            with neuron_hook(model, zero):
                losses = suffix_loss(model, tokens.repeat(k, 1), forget)
            delta[lo : lo + k] += losses.view(k, nb).double().sum(1).cpu() - base
    return (delta / len(forget)).float()


def attribute(
    model: nn.Module,
    forget: SequenceSet,
    gen: torch.Generator,
    max_rows: int = MAX_ROWS,
    max_sequences: int | None = None,
):
    forget = sample_sequences(forget, max_sequences, gen)
    layers = mlps(model)
    live = live_neurons(model, forget, max_rows)
    scores = []
    for mlp, idx in zip(layers, live):
        s = torch.zeros(mlp.d_ff)
        if len(idx):
            s[idx] = ablation_deltas(model, forget, mlp.layer, idx, max_rows)
        scores.append(s)
    return scores, {"probed": [len(i) for i in live], "sequences_scored": len(forget)}


@register("zero_out", "neuron", [{"ratio": r, "max_sequences": CPU_MAX_SEQUENCES} for r in RATIO_GRID])
def zero_out(
    model: nn.Module, task: EditTask, *, seed: int = 0, ratio: float, max_sequences: int | None = None
) -> EditResult:
    """Remove the per-layer top `ratio` neurons by the rise in forget loss when each is zeroed.
    `max_sequences` probes a seeded sample of the forget set (None: all of it)."""
    key = {"max_rows": MAX_ROWS, "max_sequences": max_sequences}
    return neuron_method(
        model, task, ratio, seed, lambda m, f, g: attribute(m, f, g, **key), method="zero_out", key=key
    )
