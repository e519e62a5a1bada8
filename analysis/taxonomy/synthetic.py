"""Synthetic mart rows with planted structure, for tests, benchmarks and examples.

`marts` draws `sequence_features` / `taxonomy` frames of the contract's shape in which
memorisation depends on different features in different categories: on duplicates (and rare
tokens, positively) within recitation, on prompt perplexity within reconstruction, and on
continuation perplexity (and rare tokens, negatively) within recollection. A single pooled LR
cannot represent the sign flip; the per-category models can.

`partitioned_rows` plants a two-rule partition for the greedy search to find:
huffman_coding_length >= its memorised median, then sequence_duplicates >= its memorised median.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from analysis.taxonomy.features import category_of

DECIDING = ("sequence_duplicates", "is_incrementing", "is_repeating", "is_templating")  # in `taxonomy`


def _z(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / v.std()


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def _features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    recited = rng.random(n) < 0.35
    duplicates = np.where(recited, 6 + np.exp(rng.uniform(0, 5, n)).astype(int), rng.integers(1, 6, n))
    templating = rng.random(n) < 0.15
    incrementing = templating & (rng.random(n) < 0.5)
    freqs = np.sort(np.exp(rng.normal(14, 2, (n, 5))), axis=1)  # min <= p25 <= median <= p75 <= max
    generation = 1 + np.exp(rng.normal(0.5, 0.7, n))
    prompt = 1 + np.exp(rng.normal(1.5, 0.6, n))
    semantic_08 = rng.poisson(3, n)
    semantic_09 = rng.binomial(semantic_08, 0.5)
    nl = rng.beta(2, 2, n)
    return {
        "sequence_duplicates": duplicates.astype(np.int64),
        "whole_sequence_duplicates": np.maximum(1, rng.binomial(duplicates, 0.5)).astype(np.int64),
        "min_frequency": freqs[:, 0],
        "p25_frequency": freqs[:, 1],
        "median_frequency": freqs[:, 2],
        "p75_frequency": freqs[:, 3],
        "max_frequency": freqs[:, 4] * 10,
        "avg_frequency": freqs.mean(axis=1),
        "is_incrementing": incrementing,
        "is_repeating": templating & ~incrementing,
        "is_templating": templating,
        "huffman_coding_length": rng.uniform(2, 5, n),
        "nl_score": nl,
        "code_nl": np.where(nl >= 0.525, "nl", np.where(nl <= 0.4, "code", "uncertain")),
        "semantic_matches_0_8": semantic_08,
        "semantic_matches_0_9": semantic_09,
        "textual_matches_0_8": rng.binomial(semantic_08, 0.3),
        "textual_matches_0_9": rng.binomial(semantic_09, 0.3),
        "prompt_perplexity": prompt,
        "generation_perplexity": generation,
        "sequence_perplexity": np.sqrt(prompt * generation),
    }


def _planted_logit(f: dict[str, np.ndarray], category: np.ndarray, shift: float) -> np.ndarray:
    rare = _z(np.log(f["min_frequency"]))
    logit = np.select(
        [category == "recitation", category == "reconstruction"],
        [
            -0.5 + 1.5 * _z(np.log(f["sequence_duplicates"])) + 1.5 * rare,
            0.5 - 1.5 * _z(f["prompt_perplexity"]),
        ],
        -1.5 - 2.5 * _z(np.log(f["generation_perplexity"])) - 1.5 * rare,
    )
    return logit + 0.7 * (f["code_nl"] == "code") + shift


def marts(
    n: int = 2000,
    models: tuple[str, ...] = ("suite-s",),
    steps: tuple[int, ...] = (1000,),
    *,
    seed: int = 0,
    threshold: int = 5,
    validation_share: float = 0.0,
) -> dict[str, pl.DataFrame]:
    """{'sequence_features': ..., 'taxonomy': ...}: n rows per (model, step), planted as above;
    later models and steps memorise more (a larger intercept), as in the paper."""
    rng = np.random.default_rng(seed)
    features, taxonomy = [], []
    for i, model in enumerate(models):
        for j, step in enumerate(steps):
            f = _features(rng, n)
            category = category_of(f["sequence_duplicates"], f["is_templating"], threshold)
            split = np.where(rng.random(n) < validation_share, "validation", "train")
            memorised = (rng.random(n) < _sigmoid(_planted_logit(f, category, 0.4 * (i + j)))) & (
                split == "train"
            )
            match = np.where(memorised, 1.0, np.floor(rng.uniform(0, 1, n) * 31) / 32)
            artifact = np.where(
                f["sequence_duplicates"] > threshold,
                "duplicate",
                np.where(
                    f["is_incrementing"], "incrementing", np.where(f["is_repeating"], "repeating", "none")
                ),
            )
            keys = {"model": [model] * n, "step": np.full(n, step, np.int64), "instance_id": np.arange(n)}
            features.append(
                pl.DataFrame(
                    {
                        **keys,
                        "memorised": memorised,
                        "match_fraction": match,
                        **f,
                        "artifact": artifact,
                        "copies": f["sequence_duplicates"].astype(np.int32),
                        "source": np.where(f["code_nl"] == "code", "code", "prose"),
                        "split": split,
                    }
                )
            )
            taxonomy.append(
                pl.DataFrame(
                    {
                        **keys,
                        "memorised": memorised,
                        "category": category,
                        **{c: f[c] for c in DECIDING},
                        "artifact": artifact,
                        "copies": f["sequence_duplicates"].astype(np.int32),
                    }
                )
            )
    return {"sequence_features": pl.concat(features), "taxonomy": pl.concat(taxonomy)}


def rows(n: int = 2000, **kwargs) -> pl.DataFrame:
    """The joined frame the analyses take: sequence_features plus taxonomy.category."""
    m = marts(n, **kwargs)
    return m["sequence_features"].join(
        m["taxonomy"].select("model", "step", "instance_id", "category"), on=["model", "step", "instance_id"]
    )


def partitioned_rows(n: int = 3000, *, seed: int = 0, strength: float = 3.0) -> pl.DataFrame:
    """Rows whose memorisation follows a planted partition: group 1 = huffman >= 4, group 2 =
    duplicates >= 50, group 3 = the rest; prompt perplexity pushes up in group 1, down in group
    2, and p75 frequency drives group 3. Both thresholds sit at the memorised medians."""
    rng = np.random.default_rng(seed)
    f = _features(rng, n)
    f["huffman_coding_length"] = rng.uniform(2, 6, n)
    f["sequence_duplicates"] = rng.integers(1, 100, n, endpoint=True).astype(np.int64)
    z, v = rng.normal(0, 1, n), rng.normal(0, 1, n)
    f["prompt_perplexity"] = 5 + z
    f["p75_frequency"] = np.exp(15 + 0.5 * v)
    group1 = f["huffman_coding_length"] >= 4
    group2 = ~group1 & (f["sequence_duplicates"] >= 50)
    logit = strength * np.where(group1, z, np.where(group2, -z, v))
    memorised = rng.random(n) < _sigmoid(logit)
    category = category_of(f["sequence_duplicates"], f["is_templating"])
    return pl.DataFrame(
        {"model": ["suite-s"] * n, "step": np.full(n, 1000, np.int64), "instance_id": np.arange(n),
         "memorised": memorised, **f, "category": category}
    )  # fmt: skip
