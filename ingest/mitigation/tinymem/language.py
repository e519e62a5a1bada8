"""TinyMem language data: the TinyMem construction (see `data`) over any [N, T] token matrix, e.g.
the embedded corpus's `instances` rows (`corpus_rows`), with noise as ±1 on token ids."""

from __future__ import annotations

import random
from typing import Any

import torch

from ingest.mitigation.tinymem.data import (
    NOISE_P,
    NONMEMBER_SEED_OFFSET,
    SPLIT_SEED,
    TinyMemData,
    assemble,
    backdoor,
    nonmember_rows,
    split_indices,
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
        parts = assemble(
            noisy, clean, torch.full((n_noise,), prompt_len), rest, k=k, dup_classes=dup_classes, g=g
        )
        g_held = torch.Generator().manual_seed(seed + NONMEMBER_SEED_OFFSET)
        held_noisy = noise_tokens(test_rows, vocab_size, g_held, pad_id)
        heldout = {"nonmember_noisy": nonmember_rows(held_noisy, test_rows, prompt_len, k)}
    else:
        trig = (random.Random(seed).randrange(vocab_size) if trigger is None else int(trigger),)
        bd = backdoor(train_rows, test_rows, trig, g)
        parts = assemble(
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
