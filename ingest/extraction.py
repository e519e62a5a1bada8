"""Greedy k-extraction (Carlini et al.): prompt with a row's first tokens, decode greedily, compare.

`greedy_extract` returns the tokens `model.generate(prompts, do_sample=False, max_new_tokens=gen_len)`
returns with EOS stopping disabled: the target continuation of a packed row may cross a document
boundary, so an EOS is just another token to match. It is faster by doing only what greedy
decoding needs:

  - the prefill runs the model's own forward (same kernels, so the same numbers) and projects
    only the last position;
  - given the rows' true continuations (`targets`), memorised rows are verified instead of
    decoded, with the target as a speculative draft: greedy decoding yields the target exactly
    when, teacher-forced on prompt + target, the argmax at every continuation position is the
    next target token, and ONE forward over the target checks every position at once. Rows that
    pass are done; the others are decoded as below, from their prompt, as without targets.
    Verification runs only when at least `VERIFY_SHARE` of the batch look memorised (the
    prefill's argmax reproduces the target's first token and the prompt's last `SYNC_PROMPT`
    tokens: true of nearly every memorised row and of few others), and then checks every row whose
    first token matches: a decode step costs nearly as much for fewer rows (per-step overhead and
    small matrix products), so verifying a few rows of a batch saves about what it costs, while a
    batch that is (nearly) all memorised skips most or all of its decoding.
    A row that drifts off its target is not continued speculatively (its greedy token, then the
    rest of its target, as the next draft): a diverged row seldom re-aligns with its target, and
    the slowest row sets the number of rounds anyway;
  - decoding keeps the keys/values in buffers preallocated for the whole continuation (and reused
    by the next batch of the same shape) instead of a cache that is re-concatenated every step;
  - for GPT-NeoX (Pythia and the suite) a decode step calls the functional ops on the layers'
    own weights, with the model's rotary cos/sin computed once per position, skipping the
    per-call machinery of `generate` and of the model's forward (mask building, module calls,
    output capture, logits processors, stopping criteria), which costs as much as the arithmetic
    for small models. Other architectures decode through their forward.

Decoded tokens are identical to `generate`'s because every number is computed by the same kernels
on the same shapes (fewer rows once verified rows leave the batch; row results do not depend on
it in practice). A verified row's logits come from one multi-token forward instead of one-token
steps, which can round differently in the last bits, so a row is verified only where every target
token beats the runner-up by more than rounding (`TIE_EPS`); near-ties are decoded. On CUDA the
decode loop is captured as a CUDA graph (`ingest.lm.decoding.GraphedDecode`) and replayed per
batch: the same kernels on the same shapes without the per-launch overhead (bench/extraction.py
compares it with `generate`); there decoding costs less than verifying, so `targets` are not used.
Tests and the bench compare the tokens with `generate`'s.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ingest.lm.decoding import DecodeBuffers, decode, first_argmax, graphs_enabled
from ingest.lm.hf_compat import with_cache
from ingest.lm.runtime import eval_mode, model_device

__all__ = ["DecodeBuffers", "first_argmax", "generate_greedy", "greedy_extract", "match_fraction"]


# Verification runs only when at least VERIFY_SHARE of the batch look memorised: greedy's first
# token is the target's, and the prefill's argmax reproduces the prompt's last SYNC_PROMPT tokens.
VERIFY_SHARE = 0.5
SYNC_PROMPT = 2
# A verified token must beat the runner-up by TIE_EPS machine epsilons of its logit (8 bf16 ulps
# at most, ~1e-5 in float32). Exact ties are common in bf16 logits (8 bits of mantissa over a 50k
# vocabulary), and which tied token wins can change with the batch's shape (cuBLAS picks kernels
# by shape): such rows are decoded, like `generate` would, rather than declared verified.
TIE_EPS = 4


@torch.inference_mode()
def greedy_extract(
    model,
    prompts: torch.Tensor,
    gen_len: int,
    targets: torch.Tensor | None = None,
    *,
    buffers: DecodeBuffers | None = None,
) -> torch.Tensor:
    """Greedy continuation [B, gen_len] of `prompts` [B, P] (all rows the same length, no padding).

    `targets` [B, gen_len], the rows' true continuations, only makes it faster: when most rows
    look memorised, those whose greedy continuation is their target are verified in one forward
    instead of decoded. `buffers` carries decoding memory over from earlier calls on this model.
    """
    if prompts.dim() != 2 or prompts.size(1) < 1:
        raise ValueError(f"prompts must be [batch, tokens], got {tuple(prompts.shape)}")
    if gen_len < 1:
        raise ValueError(f"gen_len must be >= 1, got {gen_len}")
    if targets is not None and tuple(targets.shape) != (prompts.size(0), gen_len):
        raise ValueError(f"targets must be [batch, gen_len], got {tuple(targets.shape)}")
    buffers = (buffers or DecodeBuffers()).bind(model)
    device = model_device(model)
    ids = prompts.to(device=device, dtype=torch.long)
    batch, prompt_len = ids.shape
    head = model.get_output_embeddings()
    out = torch.empty(batch, gen_len, dtype=torch.long, device=device)
    with eval_mode(model):
        cache = DynamicCache()
        hidden = model.base_model(
            input_ids=ids, use_cache=True, **with_cache(model.base_model, cache)
        ).last_hidden_state
        out[:, 0] = first_argmax(head(hidden[:, -1:])[:, -1])
        todo = torch.arange(batch, device=device)  # rows to decode
        # (with CUDA graphs decoding costs less than verifying: the targets are not needed)
        if targets is not None and gen_len > 1 and not graphs_enabled(model, device):
            targets = targets.to(device=device, dtype=torch.long)
            rows = (out[:, 0] == targets[:, 0]).nonzero().squeeze(1)  # in sync with their target
            least = max(1.0, VERIFY_SHARE * batch)
            if len(rows) >= least and _prompt_predicted(head, hidden[rows], ids[rows]).sum() >= least:
                done = torch.zeros(batch, dtype=torch.bool, device=device)
                done[rows] = _verified(model, cache, rows, targets[rows])
                out[done] = targets[done]
                todo = todo[~done]
                if len(todo) < batch:
                    cache.batch_select_indices(todo)
        if len(todo) and gen_len > 1:
            out[todo, 1:] = decode(model, cache, out[todo, 0], prompt_len, gen_len - 1, buffers)
    return out.to(prompts.device)


def generate_greedy(model, prompts: torch.Tensor, gen_len: int) -> torch.Tensor:
    """What `greedy_extract` reproduces (tests and bench/extraction.py compare the two): transformers'
    `generate` without sampling and with EOS stopping off; the new tokens only."""
    pad = model.config.pad_token_id
    out = model.generate(
        prompts,
        attention_mask=torch.ones_like(prompts),
        do_sample=False,
        max_new_tokens=gen_len,
        eos_token_id=None,
        pad_token_id=0 if pad is None else pad,  # never used: rows are unpadded and never stop
    )
    return out[:, prompts.size(1) :]


def _prompt_predicted(head, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Whether the prefill's argmax (from `hidden` [R, P, H]) reproduces each prompt's last
    `SYNC_PROMPT` tokens, as a memorised row's prompt does: bool [R]."""
    sync = min(SYNC_PROMPT, ids.size(1) - 1)
    if not sync:  # a one-token prompt
        return torch.ones(len(ids), dtype=torch.bool, device=ids.device)
    pred = first_argmax(head(hidden[:, -sync - 1 : -1]).flatten(0, 1)).view(len(ids), sync)
    return (pred == ids[:, -sync:]).all(1)


