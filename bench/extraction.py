"""Greedy-extraction throughput (generated tokens/s) beside Hugging Face `generate` (the reference).

For each suite model of a scale (random weights) and batch size, on the same random prompts,
time
  - memlake:  `ingest.extraction.greedy_extract(model, prompts, gen_len)`;
  - generate: `model.generate(prompts, do_sample=False, max_new_tokens=gen_len)` with EOS
              stopping off (a packed row's continuation may cross a document boundary);
and assert that both return identical tokens. The two alternate `--repeats` times and the fastest
of each is kept. On CUDA, model FLOP utilisation is reported too.

    python bench/extraction.py [--scale small] [--batches 64,256] [--prompt-len 32] [--gen-len 32]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("MEMLAKE_QUIET", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from ingest.extraction import greedy_extract  # noqa: E402
from ingest.suite.model import build_model, n_params  # noqa: E402
from ingest.token_stats import to_inference  # noqa: E402
from memlake import config  # noqa: E402

# Dense bf16 peak per GPU (vendor datasheets, SXM parts), for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def extraction_flops(model, batch: int, prompt_len: int, gen_len: int) -> float:
    """Matmul FLOPs of one extraction: the body over every fed token, the LM head once per new token."""
    cfg = model.config
    head = model.get_output_embeddings().weight.numel()
    body = n_params(model) - model.get_input_embeddings().weight.numel() - head
    fed = prompt_len + gen_len - 1
    # token at position p attends to p + 1 keys: 4 * layers * hidden FLOPs per key (scores + values)
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * fed * (fed + 1) / 2
    return batch * (2 * body * fed + attention + 2 * head * gen_len)


def hf_greedy(model, prompts: torch.Tensor, gen_len: int) -> torch.Tensor:
    """The reference: `generate` without sampling, EOS stopping off, new tokens only."""
    out = model.generate(
        prompts,
        attention_mask=torch.ones_like(prompts),
        do_sample=False,
        max_new_tokens=gen_len,
        eos_token_id=None,
        pad_token_id=model.config.pad_token_id,
    )
    return out[:, prompts.size(1) :]


def timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="small")
    ap.add_argument("--batches", default="64,256", help="comma-separated batch sizes")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--gen-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    hf_logging.set_verbosity_error()  # generate's notes on generation-config defaults
    cfg = config.load(args.scale)
    vocab, row_len = cfg["corpus"]["vocab_size"], cfg["corpus"]["row_len"]
    device = torch.device(args.device)
    peak = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)

    results = []
    for spec in cfg["suite"]["models"]:
        torch.manual_seed(0)
        model = to_inference(build_model(spec, vocab, max(row_len, args.prompt_len + args.gen_len)), device)
        for batch in (int(b) for b in args.batches.split(",")):
            gen = torch.Generator().manual_seed(batch)
            prompts = torch.randint(0, vocab, (batch, args.prompt_len), generator=gen).to(device)
            runs = {
                "generate": lambda m=model, ids=prompts: hf_greedy(m, ids, args.gen_len),
                "memlake": lambda m=model, ids=prompts: greedy_extract(m, ids, args.gen_len),
            }
            best = dict.fromkeys(runs, float("inf"))
            with torch.inference_mode():
                outs = {name: fn() for name, fn in runs.items()}  # warm-up
                for _ in range(args.repeats):
                    for name, fn in runs.items():
                        seconds, outs[name] = timed(fn, device)
                        best[name] = min(best[name], seconds)
                    if not torch.equal(outs["memlake"], outs["generate"]):
                        raise SystemExit(f"{spec['name']} batch {batch}: tokens differ from generate")
            tokens = batch * args.gen_len
            row = {
                "scale": args.scale,
                "model": spec["name"],
                "params": n_params(model),
                "device": str(device),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "threads": torch.get_num_threads(),
                "batch": batch,
                "prompt_len": args.prompt_len,
                "gen_len": args.gen_len,
                "identical_tokens": True,
                "memlake_tok_s": tokens / best["memlake"],
                "generate_tok_s": tokens / best["generate"],
                "speedup": best["generate"] / best["memlake"],
            }
            if peak:
                flops = extraction_flops(model, batch, args.prompt_len, args.gen_len)
                row["mfu_memlake"] = flops / best["memlake"] / peak
                row["mfu_generate"] = flops / best["generate"] / peak
            results.append(row)
            print(
                f"{row['model']:9s} batch {batch:4d}  memlake {row['memlake_tok_s']:8.0f} tok/s  "
                f"generate {row['generate_tok_s']:8.0f} tok/s  speedup {row['speedup']:.2f}, same tokens",
                flush=True,
            )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    (out / f"extraction{suffix}.json").write_text(json.dumps(results, indent=2))
    mfu = any("mfu_memlake" in r for r in results)
    print(
        "\n| model | params | device | batch | prompt + gen | memlake tok/s | generate tok/s | speedup |"
        + (" MFU memlake | MFU generate |" if mfu else "")
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if mfu else ""))
    for r in results:
        line = (
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['device']} {r['dtype']} | {r['batch']} | "
            f"{r['prompt_len']} + {r['gen_len']} | {r['memlake_tok_s']:,.0f} | {r['generate_tok_s']:,.0f} | "
            f"{r['speedup']:.2f} |"
        )
        if mfu:
            line += f" {r.get('mfu_memlake', float('nan')):.2%} | {r.get('mfu_generate', float('nan')):.2%} |"
        print(line)


if __name__ == "__main__":
    main()
