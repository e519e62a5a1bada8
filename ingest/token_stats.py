"""Per-token surprisal, rank, entropy and second moment of log p of a causal LM over fixed-length rows.

The statistics of the memorisation-profiles inference (Lesci et al. 2024), for every scored position:

    surprisal     = -log p(x_{j+1} | x_<=j)                  nats, float32
    rank          = #{v : logit_v > logit_true}               int32; 0 = top-1, ties favour the truth
    entropy       = -sum_v p_v log p_v                        nats, float32
    second_moment = sum_v p_v (log p_v)^2                     nats^2, float32; when asked for

Entropy and the second moment are the mean (negated) and second moment of log p under the
model's own next-token distribution, which Min-K%++ (Zhang et al. 2024) normalises each token's
log-probability by: mu = -entropy, sigma^2 = second_moment - entropy^2. Both come from the same
max-shifted exponentials: with s_v = z_v - max z and L = logsumexp(z) - max z,
E_p[(log p)^2] = E_p[s^2] + L (L - 2 E_p[s]), a sum of terms >= 0 (s <= 0 <= L): nothing cancels.
The token_stats job asks for it (`token_statistics(..., second_moment=True)`); it costs the CPU
reduction a product and a sum over each chunk.

Position j scores token j+1, so a row of T tokens gives T-1 values (the first token is never
scored, no BOS is prepended). The softmax runs over the model's full output dimension, padded
vocabulary rows included (Pythia: 50,304), in float32 whatever the weights' dtype.

The full-vocabulary softmax is the cost: the transformer runs once, then the LM head is applied
to a chunk of positions at a time and each chunk's float32 logits are reduced to three or four
numbers per position and dropped, so the [B, T, V] float32 logits never exist at once (13 GB for one
Pythia batch). On CPU, a chunk stays in cache between the vectorised passes of `reduce_logits`;
on a GPU, where each pass would go to memory, a Triton kernel (`ingest/fused_stats.py`) reduces
the model-dtype logits in one pass. Two GPU variants wait for a measurement on a device
(bench/device_check.sh) and are off by default: that reduction on a second stream beside the next
chunk's head matmul (config `runtime.stats_overlap`), and the head folded into the kernel so that
no logits are written at all (`runtime.fused_head`).
"""

from __future__ import annotations

import math

import torch

from ingest import fused_stats
from ingest.lm.runtime import eval_mode, model_device, switches

LN2 = math.log(2.0)
LOG2E = 1.0 / LN2

# Logits per chunk. CPU: about 1 MiB of float32 (stays in L2 between passes), but at least
# MIN_CPU_CHUNK positions, below which the LM-head matmul itself gets slow (Pythia's vocabulary).
# GPU: 2^29 bf16 logits (1 GiB; 10.7k Pythia positions), read once by the fused kernel; large
# chunks keep the head matmul efficient (bench/token_stats.py --chunk N measures other sizes).
_CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 29}
MIN_CPU_CHUNK = 128

STATISTICS = ("surprisal", "rank", "entropy", "second_moment")  # the last one when asked for


