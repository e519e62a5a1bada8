"""Surprisal, rank, entropy and second moment of log p in one pass over the logits: Triton kernels
for the GPU path.

`token_stats.reduce_logits` (torch) reads a chunk's float32 logits in several vectorised passes,
which is right on a CPU, where the chunk stays in cache. On a GPU the passes go to memory: for
Pythia's 50,304-entry vocabulary they cost more than the forward pass itself
(bench/token_stats.py). This kernel reads each row of bf16 (or any float) logits once, upcasts to
float32 in registers and keeps an online softmax (Milakov & Gimelshein 2018):

    m  running max (starts at the true logit, which is finite, so no inf - inf)
    s  = sum_v exp(z_v - m)
    w  = sum_v exp(z_v - m) (z_v - m)
    q  = sum_v exp(z_v - m) (z_v - m)^2
    r  = #{v : z_v > z_true}

    surprisal = log s + m - z_true,  entropy = log s - w / s,  rank = r,
    second moment of log p = q / s + log s (log s - 2 w / s)

where a new max m' rescales the sums by exp(m - m') and shifts them by d = m - m' <= 0:
w' = w + d s and q' = q + d (2 w + d s), every term >= 0 (w <= 0), so nothing cancels.

the same definitions as the torch reduction (equal up to float32 rounding).

`head_stats` goes one step further (config `runtime.fused_head`): it computes the head matmul itself,
tile by tile, and folds each logit tile into the same online softmax while it is in registers,
so the logits are never written or read (in a model as small as Pythia-70m, where the head is a
large share of the FLOPs, that one read is what the statistics add to the forward). Each tile is
rounded to bf16 as a bf16 head's output would be, and the truth's logit comes from the same
arithmetic (a diagonal of the row tile times its targets' weight rows), so rank ties resolve as
in the unfused path. Triton is optional: without
it, or on a CPU, `token_stats` uses the torch reduction. Under `TRITON_INTERPRET=1` the kernel
runs on CPU tensors through Triton's interpreter, which is how the tests check it without a GPU
(tests/conftest.py sets it before anything imports Triton).
"""

from __future__ import annotations

import functools
import os

import torch

from ingest.lm.runtime import switches

BLOCK = 2048  # vocabulary entries per loop step; 50,304 = 24.6 steps
NUM_WARPS = 4  # 2048 x 4 warps read the logits fastest of the 1024..8192 x 4..16 tried on a GPU


