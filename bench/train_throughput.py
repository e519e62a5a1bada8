"""Suite training throughput (tokens/s) per scale, beside a bare training loop (the limit).

For each scale's models, on the scale's real corpus and data order, time
  - memlake: `ingest.suite.train.train_model` for N steps (schedule, clipping, checkpoints);
  - bare:    forward + cross-entropy + backward + AdamW on the same model and batches.
The ratio memlake/bare is the share of the hardware limit the training loop keeps.

    python bench/train_throughput.py [--scales tiny,small,medium] [--steps 24]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MEMLAKE_QUIET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ingest.corpus.build import build_corpus  # noqa: E402
from ingest.suite.model import build_model, n_params  # noqa: E402
from ingest.suite.train import _load_training_rows, train_model  # noqa: E402
from memlake.core import config, settings  # noqa: E402
from memlake.core.paths import Warehouse  # noqa: E402


def bare_loop(spec, cfg, tokens, order, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(spec, cfg["corpus"]["vocab_size"], cfg["corpus"]["row_len"])
    opt = torch.optim.AdamW(model.parameters(), lr=float(spec["lr"]))
    bs = cfg["order"]["batch_size"]
    t0 = time.perf_counter()
    for step in range(steps):
        batch = tokens[torch.from_numpy(order[step * bs : (step + 1) * bs])]
        logits = model(input_ids=batch).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="tiny,small,medium")
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = []
    for scale in args.scales.split(","):
        cfg = config.load(scale)
        root = Path(tempfile.mkdtemp(prefix=f"bench-{scale}-"))
        wh = Warehouse.at(root)
        s = settings.of(cfg)
        build_corpus(s.corpus, s.order, s.seed, wh)
        tokens, order, _ = _load_training_rows(wh)
        bs, row_len = cfg["order"]["batch_size"], cfg["corpus"]["row_len"]
        for spec, typed in zip(cfg["suite"]["models"], s.suite.models):
            steps = args.steps
            t0 = time.perf_counter()
            train_model(typed, s.suite, s.order, row_len, s.seed, wh, stop_after=steps)
            ours = time.perf_counter() - t0
            bare = bare_loop(spec, cfg, tokens, order, steps)
            tok = steps * bs * row_len
            model = build_model(spec, cfg["corpus"]["vocab_size"], row_len)
            results.append(
                {
                    "scale": scale,
                    "model": spec["name"],
                    "params": n_params(model),
                    "steps": steps,
                    "memlake_tok_s": tok / ours,
                    "bare_tok_s": tok / bare,
                    "ratio": bare / ours,
                }
            )
            r = results[-1]
            print(
                f"{scale:6s} {r['model']:9s} {r['params'] / 1e6:6.2f}M params  memlake "
                f"{r['memlake_tok_s']:8.0f} tok/s  bare {r['bare_tok_s']:8.0f} tok/s  "
                f"ratio {r['ratio']:.2f}",
                flush=True,
            )
        shutil.rmtree(root, ignore_errors=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "train_throughput.json").write_text(json.dumps(results, indent=2))
    print("\n| scale | model | params | memlake tok/s | bare loop tok/s | ratio |\n|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['scale']} | {r['model']} | {r['params'] / 1e6:.2f}M | {r['memlake_tok_s']:.0f} | "
            f"{r['bare_tok_s']:.0f} | {r['ratio']:.2f} |"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
