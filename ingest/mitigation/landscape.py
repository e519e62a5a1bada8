"""Filter-normalised random-plane loss landscapes (Li et al. 2018, "Visualizing the loss landscape
of neural nets") of a study's unedited model, a good edit and a bad edit.

Two Gaussian directions d1, d2 with the parameters' shapes are drawn from one seed. Filter
normalisation rescales every filter of a direction — one output unit of a weight matrix: a row of
`nn.Linear` / `nn.Embedding` weights, a column of GPT-2's `Conv1D` [in, out] weights — to the norm
of the same filter of the model's weights; 1-D parameters (biases, LayerNorm) get a zero
direction, the paper's convention. The loss is evaluated at theta + alpha·d1 + beta·d2 on a
`points` × `points` grid over [-radius, radius]^2 (loss-landscapes' `random_plane(distance=1)`, the
original's tool, spans ±0.5), and the weights are restored exactly afterwards. Directions are
normalised against each model's own weights with the same seed, so the three planes are
comparable: an edit that keeps the model's function keeps its landscape, a destructive one
distorts it.

Two losses per point: `forget_loss`, the mean CE of the forget set's memorised continuations
(tokens after the prompt: what unlearning tries to raise), and `retain_loss`, the mean CE of a
seeded subset of the retain rows (what it must keep), padding excluded in both.

The edits are re-run deterministically (methods are deterministic given their seed): "good" is
the best run of `good` (default balanced_subnet) in `mitigation_best_runs`, "bad" the run of `bad`
(default gradient_ascent) that kept the least accuracy in `mitigation_scored`; without swept runs
they fall back to `good_hparams` (default: the method's defaults) and `bad_hparams` (default: the
method's most aggressive grid point). The best and worst runs are read from the analyses' views
over `mitigation_runs`, which the caller hands in (`views`, as to the query layer). Rows go to the
mart `mitigation_landscape` (one file per study); `analysis.mitigation.landscape` draws it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from ingest.lm.runtime import model_device
from ingest.mitigation.methods import SequenceSet, get, hyper_parameters, sequence_loss
from ingest.mitigation.sweep import Run, Study
from memlake.core import marts
from memlake.core.paths import Warehouse
from memlake.core.query import connect, frame, view_names

MART = "mitigation_landscape"
EDITS = ("unedited", "good", "bad")
COLUMNS = ["study", "edit", "method", "hparams", "alpha", "beta", "forget_loss", "retain_loss"]


# --------------------------------------------------------------------------- directions


def parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every distinct parameter (tied embeddings once), in a fixed order."""
    return list(model.named_parameters())


def filter_axes(model: nn.Module) -> dict[str, int]:
    """Parameter name -> the axis indexing its filters (output units): 1 for GPT-2 `Conv1D` weights
    ([in, out]), 0 otherwise (`nn.Linear` [out, in], embedding rows)."""
    conv = {id(m.weight) for m in model.modules() if type(m).__name__ == "Conv1D"}  # transformers' Conv1D
    return {n: 1 if id(p) in conv else 0 for n, p in parameters(model)}


def filter_normalise(direction: torch.Tensor, weight: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """`direction` with every filter (slice along `axis`) rescaled to the norm of the same filter of
    `weight`; a zero tensor for 1-D parameters."""
    if weight.dim() <= 1:
        return torch.zeros_like(weight)
    d = direction.movedim(axis, 0).reshape(direction.shape[axis], -1)
    w = weight.detach().movedim(axis, 0).reshape(weight.shape[axis], -1)
    scale = w.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + 1e-10)
    out = (d * scale).reshape(direction.movedim(axis, 0).shape).movedim(0, axis)
    return out.contiguous()


def random_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """One Gaussian direction, filter-normalised against `model`'s weights (aligned with
    `parameters(model)`). The draw depends only on the generator and the parameters' shapes."""
    axes = filter_axes(model)
    out = []
    for name, p in parameters(model):
        raw = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        out.append(filter_normalise(raw.to(p.dtype), p, axes[name]).to(p.device))
    return out


