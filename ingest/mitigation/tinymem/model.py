"""The TinyMem model: a small GPT-2 (Sakarvadia et al. 2024), built reproducibly from a seed.

n_embd 128, 4 heads, d_ff 512, ReLU, no dropout, tied embeddings and a large init
(0.8/sqrt(128) ≈ 0.071 instead of GPT-2's 0.02), as the original; n_layer ∈ {2, 4, 8, 16} there.
ReLU matters downstream: a neuron whose input weights and bias are zeroed outputs exactly 0, which
is how neuron-level unlearning removes it (arch.MLP.remove_neurons).
"""

from __future__ import annotations

import math

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ingest.mitigation.tinymem.data import BOS, EOS, MAX_CTX, VOCAB_SIZE

N_EMBD = 128


def tinymem_config(
    n_layer: int,
    vocab_size: int,
    n_positions: int = MAX_CTX,
    bos_id: int | None = None,
    eos_id: int | None = None,
) -> GPT2Config:
    """bos/eos default to the math ids for the 14-token vocabulary and to vocab_size - 1 otherwise
    (they must lie inside the vocabulary; they never stop generation, see metrics)."""
    if n_layer < 1 or vocab_size < 2:
        raise ValueError(f"need n_layer >= 1 and vocab_size >= 2, got {n_layer}, {vocab_size}")
    math_vocab = vocab_size == VOCAB_SIZE
    bos = (BOS if math_vocab else vocab_size - 1) if bos_id is None else bos_id
    eos = (EOS if math_vocab else vocab_size - 1) if eos_id is None else eos_id
    if not (0 <= bos < vocab_size and 0 <= eos < vocab_size):
        raise ValueError(f"bos_id {bos} / eos_id {eos} must lie in [0, {vocab_size})")
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=N_EMBD,
        n_layer=n_layer,
        n_head=4,
        n_inner=4 * N_EMBD,
        activation_function="relu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.8 / math.sqrt(N_EMBD),
        tie_word_embeddings=True,
        bos_token_id=bos,
        eos_token_id=eos,
    )


def tinymem_model(
    n_layer: int,
    vocab_size: int,
    n_positions: int = MAX_CTX,
    seed: int = 0,
    bos_id: int | None = None,
    eos_id: int | None = None,
) -> GPT2LMHeadModel:
    """A freshly initialised TinyMem GPT-2; the same seed gives the same weights, and the global
    RNG is left as it was (callers' own seeding is not disturbed)."""
    cfg = tinymem_config(n_layer, vocab_size, n_positions, bos_id, eos_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(cfg)
    return model.eval()
