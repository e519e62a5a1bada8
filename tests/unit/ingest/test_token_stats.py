import math

import pytest
import torch

from ingest.lm.runtime import inference_device, to_inference
from ingest.suite.model import build_model
from ingest.token_stats import default_chunk, token_statistics

VOCAB = 200  # padded to 256 output rows: the padding rows take part in the softmax
SPEC = {"hidden_size": 32, "layers": 2, "heads": 2}


def fresh_model():
    torch.manual_seed(0)
    return build_model(SPEC, VOCAB, 32).eval()


@pytest.fixture
def model():
    return fresh_model()


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(1)
    return torch.randint(0, VOCAB, (4, 20))


@pytest.fixture(scope="module")
def reference(ids):
    """The unmodified model and its statistics by definition, computed once."""
    model = fresh_model()
    return model, [direct(model, row) for row in ids]


def direct(model, row: torch.Tensor) -> dict[str, torch.Tensor]:
    """The definition, one row at a time: full logits, full fp32 log-softmax."""
    with torch.no_grad():
        logits = model(row[None]).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1)
    target = row[1:, None]
    return {
        "surprisal": -logp.gather(1, target)[:, 0],
        "rank": (logits > logits.gather(1, target)).sum(1),
        "entropy": -(logp.exp() * logp).sum(1),
    }


def assert_matches(stats, refs):
    for b, ref in enumerate(refs):
        torch.testing.assert_close(stats["surprisal"][b], ref["surprisal"], atol=1e-5, rtol=0)
        torch.testing.assert_close(stats["entropy"][b], ref["entropy"], atol=1e-5, rtol=0)
        assert torch.equal(stats["rank"][b].long(), ref["rank"])


def test_shapes_and_dtypes(reference, ids):
    model, _ = reference
    stats = token_statistics(model, ids)
    assert set(stats) == {"surprisal", "rank", "entropy"}
    for key, dtype in (("surprisal", torch.float32), ("rank", torch.int32), ("entropy", torch.float32)):
        assert stats[key].shape == (4, 19)
        assert stats[key].dtype == dtype
    assert model.get_output_embeddings().out_features == 256
    assert (stats["entropy"] <= math.log(256) + 1e-5).all()


def test_matches_unbatched_unchunked_definition_for_any_chunk(reference, ids):
    model, refs = reference
    whole = token_statistics(model, ids, chunk=10_000)
    assert_matches(whole, refs)
    for chunk in (None, 1, 7):
        part = token_statistics(model, ids, chunk=chunk)
        assert_matches(part, refs)
        assert torch.equal(part["rank"], whole["rank"])
        torch.testing.assert_close(part["surprisal"], whole["surprisal"], atol=1e-6, rtol=0)
        torch.testing.assert_close(part["entropy"], whole["entropy"], atol=1e-6, rtol=0)


