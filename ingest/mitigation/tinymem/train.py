"""A nanoGPT-minimal trainer for TinyMem models (Sakarvadia et al. 2024), resumable from its checkpoints.

AdamW (lr 1e-3, weight decay 0.1 on every parameter, betas (0.9, 0.98)), batch 128, constant
learning rate: the original's recipe, and the default. `warmup_fraction` switches to Pythia's
schedule (`ingest.suite.schedule`: linear warm-up, cosine decay to `min_lr_ratio`·lr), which
reaches the same accuracy in far fewer epochs than a constant rate: the CPU presets use it.
Two deliberate differences, each with a parity switch:
- the loss excludes PAD targets (`count_padding=True` is the original's CE over all positions);
- batches drop trailing all-PAD columns when padding is excluded. The model is causal, so this
  changes no logit of a kept position, only the wasted compute.

Checkpoints are HF directories (`save_pretrained`) plus `trainer_state.pt` holding the AdamW
state, epoch, step, RNG state and the loss hook's state, so fine-tuning can resume the optimizer
exactly as the original did (3500 -> 3505 epochs). The shuffle of epoch e depends only on
(seed, e), so a run resumed from epoch e is bit-identical to one that never stopped.

Train-time regularisers plug in through `loss_fn(model, tokens, ids) -> scalar`, where `ids` are
the rows' example ids (copies of one artifact share an id: example-tied dropout keys its mask on
it). A loss_fn with `state_dict()` / `load_state_dict()` (a loss-truncation buffer) is saved and
restored with the checkpoint.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2LMHeadModel

from ingest.lm.runtime import model_device
from ingest.mitigation.tinymem.data import TinyMemData
from ingest.suite.schedule import lr_at

MIN_LR_RATIO = 0.1  # the cosine schedule's floor, as a fraction of the peak rate
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
STATE_FILE = "trainer_state.pt"
_CKPT = re.compile(r"^epoch-(\d+)$")


def lm_loss(model: nn.Module, tokens: torch.Tensor, pad_id: int | None, count_padding: bool = False):
    """Mean next-token CE over the batch's targets; PAD targets excluded unless count_padding."""
    logits = model(input_ids=tokens).logits[:, :-1]
    targets = tokens[:, 1:]
    ignore = -100 if count_padding or pad_id is None else pad_id
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore
    )


def trim_padding(tokens: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """Drop trailing columns that are PAD in every row (exact for a causal model)."""
    if pad_id is None or tokens.numel() == 0:
        return tokens
    used = (tokens != pad_id).any(0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]


def checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, directory) of every complete checkpoint under out_dir, oldest first."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = [
        (int(m.group(1)), d)
        for d in out.iterdir()
        if (m := _CKPT.match(d.name)) and (d / STATE_FILE).exists()
    ]
    return sorted(found)


def load_checkpoint(path: str | Path) -> tuple[GPT2LMHeadModel, dict[str, Any]]:
    """(model in eval mode, trainer state: epoch, step, optimizer, rng, loss_fn, seed)."""
    path = Path(path)
    model = GPT2LMHeadModel.from_pretrained(path).eval()
    state = torch.load(path / STATE_FILE, weights_only=False)  # our own file: optimizer + hook state
    return model, state


def _save(out_dir: Path, epoch: int, step: int, model, opt, loss_fn, seed: int) -> Path:
    final = out_dir / f"epoch-{epoch:05d}"
    tmp = out_dir / f".tmp-epoch-{epoch:05d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    state = {
        "epoch": epoch,
        "step": step,
        "seed": seed,
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "loss_fn": loss_fn.state_dict() if hasattr(loss_fn, "state_dict") else None,
    }
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # a checkpoint directory is complete or absent
    return final


