"""Fine-tuning as mitigation (Sakarvadia et al. 2024): keep training the memorising model, for a
few epochs, on data that contradicts or dilutes what it memorised.

- `ft_clean`: the clean counterparts of the forget rows (`forget.clean`; for backdoors the
  triggered rows without the backdoor). Each one contradicts a memorised artifact directly, so
  this is the most targeted variant; it needs to know the clean versions, which only a planted
  setting (TinyMem) has.
- `ft_extra`: the non-artifact training data (`retain.tokens`). No knowledge of the artifacts is
  needed, so it applies to any model (e.g. the suite's GPT-NeoX models), but it can only dilute.
- `ft_both`: the union of the two.

Training is the TinyMem trainer's (AdamW lr 1e-3, weight decay 0.1, betas (0.9, 0.98), batch 128,
PAD targets excluded) for `epochs` more epochs (a grid point's, else the task's fine-tuning
recipe's, else 5 as the original: 3500 -> 3505); the task's recipe sets batch size and lr. Given
a recipe's `resume_from` (a trainer checkpoint directory, e.g. the base run's last), the weights
*and* the AdamW state are resumed from it, as the original did; otherwise AdamW starts fresh.
"""

from __future__ import annotations

import torch
from torch import nn

from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods._sequences import SequenceSet
from ingest.mitigation.methods._train import fine_tuning_recipe, finetune

# The original fine-tuned 5 epochs and measured memorisation after each; the sweep's points are
# the first epochs, where the trade-off moves most (each point is a separate run).
EPOCHS_GRID = (1, 2, 3)


def _clean_rows(forget: SequenceSet, method: str) -> torch.Tensor:
    if forget.clean is None:
        raise ValueError(
            f"{method} needs the clean counterparts of the forget rows (forget.clean), which this forget "
            "set does not have (only planted TinyMem data does); use ft_extra instead"
        )
    return forget.clean


@register("ft_clean", "fine_tuning", grid=[{"epochs": e} for e in EPOCHS_GRID])
def ft_clean(model: nn.Module, task: EditTask, *, seed: int = 0, epochs: int | None = None) -> EditResult:
    """Fine-tune on the clean counterparts of the forget rows. An empty forget set (nothing
    memorised) leaves nothing to train on and is an error."""
    forget = task.forget
    rows = _clean_rows(forget, "ft_clean")
    if len(forget) == 0:
        raise ValueError("forget set is empty: nothing is memorised, ft_clean has no clean rows to train on")
    return finetune(model, rows, forget.pad_id, fine_tuning_recipe(task, epochs), seed=seed)


@register("ft_extra", "fine_tuning", grid=[{"epochs": e} for e in EPOCHS_GRID])
def ft_extra(model: nn.Module, task: EditTask, *, seed: int = 0, epochs: int | None = None) -> EditResult:
    """Fine-tune on the non-artifact training data (`task.retain`); the forget set is unused."""
    retain = task.retain
    if len(retain) == 0:
        raise ValueError("retain set is empty: ft_extra has nothing to train on")
    return finetune(model, retain.tokens, retain.pad_id, fine_tuning_recipe(task, epochs), seed=seed)


@register("ft_both", "fine_tuning", grid=[{"epochs": e} for e in EPOCHS_GRID])
def ft_both(model: nn.Module, task: EditTask, *, seed: int = 0, epochs: int | None = None) -> EditResult:
    """Fine-tune on the clean counterparts of the forget rows plus the retain rows (an empty forget
    set leaves the retain rows alone, i.e. ft_extra)."""
    forget, retain = task.forget, task.retain
    clean = _clean_rows(forget, "ft_both")
    if clean.shape[1] != retain.tokens.shape[1]:
        raise ValueError(f"forget rows are {clean.shape[1]} tokens, retain rows {retain.tokens.shape[1]}")
    rows = torch.cat([clean, retain.tokens])
    pad_id = retain.pad_id if retain.pad_id is not None else forget.pad_id
    return finetune(model, rows, pad_id, fine_tuning_recipe(task, epochs), seed=seed)
