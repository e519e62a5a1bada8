"""Token-statistics throughput (tokens/s) beside a bare forward pass of the same model (the limit).

For each suite model of a scale (random weights: throughput does not depend on them), on the
same batches of random rows of the scale's row length, time
  - memlake: `ingest.token_stats.token_statistics` (surprisal, rank, entropy of every position);
  - bare:    `model(input_ids).logits`, the forward pass that any scoring needs;
  - with `--second-moment`, also memlake_m2: the same with the second moment of log p
    (`second_moment=True`, as the token_stats job asks for it).
The ratio memlake/bare (in throughput) is the share of the forward pass's speed the statistics
keep; the target is >= 0.9. The runs alternate `--repeats` times and the fastest of each is
kept, which damps noise from other processes. With `--second-moment`, m2_ratio = memlake_m2 /
memlake (throughput) is the share the fourth statistic keeps (target >= 0.95): the median over
the repeats of the two runs' ratio in that repeat, which a busy machine moves less than the
ratio of the fastest runs. On CUDA, model FLOP utilisation is reported too.

    python bench/token_stats.py [--scale small] [--batch 64] [--batches 8] [--device cpu|cuda]
    python bench/token_stats.py --device cuda --pythia 70m,160m,410m --batch 16   # 2,049-token rows
    python bench/token_stats.py --second-moment --threads 1   # the fourth statistic's cost
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("MEMLAKE_QUIET", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from ingest.lm.runtime import Switches, to_inference, using  # noqa: E402
from ingest.suite.model import PYTHIA_CONTEXT, PYTHIA_VOCAB, build_model, n_params, pad_vocab, pythia_specs  # noqa: E402
from ingest.token_stats import token_statistics  # noqa: E402
from memlake.core import config  # noqa: E402

# Dense bf16 peak per GPU (vendor datasheets, SXM parts), for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def forward_flops_per_token(model, context: int) -> float:
    """2 FLOPs per weight that multiplies (all but the input embedding) + attention (PaLM-style)."""
    cfg = model.config
    weights = n_params(model) - model.get_input_embeddings().weight.numel()
    return 2 * weights + 4 * cfg.num_hidden_layers * cfg.hidden_size * context


def timed(fn, batches, device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds to run `fn` over all batches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        fn(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="small")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    ap.add_argument("--chunk", type=int, default=None, help="positions per LM-head chunk (default: auto)")
    ap.add_argument("--pythia", default=None, help="Pythia shapes instead of the suite, e.g. 70m,160m")
    ap.add_argument(
        "--second-moment", action="store_true", help="also time the statistics with the second moment"
    )
    ap.add_argument(
        "--runtime", default="{}", help="runtime switches as the config's section, e.g. '{fused_head: true}'"
    )
    args = ap.parse_args()
    switches = Switches.of(yaml.safe_load(args.runtime))
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    cfg = config.load(args.scale)
    vocab, row_len = cfg["corpus"]["vocab_size"], cfg["corpus"]["row_len"]
    specs = cfg["suite"]["models"]
    if args.pythia:  # Pythia's stats cover 2,049-token rows (2,048 scored positions)
        specs, vocab, row_len = pythia_specs(args.pythia), PYTHIA_VOCAB, PYTHIA_CONTEXT + 1
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, vocab, (args.batch, row_len), generator=gen).to(device) for _ in range(args.batches)
    ]
    tokens = args.batch * row_len * args.batches

    def bare(model):
        return lambda ids: model(input_ids=ids, use_cache=False).logits

    def ours(model, second_moment=False):
        return lambda ids: token_statistics(model, ids, chunk=args.chunk, second_moment=second_moment)

    results = []
    for spec in specs:
        torch.manual_seed(0)
        with device:  # initialise in place: a 1B model takes minutes to initialise on the CPU
            model = to_inference(build_model(spec, vocab, row_len), device)
        runs = {"bare": bare(model), "memlake": ours(model)}
        if args.second_moment:
            runs["memlake_m2"] = ours(model, second_moment=True)
        times = {k: [] for k in runs}  # (wall, process CPU) seconds per repeat
        with torch.inference_mode(), using(switches):
            for fn in runs.values():  # warm-up: allocator, kernels, lazy init
                fn(batches[0])
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    wall, cpu = timed(fn, batches, device)
                    times[name].append((wall, cpu))
        best = {k: tuple(map(min, zip(*v))) for k, v in times.items()}
        row = {
            "scale": "pythia" if args.pythia else args.scale,
            "model": spec["name"],
            "params": n_params(model),
            "vocab": pad_vocab(vocab),
            "device": str(device),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "runtime": yaml.safe_load(args.runtime),
            "batch": args.batch,
            "row_len": row_len,
            "tokens": tokens,
            "memlake_tok_s": tokens / best["memlake"][0],
            "bare_tok_s": tokens / best["bare"][0],
            "ratio": best["bare"][0] / best["memlake"][0],
            "cpu_time_ratio": best["bare"][1] / best["memlake"][1],
        }
        if args.second_moment:
            row["memlake_m2_tok_s"] = tokens / best["memlake_m2"][0]
            pairs = list(zip(times["memlake"], times["memlake_m2"]))  # one per repeat
            row["m2_ratio"] = statistics.median(a[0] / b[0] for a, b in pairs)
            row["m2_cpu_time_ratio"] = statistics.median(a[1] / b[1] for a, b in pairs)
        peak = peak_flops(device)
        if peak:
            flops = forward_flops_per_token(model, row_len)
            row["mfu_memlake"] = row["memlake_tok_s"] * flops / peak
            row["mfu_bare"] = row["bare_tok_s"] * flops / peak
        results.append(row)
        said = (
            f"{row['model']:9s} {row['params'] / 1e6:6.2f}M  memlake {row['memlake_tok_s']:9.0f} tok/s  "
            f"bare {row['bare_tok_s']:9.0f} tok/s  ratio {row['ratio']:.2f} "
            f"(CPU time {row['cpu_time_ratio']:.2f})"
        )
        if args.second_moment:
            said += (
                f"  with second moment {row['memlake_m2_tok_s']:9.0f} tok/s  m2_ratio {row['m2_ratio']:.3f}"
                f" (CPU time {row['m2_cpu_time_ratio']:.3f})"
            )
        print(said, flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    suffix += "_pythia" if args.pythia else ""
    (out / f"token_stats{suffix}.json").write_text(json.dumps(results, indent=2))
    mfu = any("mfu_memlake" in r for r in results)
    print(
        "\n| model | params | device | batch x row | memlake tok/s | bare forward tok/s | ratio |"
        + (" MFU memlake | MFU bare |" if mfu else "")
    )
    print("|---|---|---|---|---|---|---|" + ("---|---|" if mfu else ""))
    for r in results:
        line = (
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['device']} {r['dtype']} | "
            f"{r['batch']} x {r['row_len']} | "
            f"{r['memlake_tok_s']:,.0f} | {r['bare_tok_s']:,.0f} | {r['ratio']:.2f} |"
        )
        if mfu:
            line += f" {r.get('mfu_memlake', float('nan')):.1%} | {r.get('mfu_bare', float('nan')):.1%} |"
        print(line)


if __name__ == "__main__":
    main()