def available(device: torch.device) -> bool:
    """Whether `token_stats` uses the fused kernel on `device`: on CUDA when Triton is installed
    (`runtime.fused_stats: false` turns it off); on a CPU only when asked (`fused_stats: true`)
    under Triton's interpreter (`TRITON_INTERPRET=1`, set before Triton is imported), for tests."""
    flag = switches().fused_stats
    if flag is False:
        return False
    if device.type != "cuda" and not (flag and os.environ.get("TRITON_INTERPRET") == "1"):
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
    def stats_kernel(
        logits, row_stride, targets, surprisal, rank, entropy, moment, vocab,
        BLOCK: tl.constexpr, MOMENT: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        base = logits + row * row_stride
        true = tl.load(base + tl.load(targets + row)).to(tl.float32)
        m = true
        s = 0.0
        w = 0.0
        q = 0.0
        r = 0
        for start in range(0, vocab, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < vocab
            z = tl.load(base + offs, mask=inside, other=float("-inf")).to(tl.float32)
            r += tl.sum((z > true).to(tl.int32))
            m_new = tl.maximum(m, tl.max(z))
            shift = tl.where(inside, z - m_new, 0.0)  # 0, not -inf, past the end: no 0 * inf
            e = tl.where(inside, tl.exp(shift), 0.0)
            d = m - m_new  # the state's shift to the new max, <= 0
            scale = tl.exp(d)
            es = e * shift
            if MOMENT:  # compiled out unless asked for; before w moves on (it reads the old w)
                q = scale * (q + d * (2.0 * w + d * s)) + tl.sum(es * shift)
            w = scale * (w + d * s) + tl.sum(es)
            s = scale * s + tl.sum(e)
            m = m_new
        log_s = tl.log(s)
        tl.store(surprisal + row, log_s + m - true)
        tl.store(entropy + row, log_s - w / s)
        if MOMENT:
            tl.store(moment + row, q / s + log_s * (log_s - 2.0 * (w / s)))
        tl.store(rank + row, r)

    return stats_kernel


# Fused head + reduction: tile sizes (positions x vocabulary x hidden) and the launch shape; on
# the GPU these are starting points for bench/device_check.sh, not yet tuned on a device.
HEAD_TILES = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}
# Vocabulary splits per row tile: enough programs to fill the GPU when there are few row tiles.
MIN_PROGRAMS = 512


@functools.cache
def _head_kernel():
    # its own module: Triton helpers must be module-level, and Triton is imported only when used
    from ingest import fused_head_kernel

    return fused_head_kernel.head_stats_kernel


def head_fusable(head: torch.nn.Module) -> bool:
    """Whether `token_stats` folds the LM head into the reduction (`head_stats`): asked for with
    `runtime.fused_head` (off by default until bench/device_check.sh measures it against the
    head matmul + `reduce_logits_fused`), for a bias-free linear head."""
    return switches().fused_head and type(head) is torch.nn.Linear and head.bias is None


def log_prob_second_moment(
    log_total: torch.Tensor,
    mean: torch.Tensor,
    squares: torch.Tensor,
    total: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """E_p[(log p)^2] for logits z shifted by a c >= max z, from L = log(total) = logsumexp(z) - c,
    mean = E_p[z - c] and squares = sum_v exp(z_v - c) (z_v - c)^2 / scale: log p = (z - c) - L, so
    it is E_p[(z - c)^2] + L (L - 2 E_p[z - c]), a sum of terms >= 0. In three ops: on a CPU,
    per-position ops cost a chunk about as much as a pass over its logits."""
    return torch.addcdiv(torch.sub(log_total, mean, alpha=2).mul_(log_total), squares, total, value=scale)


def head_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    tiles: dict | None = None,
    *,
    second_moment: bool = False,
) -> tuple[torch.Tensor, ...]:
    """(surprisal, rank, entropy[, second_moment]) of `hidden` [N, H] @ `weight` [V, H]^T against
    `targets` [N], without writing the [N, V] logits: each program multiplies a tile of positions
    by a span of the vocabulary and folds the logit tiles into an online softmax as they come out
    of the matmul, and the spans' partial states are merged here. The logits are those a head of the
    weights' dtype writes (float32 accumulation, rounded to bf16 for bf16 weights), so the numbers
    are the unfused path's to rounding. `tiles` overrides HEAD_TILES (tests, tuning).
    """
    # runtime.head_tiles={BLOCK_N: 256, ...} for tuning runs (bench/device_check.sh)
    tiles = {**HEAD_TILES, **dict(switches().head_tiles), **(tiles or {})}
    hidden, weight = hidden.contiguous(), weight.contiguous()
    n, dim = hidden.shape
    vocab = weight.shape[0]
    true = torch.empty(n, dtype=torch.float32, device=hidden.device)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    n_tiles = -(-n // tiles["BLOCK_M"])
    splits = max(1, min(-(-MIN_PROGRAMS // n_tiles), vocab // (4 * tiles["BLOCK_N"]) or 1))
    span = -(-vocab // (splits * tiles["BLOCK_N"])) * tiles["BLOCK_N"]
    splits = -(-vocab // span)
    parts = torch.empty(4, splits, n, dtype=torch.float32, device=hidden.device)
    ranks = torch.empty(splits, n, dtype=torch.int32, device=hidden.device)
    if n:
        _head_kernel()[(n_tiles * splits,)](
            hidden, weight, targets.contiguous(), true, *parts, ranks,
            n, vocab, dim, span,
            BLOCK_M=tiles["BLOCK_M"], BLOCK_N=tiles["BLOCK_N"], BLOCK_K=tiles["BLOCK_K"],
            ROUND=weight.dtype == torch.bfloat16, MOMENT=second_moment,
            # float32 inputs: no TF32 rounding. Triton's interpreter (tests) multiplies bf16 blocks
            # wrongly, so there they are upcast first, which the float32 "ieee" product keeps exact.
            PRECISION="ieee" if weight.dtype == torch.float32 or interpreted else "tf32",
            UPCAST=interpreted and weight.dtype != torch.float32,
            num_warps=tiles["num_warps"], num_stages=tiles["num_stages"],
        )  # fmt: skip
    m, s, w, q = parts  # each span's online state, merged as the kernels merge blocks
    peak = m.amax(0)
    shift = m - peak
    scale = torch.exp(shift)
    total = (scale * s).sum(0)
    mean = (scale * (w + shift * s)).sum(0) / total
    log_total = total.log()
    stats = (log_total + peak - true, ranks.sum(0, dtype=torch.int32), log_total - mean)
    if not second_moment:
        return stats
    squares = (scale * (q + shift * (2 * w + shift * s))).sum(0)
    return (*stats, log_prob_second_moment(log_total, mean, squares, total))


def reduce_logits_fused(
    logits: torch.Tensor, targets: torch.Tensor, *, second_moment: bool = False
) -> tuple[torch.Tensor, ...]:
    """(surprisal float32, rank int32, entropy float32[, second_moment float32]) of `logits` [N, V]
    (any float dtype) against `targets` [N]: `token_stats.reduce_logits(logits.float(), targets,
    second_moment=...)` without the float32 copy. The second moment is compiled into the kernel
    only when asked for, so the three statistics run the same kernel as without it."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    n, vocab = logits.shape
    surprisal = torch.empty(n, dtype=torch.float32, device=logits.device)
    entropy = torch.empty_like(surprisal)
    moment = torch.empty_like(surprisal)
    rank = torch.empty(n, dtype=torch.int32, device=logits.device)
    if n:
        _kernel()[(n,)](
            logits,
            logits.stride(0),
            targets.contiguous(),
            surprisal,
            rank,
            entropy,
            moment,
            vocab,
            BLOCK=BLOCK,
            MOMENT=second_moment,
            num_warps=NUM_WARPS,
        )
    return (surprisal, rank, entropy, moment)[: 4 if second_moment else 3]
