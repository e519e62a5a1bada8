"""Gradient-ascent baselines (Yao et al. 2024), which the paper's reviewers asked for.

- `gradient_ascent`: maximise the forget set's suffix CE (the memorised continuation) for
  `steps` Adam steps on all weights. Simple and fast, but nothing holds the rest of the model
  in place, so it tends to degrade everything.
- `gradient_ascent_kl`: the same ascent plus `kl_weight`·KL(p_original ‖ p_edited) on retain
  batches, against a frozen copy of the unedited model — it pays to move away from the
  original only on the forget data.

`ascend` can also stop early once the forget loss of the current batch reaches
`max_forget_loss`, since ascent on CE is unbounded; the registered methods run their `steps`.
"""

from __future__ import annotations

import copy
import itertools
import time

import torch
import torch.nn.functional as F
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods._sequences import (
    SequenceSet,
    check_forget,
    check_nonempty,
    shuffled_batches,
    suffix_loss,
)

LRS = (1e-5, 1e-4, 1e-3)
STEPS = (10, 50)  # "a few steps": ascent collapses the model long before an epoch-scale budget
BATCH_SIZE = 32


def cycle_batches(n: int, size: int, gen: torch.Generator):
    """Endless seeded epochs of row-index batches."""
    for _ in itertools.count():
        yield from shuffled_batches(n, size, gen)


def retain_kl(
    model: nn.Module, original: nn.Module, tokens: torch.Tensor, pad_id: int | None
) -> torch.Tensor:
    """Mean over non-padding next-token positions of KL(original ‖ edited)."""
    logp = F.log_softmax(model(input_ids=tokens).logits[:, :-1].float(), -1)
    with torch.no_grad():
        logq = F.log_softmax(original(input_ids=tokens).logits[:, :-1].float(), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    keep = torch.ones_like(kl, dtype=torch.bool) if pad_id is None else tokens[:, 1:] != pad_id
    return (kl * keep).sum() / keep.sum().clamp(min=1)


def ascend(
    model: nn.Module,
    forget: SequenceSet,
    retain: SequenceSet | None,
    *,
    seed: int,
    lr: float,
    steps: int,
    batch_size: int,
    kl_weight: float,
    max_forget_loss: float | None,
) -> EditResult:
    """Adam steps up the forget set's suffix CE, with `kl_weight`·KL on `retain` batches when
    `retain` is given; stops after `steps` or once a batch's forget loss reaches `max_forget_loss`."""
    check_forget(forget)
    if retain is not None:
        check_nonempty(retain, "retain")
    if steps < 1 or lr <= 0:
        raise ValueError(f"need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    t0 = time.perf_counter()
    dev = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    original = None
    if retain is not None:
        original = copy.deepcopy(model).eval()
        original.requires_grad_(False)
    was_training = model.training
    model.eval()  # no dropout: the edit, not the noise, should move the loss
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    forget_rows = cycle_batches(len(forget), batch_size, gen)
    retain_rows = cycle_batches(len(retain), batch_size, gen) if retain is not None else None
    forget_trace, kl_trace, stopped_early, done = [], [], False, 0
    for _ in range(steps):
        opt.zero_grad()
        tokens = forget.tokens[next(forget_rows)].to(dev)
        f_loss = suffix_loss(model, tokens, forget).mean()
        forget_trace.append(f_loss.item())
        if max_forget_loss is not None and f_loss.item() >= max_forget_loss:
            stopped_early = True
            break
        loss = -f_loss
        if original is not None:
            r_tokens = retain.tokens[next(retain_rows)].to(dev)
            kl = retain_kl(model, original, r_tokens, retain.pad_id)
            kl_trace.append(kl.item())
            loss = loss + kl_weight * kl
        loss.backward()
        opt.step()
        done += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    stats = {
        "steps": done,
        "stopped_early": stopped_early,
        "forget_loss_first": forget_trace[0],
        "forget_loss_last": forget_trace[-1],
        "seconds": time.perf_counter() - t0,
    }
    if kl_trace:
        stats["retain_kl_last"] = kl_trace[-1]
    return EditResult(model, stats)


@register("gradient_ascent", "baseline", [{"lr": lr, "steps": s} for lr in LRS for s in STEPS])
def gradient_ascent(
    model: nn.Module, task: EditTask, *, seed: int = 0, lr: float = 1e-4, steps: int = 10
) -> EditResult:
    """Maximise forget CE for `steps` steps; `task.retain` is unused (that is the point of the baseline)."""
    return ascend(
        model,
        task.forget,
        None,
        seed=seed,
        lr=lr,
        steps=steps,
        batch_size=BATCH_SIZE,
        kl_weight=0.0,
        max_forget_loss=None,
    )


@register(
    "gradient_ascent_kl",
    "baseline",
    [{"lr": lr, "steps": s, "kl_weight": 1.0} for lr in LRS for s in STEPS],
)
def gradient_ascent_kl(
    model: nn.Module,
    task: EditTask,
    *,
    seed: int = 0,
    lr: float = 1e-4,
    steps: int = 10,
    kl_weight: float = 1.0,
) -> EditResult:
    """Maximise forget CE while keeping retain predictions close (KL) to the unedited model."""
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
    return ascend(
        model,
        task.forget,
        task.retain,
        seed=seed,
        lr=lr,
        steps=steps,
        batch_size=BATCH_SIZE,
        kl_weight=kl_weight,
        max_forget_loss=None,
    )
