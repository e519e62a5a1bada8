"""One view of a causal LM's MLP blocks, for GPT-2 (TinyMem) and GPT-NeoX (suite, Pythia).

Every unlearning method edits MLPs only (the mitigation paper's choice): neuron methods score
and remove hidden units of the up-projection, weight methods score and zero MLP weights. This
module hides the two architectures' differences — GPT-2's `Conv1D` stores weights as
[in, out], `nn.Linear` as [out, in] — so a method is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MLP:
    layer: int
    up: nn.Module  # hidden -> d_ff (GPT-2 c_fc, NeoX dense_h_to_4h)
    down: nn.Module  # d_ff -> hidden (GPT-2 c_proj, NeoX dense_4h_to_h)
    act: nn.Module  # the activation module; its output is the "neuron activations" [B, T, d_ff]
    d_ff: int

    def neuron_in_weights(self) -> torch.Tensor:
        """[d_ff, hidden] view: row i = the input weights of neuron i."""
        w = self.up.weight
        return w.t() if _is_conv1d(self.up) else w

    def neuron_out_weights(self) -> torch.Tensor:
        """[d_ff, hidden] view: row i = the output weights of neuron i."""
        w = self.down.weight
        return w if _is_conv1d(self.down) else w.t()

    @torch.no_grad()
    def remove_neurons(self, idx: torch.Tensor) -> None:
        """Zero the input weights and bias of neurons `idx` (their activation becomes act(0) = 0)."""
        self.neuron_in_weights()[idx] = 0
        if self.up.bias is not None:
            self.up.bias[idx] = 0


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers.pytorch_utils.Conv1D


def mlps(model: nn.Module) -> list[MLP]:
    """The MLP of every transformer block, in layer order."""
    base = model.base_model
    if hasattr(base, "h"):  # GPT-2
        blocks = [(b.mlp.c_fc, b.mlp.c_proj, b.mlp.act) for b in base.h]
    elif hasattr(base, "layers") and hasattr(base.layers[0].mlp, "dense_h_to_4h"):  # GPT-NeoX
        blocks = [(b.mlp.dense_h_to_4h, b.mlp.dense_4h_to_h, b.mlp.act) for b in base.layers]
    else:
        raise ValueError(f"unsupported architecture {type(model).__name__}: expected GPT-2 or GPT-NeoX")
    out = []
    for i, (up, down, act) in enumerate(blocks):
        d_ff = up.weight.shape[1] if _is_conv1d(up) else up.weight.shape[0]
        out.append(MLP(i, up, down, act, d_ff))
    return out


def mlp_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight matrix) of every MLP projection: what weight-level methods may zero."""
    named = {id(p): n for n, p in model.named_parameters()}
    return [(named[id(m.weight)], m.weight) for mlp in mlps(model) for m in (mlp.up, mlp.down)]


@contextmanager
def neuron_hook(model: nn.Module, fn: Callable[[int, torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Call fn(layer, activations [B, T, d_ff]) on every MLP's activations; a returned tensor
    replaces them (scaling, masking, recording)."""
    handles = [
        mlp.act.register_forward_hook(lambda _m, _inp, out, layer=mlp.layer: fn(layer, out))
        for mlp in mlps(model)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
