"""Greedy-extraction throughput (generated tokens/s) beside Hugging Face `generate` (the reference).

On the extraction job's own input: each suite model of a scale (its final checkpoint, trained on
first use into `--warehouse`) and the scale's panel (instance order, batches of the job's size;
a mix of memorised planted duplicates and rows that are not memorised), time
  - generate: `model.generate(prompts, do_sample=False, max_new_tokens=gen_len)` with EOS
              stopping off (a packed row's continuation may cross a document boundary);
  - memlake:  `ingest.extraction.greedy_extract(model, prompts, gen_len)`;
  - +targets: the same given the rows' continuations (what the extraction job calls), which
              verifies memorised rows in one forward instead of decoding them when most of a
              batch looks memorised;
and count the rows whose tokens differ from generate's (0 everywhere so far). They alternate
`--repeats` times and the fastest of each is kept. `--rows memorised` keeps only the rows the
model memorised, repeated to fill whole batches (the best case for +targets). On CUDA, model FLOP
utilisation is reported too.

    python bench/extraction.py [--scale small] [--batches 64] [--rows panel|memorised] [--clock wall|cpu]
                               [--kernels]
    python bench/extraction.py --device cuda --pythia 70m,410m --batches 64,256 [--rows memorised]

`--pythia` times Pythia shapes with random weights on random prompts instead of the trained suite
(nothing is memorised; with `--rows memorised` each row is the model's own greedy text from
one random token, which makes every row memorised by definition).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MEMLAKE_QUIET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from token_stats import peak_flops  # noqa: E402  (bench/token_stats.py, beside this script)
from transformers.utils import logging as hf_logging  # noqa: E402

from ingest.checkpoints import load_model, local_steps, resolve  # noqa: E402
from ingest.corpus.build import build_corpus  # noqa: E402
from ingest.extraction import DecodeBuffers, first_argmax, generate_greedy, greedy_extract  # noqa: E402
from ingest.lm.decoding import LayerWeights  # noqa: E402
from ingest.lm.runtime import inference_device, to_inference  # noqa: E402
from ingest.panel import load_panel  # noqa: E402
from ingest.suite.model import PYTHIA_CONTEXT, PYTHIA_VOCAB, build_model, n_params, pythia_specs  # noqa: E402
from ingest.suite.train import model_dir, train_suite  # noqa: E402
from memlake.core import config, settings  # noqa: E402
from memlake.core.paths import Warehouse  # noqa: E402

RUNS = ("generate", "memlake", "targets")
# The CPU kernels of a decode's arithmetic: the linear layers and LM head, attention, GELU, layer
# norm. Token identity with `generate` means running these same kernels on the same shapes, so
# generate's time in them (`--kernels`) bounds the speed-up of any such decoder from above.
ARITHMETIC = {
    "aten::addmm",
    "aten::mm",
    "aten::bmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::gelu",
    "aten::native_layer_norm",
}


def extraction_flops(model, batch: int, prompt_len: int, gen_len: int) -> float:
    """Matmul FLOPs of one extraction: the body over every fed token, the LM head once per new token."""
    cfg = model.config
    head = model.get_output_embeddings().weight.numel()
    body = n_params(model) - model.get_input_embeddings().weight.numel() - head
    fed = prompt_len + gen_len - 1
    # token at position p attends to p + 1 keys: 4 * layers * hidden FLOPs per key (scores + values)
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * fed * (fed + 1) / 2
    return batch * (2 * body * fed + attention + 2 * head * gen_len)


def kernel_seconds(fn, repeats: int = 3) -> float:
    """CPU seconds `fn` spends inside the ARITHMETIC kernels (torch profiler, self time): the
    least of `repeats` profiled runs, so noise can only raise the ceiling it gives."""
    from torch.profiler import ProfilerActivity, profile

    least = float("inf")
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        least = min(least, sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ARITHMETIC))
    return least / 1e6


@torch.inference_mode()
def kernel_replay(model, batches: list[torch.Tensor], prompt_len: int, gen_len: int) -> None:
    """Only the arithmetic of greedy extraction, with none of the bookkeeping: per batch the
    model's own prefill, then per new token each layer's layer norms, linear layers, SDPA over the
    keys so far and GELU, the final norm, the LM head and an argmax, on generate's shapes (the
    key/value buffers hold zeros: the kernels' cost does not depend on the values). A decoder
    that must produce generate's tokens runs at least these kernels, so generate's time over this
    replay's bounds its speed-up from above, without a profiler's own overhead."""
    base, head = model.base_model, model.get_output_embeddings()
    layers = [LayerWeights(layer) for layer in base.layers]  # weights fetched once, as the decoder
    heads = base.config.num_attention_heads
    size = base.config.hidden_size // heads
    buffers = {}  # zeroed key/value buffers per batch size, allocated once (as the decoder's are)
    for ids in batches:
        batch = ids.size(0)
        hidden = base(input_ids=ids[:, :prompt_len]).last_hidden_state
        first_argmax(head(hidden[:, -1]))
        if batch not in buffers:
            buffers[batch] = hidden.new_zeros(2, batch, heads, prompt_len + gen_len, size)
        keys, values = buffers[batch]
        x = hidden[:, -1:].contiguous()
        for i in range(gen_len - 1):
            seen = prompt_len + i + 1
            for w in layers:
                qkv = F.linear(F.layer_norm(x, *w.ln1), w.qkv_w, w.qkv_b).view(batch, 1, heads, 3 * size)
                q = qkv[..., :size].transpose(1, 2)
                a = F.scaled_dot_product_attention(q, keys[:, :, :seen], values[:, :, :seen], scale=w.scaling)
                F.linear(a.reshape(batch, 1, -1), w.dense_w, w.dense_b)
                F.linear(w.act(F.linear(F.layer_norm(x, *w.ln2), w.up_w, w.up_b)), w.down_w, w.down_b)
            first_argmax(head(base.final_layer_norm(x))[:, -1])


def timed(fn, device: torch.device, clock=time.perf_counter) -> tuple[float, list[torch.Tensor]]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="small")
    ap.add_argument("--warehouse", default=None, help="holds (or gets) the scale's corpus and suite")
    ap.add_argument("--batches", default="64", help="comma-separated batch sizes")
    ap.add_argument("--rows", choices=("panel", "memorised"), default="panel")
    ap.add_argument("--max-rows", type=int, default=0, help="first N panel rows only (0 = all)")
    ap.add_argument("--prompt-len", type=int, default=None, help="default: the scale's extraction config")
    ap.add_argument("--gen-len", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pythia", default=None, help="Pythia shapes, random weights, e.g. 70m,160m")
    ap.add_argument("--n-rows", type=int, default=1024, help="random prompts per model with --pythia")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    ap.add_argument(
        "--kernels",
        action="store_true",
        help="CPU: also profile the time each decoder spends in the arithmetic kernels they share",
    )
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time, steadier on a loaded machine (with --threads 1)",
    )
    args = ap.parse_args()
    hf_logging.set_verbosity_error()  # generate's notes on generation-config defaults
    cfg = config.load(args.scale)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    p = args.prompt_len or cfg["ingest"]["extraction"]["prompt_len"]
    g = args.gen_len or cfg["ingest"]["extraction"]["gen_len"]
    if args.pythia:
        specs = pythia_specs(args.pythia)
        gen = torch.Generator().manual_seed(0)
        panel = torch.randint(0, PYTHIA_VOCAB, (args.n_rows, p + g), generator=gen)
    else:
        wh = Warehouse.at(args.warehouse or Path(tempfile.gettempdir()) / f"memlake-bench-{args.scale}")
        s = settings.of(cfg)
        build_corpus(s.corpus, s.order, s.seed, wh)  # both skip what the warehouse already holds
        train_suite(s.suite, s.order, s.corpus.row_len, s.seed, wh)
        specs = cfg["suite"]["models"]
        _, panel = load_panel(wh, cfg["ingest"]["panel"], int(cfg["seed"]))
        panel = torch.from_numpy(panel[: args.max_rows or None, : p + g])
    batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)
    _, dtype = inference_device(device)
    peak = peak_flops(device)

    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    results = []
    for spec in specs:
        if args.pythia:
            torch.manual_seed(0)
            step = 0
            with device:
                model = to_inference(build_model(spec, PYTHIA_VOCAB, PYTHIA_CONTEXT), device)
        else:
            step = local_steps(model_dir(wh, spec["name"]))[-1]
            model = load_model(resolve(spec["name"], f"step{step}", wh), dtype=dtype, device=device)
        rows = panel.to(device)
        with torch.inference_mode():
            if args.pythia and args.rows == "memorised":  # rows the model recites: its own greedy text
                own = [generate_greedy(model, b[:, :1], p + g - 1) for b in rows.split(256)]
                rows = torch.cat([rows[:, :1], torch.cat(own)], 1)
            if args.rows == "memorised":  # repeated to fill whole batches of the largest size
                reference = torch.cat([generate_greedy(model, b[:, :p], g) for b in rows.split(256)])
                rows = rows[(reference == rows[:, p:]).all(1)]
                if not len(rows):
                    print(f"{spec['name']}: no memorised rows", flush=True)
                    continue
                # (a part-filled last batch would time per-batch fixed costs over a few rows)
                whole = -(-len(rows) // max(batches)) * max(batches)
                rows = rows.repeat(-(-whole // len(rows)), 1)[:whole]
            for batch in batches:
                split = rows.split(batch)
                # as the extraction job does: one model's batches share their decoding buffers
                mem, tgt = DecodeBuffers(), DecodeBuffers()
                runs = {
                    "generate": lambda m=model, bs=split: [generate_greedy(m, b[:, :p], g) for b in bs],
                    "memlake": lambda m=model, bs=split, mem=mem: [
                        greedy_extract(m, b[:, :p], g, buffers=mem) for b in bs
                    ],
                    "targets": lambda m=model, bs=split, tgt=tgt: [
                        greedy_extract(m, b[:, :p], g, targets=b[:, p:], buffers=tgt) for b in bs
                    ],
                }
                best = dict.fromkeys(runs, float("inf"))
                outs = {name: fn() for name, fn in runs.items()}  # warm-up
                for _ in range(args.repeats):
                    for name, fn in runs.items():
                        seconds, outs[name] = timed(fn, device, clocks[args.clock])
                        best[name] = min(best[name], seconds)
                differ = {  # rows whose tokens differ from generate's (must be 0)
                    name: sum(int((a != b).any(1).sum()) for a, b in zip(outs[name], outs["generate"]))
                    for name in ("memlake", "targets")
                }
                generated = torch.cat(outs["generate"])
                tokens = generated.numel()
                row = {
                    "scale": "pythia" if args.pythia else args.scale,
                    "model": spec["name"],
                    "step": step,
                    "params": n_params(model),
                    "device": str(device),
                    "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                    "threads": torch.get_num_threads(),
                    "clock": args.clock,
                    "rows": args.rows,
                    "n_rows": len(rows),
                    "memorised": (generated == rows[:, p:]).all(1).float().mean().item(),
                    "batch": batch,
                    "prompt_len": p,
                    "gen_len": g,
                    "identical_tokens": not any(differ.values()),
                    "rows_differ": differ,
                    **{f"{name}_tok_s": tokens / best[name] for name in RUNS},
                    "speedup": best["generate"] / best["memlake"],
                    "speedup_targets": best["generate"] / best["targets"],
                }
                if args.kernels and device.type == "cpu":
                    for name in ("generate", "memlake"):
                        row[f"{name}_kernel_s"] = kernel_seconds(runs[name])
                    # generate's time over its own arithmetic: the most a decoder that runs the same
                    # kernels could gain (the profiler adds little to kernels of 0.1 ms and more)
                    row["ceiling"] = best["generate"] / row["generate_kernel_s"]
                    if not args.pythia:  # the same bound, from a replay of the kernels alone
                        replay_fn = functools.partial(kernel_replay, model, split, p, g)
                        clock = clocks[args.clock]
                        replay = min(timed(replay_fn, device, clock)[0] for _ in range(args.repeats))
                        row["replay_s"], row["replay_ceiling"] = replay, best["generate"] / replay
                if peak:
                    flops = extraction_flops(model, len(rows), p, g)
                    for name in RUNS:
                        row[f"mfu_{name}"] = flops / best[name] / peak
                results.append(row)
                print(
                    f"{row['model']:9s} batch {batch:4d}  {row['memorised']:6.1%} memorised  "
                    f"generate {row['generate_tok_s']:8.0f} tok/s  memlake {row['memlake_tok_s']:8.0f} "
                    f"({row['speedup']:.2f}x)  +targets {row['targets_tok_s']:8.0f} "
                    f"({row['speedup_targets']:.2f}x), "
                    + ("same tokens" if row["identical_tokens"] else f"ROWS DIFFER FROM GENERATE: {differ}")
                    + (f", kernel ceiling {row['ceiling']:.2f}x" if "ceiling" in row else "")
                    + (f" (replayed {row['replay_ceiling']:.2f}x)" if "replay_ceiling" in row else ""),
                    flush=True,
                )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    suffix += "_pythia" if args.pythia else ""
    suffix += "" if args.rows == "panel" else f"_{args.rows}"
    (out / f"extraction{suffix}.json").write_text(json.dumps(results, indent=2))
    mfu = any("mfu_memlake" in r for r in results)
    if any("ceiling" in r for r in results):
        print("\n| model | rows | generate s | its kernels | memlake s | its kernels | ceiling | speed-up |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            tokens = r["n_rows"] * r["gen_len"]
            print(
                f"| {r['model']} | {r['n_rows']:,} {r['rows']} | {tokens / r['generate_tok_s']:.2f} | "
                f"{r['generate_kernel_s']:.2f} | {tokens / r['memlake_tok_s']:.2f} | "
                f"{r['memlake_kernel_s']:.2f} | "
                f"{r['ceiling']:.2f} | {r['speedup']:.2f} |"
            )
    print(
        "\n| model | rows | memorised | batch | prompt + gen | generate tok/s | memlake tok/s | speed-up "
        "| +targets tok/s | speed-up |" + (" MFU generate | MFU memlake | MFU +targets |" if mfu else "")
    )
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if mfu else ""))
    for r in results:
        line = (
            f"| {r['model']} | {r['n_rows']:,} {r['rows']} | {r['memorised']:.1%} | {r['batch']} | "
            f"{r['prompt_len']} + {r['gen_len']} | {r['generate_tok_s']:,.0f} | {r['memlake_tok_s']:,.0f} | "
            f"{r['speedup']:.2f} | {r['targets_tok_s']:,.0f} | {r['speedup_targets']:.2f} |"
        )
        if mfu:
            line += "".join(f" {r.get(f'mfu_{name}', float('nan')):.2%} |" for name in RUNS)
        print(line)


if __name__ == "__main__":
    main()
