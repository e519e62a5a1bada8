"""Greedy decode steps after a prefill, and what a caller keeps between batches.

For GPT-NeoX (Pythia and the suite) a step calls the functional ops on the layers' own weights
over key/value buffers preallocated for the whole continuation, with the rotary cos/sin computed
once per position (`NeoXDecoder`); on CUDA the whole loop is captured as one graph
(`GraphedDecode`). Other architectures decode through their forward. `ingest/extraction.py` is
the caller; its docstring says why each shortcut gives `generate`'s tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ingest.lm.hf_compat import with_cache
from ingest.lm.runtime import switches

try:  # GPT-NeoX's own building blocks, so the fast decode step reproduces its forward exactly
    from transformers.models.gpt_neox import modeling_gpt_neox as _neox
except ImportError:  # pragma: no cover - very old transformers
    _neox = None


class DecodeBuffers:
    """What decoding keeps from one batch to the next for one model: the key/value blocks (per
    shape), the rotary cos/sin table and the CUDA graphs (which hold pointers to the model's
    weights and to these blocks). Its owner sets its lifetime: an extraction job holds one for
    the checkpoint it scores, so each batch reuses the last one's memory and graphs; without one,
    `greedy_extract` starts afresh on every call. Not to be shared between threads."""

    KEEP_BLOCKS = 4  # a few shapes recur: full batches, the last one, and verified remainders

    def __init__(self):
        self.model_id: int | None = None
        self.blocks: dict[tuple, torch.Tensor] = {}
        self.graphs: dict[tuple, GraphedDecode] = {}
        self.rotary: RotaryTable | None = None

    def bind(self, model) -> DecodeBuffers:
        if self.model_id is None:
            self.model_id = id(model)
        elif self.model_id != id(model):
            raise ValueError("DecodeBuffers belong to one model: make one per model")
        return self

    def block(self, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """A [layers, 2, B, heads, max_len, head] block: a fresh one costs more than it holds (the
        allocator maps it anew and every page faults on first write)."""
        key = (shape, like.dtype, like.device)
        block = self.blocks.pop(key, None)
        if block is None:
            block = like.new_empty(shape)
        self.blocks[key] = block  # most recent last
        while len(self.blocks) > self.KEEP_BLOCKS:
            self.blocks.pop(next(iter(self.blocks)))
        return block


def decode(
    model, cache, token: torch.Tensor, prompt_len: int, steps: int, buffers: DecodeBuffers
) -> torch.Tensor:
    """The next `steps` greedy tokens [B, steps] after `token` [B], which follows the prompts in `cache`."""
    if graphs_enabled(model, token.device):
        key = (token.size(0), prompt_len, steps)
        if key not in buffers.graphs:
            buffers.graphs[key] = GraphedDecode(model, cache, token, prompt_len, steps, buffers=buffers)
        return buffers.graphs[key](cache, token)
    head = model.get_output_embeddings()
    out = torch.empty(token.size(0), steps, dtype=torch.long, device=token.device)
    step = None
    if fast_path(model):
        step = NeoXDecoder(model.base_model, cache, prompt_len + steps + 1, buffers=buffers)
    for i in range(steps):
        if step is not None:
            hidden = step(token, prompt_len + i)
        else:
            hidden = model.base_model(
                input_ids=token[:, None], use_cache=True, **with_cache(model.base_model, cache)
            ).last_hidden_state
        token = first_argmax(head(hidden)[:, -1])
        out[:, i] = token
    return out


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


def fast_path(model) -> bool:
    base = model.base_model
    return (
        _neox is not None
        and isinstance(base, _neox.GPTNeoXModel)
        and hasattr(base, "rotary_emb")
        and hasattr(_neox.ALL_ATTENTION_FUNCTIONS, "get_interface")
        # kernels whose single-query call needs no mask or varlen metadata (flash/flex would)
        and base.config._attn_implementation in ("sdpa", "eager")
    )


class NeoXDecoder:
    """One-token decode steps of a GPT-NeoX stack over preallocated key/value buffers.

    Mirrors `GPTNeoXModel.forward` / `GPTNeoXLayer.forward` / `GPTNeoXAttention.forward` op for
    op (tests compare the hidden states bitwise and the tokens with `generate`), minus masks (a
    single query attends to every cached position), dropout (eval) and output bookkeeping. The
    arithmetic is the same aten calls on the same shapes; what goes is the Python around them,
    much of a small model's step on a CPU: layers call the functional ops on weights fetched
    once instead of going through `nn.Module.__call__`, and each position's rotary cos/sin, from
    the model's own rotary module, is computed once per model rather than once per step.
    """

    def __init__(self, base, cache, max_len: int, *, buffers: DecodeBuffers | None = None):
        self.base = base
        self.attend = _neox.ALL_ATTENTION_FUNCTIONS.get_interface(
            base.config._attn_implementation, _neox.eager_attention_forward
        )
        self.sdpa = base.config._attn_implementation == "sdpa"
        self.layers = [LayerWeights(layer) for layer in base.layers]
        self.rotary = _rotary_table(base, buffers)
        first = next(iter(cache))[0]
        shape = (len(self.layers), 2, *first.shape[:2], max_len, first.shape[-1])
        block = first.new_empty(shape) if buffers is None else buffers.block(shape, first)
        self.keys, self.values = list(block[:, 0]), list(block[:, 1])
        self.load(cache)

    def load(self, cache) -> None:
        """Copy the prompts' keys/values from `cache` into the front of the buffers."""
        for keys, values, layer_kv in zip(self.keys, self.values, cache):
            keys[:, :, : layer_kv[0].shape[2]] = layer_kv[0]
            values[:, :, : layer_kv[1].shape[2]] = layer_kv[1]

    def __call__(self, token: torch.Tensor, position: int) -> torch.Tensor:
        """Final-normed hidden state [B, 1, H] of `token` [B] placed at `position`."""
        base, batch = self.base, token.size(0)
        x = base.embed_in(token[:, None])
        cos, sin = self.rotary(position, x)
        for w, keys, values in zip(self.layers, self.keys, self.values):
            qkv = F.linear(F.layer_norm(x, *w.ln1), w.qkv_w, w.qkv_b)
            qkv = qkv.view(batch, 1, -1, 3 * w.head_size).transpose(1, 2)
            q, k, v = qkv.chunk(3, dim=-1)
            q, k = _neox.apply_rotary_pos_emb(q, k, cos, sin)
            keys[:, :, position : position + 1] = k
            values[:, :, position : position + 1] = v
            seen = slice(0, position + 1)
            if self.sdpa:  # what `sdpa_attention_forward` calls for one query, without its wrapping
                a = F.scaled_dot_product_attention(q, keys[:, :, seen], values[:, :, seen], scale=w.scaling)
            else:
                a, _ = self.attend(
                    w.attention, q, keys[:, :, seen], values[:, :, seen], None, scaling=w.scaling, dropout=0.0
                )
            # [B, heads, 1, head] and [B, 1, heads, head] order the elements alike for one query
            a = F.linear(a.reshape(batch, 1, -1).contiguous(), w.dense_w, w.dense_b)
            if w.parallel:
                h = F.linear(F.layer_norm(x, *w.ln2), w.up_w, w.up_b)
                x = F.linear(w.act(h), w.down_w, w.down_b) + a + x
            else:
                a = a + x
                h = F.linear(F.layer_norm(a, *w.ln2), w.up_w, w.up_b)
                x = F.linear(w.act(h), w.down_w, w.down_b) + a
        return base.final_layer_norm(x)