def random_plane(model: nn.Module, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(d1, d2): two filter-normalised Gaussian directions from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return random_direction(model, g), random_direction(model, g)


# --------------------------------------------------------------------------- losses and the grid


@torch.no_grad()
def mean_loss(model: nn.Module, seqs: SequenceSet, suffix: bool = False, batch_size: int = 128) -> float:
    """Mean over rows of the per-row mean next-token CE (padding excluded); `suffix` scores only
    each row's judged continuation (targets from its start on, see `SequenceSet.starts`)."""
    if len(seqs) == 0:
        return math.nan
    device = model_device(model)
    total = 0.0
    for batch in seqs.batches(batch_size):
        start = seqs.starts(batch) if suffix else 0
        total += float(sequence_loss(model, batch.to(device), seqs.pad_id, start).sum())
    return total / len(seqs)


def study_losses(study: Study, max_rows: int = 256, seed: int = 0) -> dict[str, Callable[[nn.Module], float]]:
    """forget_loss (memorised continuations) and retain_loss of a study, as functions of a model,
    each over a seeded subset of at most `max_rows` rows (every grid point evaluates both)."""
    forget, retain = study.forget, study.retain
    if len(retain) > max_rows:
        pick = torch.randperm(len(retain), generator=torch.Generator().manual_seed(seed))[:max_rows]
        retain = SequenceSet(retain.tokens[pick.sort().values], retain.prompt_len, retain.pad_id)
    if len(forget) > max_rows:
        pick = torch.randperm(len(forget), generator=torch.Generator().manual_seed(seed))[:max_rows]
        forget = forget.subset(pick.sort().values)
    return {
        "forget_loss": lambda m: mean_loss(m, forget, suffix=True),
        "retain_loss": lambda m: mean_loss(m, retain),
    }


def grid(points: int, radius: float) -> np.ndarray:
    if points < 2 or not radius > 0:
        raise ValueError(f"need points >= 2 and radius > 0, got points={points}, radius={radius}")
    return np.linspace(-radius, radius, points)


@torch.no_grad()
def surface(
    model: nn.Module,
    losses: dict[str, Callable[[nn.Module], float]],
    d1: list[torch.Tensor],
    d2: list[torch.Tensor],
    coords: np.ndarray,
) -> dict[str, np.ndarray]:
    """{loss name: [len(coords), len(coords)] array}, entry [i, j] at theta + coords[i]·d1 +
    coords[j]·d2. The model's weights are restored exactly afterwards (even on error)."""
    params = [p for _, p in parameters(model)]
    if not (len(d1) == len(d2) == len(params)):
        raise ValueError("directions do not match the model's parameters")
    theta = [p.detach().clone() for p in params]
    was_training = model.training
    model.eval()
    out = {name: np.full((len(coords), len(coords)), np.nan) for name in losses}
    try:
        for i, a in enumerate(coords):
            for j, b in enumerate(coords):
                for p, t, x, y in zip(params, theta, d1, d2):
                    p.copy_(t + float(a) * x + float(b) * y)
                for name, fn in losses.items():
                    out[name][i, j] = fn(model)
    finally:
        for p, t in zip(params, theta):
            p.copy_(t)
        model.train(was_training)
    return out


# --------------------------------------------------------------------------- the edits


@dataclass(frozen=True)
class Edit:
    edit: str  # unedited / good / bad
    method: str | None
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    run_id: str | None = None  # the mitigation_runs row it re-runs; None for a configured fallback
    source: str = "base"  # base / mitigation_runs / config


def _lake_rows(wh: Warehouse, views: Mapping[str, str], sql: str, params: dict) -> list[dict]:
    con = connect(wh, views=views)
    try:
        if "mitigation_scored" not in view_names(con):
            return []
        return frame(con, sql, params).to_dicts()
    finally:
        con.close()


def choose_edits(
    wh: Warehouse, study: str, lc: dict[str, Any], seed: int = 0, *, views: Mapping[str, str]
) -> list[Edit]:
    """The unedited model, the good and the bad edit of `study` (see the module doc). `views`: the
    derived SQL views that define mitigation_scored and mitigation_best_runs."""
    good, bad = lc["good"], lc["bad"]
    for name in (good, bad):
        get(name)  # an unknown method is an error before anything runs
    cols = "method, hparams, seed, run_id"
    best = _lake_rows(
        wh,
        views,
        f"select {cols} from mitigation_best_runs where study = $study and method = $method",
        {"study": study, "method": good},
    )
    worst = _lake_rows(
        wh,
        views,
        f"select {cols} from mitigation_scored where study = $study and method = $method "
        "and acc_kept is not null order by acc_kept, mem_removed desc, run_id limit 1",
        {"study": study, "method": bad},
    )
    edits = [Edit("unedited", None, {}, seed)]
    for which, rows, method, fallback in (
        ("good", best, good, lc.get("good_hparams")),
        ("bad", worst, bad, lc.get("bad_hparams")),
    ):
        if rows:
            r = rows[0]
            edits.append(
                Edit(which, method, json.loads(r["hparams"]), int(r["seed"]), r["run_id"], "mitigation_runs")
            )
            continue
        if fallback is None:  # the most aggressive grid point (grids run from the mildest up)
            fallback = dict(get(method).grid[-1]) if get(method).grid else {}
        unknown = set(fallback) - hyper_parameters(get(method).fn)
        if unknown:
            raise ValueError(
                f"{which}_hparams {sorted(unknown)} are not hyper-parameters of {method} "
                f"({', '.join(sorted(hyper_parameters(get(method).fn)))})"
            )
        edits.append(Edit(which, method, dict(fallback), seed, None, "config"))
    return edits


def apply_edit(study: Study, edit: Edit) -> nn.Module:
    """The edited model, re-created exactly as `sweep.run_one` made it (same seed, same inputs)."""
    if edit.method is None:
        return study.base
    method = get(edit.method)
    if study.skips(method):
        return study.base  # the sweep skips unlearning too: nothing is memorised
    model = study.starting_model(method, edit.seed)
    return method.fn(model, study.task, seed=edit.seed, **edit.hparams).model


def run_id(study: Study, edit: Edit) -> str | None:
    if edit.method is None:
        return None
    return Run(study.name, edit.method, tuple(sorted(edit.hparams.items())), edit.seed).run_id


# --------------------------------------------------------------------------- the study's landscape


def compute(
    wh: Warehouse,
    study: Study,
    lc: dict[str, Any],
    *,
    views: Mapping[str, str],
    points: int | None = None,
    radius: float | None = None,
    seed: int = 0,
    on_edit: Callable[[dict[str, Any]], None] | None = None,
) -> pl.DataFrame:
    """The landscape rows of the study's three models (contract columns first; plus seed, run_id,
    source, the edited model's mem/acc, and seconds per edit and per surface)."""
    if len(study.forget) == 0:
        raise ValueError(f"study {study.name}: nothing is memorised, so there is no forget loss to map")
    points = int(points if points is not None else lc["points"])
    radius = float(radius if radius is not None else lc["radius"])
    coords = grid(points, radius)
    losses = study_losses(study, lc.get("max_rows", 256), lc.get("seed", 0))
    frames = []
    with study.threads():
        for edit in choose_edits(wh, study.name, lc, seed, views=views):
            t0 = time.perf_counter()
            model = apply_edit(study, edit)
            t_edit = time.perf_counter() - t0
            metrics = study.evaluate(model)
            d1, d2 = random_plane(model, lc.get("seed", 0))
            t0 = time.perf_counter()
            surf = surface(model, losses, d1, d2, coords)
            t_surface = time.perf_counter() - t0
            a, b = np.meshgrid(coords, coords, indexing="ij")
            summary = {
                "study": study.name,
                "edit": edit.edit,
                "method": edit.method,
                "hparams": json.dumps(edit.hparams, sort_keys=True),
                "seed": edit.seed,
                "run_id": edit.run_id or run_id(study, edit),
                "source": edit.source,
                "mem": float(metrics["mem"]),
                "acc": float(metrics["acc"]),
                "edit_seconds": t_edit,
                "surface_seconds": t_surface,
            }
            frames.append(
                pl.DataFrame(
                    {
                        **{k: [v] * a.size for k, v in summary.items() if k in COLUMNS},
                        "alpha": a.ravel(),
                        "beta": b.ravel(),
                        "forget_loss": surf["forget_loss"].ravel(),
                        "retain_loss": surf["retain_loss"].ravel(),
                        **{k: [v] * a.size for k, v in summary.items() if k not in COLUMNS},
                    },
                    schema_overrides={"method": pl.Utf8, "run_id": pl.Utf8},
                )
            )
            if on_edit:
                on_edit({**summary, **centre_and_rim(frames[-1])})
    return pl.concat(frames).with_columns(pl.lit(points).alias("points"), pl.lit(radius).alias("radius"))


def centre_and_rim(rows: pl.DataFrame) -> dict[str, float]:
    """Loss nearest the centre and mean loss on the grid's outer ring, per loss."""
    r = rows.with_columns(pl.max_horizontal(pl.col("alpha").abs(), pl.col("beta").abs()).alias("_d"))
    centre = r.filter(pl.col("_d") == pl.col("_d").min())
    rim = r.filter(pl.col("_d") == pl.col("_d").max())
    out = {}
    for loss in ("forget_loss", "retain_loss"):
        out[f"{loss}_centre"] = float(centre[loss].mean())
        out[f"{loss}_rim"] = float(rim[loss].mean())
    return out


def write_landscape(wh: Warehouse, rows: pl.DataFrame) -> Path:
    """Replace the study's file of the mart with `rows`; returns its path."""
    key = marts.file_key(rows["study"][0])
    marts.write(wh, MART, key, rows)
    return wh.marts / MART / f"{key}.parquet"


def compute_landscape(
    wh: Warehouse, study: Study, lc: dict[str, Any], *, views: Mapping[str, str], **options: Any
) -> tuple[pl.DataFrame, Path]:
    """compute (same keyword options) + write: (the rows, the mart file's path)."""
    rows = compute(wh, study, lc, views=views, **options)
    return rows, write_landscape(wh, rows)
