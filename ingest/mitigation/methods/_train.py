"""What the methods that train share (regularisers: a fresh model on the training set;
fine-tuning: more epochs of the base model), on the TinyMem trainer (`tinymem.train`).

`training_recipe` / `fine_tuning_recipe` are a task's recipes, or the methods' defaults when the
task has none (regularisers: the original's 20 epochs; fine-tuning: its 5 more).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.methods._base import EditResult, EditTask, Recipe
from ingest.mitigation.tinymem.data import TinyMemData
from ingest.mitigation.tinymem.train import STATE_FILE, lm_loss, train

REGULARISER_EPOCHS = 20
FT_EPOCHS = 5  # the original fine-tuned 5 more epochs (3500 -> 3505)


def training_recipe(task: EditTask) -> Recipe:
    """How a regulariser trains its fresh model: the base model's recipe from the task."""
    return task.training or Recipe(epochs=REGULARISER_EPOCHS)


def fine_tuning_recipe(task: EditTask, epochs: int | None) -> Recipe:
    """How fine-tuning continues: the task's recipe, `epochs` (a grid point's) when given."""
    recipe = task.fine_tuning or Recipe(epochs=FT_EPOCHS)
    return recipe if epochs is None else replace(recipe, epochs=epochs)


def regulariser_inputs(task: EditTask) -> tuple[TinyMemData, Recipe]:
    """(training set, recipe) of a regulariser's run. Regularisers train from scratch, so they need
    the training set the base model saw."""
    recipe = training_recipe(task)
    if not isinstance(task.data, TinyMemData):
        raise ValueError("train-time regularisers need `data`, the TinyMemData the base model was trained on")
    if int(recipe.epochs) != recipe.epochs or recipe.epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {recipe.epochs}")
    return task.data, recipe


def artifact_flags(data: TinyMemData) -> torch.Tensor:
    """Bool lookup by example id: is that example an artifact row."""
    flags = torch.zeros(int(data.train_ids.max()) + 1, dtype=torch.bool)
    flags[data.train_ids[data.train_artifact]] = True
    return flags


def train_regularised(
    model: nn.Module,
    data: TinyMemData,
    recipe: Recipe,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    seed: int,
) -> dict[str, Any]:
    """Train `model` in place on `data` with the trainer's AdamW, `recipe` and `loss_fn`; returns
    the stats every regulariser reports (seconds, final epoch loss, epochs). The recipe's out_dir /
    ckpt_every make the run checkpointed and resumable (the loss hook's state travels with the
    checkpoint); its lr / warmup_fraction are the base model's schedule, so the two are comparable."""
    t0 = time.perf_counter()
    history = train(
        model, data, recipe.epochs, seed=seed, batch_size=recipe.batch_size, loss_fn=loss_fn,
        out_dir=recipe.out_dir, ckpt_every=recipe.ckpt_every, lr=recipe.lr,
        warmup_fraction=recipe.warmup_fraction,
    )  # fmt: skip
    return {
        "seconds": time.perf_counter() - t0,
        "final_loss": history[-1]["loss"] if history else math.nan,
        "epochs": int(recipe.epochs),
    }


def finetune(
    model: nn.Module,
    rows: torch.Tensor,
    pad_id: int | None,
    recipe: Recipe,
    *,
    seed: int,
) -> EditResult:
    """Train `model` in place on `rows` for the recipe's epochs more, at its constant lr (from its
    `resume_from` checkpoint, weights and AdamW state, if given)."""
    epochs, checkpoint = recipe.epochs, recipe.resume_from
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
        model, rows, start + int(epochs), pad_id=pad_id, seed=seed, batch_size=recipe.batch_size,
        loss_fn=loss_fn, resume_from=checkpoint, lr=recipe.lr,
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
