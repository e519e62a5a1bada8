"""The sequences every method works on, and the losses and checks over them.

`SequenceSet` holds fixed-length token rows and where each row's judged window starts; the
losses here define "the memorised part" once: the predictions of tokens from each row's start
on that are not padding, i.e. what the memorisation metric judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from ingest.lm.runtime import model_device


@dataclass(frozen=True)
class SequenceSet:
    """Fixed-length token rows [N, T]; `pad_id` positions are excluded from every loss.

    Memorisation is judged on tokens[prompt_len:], or per row on tokens[prompt_lens[i]:] when
    the rows' judged windows start at different places (a backdoor's window starts right after
    its trigger). Without per-row starts, the forget loss of a backdoor set would also cover the
    clean tokens before each trigger, and unlearning would ascend on what the model should keep.
    Methods get a batch's starts with `starts(tokens)`, whatever order or repetition the batch has.
    """

    tokens: torch.Tensor
    prompt_len: int  # memorisation is judged on tokens[prompt_len:] (the smallest start)
    pad_id: int | None = None
    clean: torch.Tensor | None = None  # clean counterparts of artifact rows (same shape), if any
    prompt_lens: torch.Tensor | None = None  # [N] per-row starts (each >= prompt_len), if rows differ

    def __post_init__(self):
        if self.tokens.dim() != 2:
            raise ValueError(f"tokens must be [N, T], got {tuple(self.tokens.shape)}")
        if not 0 < self.prompt_len < self.tokens.shape[1]:
            raise ValueError(f"prompt_len {self.prompt_len} must be in (0, {self.tokens.shape[1]})")
        if self.prompt_lens is not None:
            pls = self.prompt_lens
            if pls.shape != (self.tokens.shape[0],):
                raise ValueError(f"prompt_lens must be [{self.tokens.shape[0]}], got {tuple(pls.shape)}")
            if len(pls) and (int(pls.min()) < self.prompt_len or int(pls.max()) >= self.tokens.shape[1]):
                raise ValueError(f"prompt_lens must lie in [{self.prompt_len}, {self.tokens.shape[1]})")

    @cached_property
    def _start_of(self) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for row, start in zip(self.tokens.cpu().numpy(), self.prompt_lens.tolist(), strict=True):
            key = row.tobytes()
            out[key] = min(start, out.get(key, start))  # equal rows: the wider window
        return out

    def starts(self, tokens: torch.Tensor) -> int | torch.Tensor:
        """Where the judged window of each row of `tokens` (rows of this set) starts: `prompt_len`,
        or a [B] tensor of per-row starts. A row that is not in the set has no known window."""
        if self.prompt_lens is None:
            return self.prompt_len
        try:
            found = [self._start_of[row.tobytes()] for row in tokens.cpu().numpy()]
        except KeyError:
            raise ValueError("rows outside this sequence set have no per-row prompt length") from None
        return torch.tensor(found, dtype=torch.long)

    def subset(self, idx: torch.Tensor) -> SequenceSet:
        """The rows `idx` (with their clean counterparts and starts)."""
        return SequenceSet(
            self.tokens[idx],
            self.prompt_len,
            self.pad_id,
            self.clean[idx] if self.clean is not None else None,
            self.prompt_lens[idx] if self.prompt_lens is not None else None,
        )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batches(self, size: int, *, generator: torch.Generator | None = None):
        order = (
            torch.randperm(len(self), generator=generator)
            if generator is not None
            else torch.arange(len(self))
        )
        for i in range(0, len(self), size):
            yield self.tokens[order[i : i + size]]


def sequence_loss(
    model: nn.Module, tokens: torch.Tensor, pad_id: int | None, start: int | torch.Tensor = 0
) -> torch.Tensor:
    """Per-sequence mean next-token cross-entropy [N] over targets at positions >= max(start, 1)
    (`start` an int or one per row), padding excluded (the original counted padding; that bug is
    not reproduced here)."""
    logits = model(input_ids=tokens).logits[:, :-1].float()
    targets = tokens[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    keep = torch.ones_like(targets, dtype=torch.bool)
    if pad_id is not None:
        keep &= targets != pad_id
    if isinstance(start, torch.Tensor):
        pos = torch.arange(1, targets.shape[1] + 1, device=targets.device)
        keep &= pos[None, :] >= start.to(targets.device)[:, None]
    elif start > 1:
        keep[:, : start - 1] = False
    return (ce * keep).sum(1) / keep.sum(1).clamp(min=1)


def suffix_mask(tokens: torch.Tensor, prompt_len: int | torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """[N, T] bool: positions t whose next-token prediction is judged — prompt_len-1 ≤ t ≤ T-2 and
    tokens[t+1] is not padding (`prompt_len` an int or one per row, see `SequenceSet.starts`).
    The activation at t is what produces the prediction of t+1."""
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    if isinstance(prompt_len, torch.Tensor):
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        mask[:, :-1] = pos[None, :-1] >= prompt_len.to(tokens.device)[:, None] - 1
    else:
        mask[:, prompt_len - 1 : -1] = True
    if pad_id is not None:
        mask[:, :-1] &= tokens[:, 1:] != pad_id
    return mask


def suffix_loss(model: nn.Module, tokens: torch.Tensor, seqs: SequenceSet) -> torch.Tensor:
    """Per-sequence CE [N] on the memorised suffix (targets at positions >= each row's start, padding
    excluded): what the unlearning methods probe, train or ascend (the weight methods' forget loss)."""
    return sequence_loss(model, tokens.to(model_device(model)), seqs.pad_id, start=seqs.starts(tokens))


def check_nonempty(seqs: SequenceSet, name: str) -> None:
    """An empty set is a caller error (e.g. nothing memorised): say so instead of producing NaN."""
    if len(seqs) == 0:
        raise ValueError(f"{name} set is empty: nothing to {'unlearn' if name == 'forget' else 'retain'}")


def check_forget(forget: SequenceSet) -> None:
    """The forget set must have rows and at least one judged (non-padding) suffix token; otherwise
    every attribution would be 0 and the removal an arbitrary tie-break."""
    check_nonempty(forget, "forget")
    if not suffix_mask(forget.tokens, forget.starts(forget.tokens), forget.pad_id).any():
        raise ValueError("forget set has no non-padding tokens after prompt_len: nothing to unlearn")


def shuffled_batches(n: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Row indices of one epoch in seeded random order, split into batches of `size`."""
    order = torch.randperm(n, generator=gen)
    return list(order.split(size))
