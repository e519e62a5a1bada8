"""Integrated gradients (knowledge neurons, Dai et al. 2022): neurons whose activation builds up
the probability of the memorised next token.

For a forget sequence, a layer l and a judged suffix position t, the activation vector of
layer l at t is scaled by α = k/m, k = 1..m (m = `ig_steps`, 20); IG = activation ⊙ mean over
k of ∂p(token_{t+1})/∂activation. Scores are averaged over a sequence's positions and summed
over sequences (the original hard-coded m = 20 and divided by 10).

Vectorised with the KV cache: scaling the activation at t changes only what position t
computes (causal attention), so the unedited prefix 0..t-1 is run once, cached, and each
(position, layer) costs one single-token forward/backward whose batch holds every (sequence,
step) row — rows are independent, so one backward of Σ p gives every row's gradient. That is
~T times cheaper than re-running the prefix per row; the cost left is L·(positions) small
forwards per group of sequences. The CPU grid still caps the sequences scored
(`max_sequences`, a seeded sample).
"""

from __future__ import annotations

import torch
from torch import nn

from ingest.lm.arch import mlps, neuron_hook
from ingest.lm.hf_compat import output_cache, with_cache
from ingest.lm.runtime import model_device
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods._sequences import SequenceSet, suffix_mask
from ingest.mitigation.methods.neurons._attribution import RATIO_GRID, neuron_method, sample_sequences

CPU_MAX_SEQUENCES = 32  # CPU scaling of the grid; pass max_sequences=None to score all
MAX_ROWS = 512  # rows (sequences × steps) per batch: memory only, not the scores


@torch.no_grad()
def prefix_pass(model: nn.Module, tokens: torch.Tensor):
    """One unedited forward: every layer's activations [n, T, d_ff] and the KV cache."""
    acts: dict[int, torch.Tensor] = {}

    def keep(layer: int, act: torch.Tensor) -> None:
        acts[layer] = act.detach()

    with neuron_hook(model, keep):
        cache = output_cache(model(input_ids=tokens, use_cache=True))
    return [acts[layer] for layer in sorted(acts)], cache


def group_ig(model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Per layer, Σ over this group of sequences of the position-averaged IG [d_ff]."""
    n, length = tokens.shape
    acts, cache = prefix_pass(model, tokens)
    cache.batch_repeat_interleave(steps)  # row = (sequence, step), sequence-major
    alpha = (torch.arange(1, steps + 1, device=tokens.device) / steps).repeat(n)[:, None]
    per_seq = 1.0 / (steps * mask.sum(1).clamp(min=1).float())
    totals = [torch.zeros(a.shape[-1], dtype=torch.float64, device=tokens.device) for a in acts]
    cached = length
    for t in torch.nonzero(mask.any(0)).flatten().flip(0).tolist():  # descending: crop only shrinks
        cache.crop(t - cached)
        cached = t
        if cache.get_seq_length() != t:
            raise RuntimeError(f"KV cache holds {cache.get_seq_length()} positions, expected {t}")
        inp = tokens[:, t : t + 1].repeat_interleave(steps, 0)
        target = tokens[:, t + 1].repeat_interleave(steps)[:, None]
        weight = (mask[:, t].float() * per_seq).repeat_interleave(steps)[:, None]
        for layer, act in enumerate(acts):
            base = act[:, t].float().repeat_interleave(steps, 0)
            scaled = (base * alpha).requires_grad_(True)

            def write(at: int, out: torch.Tensor, layer=layer, scaled=scaled) -> torch.Tensor | None:
                if at != layer:
                    return None
                out = out.clone()
                out[:, -1] = scaled.to(out.dtype)
                return out

            with neuron_hook(model, write):
                out = model(input_ids=inp, use_cache=True, **with_cache(model, cache))
                logits = out.logits[:, -1].float()
            cache.crop(-1)  # drop the probe token the forward appended
            prob = logits.softmax(-1).gather(1, target).sum()
            (grad,) = torch.autograd.grad(prob, scaled)
            totals[layer] += (base * grad * weight).double().sum(0)
    return [t.float().cpu() for t in totals]


def attribute(
    model: nn.Module,
    forget: SequenceSet,
    gen: torch.Generator,
    *,
    steps: int,
    max_sequences: int | None,
    max_rows: int,
):
    dev = model_device(model)
    forget = sample_sequences(forget, max_sequences, gen)
    tokens = forget.tokens
    mask = suffix_mask(tokens, forget.starts(tokens), forget.pad_id)
    group = max(1, max_rows // steps)  # sequences per batch: rows = sequences × steps
    scores = [torch.zeros(m.d_ff) for m in mlps(model)]
    for lo in range(0, len(tokens), group):
        part = group_ig(model, tokens[lo : lo + group].to(dev), mask[lo : lo + group].to(dev), steps)
        scores = [s + p for s, p in zip(scores, part)]
    return scores, {"sequences_scored": len(forget), "ig_steps": steps}


@register(
    "integrated_gradients",
    "neuron",
    [{"ratio": r, "ig_steps": 20, "max_sequences": CPU_MAX_SEQUENCES} for r in RATIO_GRID],
)
def integrated_gradients(
    model: nn.Module,
    task: EditTask,
    *,
    seed: int = 0,
    ratio: float,
    ig_steps: int = 20,
    max_sequences: int | None = None,
) -> EditResult:
    """Remove the per-layer top `ratio` neurons by integrated gradients of p(memorised token).
    `max_sequences` scores a seeded sample of the forget set (None: all of it)."""
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1, got {ig_steps}")
    key = {"steps": ig_steps, "max_sequences": max_sequences, "max_rows": MAX_ROWS}
    return neuron_method(
        model,
        task,
        ratio,
        seed,
        lambda m, f, g: attribute(m, f, g, **key),
        method="integrated_gradients",
        key=key,
    )
