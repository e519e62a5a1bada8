#!/usr/bin/env bash
# The GPU checks, as one short run on a lent device machine (its image has torch, transformers,
# triton, pytest, pyarrow and pyyaml; nothing is installed). From the repo root:
#     bash bench/device_check.sh            # results under $OUT (default bench/results/device)
# 1. the GPU-only tests (compiled Triton kernels, CUDA streams);
# 2. token statistics vs the bare forward at Pythia shapes: the fused reduction serial and on a
#    second stream beside the head matmul (runtime.stats_overlap), at three chunk sizes; then
#    the head folded into the reduction (runtime.fused_head) at a few tile shapes; and the cost
#    of the second moment of log p (--second-moment: with it against without, m2_ratio);
# 3. extraction vs generate at the 70m shape.
# About 3-4 minutes on an H100/H200 (the model builds and Triton compiles are most of it).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results/device}"
mkdir -p "$out"
# the image lacks memlake's pure-Python deps (pydantic, rich, typer): carried in .devdeps/py3X
deps=".devdeps/py$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
export PYTHONPATH="$PWD${deps:+:$PWD/$deps}" PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 MEMLAKE_QUIET=1
log="$out/device_check.log"
{
  nvidia-smi -L
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'triton', triton.__version__)"
  echo "== GPU tests"
  python3 -m pytest -q -p no:cacheprovider tests/gpu
  echo "== token statistics (16 x 2,049 tokens)"
  for overlap in false true; do
    for chunk in 2668 5336 ""; do  # 2^27, 2^28 and (default) 2^29 bf16 logits per chunk
      echo "-- stats_overlap: $overlap, chunk=${chunk:-default}"
      python3 bench/token_stats.py --device cuda --pythia 70m,160m --runtime "{stats_overlap: $overlap}" \
        --batch 16 --batches 4 --repeats 5 ${chunk:+--chunk $chunk} | grep -v '^|'
    done
  done
  for tiles in '{}' '{"BLOCK_N": 256}' '{"BLOCK_M": 64, "num_warps": 4}' '{"num_stages": 4}'; do
    echo "-- fused_head: true, head_tiles: $tiles"
    python3 bench/token_stats.py --device cuda --runtime "{fused_head: true, head_tiles: $tiles}" \
      --pythia 70m,160m --batch 16 --batches 4 --repeats 5 | grep -v '^|'
  done
  echo "-- second moment of log p: the fused reduction with it against without"
  python3 bench/token_stats.py --device cuda --pythia 70m,160m --second-moment \
    --batch 16 --batches 4 --repeats 5 | grep -v '^|'
  echo "== extraction (70m shape, batch 64 and 256)"
  python3 bench/extraction.py --device cuda --pythia 70m --batches 64,256 --n-rows 512 --repeats 2 \
    | grep -v '^|'
} 2>&1 | tee "$log"
cp bench/results/*.json "$out"/ 2>/dev/null || true