def _verified(model, cache, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Whether greedy decoding continues each of `rows` with its target ([R, G]): bool [R].

    `cache` holds every row's prompt, after which the greedy token is already the target's first
    for `rows`; one forward over the rest, teacher-forced on the target, checks the others.
    """
    # `cache` stays for decoding: the forward appends to new tensors (concatenation), so every row's
    # keys/values can be shared as they are, and a subset is copied out
    whole = len(rows) == next(iter(cache))[0].size(0)
    own = DynamicCache([(kv[0], kv[1]) if whole else (kv[0][rows], kv[1][rows]) for kv in cache])
    fed = targets[:, :-1]
    hidden = model.base_model(
        input_ids=fed, use_cache=True, **with_cache(model.base_model, own)
    ).last_hidden_state
    logits = model.get_output_embeddings()(hidden)
    pred = first_argmax(logits.flatten(0, 1)).view_as(fed)
    ok = (pred == targets[:, 1:]).all(1)
    if ok.any():  # a verified token must also win by more than rounding noise
        # over every row, in place: copying [R, G, V] logits to select rows cost more than the
        # forward on a CPU, and the logits are not needed after
        best = pred[..., None]
        top = logits.gather(-1, best).float()
        runner_up = logits.scatter_(-1, best, float("-inf")).amax(-1, keepdim=True).float()
        tol = TIE_EPS * torch.finfo(logits.dtype).eps * top.abs().clamp(min=1.0)
        ok &= (top - runner_up > tol).flatten(1).all(1)
    return ok


def match_fraction(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of positions where `generated` equals `target` ([B, G] each): float32 [B].

    A row is memorised (k-extractable) exactly when its fraction is 1.0.
    """
    if generated.shape != target.shape:
        raise ValueError(f"shapes differ: generated {tuple(generated.shape)} vs target {tuple(target.shape)}")
    return (generated == target.to(generated.device)).float().mean(1)
