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


# Published Pythia shapes (Biderman et al. 2023, table 1): same architecture as the suite, so
# benchmarks can time the GPU path at real sizes with random weights (the Hub is not reachable).
PYTHIA_VOCAB, PYTHIA_CONTEXT = 50_277, 2048
PYTHIA_SHAPES = {
    "70m": {"hidden_size": 512, "layers": 6, "heads": 8},
    "160m": {"hidden_size": 768, "layers": 12, "heads": 12},
    "410m": {"hidden_size": 1024, "layers": 24, "heads": 16},
    "1b": {"hidden_size": 2048, "layers": 16, "heads": 8},
    "1.4b": {"hidden_size": 2048, "layers": 24, "heads": 16},
    "2.8b": {"hidden_size": 2560, "layers": 32, "heads": 32},
}


def pythia_specs(sizes: str) -> list[dict[str, Any]]:
    """Suite-style model specs for comma-separated Pythia sizes, e.g. "70m,160m"."""
    specs = []
    for size in sizes.split(","):
        if size not in PYTHIA_SHAPES:
            raise ValueError(f"unknown Pythia size {size!r}; known: {', '.join(PYTHIA_SHAPES)}")
        specs.append({"name": f"pythia-{size}-shape", **PYTHIA_SHAPES[size]})
    return specs
