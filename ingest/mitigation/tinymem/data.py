"""TinyMem data: arithmetic sequences (and corpus rows) with planted noise or backdoor artifacts.

Math rows follow the mitigation paper's construction (Sakarvadia et al. 2024): a 14-token vocabulary,
one character per token, `^` + numbers joined by spaces + `$`, right-padded with PAD to `max_ctx`.
Example i of a distribution starts at s = i and holds `length` numbers x_1 = f(s), x_{j+1} = f(x_j)
with f(x) = x + c (increment) or c·x mod 20134 (mult). c = 7 is the main distribution: only it
receives artifacts, so memorising an artifact cannot be explained by the other distributions.

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
The language variant (`language_data`) applies the same construction to any [N, T] token matrix,
e.g. the embedded corpus's `instances` rows (`corpus_rows`), with noise as ±1 on token ids.
"""

from __future__ import annotations

import random
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
NOISE_P = 0.05  # per number (per token for language): +1 w.p. NOISE_P, -1 w.p. NOISE_P
BACKDOOR_TEST_FRAC = 0.1

# the paper's sizes (Sakarvadia et al. 2024); the defaults below are a CPU scale of them
PAPER: dict[str, Any] = {"num_7": 20_000, "num_extra": 3000, "n_test": 1000, "n_noise": 1000}

_CHAR_ID = {**{d: i for i, d in enumerate(DIGITS)}, "^": BOS, "$": EOS, " ": SEP}
_ID_CHAR = {i: ch for ch, i in _CHAR_ID.items()}


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
    trigger: tuple[int, ...] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_artifacts(self) -> int:
        return self.noisy.shape[0]

    def retain_rows(self) -> torch.Tensor:
        """Clean training rows (extras included), artifacts excluded: the non-artifact data."""
        return self.train[~self.train_artifact]


# ---------------------------------------------------------------------------------------------
# math sequences


