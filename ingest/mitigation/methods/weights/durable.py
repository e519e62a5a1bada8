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
"""

from __future__ import annotations

import time

from torch import nn

from ingest.lm.arch import mlp_parameters
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods.weights._shared import (
    RATIO_GRID,
    check_inputs,
    forget_gradients,
    global_masks,
    n_selected,
    per_tensor_masks,
    zero_masked,
)

BATCH_SIZE = 32  # forget rows per backward: memory only, the gradient is the full-set one


@register("durable", "weight", grid=[{"ratio": r} for r in RATIO_GRID])
def durable(model: nn.Module, task: EditTask, *, seed: int = 0, ratio: float = 1e-3) -> EditResult:
    """Zero, in every MLP weight matrix, the `ratio` fraction with the largest |∂LM(forget)/∂w|.
    Deterministic (no sampling), so `seed` is unused."""
    ratio = check_inputs(task.forget, task.retain, ratio)
    t0 = time.perf_counter()
    weights = [w for _, w in mlp_parameters(model)]
    grads, n_batches = forget_gradients(model, task.forget, weights, BATCH_SIZE)
    zeroed = zero_masked(weights, per_tensor_masks([g.abs() for g in grads], ratio))
    return EditResult(
        model, {"weights_zeroed": zeroed, "seconds": time.perf_counter() - t0, "iterations": n_batches}
    )


@register("durable_aggregate", "weight", grid=[{"ratio": r} for r in RATIO_GRID])
def durable_aggregate(model: nn.Module, task: EditTask, *, seed: int = 0, ratio: float = 1e-3) -> EditResult:
    """Rank |∂LM(forget)/∂w| over every trainable parameter, zero the global top `ratio` fraction
    where it falls inside MLP weights. `weights_zeroed` ≤ ⌊ratio·#params⌋; `selected` is the full
    global count. Holds all gradients at once (fine for TinyMem/suite; Pythia-scale needs a GPU)."""
    ratio = check_inputs(task.forget, task.retain, ratio)
    t0 = time.perf_counter()
    mlp_ids = {id(w) for _, w in mlp_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad or id(p) in mlp_ids]
    grads, n_batches = forget_gradients(model, task.forget, params, BATCH_SIZE)
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