class LayerWeights:
    """One GPT-NeoX layer's parameters and settings, read once for the functional decode step."""

    def __init__(self, layer):
        att, mlp = layer.attention, layer.mlp
        self.attention, self.head_size, self.scaling = att, att.head_size, att.scaling
        self.ln1 = _layer_norm_args(layer.input_layernorm)
        self.ln2 = _layer_norm_args(layer.post_attention_layernorm)
        self.qkv_w, self.qkv_b = att.query_key_value.weight, att.query_key_value.bias
        self.dense_w, self.dense_b = att.dense.weight, att.dense.bias
        self.up_w, self.up_b = mlp.dense_h_to_4h.weight, mlp.dense_h_to_4h.bias
        self.down_w, self.down_b = mlp.dense_4h_to_h.weight, mlp.dense_4h_to_h.bias
        self.act = mlp.act
        self.parallel = layer.use_parallel_residual


def _layer_norm_args(norm) -> tuple:
    return norm.normalized_shape, norm.weight, norm.bias, norm.eps


class RotaryTable:
    """Each position's (cos, sin) from the model's rotary module, computed on first use and kept.

    The module is called for one position at a time, exactly as a decode step of the model's
    forward calls it, so the values are bitwise those of the forward.
    """

    def __init__(self, rotary, keep: bool = True):
        self.rotary, self.keep, self.table = rotary, keep, {}

    def __call__(self, position: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (position, x.device, x.dtype)
        hit = self.table.get(key)
        if hit is None:
            hit = self.rotary(x, torch.full((1, 1), position, device=x.device))
            if self.keep:
                self.table[key] = hit
        return hit


def _rotary_table(base, buffers: DecodeBuffers | None) -> RotaryTable:
    # Kept in the buffers, for every batch; a rope that depends on more than the position (like
    # "dynamic", which rescales with the sequence length) is recomputed every step instead.
    if getattr(base.rotary_emb, "rope_type", "default") != "default":
        return RotaryTable(base.rotary_emb, keep=False)
    if buffers is None:
        return RotaryTable(base.rotary_emb)
    if buffers.rotary is None:
        buffers.rotary = RotaryTable(base.rotary_emb)
    return buffers.rotary


# CUDA graphs for the decode loop (`runtime.cuda_graphs: false` turns them off).
def graphs_enabled(model, device: torch.device) -> bool:
    return device.type == "cuda" and fast_path(model) and switches().cuda_graphs


class GraphedDecode:
    """The whole decode loop of one batch shape, captured once as a CUDA graph and replayed.

    A one-token step of a small model is a few hundred kernel launches of microseconds each, so
    on a GPU the Python and launch overhead, not the arithmetic, sets the speed. Every step of
    `NeoXDecoder` has static shapes (its key/value buffers are preallocated and step i attends
    to the first prompt_len + i + 1 of them), so the `steps` steps are recorded as one graph of
    the same kernels on the same shapes, and a batch costs one replay. Captured per (batch size,
    prompt length, steps) and kept in the `DecodeBuffers` of its model: the graph holds pointers
    to the model's weights.
    """

    def __init__(
        self, model, cache, token: torch.Tensor, prompt_len: int, steps: int, *, buffers=None, capture=True
    ):
        self.head = model.get_output_embeddings()
        # its own key/value block: a graph's buffers must not be handed to another decoder
        self.decoder = NeoXDecoder(model.base_model, cache, prompt_len + steps + 1)
        self.decoder.rotary = _rotary_table(model.base_model, buffers)
        self.prompt_len, self.steps = prompt_len, steps
        self.token = token.clone()
        self.out = torch.empty(token.size(0), steps, dtype=torch.long, device=token.device)
        self.graph = None
        if capture:  # (capture=False replays eagerly: how CPU tests check the buffer reuse)
            self._capture()

    def _capture(self) -> None:
        device = self.token.device
        side = torch.cuda.Stream(device)  # warm up off the capturing stream (cuBLAS handles)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self._loop()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._loop()

    def _loop(self) -> None:
        token = self.token
        for i in range(self.steps):
            token = first_argmax(self.head(self.decoder(token, self.prompt_len + i))[:, -1])
            self.out[:, i] = token

    def __call__(self, cache, token: torch.Tensor) -> torch.Tensor:
        self.decoder.load(cache)
        self.token.copy_(token)
        if self.graph is None:
            self._loop()
        else:
            self.graph.replay()
        return self.out.clone()
