"""TinyMem math data: arithmetic sequences with planted noise or backdoor artifacts (see `data`
for the construction and the artifacts).

Math rows follow the mitigation paper's construction (Sakarvadia et al. 2024): a 14-token vocabulary,
one character per token, `^` + numbers joined by spaces + `$`, right-padded with PAD to `max_ctx`.
Example i of a distribution starts at s = i and holds `length` numbers x_1 = f(s), x_{j+1} = f(x_j)
with f(x) = x + c (increment) or c·x mod 20134 (mult). c = 7 is the main distribution: only it
receives artifacts, so memorising an artifact cannot be explained by the other distributions.
"""

from __future__ import annotations

from typing import Any

import torch

from ingest.mitigation.tinymem.data import (
    BACKDOOR_TEST_FRAC,
    CHAR_ID,
    EXTRA_CS,
    MAIN_C,
    MAX_CTX,
    MOD,
    NOISE_P,
    NONMEMBER_SEED_OFFSET,
    PAD,
    SPLIT_SEED,
    TASKS,
    VOCAB_SIZE,
    TinyMemData,
    assemble,
    backdoor,
    nonmember_rows,
    split_indices,
)

_ID_CHAR = {i: ch for ch, i in CHAR_ID.items()}


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
    return [CHAR_ID[ch] for ch in text] + [PAD] * (max_ctx - len(text))


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
        parts = assemble(
            noisy,
            clean,
            torch.full((n_noise,), prompt_len),
            torch.cat([subset(rest), extras]),
            k=k,
            dup_classes=dup_classes,
            g=g,
        )
        tests[str(MAIN_C)] = rows7[te]
        g_held = torch.Generator().manual_seed(seed + NONMEMBER_SEED_OFFSET)
        held_noisy = encode_rows(noise_numbers(nums7[te], g_held), max_ctx)
        heldout = {"nonmember_noisy": nonmember_rows(held_noisy, rows7[te], prompt_len, k)}
    else:
        trigger = tuple(CHAR_ID[ch] for ch in str(100 + seed))
        bd = backdoor(rows7[tr], rows7[te], trigger, g, backdoor_test_frac)
        parts = assemble(
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