def train(
    model: nn.Module,
    data: TinyMemData | torch.Tensor,
    epochs: int,
    *,
    ids: torch.Tensor | None = None,
    pad_id: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.98),
    warmup_fraction: float | None = None,
    min_lr_ratio: float = MIN_LR_RATIO,
    batch_size: int = 128,
    seed: int = 0,
    count_padding: bool = False,
    loss_fn: LossFn | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[int, nn.Module], dict[str, Any] | None] | None = None,
    out_dir: str | Path | None = None,
    ckpt_every: int = 0,
    resume_from: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Train `model` in place up to epoch `epochs` (absolute: a run resumed at epoch e trains e+1..);
    returns one {epoch, step, loss, **on_epoch(...)} per epoch trained.

    data: a TinyMemData (its `train` rows, `train_ids`, `pad_id`) or a [N, T] tensor of rows (then
    `ids` default to row numbers and `pad_id` is taken from the argument) — e.g. fine-tuning sets.
    warmup_fraction: None keeps `lr` constant; else warm-up + cosine over the run's `epochs`
    (absolute, so a resumed run follows the same curve as one that never stopped).
    loss_fn(model, tokens, ids) replaces the LM loss (see module doc). on_batch(step, epoch, loss)
    after every optimizer step; on_epoch(epoch, model) after every epoch, its dict joins the history.
    out_dir + ckpt_every: checkpoint at epoch 0 (fresh runs), every ckpt_every epochs and at the
    end. Resumes from `resume_from` (a checkpoint directory, e.g. a pre-training run's last one for
    fine-tuning) or else from the latest checkpoint in out_dir.
    """
    if isinstance(data, TinyMemData):
        tokens, ids, pad_id = data.train, data.train_ids, data.pad_id
    else:
        tokens = data
        ids = torch.arange(tokens.shape[0]) if ids is None else ids
    if tokens.dim() != 2 or tokens.shape[0] == 0 or ids.shape[0] != tokens.shape[0]:
        raise ValueError(f"need a non-empty [N, T] token matrix with N ids, got {tuple(tokens.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out_dir) if out_dir is not None else None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)

    start, step = 0, 0
    if resume_from is None and out is not None and checkpoints(out):
        resume_from = checkpoints(out)[-1][1]
    if resume_from is not None:
        saved, state = load_checkpoint(resume_from)
        model.load_state_dict(saved.state_dict())
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state["loss_fn"] is not None and hasattr(loss_fn, "load_state_dict"):
            loss_fn.load_state_dict(state["loss_fn"])
        start, step = state["epoch"], state["step"]
    elif out is not None and ckpt_every:
        out.mkdir(parents=True, exist_ok=True)
        _save(out, 0, 0, model, opt, loss_fn, seed)

    history = []
    n = tokens.shape[0]
    total_steps = epochs * -(-n // batch_size)
    if warmup_fraction is not None and not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1) or None, got {warmup_fraction}")
    device = model_device(model)
    for epoch in range(start + 1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        total, batches = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            batch = tokens[idx] if count_padding else trim_padding(tokens[idx], pad_id)
            batch = batch.to(device)
            if warmup_fraction is not None:
                for group in opt.param_groups:
                    group["lr"] = lr_at(step + 1, total_steps, lr, warmup_fraction, min_lr_ratio)
            if loss_fn is None:
                loss = lm_loss(model, batch, pad_id, count_padding)
            else:
                loss = loss_fn(model, batch, ids[idx].to(device))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            total, batches = total + loss.item(), batches + 1
            if on_batch is not None:
                on_batch(step, epoch, loss.item())
        model.eval()
        row = {"epoch": epoch, "step": step, "loss": total / batches}
        if on_epoch is not None:
            row.update(on_epoch(epoch, model) or {})
        history.append(row)
        if out is not None and ckpt_every and (epoch % ckpt_every == 0 or epoch == epochs):
            out.mkdir(parents=True, exist_ok=True)
            _save(out, epoch, step, model, opt, loss_fn, seed)
    model.eval()
    return history
