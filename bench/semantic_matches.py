"""Semantic-match counting: exact blocked cosine (transforms.semantic) vs a dense N x N baseline.

The original scripts put the whole similarity matrix on a GPU (O(N^2) memory). For N unit vectors of
MiniLM's width, clustered so that many pairs pass 0.8 / 0.9 (like templated text), time
  - blocked: `semantic_match_counts(x, x, exclude_self=True)`, memory = one block + the matches;
  - dense:   `x @ x.T`, diagonal masked, `(sims >= t).sum(1)` per threshold.
Both decide pairs within float32 error of a threshold by the same exact recheck, so their counts
must be equal (asserted). Peak memory is measured with tracemalloc (numpy reports its buffers to
it), time as the best of `--repeats` alternating runs. Results go to bench/results/semantic_matches.json.

    python bench/semantic_matches.py [--sizes 5000,20000] [--dim 384] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np

from transforms.semantic import _exact_dot, semantic_match_counts


def clustered_unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows near n/50 random centres (within-cluster cosine about 0.8-0.95), L2-normalised float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 50), dim))
    noise = rng.normal(size=(n, dim)) * rng.uniform(0.3, 0.6, size=(n, 1))
    x = centres[rng.integers(len(centres), size=n)] + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def dense_counts(x: np.ndarray, thresholds: tuple[float, ...]) -> dict[float, np.ndarray]:
    """The O(N^2) baseline: the full float32 similarity matrix, with the same exact tie rule."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    d = x.shape[1]
    margin = 1.01 * d * 2.0**-24 / (1 - d * 2.0**-24) * float(np.linalg.norm(x, axis=1).max()) ** 2
    out = {}
    for t in thresholds:
        counts = (sims >= t).sum(axis=1)
        r, c = np.nonzero((sims >= t - margin) & (sims <= t + margin))
        for i, j in zip(r, c):
            counts[i] += int(_exact_dot(x[i], x[j]) >= t) - int(sims[i, j] >= t)
        out[t] = counts
    return out


def measure(fn) -> tuple[float, float, object]:
    """(seconds, peak traced MiB, result) of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5000,20000", help="comma-separated numbers of vectors N")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--thresholds", default="0.8,0.9")
    ap.add_argument("--query-block", type=int, default=1024)
    ap.add_argument("--corpus-block", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    thresholds = tuple(float(t) for t in args.thresholds.split(","))

    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        x = clustered_unit_vectors(n, args.dim)
        x_bytes = x.nbytes / 2**20

        def blocked(x=x):
            return semantic_match_counts(
                x,
                x,
                thresholds,
                exclude_self=True,
                query_block=args.query_block,
                corpus_block=args.corpus_block,
            )

        def dense(x=x):
            return dense_counts(x, thresholds)

        best = {"blocked": (float("inf"), 0.0), "dense": (float("inf"), 0.0)}
        for _ in range(args.repeats):
            for name, fn in (("blocked", blocked), ("dense", dense)):
                seconds, peak, result = measure(fn)
                best[name] = (min(best[name][0], seconds), max(best[name][1], peak))
                if name == "blocked":
                    ours = result
                else:
                    base = result
        for t in thresholds:
            np.testing.assert_array_equal(ours.counts(t), base[t])
        row = {
            "n": n,
            "dim": args.dim,
            "blocks": f"{args.query_block}x{args.corpus_block}",
            **{f"matches_{t}": int(ours.counts(t).sum()) for t in thresholds},
            "exact_rechecks": ours.exact_rechecks,
            "blocked_s": best["blocked"][0],
            "dense_s": best["dense"][0],
            "time_ratio": best["dense"][0] / best["blocked"][0],
            "blocked_peak_mib": best["blocked"][1],
            "dense_peak_mib": best["dense"][1],
            "memory_ratio": best["dense"][1] / best["blocked"][1],
            "input_mib": x_bytes,
        }
        results.append(row)
        print(
            f"N={n}: blocked {row['blocked_s']:.2f}s / {row['blocked_peak_mib']:.0f} MiB, "
            f"dense {row['dense_s']:.2f}s / {row['dense_peak_mib']:.0f} MiB (counts equal)",
            flush=True,
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "semantic_matches.json").write_text(json.dumps(results, indent=2))
    t_cols = " | ".join(f"pairs >= {t}" for t in thresholds)
    print(
        f"\n| N | dim | {t_cols} | blocked s | dense s | dense/blocked time | blocked peak MiB | "
        "dense peak MiB | dense/blocked memory |"
    )
    print("|---|---|" + "---|" * len(thresholds) + "---|---|---|---|---|---|")
    for r in results:
        counts = " | ".join(f"{r[f'matches_{t}']:,}" for t in thresholds)
        print(
            f"| {r['n']:,} | {r['dim']} | {counts} | {r['blocked_s']:.2f} | {r['dense_s']:.2f} | "
            f"{r['time_ratio']:.2f} | {r['blocked_peak_mib']:.0f} | {r['dense_peak_mib']:.0f} | "
            f"{r['memory_ratio']:.1f} |"
        )


if __name__ == "__main__":
    main()
