"""The GPU paths with compiled kernels: CI has no GPU, so these skip there; bench/device_check.sh
runs them on a lent device (TRITON_INTERPRET=0)."""

import os

import pytest
import torch

from ingest.extraction import generate_greedy, greedy_extract
from ingest.lm.runtime import to_inference
from ingest.suite.model import build_model
from ingest.token_stats import reduce_logits, token_statistics
from tests.helpers import make_model, prompts

# On a GPU only (CI has none; bench/device_check.sh runs these with compiled Triton kernels).
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: bench/device_check.sh"
)


def gpu_model_and_rows(hidden: int):
    """A bf16 model of Pythia's vocabulary on the GPU and 8 random rows of 513 tokens, for tests
    that need compiled Triton kernels (TRITON_INTERPRET=0, as bench/device_check.sh sets)."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("set TRITON_INTERPRET=0 to run the compiled kernel")
    torch.manual_seed(0)
    model = build_model({"hidden_size": hidden, "layers": 2, "heads": 4}, 50_304, 512)
    return to_inference(model, "cuda"), torch.randint(0, 50_304, (8, 513), device="cuda")


@needs_cuda
def test_overlapped_reduction_equals_the_serial_one_on_gpu(switches):
    model, ids = gpu_model_and_rows(128)
    runs = {}
    for flag in ("0", "1"):
        switches(stats_overlap=flag == "1")
        runs[flag] = token_statistics(model, ids, chunk=300)  # 14 chunks, the last one short
    for key in runs["0"]:
        assert torch.equal(runs["0"][key], runs["1"][key]), key
    # and the definition, over the same bf16 logits in float32
    with torch.inference_mode():
        hidden = model.base_model(input_ids=ids).last_hidden_state[:, :-1]
        logits = model.get_output_embeddings()(hidden).float()
    logp = torch.log_softmax(logits, -1)
    true = ids[:, 1:, None]
    torch.testing.assert_close(runs["1"]["surprisal"], -logp.gather(-1, true)[..., 0], atol=1e-4, rtol=0)
    assert (runs["1"]["rank"] == (logits > logits.gather(-1, true)).sum(-1)).float().mean() > 0.99


@needs_cuda
def test_fused_head_matches_the_unfused_path_on_gpu(switches):
    model, ids = gpu_model_and_rows(512)  # Pythia-70m's width
    runs = {}
    for flag in ("0", "1"):
        switches(fused_head=flag == "1")
        runs[flag] = token_statistics(model, ids)
    # bf16 logits from two matmuls (cuBLAS and the kernel's tiles) differ where their float32 sums
    # round to neighbouring bf16 values: rarely, and then by one bf16 step
    for key in ("surprisal", "entropy"):
        diff = (runs["0"][key] - runs["1"][key]).abs()
        assert (diff < 1e-4).float().mean() > 0.99 and diff.max() < 0.1, key
    assert (runs["0"]["rank"] == runs["1"]["rank"]).float().mean() > 0.99


@needs_cuda
@pytest.mark.parametrize("runtime", [{}, {"stats_overlap": True}, {"fused_head": True}])
def test_second_moment_on_gpu_matches_the_cpu_reduction(switches, runtime):
    """The compiled kernels' second moment of log p against `reduce_logits` on the CPU over the
    same bf16 logits (projected in the same chunks, so cuBLAS rounds them alike). The head is
    scaled up 16-fold (exact in bf16): random weights give nearly uniform distributions, where
    the online softmax's rescaling would go untested."""
    model, ids = gpu_model_and_rows(512)
    ids, chunk = ids[:2], 300  # 1,024 positions: 4 chunks, the last one short
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.mul_(16)
    switches(**runtime)
    three = token_statistics(model, ids, chunk=chunk)
    four = token_statistics(model, ids, chunk=chunk, second_moment=True)
    assert list(four) == [*three, "second_moment"]
    for key in three:  # asking for it leaves the others as they were (to float32 rounding)
        torch.testing.assert_close(four[key], three[key], atol=1e-5, rtol=0)
    with torch.inference_mode():
        hidden = model.base_model(input_ids=ids[:, :-1]).last_hidden_state.reshape(-1, 512)
        logits = torch.cat([head(hidden[i : i + chunk]).float().cpu() for i in range(0, len(hidden), chunk)])
    cpu = reduce_logits(logits, ids[:, 1:].reshape(-1).cpu(), second_moment=True)
    assert (cpu[3] - cpu[2] ** 2 > 1).float().mean() > 0.5  # log p spreads over nats, not ~0
    moment = four["second_moment"].reshape(-1).cpu()
    if runtime.get("fused_head"):  # its bf16 logits may differ from cuBLAS's by one bf16 step
        close = (moment - cpu[3]).abs() <= 1e-4 * cpu[3] + 1e-4
        assert close.float().mean() > 0.99, (moment - cpu[3]).abs().max()
    else:
        torch.testing.assert_close(moment, cpu[3], rtol=1e-5, atol=1e-5)
    assert (moment - four["entropy"].reshape(-1).cpu() ** 2 >= -1e-4 * moment).all()  # sigma^2 >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: bench/device_check.sh")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graphed_decode_gives_generates_tokens_on_gpu(dtype):
    model = make_model().to("cuda", dtype)
    ids = prompts(batch=16).cuda()
    for _ in range(2):  # captured, then replayed for a second batch of the same shape
        assert torch.equal(greedy_extract(model, ids, 16), generate_greedy(model, ids, 16))
        ids = ids.roll(1, 0)


@needs_cuda
@pytest.mark.parametrize("tiles", [{"BLOCK_N": 256}, {"BLOCK_M": 64, "num_warps": 4}])
def test_fused_head_compiles_for_tiles_that_are_not_square(switches, tiles):
    """BLOCK_N != BLOCK_M: the truth's [M, M] tile and the loop's [M, N] tiles are typed apart."""
    model, ids = gpu_model_and_rows(512)
    switches(fused_head=False)
    plain = token_statistics(model, ids)
    switches(fused_head=True, head_tiles=tuple(sorted(tiles.items())))
    fused = token_statistics(model, ids)
    assert (plain["rank"] == fused["rank"]).float().mean() > 0.99
    assert (plain["surprisal"] - fused["surprisal"]).abs().max() < 0.1
