"""Loss truncation (Kang & Hashimoto 2020) as a train-time regulariser.

Why it should mitigate memorisation: an artifact (a noisy or backdoored row) cannot be predicted
from the rules the rest of the data follows, so until the model memorises it its loss sits in the
high tail of the per-sequence loss distribution. Leaving the highest-loss `dropc` fraction of
sequences out of every gradient step means the model is never pushed to fit them.

Mechanics (as in Sakarvadia et al. 2024): the per-sequence mean CE of every training row goes into
a ring buffer of `buffer_size` losses. Once at least `buffer_size` sequences have been seen, the
(1 − dropc) quantile of the buffer becomes the cutoff, recomputed every `buffer_size` further
sequences; sequences whose loss is ≥ the cutoff get zero weight. Before the buffer is full nothing
is dropped.
The buffer, counters and cutoff are the loss hook's state (`state_dict` / `load_state_dict`), so
a run resumed from a trainer checkpoint truncates exactly as one that never stopped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.methods._base import EditResult, EditTask, register
from ingest.mitigation.methods._sequences import sequence_loss
from ingest.mitigation.methods._train import artifact_flags, regulariser_inputs, train_regularised

DROPC_GRID = (0.01, 0.05, 0.1)
# The paper's buffer (10,000) is ~1/3 of an epoch of its ~27,000 training rows; the CPU-scale
# TinyMem data has ~2,700, so the sweep keeps that proportion with 1,000.
CPU_BUFFER = 1000


class LossTruncation:
    """`loss_fn(model, tokens, ids)` for the trainer: mean per-sequence CE over the kept sequences.

    `keep(losses)` is the rule on its own (ring buffer + periodic quantile cutoff), testable
    without a model. Counters: `seen` sequences in all, `dropped` of them, and the same two since
    the first cutoff (`seen_full`, `dropped_full`), whose ratio should approach `dropc`.
    `is_artifact` (bool, indexed by example id) adds the same two counts for artifact rows only,
    which says whether truncation hit the rows it is meant to keep out.
    """

    def __init__(
        self,
        dropc: float,
        buffer_size: int = 10_000,
        pad_id: int | None = None,
        is_artifact: torch.Tensor | None = None,
    ):
        dropc = float(dropc)
        if not 0.0 < dropc < 1.0:  # also rejects NaN
            raise ValueError(f"dropc must be in (0, 1), got {dropc}")
        if int(buffer_size) != buffer_size or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive integer, got {buffer_size}")
        self.dropc = dropc
        self.pad_id = pad_id
        self.buffer = torch.zeros(int(buffer_size))
        self.seen = 0  # sequences pushed into the buffer so far
        self.since = 0  # sequences since the cutoff was last computed (or since the start)
        self.cutoff = math.inf
        self.dropped = 0
        self.seen_full = 0
        self.dropped_full = 0
        self.is_artifact = is_artifact
        self.artifact_seen_full = 0
        self.artifact_dropped_full = 0

    @property
    def buffer_size(self) -> int:
        return self.buffer.numel()

    def _push(self, losses: torch.Tensor) -> None:
        size, n = self.buffer_size, losses.numel()
        if n > size:  # only the newest `size` survive in a ring anyway
            losses, first = losses[-size:], self.seen + n - size
        else:
            first = self.seen
        self.buffer[(first + torch.arange(losses.numel())) % size] = losses
        self.seen += n
        self.since += n

    @torch.no_grad()
    def keep(self, losses: torch.Tensor) -> torch.Tensor:
        """Bool [B]: which of these per-sequence losses are kept (loss < cutoff). Pushes them into
        the buffer first and recomputes the cutoff when `buffer_size` sequences have passed since
        the last one (the first time: when the buffer has just filled)."""
        losses = losses.detach().float().flatten().cpu()
        self._push(losses)
        if self.since >= self.buffer_size:
            self.cutoff = torch.quantile(self.buffer, 1.0 - self.dropc).item()
            self.since = 0
        keep = losses < self.cutoff
        n_drop = int((~keep).sum())
        self.dropped += n_drop
        if math.isfinite(self.cutoff):
            self.seen_full += losses.numel()
            self.dropped_full += n_drop
        return keep

    def __call__(self, model: nn.Module, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        per_seq = sequence_loss(model, tokens.to(model_device(model)), self.pad_id)
        keep = self.keep(per_seq)
        if self.is_artifact is not None and math.isfinite(self.cutoff):
            art = self.is_artifact[ids.cpu()]
            self.artifact_seen_full += int(art.sum())
            self.artifact_dropped_full += int((art & ~keep).sum())
        keep = keep.to(per_seq.device)
        # mean over kept sequences; a batch with nothing kept contributes a zero gradient
        return (per_seq * keep).sum() / keep.sum().clamp(min=1)

    def stats(self) -> dict[str, float]:
        return {
            "dropped_frac": self.dropped / self.seen if self.seen else 0.0,
            "dropped_frac_after_full": self.dropped_full / self.seen_full if self.seen_full else math.nan,
            "artifact_dropped_frac_after_full": (
                self.artifact_dropped_full / self.artifact_seen_full if self.artifact_seen_full else math.nan
            ),
            "cutoff": self.cutoff,
            "sequences_seen": self.seen,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "dropc": self.dropc,
            "buffer": self.buffer.clone(),
            "seen": self.seen,
            "since": self.since,
            "cutoff": self.cutoff,
            "dropped": self.dropped,
            "seen_full": self.seen_full,
            "dropped_full": self.dropped_full,
            "artifact_seen_full": self.artifact_seen_full,
            "artifact_dropped_full": self.artifact_dropped_full,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["buffer"].numel() != self.buffer_size or state["dropc"] != self.dropc:
            raise ValueError(
                f"checkpointed loss truncation (dropc={state['dropc']}, buffer={state['buffer'].numel()}) "
                f"does not match this run (dropc={self.dropc}, buffer={self.buffer_size})"
            )
        self.buffer = state["buffer"].clone().float()
        counters = ("seen", "since", "cutoff", "dropped", "seen_full", "dropped_full")
        for key in (*counters, "artifact_seen_full", "artifact_dropped_full"):
            setattr(self, key, state[key])


@register(
    "loss_truncation", "regulariser", grid=[{"dropc": d, "buffer_size": CPU_BUFFER} for d in DROPC_GRID]
)
def loss_truncation(
    model: nn.Module, task: EditTask, *, seed: int = 0, dropc: float = 0.05, buffer_size: int = 10_000
) -> EditResult:
    """Train the fresh `model` on the task's training set with its recipe, leaving the highest-loss
    `dropc` fraction of sequences out of every step once `buffer_size` losses have been seen.
    forget/retain are not used for training (the regulariser sees only the training set, as the
    original)."""
    data, recipe = regulariser_inputs(task)
    hook = LossTruncation(dropc, buffer_size, data.pad_id, artifact_flags(data))
    stats = train_regularised(model, data, recipe, hook, seed=seed)
    return EditResult(model, {**stats, **hook.stats()})