class _ScaledHead(torch.nn.Module):
    """An LM head that is not a plain `nn.Linear` (statistics take the generic projection)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear
        self.weight = linear.weight

    def forward(self, x):
        return self.linear(x) * 0.5


@pytest.mark.parametrize("head_kind", ["bias", "module"])
def test_heads_with_a_bias_or_of_another_kind_match_the_definition(model, ids, head_kind):
    linear = model.get_output_embeddings()
    if head_kind == "bias":
        head = torch.nn.Linear(linear.in_features, linear.out_features, bias=True)
        with torch.no_grad():
            head.weight.copy_(linear.weight)
            head.bias.normal_()
    else:
        head = _ScaledHead(linear)
    model.set_output_embeddings(head)
    assert model.get_output_embeddings() is head
    assert_matches(token_statistics(model, ids, chunk=7), [direct(model, row) for row in ids])


def test_rank_counts_only_strictly_greater_logits(model, ids):
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        head[7] = head[ids[0, 1]]  # an exact tie with the true token of position 0
        head[250] = head[ids[0, 1]]  # ... and with a padding row
    stats = token_statistics(model, ids)
    with torch.no_grad():
        logits = model(ids[:1]).logits[0, 0].float()
    true = logits[ids[0, 1]]
    assert logits[7] == true and logits[250] == true
    assert stats["rank"][0, 0] == (logits > true).sum()
    assert stats["rank"][0, 0] == (logits >= true).sum() - 3  # the truth and its two twins
    assert_matches({k: v[:1] for k, v in stats.items()}, [direct(model, ids[0])])


def test_all_tied_logits_rank_zero_uniform_distribution(model, ids):
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    stats = token_statistics(model, ids)
    assert (stats["rank"] == 0).all()
    torch.testing.assert_close(stats["surprisal"], torch.full((4, 19), math.log(256)))
    torch.testing.assert_close(stats["entropy"], torch.full((4, 19), math.log(256)))


def test_padding_rows_are_part_of_the_softmax(reference, ids):
    model, _ = reference
    stats = token_statistics(model, ids)
    with torch.no_grad():
        logits = model(ids[:1]).logits[0, :-1].float()
    real_only = -torch.log_softmax(logits[:, :VOCAB], -1).gather(1, ids[0, 1:, None])[:, 0]
    # 56 randomly initialised padding rows hold ~56/256 of the mass: about log(256/200) more surprisal
    assert (stats["surprisal"][0] > real_only + 0.1).all()


def test_bf16_weights_reduce_in_fp32(model, ids):
    model = model.to(torch.bfloat16)
    stats = token_statistics(model, ids)
    assert stats["surprisal"].dtype == torch.float32
    with torch.no_grad():
        logits = model(ids).logits[:, :-1].float()  # bf16 logits, cast as the DiD inference does
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(
        stats["surprisal"], -logp.gather(2, ids[:, 1:, None])[..., 0], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(stats["entropy"], -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=0)


def test_restores_training_mode_and_rejects_bad_input(model, ids):
    model.train()
    token_statistics(model, ids)
    assert model.training
    with pytest.raises(ValueError, match="at least 2 tokens"):
        token_statistics(model, ids[:, :1])
    with pytest.raises(ValueError, match="chunk"):
        token_statistics(model, ids, chunk=-1)


def test_device_helpers(model):
    assert inference_device("cpu") == (torch.device("cpu"), torch.float32)
    assert inference_device("cuda")[1] == torch.bfloat16
    model.train()
    moved = to_inference(model, "cpu")
    assert not moved.training and next(moved.parameters()).dtype == torch.float32
    assert default_chunk(2048, torch.device("cpu")) == 128
    assert default_chunk(10**9, torch.device("cuda")) == 1


# The GPU path's fused kernel, run on CPU tensors by Triton's interpreter.
@pytest.fixture
def interpret(switches):
    pytest.importorskip("triton", reason="triton not installed: the fused GPU kernel is untested here")
    switches(fused_stats=True)  # conftest set TRITON_INTERPRET=1 at start-up
    from ingest import fused_stats

    assert fused_stats.available(torch.device("cpu"))
    return fused_stats


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_matches_the_torch_reduction(interpret, dtype):
    from ingest.token_stats import reduce_logits

    gen = torch.Generator().manual_seed(0)
    vocab = interpret.BLOCK + 300  # a partial last block
    logits = (torch.randn(9, vocab, generator=gen) * 4).to(dtype)
    targets = torch.randint(0, vocab, (9,), generator=gen)
    logits[0] = logits[0, targets[0]]  # every entry ties with the truth: rank 0, uniform
    logits[1, :50] = logits[1, targets[1]]  # 50 twins of the truth: not counted
    logits[2, targets[2]] = logits[2].max() + 30  # a peaked row: surprisal ~0
    fused = interpret.reduce_logits_fused(logits, targets)
    plain = reduce_logits(logits.float(), targets)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)
    assert fused[1][0] == 0 and fused[1][1] == (logits[1].float() > logits[1, targets[1]].float()).sum()
    torch.testing.assert_close(fused[2][0], torch.tensor(math.log(vocab)))


def test_token_statistics_on_the_fused_path_match_the_definition(interpret, reference, ids):
    model, refs = reference
    stats = token_statistics(model, ids)  # available(cpu) under the interpreter: the kernel runs
    assert_matches(stats, refs)


def test_default_chunk_keeps_the_head_matmul_large_on_cpu():
    from ingest.token_stats import MIN_CPU_CHUNK

    assert default_chunk(50_304, torch.device("cpu")) == MIN_CPU_CHUNK  # not 5 positions
    assert default_chunk(256, torch.device("cpu")) == 1024
    assert default_chunk(50_304, torch.device("cuda")) > 8_000


def test_overlap_flag_is_off_without_cuda(switches):
    from ingest.token_stats import _side_stream

    switches(stats_overlap=True)
    assert _side_stream(torch.device("cpu")) is None  # streams are CUDA's: CPU runs serially


SMALL_TILES = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "num_warps": 1, "num_stages": 1}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_head_matches_the_head_then_the_reduction(interpret, monkeypatch, dtype):
    """Head matmul and statistics in one kernel (interpreted): the numbers of projecting, then
    reducing, with partial tiles on every axis and several vocabulary spans merged."""
    from ingest.token_stats import reduce_logits

    gen = torch.Generator().manual_seed(0)
    n, dim, vocab = 37, 40, 300
    hidden = torch.randn(n, dim, generator=gen).to(dtype)
    weight = (torch.randn(vocab, dim, generator=gen) / 3).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    weight[7] = weight[targets[0]]  # an exact twin of row 0's truth: a tie, not counted
    weight[targets[1]] = hidden[1] * 4  # row 1: a peaked truth, rank 0
    # the logits a head of this dtype writes: exact products, float32 sums, rounded to the dtype
    ref = reduce_logits((hidden.float() @ weight.float().t()).to(dtype).float(), targets)
    for splits in (1, 3):  # 3 row tiles of 16: 1 or 3 spans of the vocabulary
        monkeypatch.setattr(interpret, "MIN_PROGRAMS", splits * 3)
        fused = interpret.head_stats(hidden, weight, targets, SMALL_TILES)
        torch.testing.assert_close(fused[0], ref[0], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(fused[2], ref[2], atol=1e-5, rtol=1e-6)
        agree = (fused[1] == ref[1]).float().mean()
        assert agree == 1 if dtype == torch.float32 else agree > 0.9  # bf16: last-bit ties may move
        assert fused[1][1] == 0


def test_token_statistics_on_the_fused_head_match_the_definition(
    interpret, switches, monkeypatch, reference, ids
):
    from ingest import fused_stats

    switches(fused_head=True)
    monkeypatch.setattr(fused_stats, "HEAD_TILES", SMALL_TILES)
    calls, real = [], fused_stats.head_stats
    monkeypatch.setattr(fused_stats, "head_stats", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    model, refs = reference
    assert_matches(token_statistics(model, ids), refs)
    assert calls == [(4 * 19, 32)]  # every scored position in one launch, no logits projected


def test_runtime_threads_hold_for_the_block_only():
    from ingest.lm.runtime import Switches, using

    before = torch.get_num_threads()
    with using(Switches.of({"threads": 1})):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with using(Switches.of({})):  # 0: the process's own count stays
        assert torch.get_num_threads() == before


# The second moment of log p under the model's distribution (Min-K%++'s sigma^2 = it - entropy^2).
def second_moment_float64(logits: torch.Tensor) -> torch.Tensor:
    """The definition over the full vocabulary in float64: sum_v p_v (log p_v)^2."""
    logp = torch.log_softmax(logits.double(), -1)
    return (logp.exp() * logp * logp).sum(-1)


def spread_logits(dtype=torch.float32, vocab=300) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows that a near-uniform random model never gives: wide, uniform, peaked, a far tail."""
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(9, vocab, generator=gen) * 4).to(dtype)
    targets = torch.randint(0, vocab, (9,), generator=gen)
    logits[0] = logits[0, targets[0]]  # uniform: sigma^2 = 0
    logits[1, targets[1]] = logits[1].max() + 30  # peaked: every moment ~0
    logits[2, : vocab // 2] -= 60  # half the vocabulary far below the rest
    logits[3, -1] = logits[3].max() + 3  # the max in the last block (the fused kernel rescales)
    return logits, targets


def test_second_moment_matches_a_float64_sum_over_the_vocabulary():
    from ingest.token_stats import reduce_logits

    logits, targets = spread_logits()
    plain = reduce_logits(logits, targets)
    stats = reduce_logits(logits, targets, second_moment=True)
    for a, b in zip(plain, stats):  # asking for it leaves the other statistics as they were
        assert torch.equal(a, b)
    want = second_moment_float64(logits)
    torch.testing.assert_close(stats[3].double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats[3][0], torch.tensor(math.log(300) ** 2))
    assert stats[3][1] < 1e-6
    variance = stats[3] - stats[2] ** 2
    assert (variance >= -1e-4).all() and abs(variance[0]) < 1e-5
    assert (variance[4:] > 1).all()  # the wide rows: log p spreads over several nats


def test_token_statistics_second_moment_for_any_chunk(reference, ids):
    model, refs = reference
    with torch.no_grad():
        want = torch.stack([second_moment_float64(model(row[None]).logits[0, :-1]) for row in ids])
    for chunk in (None, 1, 7):
        stats = token_statistics(model, ids, chunk=chunk, second_moment=True)
        assert list(stats) == ["surprisal", "rank", "entropy", "second_moment"]
        assert stats["second_moment"].dtype == torch.float32
        torch.testing.assert_close(stats["second_moment"].double(), want, atol=1e-5, rtol=1e-5)
        assert_matches(stats, refs)
        assert (stats["second_moment"] - stats["entropy"] ** 2 >= -1e-5).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernels_second_moment_matches_the_torch_reduction(interpret, monkeypatch, dtype):
    from ingest.token_stats import reduce_logits

    logits, targets = spread_logits(dtype, vocab=interpret.BLOCK + 300)  # two blocks, the last partial
    want = reduce_logits(logits.float(), targets, second_moment=True)
    fused = interpret.reduce_logits_fused(logits, targets, second_moment=True)
    assert len(fused) == 4 and len(interpret.reduce_logits_fused(logits, targets)) == 3
    torch.testing.assert_close(fused[3], want[3], atol=1e-5, rtol=1e-5)

    gen = torch.Generator().manual_seed(1)
    hidden = (torch.randn(37, 40, generator=gen) * 3).to(dtype)  # logits of a few nats' spread
    weight = (torch.randn(300, 40, generator=gen) / 3).to(dtype)
    head_targets = torch.randint(0, 300, (37,), generator=gen)
    want = reduce_logits(
        (hidden.float() @ weight.float().t()).to(dtype).float(), head_targets, second_moment=True
    )
    assert (want[3] - want[2] ** 2 > 1).any()
    for splits in (1, 3):  # 3 row tiles of 16: 1 or 3 spans of the vocabulary merged
        monkeypatch.setattr(interpret, "MIN_PROGRAMS", splits * 3)
        fused = interpret.head_stats(hidden, weight, head_targets, SMALL_TILES, second_moment=True)
        torch.testing.assert_close(fused[3], want[3], atol=1e-5, rtol=1e-5)


def test_token_statistics_second_moment_on_the_fused_paths(interpret, switches, monkeypatch, reference, ids):
    from ingest import fused_stats

    model, _ = reference
    fused = token_statistics(model, ids, second_moment=True)  # the interpreted reduction kernel
    switches(fused_stats=False)
    cpu = token_statistics(model, ids, second_moment=True)
    monkeypatch.setattr(fused_stats, "HEAD_TILES", SMALL_TILES)
    switches(fused_stats=True, fused_head=True)
    head = token_statistics(model, ids, second_moment=True)
    for stats in (fused, head):
        assert list(stats) == list(cpu)
        torch.testing.assert_close(stats["second_moment"], cpu["second_moment"], atol=1e-5, rtol=1e-5)
