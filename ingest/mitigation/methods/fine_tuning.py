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
PAD targets excluded) for `epochs` more epochs, 5 by default as the original (3500 -> 3505). Given
`checkpoint=` (a trainer checkpoint directory, e.g. the base run's last), the weights *and* the
AdamW state are resumed from it, as the original did; otherwise AdamW starts fresh on `model`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.methods.base import EditResult, SequenceSet, register
from ingest.mitigation.tinymem.data import TinyMemData
from ingest.mitigation.tinymem.train import STATE_FILE, lm_loss, train

EPOCHS = 5
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


def finetune(
    model: nn.Module,
    rows: torch.Tensor,
    pad_id: int | None,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    checkpoint: str | Path | None,
    lr: float = 1e-3,
) -> EditResult:
    """Train `model` in place on `rows` for `epochs` more epochs at constant `lr` (from
    `checkpoint` if given)."""
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")
    if rows.dim() != 2 or rows.shape[0] == 0:
        raise ValueError(
            f"nothing to fine-tune on: need a non-empty [N, T] set of rows, got {tuple(rows.shape)}"
        )
    start = 0
    if checkpoint is not None:
        state_file = Path(checkpoint) / STATE_FILE
        if not state_file.exists():
            raise ValueError(f"{checkpoint} is not a trainer checkpoint (no {STATE_FILE})")
        start = int(torch.load(state_file, weights_only=False)["epoch"])  # our own file
    dev = model_device(model)

    def loss_fn(m: nn.Module, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return lm_loss(m, tokens.to(dev), pad_id)

    t0 = time.perf_counter()
    history = train(
        model, rows, start + int(epochs), pad_id=pad_id, seed=seed, batch_size=batch_size, loss_fn=loss_fn,
        resume_from=checkpoint, lr=lr,
    )  # fmt: skip
    stats = {
        "seconds": time.perf_counter() - t0,
        "final_loss": history[-1]["loss"] if history else math.nan,
        "losses": [h["loss"] for h in history],
        "rows": int(rows.shape[0]),
        "epochs": int(epochs),
        "start_epoch": start,
    }
    return EditResult(model, stats)


@register("ft_clean", "fine_tuning", grid=[{"epochs": e} for e in EPOCHS_GRID])
def ft_clean(
    model: nn.Module,
    forget: SequenceSet,
    retain: SequenceSet,
    *,
    seed: int = 0,
    data: TinyMemData | None = None,
    epochs: int = EPOCHS,
    batch_size: int = 128,
    lr: float = 1e-3,
    checkpoint: str | Path | None = None,
) -> EditResult:
    """Fine-tune on the clean counterparts of the forget rows. An empty forget set (nothing
    memorised) leaves nothing to train on and is an error."""
    rows = _clean_rows(forget, "ft_clean")
    if len(forget) == 0:
        raise ValueError("forget set is empty: nothing is memorised, ft_clean has no clean rows to train on")
    return finetune(
        model, rows, forget.pad_id, seed=seed, epochs=epochs, batch_size=batch_size, checkpoint=checkpoint,
        lr=lr,
    )  # fmt: skip


@register("ft_extra", "fine_tuning", grid=[{"epochs": e} for e in EPOCHS_GRID])
def ft_extra(
    model: nn.Module,
    forget: SequenceSet,
    retain: SequenceSet,
    *,
    seed: int = 0,
    data: TinyMemData | None = None,
    epochs: int = EPOCHS,
    batch_size: int = 128,
    lr: float = 1e-3,
    checkpoint: str | Path | None = None,
) -> EditResult:
    """Fine-tune on the non-artifact training data (`retain`); `forget` and `data` are unused."""
    if len(retain) == 0:
        raise ValueError("retain set is empty: ft_extra has nothing to train on")
    return finetune(
        model, retain.tokens, retain.pad_id, seed=seed, epochs=epochs, batch_size=batch_size,
        checkpoint=checkpoint, lr=lr,
    )  # fmt: skip


@register("ft_both", "fine_tuning", grid=[{"epochs": e} for e in EPOCHS_GRID])
def ft_both(
    model: nn.Module,
    forget: SequenceSet,
    retain: SequenceSet,
    *,
    seed: int = 0,
    data: TinyMemData | None = None,
    epochs: int = EPOCHS,
    batch_size: int = 128,
    lr: float = 1e-3,
    checkpoint: str | Path | None = None,
) -> EditResult:
    """Fine-tune on the clean counterparts of the forget rows plus the retain rows (an empty forget
    set leaves the retain rows alone, i.e. ft_extra)."""
    clean = _clean_rows(forget, "ft_both")
    if clean.shape[1] != retain.tokens.shape[1]:
        raise ValueError(f"forget rows are {clean.shape[1]} tokens, retain rows {retain.tokens.shape[1]}")
    rows = torch.cat([clean, retain.tokens])
    pad_id = retain.pad_id if retain.pad_id is not None else forget.pad_id
    return finetune(
        model, rows, pad_id, seed=seed, epochs=epochs, batch_size=batch_size, checkpoint=checkpoint, lr=lr
    )
