"""The Triton kernel behind `fused_stats.head_stats`: LM-head tiles folded into an online softmax.

Imported only when the fused head runs (Triton is optional). A program takes BLOCK_M positions and
one span of the vocabulary; for each BLOCK_N slice of its span it multiplies the positions' hidden
states by the slice's weight rows (float32 accumulation) and folds the logit tile into its running
(max, sum exp, sum exp * shifted logit, sum exp * its square, count above the truth), then writes
that partial state for `head_stats` to merge across spans.
"""

import triton
import triton.language as tl


@triton.jit
def _tile_dot(hidden, weight, rows, row_ok, cols, col_ok, dim, acc, BLOCK_K: tl.constexpr,
              PRECISION: tl.constexpr, UPCAST: tl.constexpr, ROUND: tl.constexpr):  # fmt: skip
    """hidden[rows] @ weight[cols]^T added to `acc` [rows, cols], as a head of the weights'
    dtype computes it: exact products, float32 sums, rounded to bf16 when ROUND."""
    ks = tl.arange(0, BLOCK_K)
    for k in range(0, dim, BLOCK_K):
        k_ok = (k + ks) < dim
        a = tl.load(
            hidden + rows[:, None].to(tl.int64) * dim + (k + ks)[None, :],
            mask=row_ok[:, None] & k_ok[None, :], other=0.0,
        )  # fmt: skip
        b = tl.load(
            weight + cols[None, :].to(tl.int64) * dim + (k + ks)[:, None],
            mask=col_ok[None, :] & k_ok[:, None], other=0.0,
        )  # fmt: skip
        if UPCAST:  # exact: bf16 -> float32, and float32 products of bf16 values are exact
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if ROUND:  # float32 -> nearest bf16 (ties to even), by integer arithmetic: a cast's rounding
        # mode is not honoured by Triton's interpreter, which truncates (the tests run there)
        bits = acc.to(tl.uint32, bitcast=True)
        acc = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
    return acc


@triton.jit
def head_stats_kernel(
    hidden, weight, targets, true_out, m_out, s_out, w_out, q_out, r_out,
    n_rows, vocab, dim, span,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ROUND: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, MOMENT: tl.constexpr,
):  # fmt: skip
    # Programs next to each other share a vocabulary span (and so the weight rows it reads).
    n_tiles = tl.cdiv(n_rows, BLOCK_M)
    pid = tl.program_id(0)
    tile, split = pid % n_tiles, pid // n_tiles
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    target = tl.load(targets + rows, mask=row_ok, other=0)
    # The truth's logit by the same arithmetic as the tiles' entries: the row tile times its own
    # targets' weight rows, [BLOCK_M, BLOCK_M], whose diagonal is each row's true logit. Not in
    # `acc`: Triton types a loop-carried variable by its shape, and the loop's tiles are
    # [BLOCK_M, BLOCK_N].
    own = tl.zeros((BLOCK_M, BLOCK_M), tl.float32)
    own = _tile_dot(hidden, weight, rows, row_ok, target, row_ok, dim, own, BLOCK_K, PRECISION, UPCAST, ROUND)
    diagonal = tl.arange(0, BLOCK_M)[:, None] == tl.arange(0, BLOCK_M)[None, :]
    true = tl.sum(tl.where(diagonal, own, 0.0), 1)
    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_M,), tl.float32)
    w = tl.zeros((BLOCK_M,), tl.float32)
    q = tl.zeros((BLOCK_M,), tl.float32)
    r = tl.zeros((BLOCK_M,), tl.int32)
    for start in range(split * span, tl.minimum(split * span + span, vocab), BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < vocab
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        acc = _tile_dot(
            hidden, weight, rows, row_ok, cols, col_ok, dim, acc, BLOCK_K, PRECISION, UPCAST, ROUND
        )
        z = tl.where(col_ok[None, :], acc, float("-inf"))
        # strictly greater than the truth (its own column excluded all the same)
        r += tl.sum(((z > true[:, None]) & (cols[None, :] != target[:, None])).to(tl.int32), 1)
        m_new = tl.maximum(m, tl.max(z, 1))
        shift = tl.where(col_ok[None, :], z - m_new[:, None], 0.0)
        e = tl.where(col_ok[None, :], tl.exp(shift), 0.0)
        first = m == float("-inf")  # no state yet: nothing to rescale (and no -inf * 0)
        scale = tl.where(first, 0.0, tl.exp(m - m_new))
        d = tl.where(first, 0.0, m - m_new)  # the state's shift to the new max (ingest/fused_stats.py)
        es = e * shift
        if MOMENT:  # the second moment's sum, only when asked for; before w moves on
            q = scale * (q + d * (2.0 * w + d * s)) + tl.sum(es * shift, 1)
        w = scale * (w + d * s) + tl.sum(es, 1)
        s = scale * s + tl.sum(e, 1)
        m = m_new
    if split == 0:
        tl.store(true_out + rows, true, mask=row_ok)
    out = split * n_rows + rows
    tl.store(m_out + out, m, mask=row_ok)
    tl.store(s_out + out, s, mask=row_ok)
    tl.store(w_out + out, w, mask=row_ok)
    if MOMENT:
        tl.store(q_out + out, q, mask=row_ok)
    tl.store(r_out + out, r, mask=row_ok)
