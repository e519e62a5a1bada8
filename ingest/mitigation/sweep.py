"""Mitigation sweeps: every (method, hyper-parameters, seed) run is one row in `mitigation_runs`.

A `Study` fixes what runs edit and how they are scored: the base model (TinyMem trained here, or
a suite/Hub checkpoint), its forget and retain sets, and `evaluate(model) -> metrics`. A `Run`
is a method name, one point of its grid and a seed; its id hashes those, so re-running a sweep
skips finished runs (one lake partition per run) and `rank`/`world_size` shard the run list the
way ingest jobs shard checkpoints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ingest.mitigation.methods import REGISTRY, SequenceSet, get
from memlake import lake
from memlake.paths import Warehouse

N_DUP_CLASSES = 4  # per-duplication-class columns mem_{before,after}_dup0..3 (10^p copies)


@dataclass(frozen=True)
class Run:
    study: str
    method: str
    hparams: tuple[tuple[str, Any], ...]
    seed: int

    @property
    def run_id(self) -> str:
        key = json.dumps([self.method, dict(self.hparams), self.seed], sort_keys=True)
        return f"{self.method}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


@dataclass
class Study:
    name: str  # the lake partition, e.g. tinymem-increment-noise or suite-s
    model: str
    step: int
    base: nn.Module  # never edited: every run gets a deep copy
    fresh: Callable[[int], nn.Module]  # an untrained model of the same architecture (regularisers)
    forget: SequenceSet
    retain: SequenceSet
    evaluate: Callable[[nn.Module], dict[str, float]]  # mem, acc, ppl, clean, mem_dup{p}
    context: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> extra kwargs (data=, epochs=)
    before: dict[str, float] | None = None
    about: str = ""  # one line on how the sets were built (printed by the CLI)

    def baseline(self) -> dict[str, float]:
        if self.before is None:
            self.before = self.evaluate(self.base)
        return self.before


def plan(
    study: str, methods: list[str] | None = None, seeds: list[int] = (0,), max_per_method: int | None = None
) -> list[Run]:
    """Runs for every method's grid (the first `max_per_method` points of each), every seed."""
    names = methods or sorted(REGISTRY)
    runs = []
    for name in names:
        grid = list(get(name).grid or ({},))
        if max_per_method is not None and max_per_method < len(grid):
            # evenly spaced from the strongest end: grids run from the mildest setting up
            picks = (
                np.linspace(len(grid) - 1, 0, max_per_method).round().astype(int) if max_per_method else []
            )
            grid = [grid[i] for i in picks]
        for point in grid:
            runs += [Run(study, name, tuple(sorted(point.items())), int(s)) for s in seeds]
    return runs


def run_one(study: Study, run: Run) -> dict[str, Any]:
    """Apply one run to a copy of the base model; the lake row of its before/after metrics."""
    method = get(run.method)
    before = study.baseline()
    torch.manual_seed(run.seed)
    model = study.fresh(run.seed) if method.kind == "regulariser" else copy.deepcopy(study.base)
    extra = study.context.get(method.kind, {})
    t0 = time.perf_counter()
    if len(study.forget) == 0 and method.kind not in ("regulariser", "fine_tuning"):
        result_stats, edited = {"skipped": "nothing memorised"}, model
    else:
        result = method.fn(model, study.forget, study.retain, seed=run.seed, **extra, **dict(run.hparams))
        result_stats, edited = result.stats, result.model
    seconds = time.perf_counter() - t0
    after = study.evaluate(edited)
    row = {
        "study": study.name,
        "run_id": run.run_id,
        "method": run.method,
        "kind": method.kind,
        "hparams": json.dumps(dict(run.hparams), sort_keys=True),
        "seed": run.seed,
        "model": study.model,
        "step": study.step,
        "n_forget": len(study.forget),
        "mem_before": before["mem"],
        "mem_after": after["mem"],
        "clean_before": before.get("clean", math.nan),
        "clean_after": after.get("clean", math.nan),
        "acc_before": before["acc"],
        "acc_after": after["acc"],
        "ppl_before": before["ppl"],
        "ppl_after": after["ppl"],
        "seconds": seconds,
        "stats": json.dumps(result_stats, sort_keys=True, default=str),
    }
    for p in range(N_DUP_CLASSES):
        row[f"mem_before_dup{p}"] = before.get(f"mem_dup{p}")
        row[f"mem_after_dup{p}"] = after.get(f"mem_dup{p}")
    return row


def sweep(
    wh: Warehouse,
    study: Study,
    runs: list[Run],
    *,
    rank: int = 0,
    world_size: int = 1,
    config: dict | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run this rank's share of `runs`, skipping runs already in the lake; return the new rows."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    rows = []
    from ingest.mitigation.methods.neurons import reuse_attributions

    # tiny models are overhead-bound: one thread is far faster than two contending ones, and
    # neuron attributions do not depend on the ratio, so each is computed once per sweep
    threads = torch.get_num_threads()
    if sum(p.numel() for p in study.base.parameters()) < 5_000_000:
        torch.set_num_threads(1)
    try:
        with reuse_attributions():
            rows = _sweep(wh, study, runs[rank::world_size], config, on_run)
    finally:
        torch.set_num_threads(threads)
    return rows


def _sweep(wh, study, runs, config, on_run) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        keys = {"study": study.name, "run_id": run.run_id}
        if lake.is_complete(wh, "mitigation_runs", keys):
            continue
        row = run_one(study, run)
        lake.write_partition(wh, "mitigation_runs", {k: [v] for k, v in row.items()}, keys, config=config)
        rows.append(row)
        if on_run:
            on_run(row)
    return rows