def default_chunk(vocab: int, device: torch.device) -> int:
    """Positions per LM-head chunk for a vocabulary of `vocab` on `device`."""
    if device.type == "cpu":
        return max(MIN_CPU_CHUNK, _CHUNK_ELEMENTS["cpu"] // vocab)
    return max(1, _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS["cuda"]) // vocab)


@torch.inference_mode()
def token_statistics(
    model, input_ids: torch.Tensor, *, chunk: int | None = None, second_moment: bool = False
) -> dict[str, torch.Tensor]:
    """Surprisal, rank and entropy (and, if `second_moment`, the second moment of log p) of every
    scored position of `input_ids` [B, T].

    `model` is a Hugging Face causal LM whose logits are `get_output_embeddings()` applied to
    `base_model`'s last hidden state (GPT-NeoX/Pythia, GPT-2, Llama, ...). `chunk` is the number
    of positions projected at once (default: `default_chunk`);
    the result does not depend on it. Returns float32 tensors (rank: int32) of shape [B, T-1] on
    the model's device, keyed by STATISTICS. The second moment costs a product and a sum over each
    chunk on a CPU and a few register operations per logit in the fused kernels, hence asked for.
    """
    if input_ids.dim() != 2 or input_ids.size(1) < 2:
        raise ValueError(
            f"input_ids must be [batch, tokens] with at least 2 tokens, got {tuple(input_ids.shape)}"
        )
    device = model_device(model)
    ids = input_ids.to(device=device, dtype=torch.long)
    head = model.get_output_embeddings()
    with eval_mode(model):
        # The last token predicts nothing inside the row, so it is never an input: a causal model
        # gives the same states without it, and Pythia's 2,049-token rows fit its 2,048 positions.
        hidden = model.base_model(input_ids=ids[:, :-1], use_cache=False).last_hidden_state
        batch, scored = ids.size(0), ids.size(1) - 1
        hidden = hidden.reshape(batch * scored, -1)
        targets = ids[:, 1:].reshape(-1)
        step = chunk or default_chunk(head.weight.shape[0], device)
        if step < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        names = STATISTICS if second_moment else STATISTICS[:3]
        fused = fused_stats.available(device)
        if fused and fused_stats.head_fusable(head):  # no logits at all: one launch for the batch
            stats = fused_stats.head_stats(hidden, head.weight, targets, second_moment=second_moment)
            return {k: v.view(batch, scored) for k, v in zip(names, stats)}
        out = {
            k: torch.empty(batch * scored, dtype=torch.int32 if k == "rank" else torch.float32, device=device)
            for k in names
        }
        side = _side_stream(device) if fused else None
        buffers = None  # float32 logits + 2 work buffers, allocated once, reused by every chunk
        for start in range(0, batch * scored, step):
            stop = min(start + step, batch * scored)
            if fused:  # one pass over the model-dtype logits, float32 in registers
                logits = head(hidden[start:stop])
                if side is not None:
                    _reduce_beside(side, logits, targets[start:stop], out, start, stop)
                    continue
                stats = fused_stats.reduce_logits_fused(
                    logits, targets[start:stop], second_moment=second_moment
                )
            else:
                if buffers is None:
                    n = min(step, batch * scored)
                    buffers = torch.empty(3, n, head.weight.shape[0], dtype=torch.float32, device=device)
                logits, work, weights = buffers[:, : stop - start]
                project(head, hidden[start:stop], out=logits)
                stats = reduce_logits(
                    logits, targets[start:stop], work=work, weights=weights, second_moment=second_moment
                )
            _store(out, stats, start, stop)
        if side is not None:
            torch.cuda.current_stream(device).wait_stream(side)
    return {k: v.view(batch, scored) for k, v in out.items()}


def _store(out: dict[str, torch.Tensor], stats: tuple[torch.Tensor, ...], start: int, stop: int) -> None:
    """One chunk's statistics into rows start:stop of `out` (its keys in the order of `stats`)."""
    for column, values in zip(out.values(), stats):
        column[start:stop] = values


def _side_stream(device: torch.device):
    """A second CUDA stream for the fused reduction under `runtime.stats_overlap`, else None.

    The head matmul of a chunk is bound by arithmetic and the reduction of the chunk before it by
    memory reads, so on two streams they can run at once instead of one after the other: for a
    small model such as Pythia-70m that read is what separates the statistics from the bare
    forward. Same kernels on the same inputs, so the numbers are the same either way.
    Off by default until measured on a GPU (bench/token_stats.py --stats-overlap).
    """
    if device.type != "cuda" or not switches().stats_overlap:
        return None
    return torch.cuda.Stream(device)


def _reduce_beside(
    side, logits: torch.Tensor, targets: torch.Tensor, out: dict, start: int, stop: int
) -> None:
    """Queue the fused reduction of one chunk's `logits` on stream `side`, after the work that
    produced them, writing rows start:stop of `out`; the caller's stream goes on to the next
    chunk's matmul. The caller joins `side` before reading `out`."""
    side.wait_stream(torch.cuda.current_stream(logits.device))
    with torch.cuda.stream(side):
        stats = fused_stats.reduce_logits_fused(logits, targets, second_moment="second_moment" in out)
        _store(out, stats, start, stop)
    # freed by the caller on the next chunk: keep the memory from the allocator until `side` has
    # read it (and `targets`, a view of a tensor freed after the join, needs nothing)
    logits.record_stream(side)


def project(head: torch.nn.Module, hidden: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """`head(hidden)` as float32 into `out` [N, V]; written in place for a float32 `nn.Linear`.

    A fresh [N, V] tensor per chunk costs as much as the matmul on some machines (a large
    allocation is mapped anew, and every page faults on first write).
    """
    if type(head) is torch.nn.Linear and head.weight.dtype == out.dtype == hidden.dtype:
        if head.bias is None:
            return torch.mm(hidden, head.weight.t(), out=out)
        return torch.addmm(head.bias, hidden, head.weight.t(), out=out)
    return out.copy_(head(hidden))


def reduce_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    work: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    second_moment: bool = False,
) -> tuple[torch.Tensor, ...]:
    """(surprisal, rank, entropy[, second_moment]) of float32 `logits` [N, V] against `targets` [N].

    `logits` is read in a few vectorised passes and left as it is, with one [N, V] `work` buffer
    and one for the exponentials (`weights`), allocated here unless given (reusing them across
    chunks halves the cost on a CPU: see `project`); both are overwritten.
    """
    true = logits.gather(1, targets.view(-1, 1))
    peak = logits.amax(1, keepdim=True)
    # Rank: entries strictly above the true logit. z - z_true > 0 exactly when z > z_true for
    # finite floats, and clamp/sign/sum costs under half of a bool comparison and its sum on CPU.
    work = torch.sub(logits, true, out=work)
    rank = work.clamp_(min=0).sign_().sum(1).to(torch.int32)
    # Softmax in base 2 (exp2 costs half what exp does on CPU), shifted by the row max.
    shifted = torch.sub(logits, peak, out=work).mul_(LOG2E)  # log2-units, <= 0
    weights = torch.exp2(shifted, out=weights)
    total = weights.sum(1)
    log_total = total.log()  # logsumexp - peak, in nats
    surprisal = log_total - (true - peak).squeeze(1)
    # The moments of z - peak under p: the exponentials are spent once summed, so the products
    # with `shifted` go in place (a product and a sum per moment; `vecdot` costs the same and
    # allocates its product anew).
    products = weights.mul_(shifted)
    mean = LN2 * products.sum(1) / total  # E_p[z - peak] in nats, <= 0
    entropy = log_total - mean
    if not second_moment:
        return surprisal, rank, entropy
    squares = products.mul_(shifted).sum(1)  # total * E_p[(z - peak)^2], in log2-units^2
    return (
        surprisal,
        rank,
        entropy,
        fused_stats.log_prob_second_moment(log_total, mean, squares, total, LN2 * LN2),
    )
