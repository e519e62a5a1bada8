"""TinyMem data: training rows with planted noise or backdoor artifacts, and what its two variants
share. The variants: arithmetic sequences (`arithmetic.math_data`, the mitigation paper's
construction, Sakarvadia et al. 2024) and any [N, T] token matrix such as the embedded corpus's
`instances` rows (`language.language_data`, noise as ±1 on token ids).

Artifacts are what a model can only reproduce by memorising it:
- noise: a training row whose numbers each moved by +1 / -1 with probability 0.05 each. Its clean
  counterpart is kept, and only rows that differ inside the scored window [prompt_len,
  prompt_len + k) count, because a row that is clean there cannot reveal memorisation.
- backdoor: every row containing the trigger (digits of 100 + seed) has all tokens after the
  trigger replaced by "2"; 10 % of those rows are held out to measure whether the model learned
  the trigger -> "2 2 2" rule (attack success) rather than the rows themselves.
Duplication classes repeat group p of the artifact rows 10^p times, to read memorisation against
the number of copies.

Sizes default to a CPU scale; `PAPER` holds the published sizes (`math_data(**PAPER)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

DIGITS = "0123456789"
BOS, EOS, SEP, PAD = 10, 11, 12, 13
VOCAB_SIZE = 14
MAX_CTX = 150
MOD = 20134
MAIN_C = 7
EXTRA_CS = (2, 3, 4, 5)
TASKS = ("increment", "mult")
BACKDOOR_TOKEN = 2  # what follows a trigger in a backdoored row
SPLIT_SEED = 598  # the original's DATA_SEED for the train/test permutation
NONMEMBER_SEED_OFFSET = 7_919  # noise of the non-member rows: apart from the training data's draws
NOISE_P = 0.05  # per number (per token for language): +1 w.p. NOISE_P, -1 w.p. NOISE_P
BACKDOOR_TEST_FRAC = 0.1

# the paper's sizes (Sakarvadia et al. 2024); the defaults below are a CPU scale of them
PAPER: dict[str, Any] = {"num_7": 20_000, "num_extra": 3000, "n_test": 1000, "n_noise": 1000}

CHAR_ID = {
    **{d: i for i, d in enumerate(DIGITS)},
    "^": BOS,
    "$": EOS,
    " ": SEP,
}  # math rows: a token a character


@dataclass
class TinyMemData:
    """Training rows, artifact bookkeeping and clean test sets of one TinyMem configuration.

    Artifact rows are stored once each (`noisy`, `clean`, ...), in the order of `train_ids`
    0..M-1; `train` holds them repeated by duplication class, plus every clean training row.
    For backdoors `noisy` is the backdoored row and `prompt_lens` ends right after the trigger.
    """

    train: torch.Tensor  # [N, T] long, every training row (artifacts repeated 10^class times)
    train_ids: torch.Tensor  # [N] example id: copies of one artifact share it (example-tied dropout)
    train_artifact: torch.Tensor  # [N] bool, row is an artifact (noisy / backdoored)
    noisy: torch.Tensor  # [M, T] artifact rows as trained on
    clean: torch.Tensor  # [M, T] their clean counterparts
    dup_class: torch.Tensor  # [M] duplication class p (row trained 10^p times)
    counted: torch.Tensor  # [M] bool, differs from clean in [prompt_len, prompt_len + k): scored
    prompt_lens: torch.Tensor  # [M] scored window starts here (prompt_len; after the trigger)
    tests: dict[str, torch.Tensor]  # clean test sets by name ("7", "2", ... or "lang")
    artifact: str  # "noise" or "backdoor"
    vocab_size: int
    pad_id: int | None
    prompt_len: int = 50
    k: int = 50
    heldout_noisy: torch.Tensor | None = None  # backdoor test rows (backdoored), else None
    heldout_clean: torch.Tensor | None = None
    heldout_prompt_lens: torch.Tensor | None = None
    # noise: never-trained rows noised as the artifacts were (drawn apart from the training data),
    # the non-members a membership attack on the forget set is scored against
    nonmember_noisy: torch.Tensor | None = None
    trigger: tuple[int, ...] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_artifacts(self) -> int:
        return self.noisy.shape[0]

    def nonmembers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, window starts) of artifacts no model trains on: the held-out triggered rows of a
        backdoor, the noised test rows of noise."""
        if self.artifact == "backdoor":
            return self.heldout_noisy, self.heldout_prompt_lens
        rows = self.nonmember_noisy if self.nonmember_noisy is not None else self.noisy[:0]
        return rows, torch.full((rows.shape[0],), self.prompt_len)

    def retain_rows(self) -> torch.Tensor:
        """Clean training rows (extras included), artifacts excluded: the non-artifact data."""
        return self.train[~self.train_artifact]


