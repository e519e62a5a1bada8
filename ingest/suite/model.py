"""Model definitions for the suite: Hugging Face GPTNeoX with Pythia's shape conventions."""

from __future__ import annotations

from typing import Any

from transformers import GPTNeoXConfig, GPTNeoXForCausalLM


def pad_vocab(n: int, multiple: int = 64) -> int:
    """Pythia pads its 50,277-token vocabulary to 50,304 for matmul efficiency; so do we."""
    return -(-n // multiple) * multiple


def neox_config(spec: dict[str, Any], vocab_size: int, context: int) -> GPTNeoXConfig:
    h = int(spec["hidden_size"])
    return GPTNeoXConfig(
        vocab_size=pad_vocab(vocab_size),
        hidden_size=h,
        num_hidden_layers=int(spec["layers"]),
        num_attention_heads=int(spec["heads"]),
        intermediate_size=4 * h,
        max_position_embeddings=context,
        rotary_pct=0.25,  # Pythia applies rotary embeddings to a quarter of each head
        rotary_emb_base=10000,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        initializer_range=0.02,
    )


def build_model(spec: dict[str, Any], vocab_size: int, context: int) -> GPTNeoXForCausalLM:
    return GPTNeoXForCausalLM(neox_config(spec, vocab_size, context))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
