"""Surprisal, rank and entropy in one pass over the logits: a Triton kernel for the GPU path.

`token_stats.reduce_logits` (torch) reads a chunk's float32 logits in several vectorised passes,
which is right on a CPU, where the chunk stays in cache. On a GPU the passes go to memory: for
Pythia's 50,304-entry vocabulary they cost 2-6x the forward pass itself (bench/token_stats.py,
H100). This kernel reads each row of bf16 (or any float) logits once, upcasts to float32 in
registers and keeps an online softmax (Milakov & Gimelshein 2018):

    m  running max (starts at the true logit, which is finite, so no inf - inf)
    s  = sum_v exp(z_v - m)
    w  = sum_v exp(z_v - m) (z_v - m)
    r  = #{v : z_v > z_true}

    surprisal = log s + m - z_true,  entropy = log s - w / s,  rank = r

the same definitions as the torch reduction (equal to ~1e-6 relative). Triton is optional: without
it, or on a CPU, `token_stats` uses the torch reduction. Under `TRITON_INTERPRET=1` the kernel
runs on CPU tensors through Triton's interpreter, which is how the tests check it without a GPU
(tests/conftest.py sets it before anything imports Triton).
"""

from __future__ import annotations

import functools
import os

import torch

BLOCK = 2048  # vocabulary entries per loop step; 50,304 = 24.6 steps
NUM_WARPS = 4  # 2048 x 4 warps: 2.2 TB/s of logits read on an H100 (1024..8192 x 4..16 tried)


def available(device: torch.device) -> bool:
    """Whether `token_stats` uses the fused kernel on `device`: on CUDA when Triton is installed
    (`MEMLAKE_FUSED_STATS=0` turns it off); on a CPU only when asked (`MEMLAKE_FUSED_STATS=1`) under
    Triton's interpreter (`TRITON_INTERPRET=1`, set before Triton is imported), for tests."""
    flag = os.environ.get("MEMLAKE_FUSED_STATS")
    if flag == "0":
        return False
    if device.type != "cuda" and not (flag == "1" and os.environ.get("TRITON_INTERPRET") == "1"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernel():
    # Built on first use, so TRITON_INTERPRET set by a caller (tests) is honoured.
    import triton
    import triton.language as tl

    @triton.jit
    def stats_kernel(logits, row_stride, targets, surprisal, rank, entropy, vocab, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits + row * row_stride
        true = tl.load(base + tl.load(targets + row)).to(tl.float32)
        m = true
        s = 0.0
        w = 0.0
        r = 0
        for start in range(0, vocab, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < vocab
            z = tl.load(base + offs, mask=inside, other=float("-inf")).to(tl.float32)
            r += tl.sum((z > true).to(tl.int32))
            m_new = tl.maximum(m, tl.max(z))
            shift = tl.where(inside, z - m_new, 0.0)  # 0, not -inf, past the end: no 0 * inf
            e = tl.where(inside, tl.exp(shift), 0.0)
            scale = tl.exp(m - m_new)
            w = scale * (w + (m - m_new) * s) + tl.sum(e * shift)
            s = scale * s + tl.sum(e)
            m = m_new
        log_s = tl.log(s)
        tl.store(surprisal + row, log_s + m - true)
        tl.store(entropy + row, log_s - w / s)
        tl.store(rank + row, r)

    return stats_kernel


def reduce_logits_fused(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(surprisal float32, rank int32, entropy float32) of `logits` [N, V] (any float dtype) against
    `targets` [N]: `token_stats.reduce_logits(logits.float(), targets)` without the float32 copy."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    n, vocab = logits.shape
    surprisal = torch.empty(n, dtype=torch.float32, device=logits.device)
    entropy = torch.empty_like(surprisal)
    rank = torch.empty(n, dtype=torch.int32, device=logits.device)
    if n:
        _kernel()[(n,)](
            logits,
            logits.stride(0),
            targets.contiguous(),
            surprisal,
            rank,
            entropy,
            vocab,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
    return surprisal, rank, entropy