def nonmember_rows(noisy: torch.Tensor, clean: torch.Tensor, prompt_len: int, k: int) -> torch.Tensor:
    """The noised test rows that differ from their clean rows inside the scored window, as the
    counted artifacts do (a row clean there is no artifact)."""
    return noisy[_window_differs(noisy, clean, torch.full((noisy.shape[0],), prompt_len), k)]


def split_indices(n: int, n_test: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) example indices from a seeded permutation; test = the first n_test of it."""
    if not 0 <= n_test < n:
        raise ValueError(f"n_test must be in [0, {n}), got {n_test}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


# ---------------------------------------------------------------------------------------------
# artifacts, shared by the math and language variants


def _find_trigger(rows: torch.Tensor, trigger: tuple[int, ...]) -> torch.Tensor:
    """[N] index just past the first occurrence of `trigger` in each row; -1 where absent."""
    n, t = rows.shape
    m = len(trigger)
    if m == 0 or m > t:
        return torch.full((n,), -1, dtype=torch.long)
    windows = rows.unfold(1, m, 1)  # [N, T - m + 1, m]
    hit = (windows == torch.tensor(trigger, dtype=rows.dtype)).all(-1)
    first = torch.where(hit.any(1), hit.float().argmax(1), torch.full((n,), -1))
    return torch.where(first >= 0, first + m, first)


def _dup_classes(m: int, n_classes: int, g: torch.Generator) -> torch.Tensor:
    """Shuffle the m artifacts into n_classes near-equal groups; class p is trained 10^p times."""
    if n_classes < 1:
        raise ValueError(f"dup_classes must be >= 1 (1 = no duplication), got {n_classes}")
    cls = torch.empty(m, dtype=torch.long)
    for p, idx in enumerate(torch.tensor_split(torch.randperm(m, generator=g), n_classes)):
        cls[idx] = p
    return cls


def _window_differs(noisy, clean, prompt_lens, k) -> torch.Tensor:
    t = noisy.shape[1]
    pos = torch.arange(t)
    window = (pos >= prompt_lens[:, None]) & (pos < (prompt_lens[:, None] + k))
    return ((noisy != clean) & window).any(1)


def assemble(
    noisy: torch.Tensor,
    clean: torch.Tensor,
    prompt_lens: torch.Tensor,
    others: torch.Tensor,
    *,
    k: int,
    dup_classes: int,
    g: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Training set = artifacts repeated by class + clean rows; ids tie copies of one example."""
    m = noisy.shape[0]
    cls = _dup_classes(m, dup_classes, g)
    reps = 10**cls
    art_ids = torch.arange(m).repeat_interleave(reps)
    ids = torch.cat([art_ids, m + torch.arange(others.shape[0])])
    return {
        "train": torch.cat([noisy[art_ids], others]),
        "train_ids": ids,
        "train_artifact": ids < m,
        "noisy": noisy,
        "clean": clean,
        "dup_class": cls,
        "counted": _window_differs(noisy, clean, prompt_lens, k),
        "prompt_lens": prompt_lens,
    }


def backdoor(
    rows_train: torch.Tensor,
    rows_test: torch.Tensor,
    trigger: tuple[int, ...],
    g: torch.Generator,
    test_frac: float = BACKDOOR_TEST_FRAC,
) -> dict[str, torch.Tensor]:
    """Pool train + test rows, backdoor those holding the trigger, hold out `test_frac` of them.

    Returns the untriggered train/test rows and the (backdoored, clean, prompt_len) triples of
    the training and held-out backdoor rows. Every token after the trigger becomes
    BACKDOOR_TOKEN, through the end of the row (padding included, as in the original).
    """
    pooled = torch.cat([rows_train, rows_test])
    from_test = torch.arange(pooled.shape[0]) >= rows_train.shape[0]
    ends = _find_trigger(pooled, trigger)
    hit = ends >= 0
    if not hit.any():
        raise ValueError(f"no row contains the trigger {trigger}: choose another trigger/seed")
    idx = hit.nonzero().squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=g)]
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"backdoor_test_frac must be in (0, 1), got {test_frac}")
    n_hold = max(1, round(test_frac * len(idx))) if len(idx) > 1 else 0
    clean = pooled[idx]
    bd = clean.clone()
    pos = torch.arange(pooled.shape[1])
    bd[pos >= ends[idx][:, None]] = BACKDOOR_TOKEN
    return {
        "train_rest": pooled[~hit & ~from_test],
        "test_rest": pooled[~hit & from_test],
        "noisy": bd[n_hold:],
        "clean": clean[n_hold:],
        "prompt_lens": ends[idx][n_hold:],
        "heldout_noisy": bd[:n_hold],
        "heldout_clean": clean[:n_hold],
        "heldout_prompt_lens": ends[idx][:n_hold],
    }
