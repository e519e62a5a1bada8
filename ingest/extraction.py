"""Greedy k-extraction (Carlini et al.): prompt with a row's first tokens, decode greedily, compare.

`greedy_extract` returns exactly the tokens `model.generate(prompts, do_sample=False,
max_new_tokens=gen_len)` returns with EOS stopping disabled: the target continuation of a packed
row may cross a document boundary, so an EOS is just another token to match. It is faster by
doing only what greedy decoding needs:

  - the prefill runs the model's own forward (same kernels, so the same numbers) and projects
    only the last position;
  - decoding keeps the keys/values in buffers preallocated for the whole continuation instead of
    a cache that is re-concatenated every step;
  - for GPT-NeoX (Pythia and the suite) a decode step calls the layer's own submodules and
    attention function directly, skipping the per-call machinery of `generate` and of the model's
    forward (mask building, output capture, logits processors, stopping criteria), which costs
    as much as the arithmetic for small models. Other architectures decode through their forward.

The tokens are identical because every number is computed by the same kernels on the same shapes.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ingest.token_stats import eval_mode, model_device

try:  # GPT-NeoX's own building blocks, so the fast decode step reproduces its forward exactly
    from transformers.models.gpt_neox import modeling_gpt_neox as _neox
except ImportError:  # pragma: no cover - very old transformers
    _neox = None


@torch.inference_mode()
def greedy_extract(model, prompts: torch.Tensor, gen_len: int) -> torch.Tensor:
    """Greedy continuation [B, gen_len] of `prompts` [B, P] (all rows the same length, no padding)."""
    if prompts.dim() != 2 or prompts.size(1) < 1:
        raise ValueError(f"prompts must be [batch, tokens], got {tuple(prompts.shape)}")
    if gen_len < 1:
        raise ValueError(f"gen_len must be >= 1, got {gen_len}")
    device = model_device(model)
    ids = prompts.to(device=device, dtype=torch.long)
    batch, prompt_len = ids.shape
    head = model.get_output_embeddings()
    out = torch.empty(batch, gen_len, dtype=torch.long, device=device)
    with eval_mode(model):
        cache = DynamicCache()
        hidden = model.base_model(input_ids=ids, past_key_values=cache, use_cache=True).last_hidden_state
        step = _NeoXDecoder(model.base_model, cache, prompt_len + gen_len) if _fast_path(model) else None
        hidden = hidden[:, -1:]
        for i in range(gen_len):
            token = first_argmax(head(hidden)[:, -1])
            out[:, i] = token
            if i + 1 == gen_len:
                break
            if step is not None:
                hidden = step(token, prompt_len + i)
            else:
                hidden = model.base_model(
                    input_ids=token[:, None], past_key_values=cache, use_cache=True
                ).last_hidden_state
    return out.to(prompts.device)


def match_fraction(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of positions where `generated` equals `target` ([B, G] each): float32 [B].

    A row is memorised (k-extractable) exactly when its fraction is 1.0.
    """
    if generated.shape != target.shape:
        raise ValueError(f"shapes differ: generated {tuple(generated.shape)} vs target {tuple(target.shape)}")
    return (generated == target.to(generated.device)).float().mean(1)


def first_argmax(logits: torch.Tensor, block: int = 64) -> torch.Tensor:
    """`logits.argmax(-1)` for [B, V] (first index among ties), faster on CPU.

    torch's CPU argmax is a scalar loop; a vectorised max per block of `block` entries, then an
    argmax over the block maxima and one inside the winning block, finds the same first index
    (the first maximal block holds the first maximal entry).
    """
    batch, vocab = logits.shape
    if logits.device.type != "cpu" or vocab % block or vocab < 4 * block:
        return logits.argmax(-1)
    blocks = logits.view(batch, vocab // block, block)
    best = blocks.amax(-1).argmax(-1)
    inner = blocks[torch.arange(batch, device=logits.device), best].argmax(-1)
    return best * block + inner


def _fast_path(model) -> bool:
    base = model.base_model
    return (
        _neox is not None
        and isinstance(base, _neox.GPTNeoXModel)
        and hasattr(base, "rotary_emb")
        and hasattr(_neox.ALL_ATTENTION_FUNCTIONS, "get_interface")
        # kernels whose single-query call needs no mask or varlen metadata (flash/flex would)
        and base.config._attn_implementation in ("sdpa", "eager")
    )


class _NeoXDecoder:
    """One-token decode steps of a GPT-NeoX stack over preallocated key/value buffers.

    Mirrors `GPTNeoXModel.forward` / `GPTNeoXLayer.forward` / `GPTNeoXAttention.forward` op for
    op (tests compare the tokens with `generate`), minus masks (a single query attends to every
    cached position), dropout (eval) and output bookkeeping.
    """

    def __init__(self, base, cache, max_len: int):
        self.base = base
        self.attend = _neox.ALL_ATTENTION_FUNCTIONS.get_interface(
            base.config._attn_implementation, _neox.eager_attention_forward
        )
        self.keys, self.values = [], []
        for layer_kv in cache:
            k, v = layer_kv[0], layer_kv[1]
            shape = (*k.shape[:2], max_len, k.shape[-1])
            self.keys.append(k.new_empty(shape))
            self.values.append(v.new_empty(shape))
            self.keys[-1][:, :, : k.shape[2]] = k
            self.values[-1][:, :, : v.shape[2]] = v

    def __call__(self, token: torch.Tensor, position: int) -> torch.Tensor:
        """Final-normed hidden state [B, 1, H] of `token` [B] placed at `position`."""
        base = self.base
        x = base.embed_in(token[:, None])
        position_ids = torch.full((1, 1), position, device=x.device)
        cos, sin = base.rotary_emb(x, position_ids)
        for layer, keys, values in zip(base.layers, self.keys, self.values):
            att = layer.attention
            qkv = att.query_key_value(layer.input_layernorm(x))
            qkv = qkv.view(x.size(0), 1, -1, 3 * att.head_size).transpose(1, 2)
            q, k, v = qkv.chunk(3, dim=-1)
            q, k = _neox.apply_rotary_pos_emb(q, k, cos, sin)
            keys[:, :, position : position + 1] = k
            values[:, :, position : position + 1] = v
            seen = slice(0, position + 1)
            a, _ = self.attend(
                att, q, keys[:, :, seen], values[:, :, seen], None, scaling=att.scaling, dropout=0.0
            )
            a = att.dense(a.reshape(x.size(0), 1, -1).contiguous())
            if layer.use_parallel_residual:
                x = layer.mlp(layer.post_attention_layernorm(x)) + a + x
            else:
                a = a + x
                x = layer.mlp(layer.post_attention_layernorm(a)) + a
        return base.final_layer_norm(x)