def numbers(task: str, c: int, n: int, length: int = 20) -> torch.Tensor:
    """[n, length] int64: example i starts at s = i; x_1 = f(s), x_{j+1} = f(x_j)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    x = torch.arange(n, dtype=torch.int64)
    cols = []
    for _ in range(length):
        x = x + c if task == "increment" else (x * c) % MOD
        cols.append(x)
    return torch.stack(cols, 1) if cols else torch.zeros(n, 0, dtype=torch.int64)


def encode(row: list[int] | torch.Tensor, max_ctx: int = MAX_CTX) -> list[int]:
    """`^n1 n2 ... nL$`, one token per character, right-padded with PAD to max_ctx."""
    text = "^" + " ".join(str(int(v)) for v in row) + "$"
    if len(text) > max_ctx:
        raise ValueError(f"sequence of {len(text)} tokens exceeds max_ctx {max_ctx}: {text[:40]}...")
    return [_CHAR_ID[ch] for ch in text] + [PAD] * (max_ctx - len(text))


def encode_rows(nums: torch.Tensor, max_ctx: int = MAX_CTX) -> torch.Tensor:
    return torch.tensor([encode(r.tolist(), max_ctx) for r in nums], dtype=torch.long).view(-1, max_ctx)


def decode(tokens: list[int] | torch.Tensor) -> str:
    """Inverse of `encode` (PAD dropped); for reading rows in tests and notebooks."""
    return "".join(_ID_CHAR.get(int(t), "") for t in tokens)


def noise_numbers(x: torch.Tensor, generator: torch.Generator, p: float = NOISE_P) -> torch.Tensor:
    """Each entry independently +1 (p), -1 (p) or unchanged (1 - 2p).

    A 0 drawn -1 becomes +1: the vocabulary has no minus sign (only mult's example 0 holds zeros).
    """
    u = torch.rand(x.shape, generator=generator)
    delta = (u < p).long() - ((u >= p) & (u < 2 * p)).long()
    out = x + delta
    return torch.where(out < 0, x + 1, out)


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


def _assemble(
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


def _backdoor(
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


# ---------------------------------------------------------------------------------------------
# the two variants


def math_data(
    task: str = "increment",
    *,
    artifact: str = "noise",
    num_7: int = 2000,
    num_extra: int = 300,
    n_test: int = 100,
    n_noise: int = 100,
    length: int = 20,
    max_ctx: int = MAX_CTX,
    dup_classes: int = 1,
    prompt_len: int = 50,
    k: int = 50,
    extra_cs: tuple[int, ...] = EXTRA_CS,
    backdoor_test_frac: float = BACKDOOR_TEST_FRAC,
    clean_7: int | None = None,
    seed: int = 0,
    split_seed: int = SPLIT_SEED,
) -> TinyMemData:
    """TinyMem math data (Sakarvadia et al. 2024). Sizes are a CPU scale by default;
    `math_data(**PAPER)` for the published ones. `n_test` rows of every distribution are held out
    (the same seeded permutation for each); `n_noise` (noise) rows of the c = 7 training rows are
    replaced by noisy copies; for backdoors the trigger is the digit string of 100 + seed, and
    `backdoor_test_frac` of the triggered rows are held out (the paper's 10 % leaves a CPU-scale set
    a handful of held-out rows, too few to read an attack-success rate from).

    `clean_7` trains on a seeded subset of that many clean c = 7 training rows (artifacts and
    test rows are kept whole). That is how a CPU-scale run keeps the paper's number range: with
    num_7 = 20,000 the trigger "100" occurs in 100, 1000-1009, x100 and 100xx, 1x100, ..., so
    the model must learn the trigger as such; with num_7 ~ 1,000 nearly every trigger is the head
    of 1000-1009, and held-out triggers in another place (1100, a lone 100) are never learned."""
    cfg = {**locals(), "extra_cs": list(extra_cs)}  # the call's arguments, kept with the data
    if artifact not in ("noise", "backdoor"):
        raise ValueError(f"artifact must be 'noise' or 'backdoor', got {artifact!r}")
    if not (0 < prompt_len < max_ctx and k >= 1):
        raise ValueError(f"need 0 < prompt_len < max_ctx = {max_ctx} and k >= 1, got {prompt_len}, {k}")
    g = torch.Generator().manual_seed(seed)
    tests: dict[str, torch.Tensor] = {}
    extra_train = []
    for c in extra_cs:
        rows = encode_rows(numbers(task, c, num_extra, length), max_ctx)
        tr, te = split_indices(num_extra, n_test, split_seed)
        extra_train.append(rows[tr])
        tests[str(c)] = rows[te]
    nums7 = numbers(task, MAIN_C, num_7, length)
    rows7 = encode_rows(nums7, max_ctx)
    tr, te = split_indices(num_7, n_test, split_seed)
    extras = torch.cat(extra_train) if extra_train else torch.empty(0, max_ctx, dtype=torch.long)
    if clean_7 is not None and clean_7 < 0:
        raise ValueError(f"clean_7 must be >= 0 or None, got {clean_7}")

    def subset(rows: torch.Tensor) -> torch.Tensor:
        if clean_7 is None or clean_7 >= rows.shape[0]:
            return rows
        pick = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(split_seed + seed))
        return rows[pick[:clean_7].sort().values]

    heldout: dict[str, Any] = {}
    trigger = None
    if artifact == "noise":
        if not 0 < n_noise <= len(tr):
            raise ValueError(f"n_noise must be in (0, {len(tr)}], got {n_noise}")
        pick = tr[torch.randperm(len(tr), generator=g)[:n_noise]].sort().values
        noisy = encode_rows(noise_numbers(nums7[pick], g), max_ctx)
        clean = rows7[pick]
        rest = rows7[tr[~torch.isin(tr, pick)]]
        parts = _assemble(
            noisy,
            clean,
            torch.full((n_noise,), prompt_len),
            torch.cat([subset(rest), extras]),
            k=k,
            dup_classes=dup_classes,
            g=g,
        )
        tests[str(MAIN_C)] = rows7[te]
    else:
        trigger = tuple(_CHAR_ID[ch] for ch in str(100 + seed))
        bd = _backdoor(rows7[tr], rows7[te], trigger, g, backdoor_test_frac)
        parts = _assemble(
            bd["noisy"],
            bd["clean"],
            bd["prompt_lens"],
            torch.cat([subset(bd["train_rest"]), extras]),
            k=k,
            dup_classes=dup_classes,
            g=g,
        )
        tests[str(MAIN_C)] = bd["test_rest"]
        heldout = {key: bd[key] for key in ("heldout_noisy", "heldout_clean", "heldout_prompt_lens")}
    tests = {str(MAIN_C): tests.pop(str(MAIN_C)), **tests}  # main distribution first
    return TinyMemData(
        **parts,
        tests=tests,
        artifact=artifact,
        vocab_size=VOCAB_SIZE,
        pad_id=PAD,
        prompt_len=prompt_len,
        k=k,
        trigger=trigger,
        config=cfg,
        **heldout,
    )


def noise_tokens(
    rows: torch.Tensor,
    vocab_size: int,
    generator: torch.Generator,
    pad_id: int | None = None,
    p: float = NOISE_P,
) -> torch.Tensor:
    """Language noise: each token id independently +1 / -1 (p each); ids reflect at the vocabulary's
    ends so they stay valid, and padding is left alone."""
    u = torch.rand(rows.shape, generator=generator)
    delta = (u < p).long() - ((u >= p) & (u < 2 * p)).long()
    out = rows + delta
    out = torch.where(out < 0, rows + 1, out)
    out = torch.where(out >= vocab_size, rows - 1, out)
    if pad_id is not None:
        out = torch.where(rows == pad_id, rows, out)
    return out


def language_data(
    tokens: torch.Tensor,
    vocab_size: int,
    *,
    artifact: str = "noise",
    test_tokens: torch.Tensor | None = None,
    n_test: int = 100,
    n_noise: int = 100,
    dup_classes: int = 1,
    prompt_len: int | None = None,
    k: int | None = None,
    pad_id: int | None = None,
    trigger: int | None = None,
    seed: int = 0,
    split_seed: int = SPLIT_SEED,
) -> TinyMemData:
    """The TinyMem construction over any [N, T] token matrix (the original used WikiText blocks).

    Noise = ±1 on token ids of `n_noise` sampled training rows. Backdoor trigger = a seeded random
    token id (`random.Random(seed).randrange(vocab_size)`, as the original) unless given; every
    token after its first occurrence becomes 2. Without `test_tokens`, `n_test` rows are split
    off as the clean test set "lang". prompt_len / k default to 50 / 50, shrunk to fit T.
    """
    if artifact not in ("noise", "backdoor"):
        raise ValueError(f"artifact must be 'noise' or 'backdoor', got {artifact!r}")
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [N, T] with T >= 2, got {tuple(tokens.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    t = tokens.shape[1]
    prompt_len = min(50, t // 2) if prompt_len is None else prompt_len
    k = min(50, t - prompt_len) if k is None else k
    if not 0 < prompt_len < t or k < 1:
        raise ValueError(f"need 0 < prompt_len < T = {t} and k >= 1, got prompt_len={prompt_len}, k={k}")
    if test_tokens is None:
        tr, te = split_indices(tokens.shape[0], n_test, split_seed)
        train_rows, test_rows = tokens[tr], tokens[te]
    else:
        train_rows, test_rows = tokens, torch.as_tensor(test_tokens, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    cfg = dict(
        variant="language",
        artifact=artifact,
        n_rows=tokens.shape[0],
        n_test=test_rows.shape[0],
        n_noise=n_noise,
        dup_classes=dup_classes,
        prompt_len=prompt_len,
        k=k,
        seed=seed,
    )
    heldout: dict[str, Any] = {}
    trig = None
    if artifact == "noise":
        if not 0 < n_noise <= train_rows.shape[0]:
            raise ValueError(f"n_noise must be in (0, {train_rows.shape[0]}], got {n_noise}")
        pick = torch.randperm(train_rows.shape[0], generator=g)[:n_noise].sort().values
        clean = train_rows[pick]
        noisy = noise_tokens(clean, vocab_size, g, pad_id)
        rest = train_rows[~torch.isin(torch.arange(train_rows.shape[0]), pick)]
        parts = _assemble(
            noisy, clean, torch.full((n_noise,), prompt_len), rest, k=k, dup_classes=dup_classes, g=g
        )
    else:
        trig = (random.Random(seed).randrange(vocab_size) if trigger is None else int(trigger),)
        bd = _backdoor(train_rows, test_rows, trig, g)
        parts = _assemble(
            bd["noisy"], bd["clean"], bd["prompt_lens"], bd["train_rest"], k=k, dup_classes=dup_classes, g=g
        )
        test_rows = bd["test_rest"]
        heldout = {key: bd[key] for key in ("heldout_noisy", "heldout_clean", "heldout_prompt_lens")}
        cfg["trigger"] = trig[0]
    return TinyMemData(
        **parts,
        tests={"lang": test_rows},
        artifact=artifact,
        vocab_size=vocab_size,
        pad_id=pad_id,
        prompt_len=prompt_len,
        k=k,
        trigger=trig,
        config=cfg,
        **heldout,
    )


def corpus_rows(wh, split: str = "train", clean_only: bool = True) -> tuple[torch.Tensor, int]:
    """(tokens [N, T], vocab size) of the warehouse's `instances` rows, for `language_data`.

    clean_only drops the corpus's own planted artifacts (duplicates, backdoors, ...), so the only
    artifacts in the TinyMem language data are the ones planted here.
    """
    import numpy as np
    from transformers import AutoTokenizer

    from memlake.core import lake

    t = lake.read_table(wh, "instances", columns=["instance_id", "split", "artifact", "tokens"])
    t = t.sort_by("instance_id").to_pydict()
    keep = [
        i
        for i, (s, a) in enumerate(zip(t["split"], t["artifact"]))
        if s == split and (not clean_only or a in (None, "none"))
    ]
    rows = torch.from_numpy(np.array([t["tokens"][i] for i in keep], dtype=np.int64))
    return rows, len(AutoTokenizer.from_pretrained(str(wh.tokenizer)))
